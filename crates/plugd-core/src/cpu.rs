//! The CPU budget of a plugin (`limits.max_cpu_percent`, docs/design.md#failure-handling).
//!
//! Time is cut into windows of [`CPU_WINDOW`]. Every call into the plugin on the dispatch paths
//! (hooks, middleware, routes, events, services, timer ticks) adds its duration to the window in
//! which it ends. A plugin whose calls took more than its budget of a window (in percent of one
//! core) is throttled for the whole next window. This is wall-clock time spent inside plugin
//! calls: an approximation of guest CPU time that also counts time a call spends waiting (on a
//! host call, a sleep, a lock). Fuel (`limits.fuel`) is the deterministic alternative.
//!
//! Everything here is atomics: windows roll over lazily, on the first call or check in a new
//! window, so no task has to tick.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The length of one budget window.
pub const CPU_WINDOW: Duration = Duration::from_secs(1);

const NONE: u64 = u64::MAX;

/// One plugin's CPU budget and its use.
#[derive(Debug)]
pub(crate) struct CpuBudget {
    base: Instant,
    /// The budget in percent of one core; 0: none.
    percent: AtomicU8,
    /// The window `busy_nanos` belongs to.
    window: AtomicU64,
    busy_nanos: AtomicU64,
    /// Busy time of the last window that closed, and its number.
    last_busy_nanos: AtomicU64,
    last_window: AtomicU64,
    /// The window in which the plugin is throttled, and the percent that caused it.
    throttled_window: AtomicU64,
    throttled_percent: AtomicU64,
    /// Windows it was throttled for.
    throttled_count: AtomicU64,
}

impl Default for CpuBudget {
    fn default() -> Self {
        CpuBudget {
            base: Instant::now(),
            percent: AtomicU8::new(0),
            window: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            last_busy_nanos: AtomicU64::new(0),
            last_window: AtomicU64::new(NONE),
            throttled_window: AtomicU64::new(NONE),
            throttled_percent: AtomicU64::new(0),
            throttled_count: AtomicU64::new(0),
        }
    }
}

/// A throttled window: what the plugin used in the window before, and its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Percent of one core used in the window that caused it.
    pub used_percent: u64,
    /// The budget, percent.
    pub budget_percent: u8,
}

/// What health and the admin API show of a plugin's CPU budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpuStatus {
    /// The budget, percent of one core (`limits.max_cpu_percent`); none: not measured.
    pub max_cpu_percent: Option<u8>,
    /// Percent of one core its calls took in the last complete window.
    pub last_window_percent: u64,
    /// Whether it is throttled now.
    pub throttled: bool,
    /// Windows it was throttled for, since it loaded.
    pub throttled_windows: u64,
}

fn percent_of_window(nanos: u64) -> u64 {
    let window = CPU_WINDOW.as_nanos() as u64;
    nanos.saturating_mul(100) / window.max(1)
}

impl CpuBudget {
    /// Set (or clear, with `None` or 0) the budget.
    pub(crate) fn set_budget(&self, percent: Option<u8>) {
        self.percent.store(percent.unwrap_or(0), Ordering::Release);
    }

    /// The budget, if any.
    pub(crate) fn budget(&self) -> Option<u8> {
        Some(self.percent.load(Ordering::Relaxed)).filter(|p| *p > 0)
    }

