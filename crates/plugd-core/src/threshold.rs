//! Error thresholds (docs/design.md#failure-handling): a plugin's errors counted in a
//! sliding time window, a warning at 95% of `max_errors`, and an action (`log`, `disable`,
//! `alert`) when the count reaches it.
//!
//! The window is [`WINDOW_SLOTS`] buckets of `time_window / WINDOW_SLOTS` each, so memory is
//! fixed whatever the error rate, and an error leaves the count between `time_window` and
//! `time_window × (1 + 1/WINDOW_SLOTS)` after it happened. Counting takes a short lock (an error
//! path already takes one for the last error); a success only reads an atomic unless there is
//! something to reset.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use plugd_manifest::{ErrorThreshold, ThresholdAction};
use serde::Serialize;

/// Buckets of the sliding window.
pub const WINDOW_SLOTS: usize = 32;

/// The errors of the last `time_window`, in [`WINDOW_SLOTS`] buckets.
#[derive(Debug, Clone)]
struct Window {
    /// Width of one bucket, in nanoseconds (at least 1).
    slot_nanos: u128,
    /// Per bucket: the absolute bucket number it holds, and its count.
    slots: [(u64, u64); WINDOW_SLOTS],
}

impl Window {
    fn new(time_window: Duration) -> Window {
        Window {
            slot_nanos: (time_window.as_nanos() / WINDOW_SLOTS as u128).max(1),
            slots: [(0, 0); WINDOW_SLOTS],
        }
    }

    fn bucket(&self, since: Duration) -> u64 {
        u64::try_from(since.as_nanos() / self.slot_nanos).unwrap_or(u64::MAX)
    }

    fn add(&mut self, bucket: u64) {
        let slot = &mut self.slots[(bucket % WINDOW_SLOTS as u64) as usize];
        if slot.0 != bucket {
            *slot = (bucket, 0);
        }
        slot.1 += 1;
    }

    fn count(&self, bucket: u64) -> u64 {
        self.slots
            .iter()
            .filter(|(b, n)| *n > 0 && *b <= bucket && bucket - *b < WINDOW_SLOTS as u64)
            .map(|(_, n)| n)
            .sum()
    }

    fn clear(&mut self) {
        self.slots = [(0, 0); WINDOW_SLOTS];
    }
}

/// A crossing of one of the threshold's levels, to be logged (and acted on) by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crossing {
    /// The count reached 95% of `max_errors`.
    Warning {
        errors: u64,
        max: u64,
        window: Duration,
    },
    /// The count reached `max_errors`.
    Exceeded {
        errors: u64,
        max: u64,
        window: Duration,
        action: ThresholdAction,
    },
}

/// The count at which the warning is given: 95% of `max`, rounded down, when that is at least 1
/// and below `max` (else no warning).
pub(crate) fn warning_level(max: u64) -> Option<u64> {
    let level = max.saturating_mul(95) / 100;
    (level >= 1 && level < max).then_some(level)
}

#[derive(Debug)]
struct Inner {
    config: ErrorThreshold,
    window: Window,
    warned: bool,
    exceeded: bool,
    trips: u64,
    last_trip: Option<SystemTime>,
}

/// The error threshold of one plugin.
#[derive(Debug)]
pub(crate) struct Threshold {
    base: Instant,
    /// The count as last computed; zero means there is nothing a success could reset.
    counted: AtomicU64,
    /// `enabled && reset_on_success`, for the success path.
    resets: AtomicBool,
    inner: Mutex<Inner>,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold::new(ErrorThreshold::default())
    }
}

/// What health and the admin API show of a plugin's threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThresholdStatus {
    /// Whether the threshold is watched.
    pub enabled: bool,
    /// Errors in the window that trip it.
    pub max_errors: u64,
    /// The window, as written in configs (`5m`).
    pub time_window: String,
    /// What happens when it trips.
    pub action: ThresholdAction,
    /// Whether a success resets the count.
    pub reset_on_success: bool,
    /// Errors in the window now.
    pub errors_in_window: u64,
    /// The count is at or above 95% of the maximum.
    pub warning: bool,
    /// The count is at or above the maximum.
    pub exceeded: bool,
    /// How many times it tripped.
    pub trips: u64,
    /// When it last tripped (RFC 3339).
    pub last_trip: Option<String>,
}