    fn window_of(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.base);
        u64::try_from(since.as_nanos() / CPU_WINDOW.as_nanos()).unwrap_or(NONE - 1)
    }

    /// Close the current window if `now` is past it; `Some` when that throttles the plugin for
    /// the window of `now` (the caller logs it).
    fn roll(&self, now: u64, budget: u8) -> Option<Throttle> {
        let current = self.window.load(Ordering::Acquire);
        if current >= now {
            return None;
        }
        if self
            .window
            .compare_exchange(current, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None; // another call rolled it
        }
        let busy = self.busy_nanos.swap(0, Ordering::AcqRel);
        self.last_busy_nanos.store(busy, Ordering::Relaxed);
        self.last_window.store(current, Ordering::Relaxed);
        let used = percent_of_window(busy);
        if current + 1 == now && used > u64::from(budget) {
            self.throttled_percent.store(used, Ordering::Relaxed);
            self.throttled_window.store(now, Ordering::Release);
            self.throttled_count.fetch_add(1, Ordering::Relaxed);
            return Some(Throttle {
                used_percent: used,
                budget_percent: budget,
            });
        }
        None
    }

    /// Whether the plugin is throttled at `now`. The second value is `true` when this check
    /// started the throttled window (log it once). One atomic load without a budget.
    pub(crate) fn check(&self, now: Instant) -> (Option<Throttle>, bool) {
        let Some(budget) = self.budget() else {
            return (None, false);
        };
        let window = self.window_of(now);
        let started = self.roll(window, budget).is_some();
        if self.throttled_window.load(Ordering::Acquire) == window {
            let t = Throttle {
                used_percent: self.throttled_percent.load(Ordering::Relaxed),
                budget_percent: budget,
            };
            return (Some(t), started);
        }
        (None, false)
    }

    /// Add a call's duration, ended at `now`. `Some` when rolling the window over throttled the
    /// plugin (log it once).
    pub(crate) fn record(&self, now: Instant, took: Duration) -> Option<Throttle> {
        let budget = self.budget()?;
        let throttle = self.roll(self.window_of(now), budget);
        self.busy_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        throttle
    }

    /// When the throttled window of `now` ends.
    pub(crate) fn window_end(&self, now: Instant) -> Instant {
        let next = self.window_of(now).saturating_add(1);
        self.base + CPU_WINDOW.saturating_mul(u32::try_from(next).unwrap_or(u32::MAX))
    }

    /// The state at `now`.
    pub(crate) fn status(&self, now: Instant) -> CpuStatus {
        let budget = self.budget();
        let window = self.window_of(now);
        let last_percent = match budget {
            Some(_) => {
                let current = self.window.load(Ordering::Acquire);
                if current + 1 == window {
                    // The current window closed but nothing rolled it yet.
                    percent_of_window(self.busy_nanos.load(Ordering::Relaxed))
                } else if current == window
                    && self.last_window.load(Ordering::Relaxed) == window.wrapping_sub(1)
                {
                    percent_of_window(self.last_busy_nanos.load(Ordering::Relaxed))
                } else {
                    0
                }
            }
            None => 0,
        };
        CpuStatus {
            max_cpu_percent: budget,
            last_window_percent: last_percent,
            throttled: budget.is_some() && self.throttled_window.load(Ordering::Acquire) == window,
            throttled_windows: self.throttled_count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_throttles_the_next_window_only() {
        let b = CpuBudget::default();
        b.set_budget(Some(50));
        let w0 = b.base + Duration::from_millis(100);
        assert_eq!(b.check(w0), (None, false));
        b.record(w0, Duration::from_millis(300));
        b.record(w0, Duration::from_millis(300));
        assert_eq!(
            b.check(w0).0,
            None,
            "throttling starts with the next window"
        );
        let w1 = b.base + CPU_WINDOW + Duration::from_millis(10);
        let (t, started) = b.check(w1);
        assert_eq!(
            t,
            Some(Throttle {
                used_percent: 60,
                budget_percent: 50
            })
        );
        assert!(started);
        assert_eq!(b.check(w1), (t, false), "logged once");
        assert!(b.status(w1).throttled);
        assert_eq!(b.window_end(w1), b.base + CPU_WINDOW * 2);
        let w2 = b.base + CPU_WINDOW * 2 + Duration::from_millis(10);
        assert_eq!(b.check(w2).0, None, "an idle throttled window frees it");
        let s = b.status(w2);
        assert_eq!((s.throttled, s.throttled_windows), (false, 1));
    }

    #[test]
    fn under_budget_or_without_one_never_throttles() {
        let b = CpuBudget::default();
        let now = b.base;
        b.record(now, Duration::from_secs(5));
        assert_eq!(b.check(now + CPU_WINDOW).0, None);
        b.set_budget(Some(50));
        b.record(now, Duration::from_millis(400));
        assert_eq!(b.check(now + CPU_WINDOW).0, None);
        assert_eq!(b.status(now + CPU_WINDOW).last_window_percent, 40);
    }
}