impl Threshold {
    pub(crate) fn new(config: ErrorThreshold) -> Threshold {
        let t = Threshold {
            base: Instant::now(),
            counted: AtomicU64::new(0),
            resets: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                window: Window::new(config.time_window),
                config: ErrorThreshold::default(),
                warned: false,
                exceeded: false,
                trips: 0,
                last_trip: None,
            }),
        };
        t.configure(config);
        t
    }

    /// Replace the threshold; the window starts empty.
    pub(crate) fn configure(&self, config: ErrorThreshold) {
        let mut g = self.inner.lock();
        g.window = Window::new(config.time_window);
        g.warned = false;
        g.exceeded = false;
        self.resets
            .store(config.enabled && config.reset_on_success, Ordering::Release);
        g.config = config;
        self.counted.store(0, Ordering::Release);
    }

    /// The threshold in force.
    pub(crate) fn config(&self) -> ErrorThreshold {
        self.inner.lock().config.clone()
    }

    /// Count one error at `now`; the crossing it caused, if any.
    pub(crate) fn record(&self, now: Instant) -> Option<Crossing> {
        let mut g = self.inner.lock();
        if !g.config.enabled {
            return None;
        }
        let bucket = g.window.bucket(now.saturating_duration_since(self.base));
        g.window.add(bucket);
        let errors = g.window.count(bucket);
        self.counted.store(errors, Ordering::Release);
        let max = g.config.max_errors.max(1);
        let window = g.config.time_window;
        let warn_at = warning_level(max);
        if errors < max {
            g.exceeded = false;
        }
        if warn_at.is_none_or(|w| errors < w) {
            g.warned = false;
        }
        if errors >= max && !g.exceeded {
            g.exceeded = true;
            g.warned = true;
            g.trips += 1;
            g.last_trip = Some(SystemTime::now());
            return Some(Crossing::Exceeded {
                errors,
                max,
                window,
                action: g.config.action,
            });
        }
        if let Some(w) = warn_at
            && errors >= w
            && errors < max
            && !g.warned
        {
            g.warned = true;
            return Some(Crossing::Warning {
                errors,
                max,
                window,
            });
        }
        None
    }

    /// A success: with `reset_on_success`, the count goes back to zero. Two atomic loads when
    /// there is nothing to reset.
    pub(crate) fn success(&self) {
        if !self.resets.load(Ordering::Relaxed) || self.counted.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.reset();
    }

    /// Empty the window.
    pub(crate) fn reset(&self) {
        let mut g = self.inner.lock();
        g.window.clear();
        g.warned = false;
        g.exceeded = false;
        self.counted.store(0, Ordering::Release);
    }

    /// The threshold's state at `now`.
    pub(crate) fn status(&self, now: Instant) -> ThresholdStatus {
        let g = self.inner.lock();
        let errors = if g.config.enabled {
            g.window
                .count(g.window.bucket(now.saturating_duration_since(self.base)))
        } else {
            0
        };
        let max = g.config.max_errors.max(1);
        ThresholdStatus {
            enabled: g.config.enabled,
            max_errors: g.config.max_errors,
            time_window: humantime::format_duration(g.config.time_window).to_string(),
            action: g.config.action,
            reset_on_success: g.config.reset_on_success,
            errors_in_window: errors,
            warning: g.config.enabled && warning_level(max).is_some_and(|w| errors >= w),
            exceeded: g.config.enabled && errors >= max,
            trips: g.trips,
            last_trip: g
                .last_trip
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold(max: u64, window: Duration, reset: bool) -> Threshold {
        Threshold::new(ErrorThreshold {
            enabled: true,
            max_errors: max,
            time_window: window,
            action: ThresholdAction::Log,
            reset_on_success: reset,
        })
    }

    #[test]
    fn warns_once_at_95_percent_then_trips_once() {
        let t = threshold(100, Duration::from_secs(300), false);
        let now = Instant::now();
        let crossings: Vec<(usize, Crossing)> = (1..=120)
            .filter_map(|i| t.record(now).map(|c| (i, c)))
            .collect();
        let window = Duration::from_secs(300);
        assert_eq!(
            crossings,
            [
                (
                    95,
                    Crossing::Warning {
                        errors: 95,
                        max: 100,
                        window
                    }
                ),
                (
                    100,
                    Crossing::Exceeded {
                        errors: 100,
                        max: 100,
                        window,
                        action: ThresholdAction::Log
                    }
                )
            ]
        );
        let s = t.status(now);
        assert_eq!((s.errors_in_window, s.trips), (120, 1));
        assert!(s.warning && s.exceeded);
        assert_eq!(s.time_window, "5m");
    }

    #[test]
    fn errors_leave_the_window() {
        let t = threshold(10, Duration::from_secs(32), false);
        let start = Instant::now();
        for _ in 0..8 {
            assert_eq!(t.record(start), None);
        }
        assert_eq!(t.status(start).errors_in_window, 8);
        // 34s later the 8 errors have left the 32s window (1s buckets).
        let later = start + Duration::from_secs(34);
        assert_eq!(t.status(later).errors_in_window, 0);
        assert_eq!(t.record(later), None, "1 of 10: nothing crossed");
        for _ in 0..7 {
            assert_eq!(t.record(later), None);
        }
        assert!(matches!(
            t.record(later),
            Some(Crossing::Warning { errors: 9, .. })
        ));
        assert!(matches!(
            t.record(later),
            Some(Crossing::Exceeded { errors: 10, .. })
        ));
        // Below the maximum again, a new crossing warns and trips again.
        let much_later = later + Duration::from_secs(40);
        let crossings = (0..10).filter(|_| t.record(much_later).is_some()).count();
        assert_eq!(crossings, 2);
        assert_eq!(t.status(much_later).trips, 2);
    }

    #[test]
    fn a_success_resets_only_with_reset_on_success() {
        let now = Instant::now();
        let t = threshold(10, Duration::from_secs(60), true);
        t.record(now);
        t.record(now);
        t.success();
        assert_eq!(t.status(now).errors_in_window, 0);
        let keep = threshold(10, Duration::from_secs(60), false);
        keep.record(now);
        keep.success();
        assert_eq!(keep.status(now).errors_in_window, 1);
    }

    #[test]
    fn disabled_counts_nothing() {
        let t = Threshold::default();
        assert_eq!(t.record(Instant::now()), None);
        assert_eq!(t.status(Instant::now()).errors_in_window, 0);
    }

    #[test]
    fn warning_levels() {
        assert_eq!(warning_level(100), Some(95));
        assert_eq!(warning_level(10), Some(9));
        assert_eq!(warning_level(3), Some(2));
        assert_eq!(warning_level(1), None);
    }
}
