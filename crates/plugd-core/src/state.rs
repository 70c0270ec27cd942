//! Status, phase, error records and per-hook counters of one plugin.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use plugd_manifest::{ErrorThreshold, HookType, Supervision, ThresholdAction};
use serde::Serialize;

use crate::cpu::{CpuBudget, CpuStatus, Throttle};
use crate::health::Health;
use crate::health::HealthReport;
use crate::metrics::{DurationHistogram, PluginMetrics};
use crate::supervise::{Notice, SupervisionState, SupervisionStatus};
use crate::threshold::{Crossing, Threshold, ThresholdStatus};

/// The one status enum of plugd (API, admin JSON, metrics label): the contract's six plus
/// `disabled` (docs/design.md#lifecycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    /// Known but not loaded.
    Unloaded = 0,
    /// Being read and compiled.
    Loading = 1,
    /// `init` succeeded; not started yet.
    Initialized = 2,
    /// Serving.
    Running = 3,
    /// Stopped (by shutdown or unload).
    Stopped = 4,
    /// Failed to load, initialize or start; see the last error.
    Error = 5,
    /// Turned off by the operator or by an error threshold; not routed.
    Disabled = 6,
}

impl Status {
    /// Every status, in declaration order.
    pub const ALL: [Status; 7] = [
        Status::Unloaded,
        Status::Loading,
        Status::Initialized,
        Status::Running,
        Status::Stopped,
        Status::Error,
        Status::Disabled,
    ];

    /// The lower-case name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unloaded => "unloaded",
            Status::Loading => "loading",
            Status::Initialized => "initialized",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Error => "error",
            Status::Disabled => "disabled",
        }
    }

    fn from_u8(v: u8) -> Status {
        Status::ALL
            .get(v as usize)
            .copied()
            .unwrap_or(Status::Error)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transitional step, shown beside the status while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Phase {
    /// Nothing in progress.
    Idle = 0,
    /// `init` is running.
    Initializing = 1,
    /// `start` is running.
    Starting = 2,
    /// `stop`/`cleanup` are running.
    Stopping = 3,
    /// A new version is being swapped in.
    Reloading = 4,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Idle,
        Phase::Initializing,
        Phase::Starting,
        Phase::Stopping,
        Phase::Reloading,
    ];

    /// `None` for idle, else the lower-case name.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Phase::Idle => None,
            Phase::Initializing => Some("initializing"),
            Phase::Starting => Some("starting"),
            Phase::Stopping => Some("stopping"),
            Phase::Reloading => Some("reloading"),
        }
    }
}

/// The last error of a plugin and when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorRecord {
    /// The message.
    pub message: String,
    /// RFC 3339 time.
    pub at: String,
}

/// Counters of one hook type of one plugin (the contract's `HookMetrics`), with a duration
/// histogram.
#[derive(Debug, Default)]
pub struct HookCounters {
    executions: AtomicU64,
    errors: AtomicU64,
    total_nanos: AtomicU64,
    durations: DurationHistogram,
}

/// A snapshot of [`HookCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HookMetrics {
    /// Number of executions.
    pub execution_count: u64,
    /// Sum of durations, in microseconds.
    pub total_duration_us: u64,
    /// Average duration, in microseconds.
    pub average_duration_us: u64,
    /// Hook-specific errors.
    pub error_count: u64,
}

impl HookCounters {
    /// Record one execution. Lock-free.
    pub fn record(&self, elapsed: Duration, failed: bool) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        self.total_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        self.durations.record(elapsed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The duration histogram.
    pub fn durations(&self) -> &DurationHistogram {
        &self.durations
    }

    /// Read the counters.
    pub fn snapshot(&self) -> HookMetrics {
        let n = self.executions.load(Ordering::Relaxed);
        let total_us = self.total_nanos.load(Ordering::Relaxed) / 1_000;
        HookMetrics {
            execution_count: n,
            total_duration_us: total_us,
            average_duration_us: total_us.checked_div(n).unwrap_or(0),
            error_count: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Who disabled a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DisabledBy {
    /// The config (`enabled: false`) or [`Host::disable_plugin`](crate::Host::disable_plugin).
    Operator = 1,
    /// Its error threshold, with the action `disable`.
    ErrorThreshold = 2,
}

/// Longest last error kept, bytes (the rest is cut, and the cut said).
pub const MAX_ERROR_BYTES: usize = 4 * 1024;

/// The live state of one plugin: read on the request path without locks.
#[derive(Debug)]
pub struct PluginState {
    name: String,
    status: AtomicU8,
    phase: AtomicU8,
    error_count: AtomicU64,
    crash_count: AtomicU64,
    last_error: Mutex<Option<ErrorRecord>>,
    loaded_at: Mutex<Option<SystemTime>>,
    load_duration_us: AtomicU64,
    hooks: [HookCounters; 7],
    routes: HookCounters,
    metrics: std::sync::Arc<PluginMetrics>,
    threshold: Threshold,
    cpu: CpuBudget,
    disabled_by: AtomicU8,
    pub(crate) supervision: Mutex<SupervisionState>,
    health: Mutex<Option<HealthReport>>,
    pub(crate) health_in_flight: AtomicBool,
    /// `stop` and `cleanup` ran since the last `init` (so they do not run twice).
    pub(crate) quiesced: AtomicBool,
    /// The supervisor carried out the last threshold disable.
    pub(crate) disable_handled: AtomicBool,
    /// Where threshold actions and failures are reported to the host's supervisor task.
    notices: OnceLock<tokio::sync::mpsc::Sender<Notice>>,
    /// Its log stream (rate, caps, the dropped-lines counter).
    log: crate::logs::PluginLog,
}

impl Default for PluginState {
    fn default() -> Self {
        PluginState::new("")
    }
}

impl PluginState {
    /// The state of a plugin named `name` (the name appears in the threshold's log lines).
    pub fn new(name: &str) -> Self {
        PluginState {
            name: name.to_string(),
            log: crate::logs::PluginLog::new(name, crate::logs::LogLimits::default()),
            status: AtomicU8::new(Status::Unloaded as u8),
            phase: AtomicU8::new(Phase::Idle as u8),
            error_count: AtomicU64::new(0),
            crash_count: AtomicU64::new(0),
            last_error: Mutex::new(None),
            loaded_at: Mutex::new(None),
            load_duration_us: AtomicU64::new(0),
            hooks: Default::default(),
            routes: HookCounters::default(),
            metrics: Default::default(),
            threshold: Threshold::default(),
            cpu: CpuBudget::default(),
            disabled_by: AtomicU8::new(0),
            supervision: Mutex::new(SupervisionState::default()),
            health: Mutex::new(None),
            health_in_flight: AtomicBool::new(false),
            quiesced: AtomicBool::new(false),
            disable_handled: AtomicBool::new(false),
            notices: OnceLock::new(),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current status.
    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Set the status.
    pub fn set_status(&self, status: Status) {
        self.status.store(status as u8, Ordering::Release);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::ALL
            .get(self.phase.load(Ordering::Acquire) as usize)
            .copied()
            .unwrap_or(Phase::Idle)
    }

    /// Set the phase.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Count an error, remember it as the last one, and count it against the error threshold:
    /// a warning at 95%, an "exceeded" line at the maximum, and the action (`disable`
    /// and `alert` are handed to the host's supervisor task: nothing here waits).
    pub fn record_error(&self, message: impl Into<String>) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(ErrorRecord {
            // A guest's text: kept, but not without bound.
            message: crate::logs::cut(message.into(), MAX_ERROR_BYTES),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        });
        let Some(crossing) = self.threshold.record(Instant::now()) else {
            return;
        };
        let name = &self.name;
        match crossing {
            Crossing::Warning {
                errors,
                max,
                window,
            } => {
                let window = humantime::format_duration(window);
                tracing::warn!(
                    plugin = %name,
                    errors,
                    max,
                    "Plugin {name} approaching error threshold: {errors}/{max} errors in {window}"
                );
            }
            Crossing::Exceeded {
                errors,
                max,
                window,
                action,
            } => {
                let span = humantime::format_duration(window);
                tracing::error!(
                    plugin = %name,
                    errors,
                    max,
                    action = action_name(action),
                    "Plugin {name} exceeded error threshold: {errors}/{max} errors in {span}"
                );
                match action {
                    ThresholdAction::Log => {}
                    ThresholdAction::Disable => {
                        // Unrouted at once; the host stops it off the request path.
                        self.disabled_by
                            .store(DisabledBy::ErrorThreshold as u8, Ordering::Release);
                        self.disable_handled.store(false, Ordering::Release);
                        let _ = self.status.compare_exchange(
                            Status::Running as u8,
                            Status::Disabled as u8,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        self.notify(Notice::Disable(name.clone()));
                    }
                    ThresholdAction::Alert => self.notify(Notice::Alert {
                        plugin: name.clone(),
                        errors,
                        max,
                        window,
                    }),
                }
            }
        }
    }

    /// A successful call: with `reset_on_success`, the threshold's count goes back to zero.
    /// Lock-free unless there is a count to reset.
    pub fn record_success(&self) {
        self.threshold.success();
    }

    /// Set the status to `error` with a cause.
    pub fn fail(&self, message: impl Into<String>) {
        self.record_error(message);
        self.set_status(Status::Error);
        self.set_phase(Phase::Idle);
        self.notify(Notice::Failed);
    }

    pub(crate) fn connect(&self, notices: tokio::sync::mpsc::Sender<Notice>) {
        let _ = self.notices.set(notices);
    }

    fn notify(&self, notice: Notice) {
        let Some(tx) = self.notices.get() else {
            return;
        };
        // `Failed` only wakes the supervisor early; it looks at every plugin anyway.
        let wakeup = notice == Notice::Failed;
        if tx.try_send(notice).is_err() && !wakeup {
            tracing::warn!(plugin = %self.name, "the host's supervisor queue is full; threshold action dropped");
        }
    }

    /// The error threshold in force.
    pub fn error_threshold(&self) -> ErrorThreshold {
        self.threshold.config()
    }

    /// Replace the error threshold; its window starts empty.
    pub fn set_error_threshold(&self, threshold: ErrorThreshold) {
        self.threshold.configure(threshold);
    }

    /// Empty the threshold's window.
    pub(crate) fn reset_threshold(&self) {
        self.threshold.reset();
    }

    /// The threshold's state now.
    pub fn threshold_status(&self) -> ThresholdStatus {
        self.threshold.status(Instant::now())
    }

    /// Who disabled the plugin, while it is disabled.
    pub fn disabled_by(&self) -> Option<DisabledBy> {
        if self.status() != Status::Disabled {
            return None;
        }
        match self.disabled_by.load(Ordering::Acquire) {
            2 => Some(DisabledBy::ErrorThreshold),
            _ => Some(DisabledBy::Operator),
        }
    }

    /// Its threshold disabled it and no one enabled it since.
    pub(crate) fn disable_pending(&self) -> bool {
        self.disabled_by.load(Ordering::Acquire) == DisabledBy::ErrorThreshold as u8
    }

    pub(crate) fn set_disabled_by(&self, by: Option<DisabledBy>) {
        self.disabled_by
            .store(by.map_or(0, |b| b as u8), Ordering::Release);
    }

    /// Set the CPU budget (percent of one core; `None`: unmetered).
    pub fn set_cpu_budget(&self, percent: Option<u8>) {
        self.cpu.set_budget(percent);
    }

    /// Its log stream: what its `log` calls and its stdout/stderr go through.
    pub fn log(&self) -> &crate::logs::PluginLog {
        &self.log
    }

    /// `Some` while the plugin is throttled for going over its CPU budget. Lock-free; one atomic
    /// load for a plugin without a budget.
    pub fn throttled(&self) -> Option<Throttle> {
        let (throttle, started) = self.cpu.check(Instant::now());
        if let (Some(t), true) = (throttle, started) {
            self.log_throttle(t);
        }
        throttle
    }

    /// Count a call's duration against the CPU budget.
    pub fn record_busy(&self, took: Duration) {
        if let Some(t) = self.cpu.record(Instant::now(), took) {
            self.log_throttle(t);
        }
    }

    fn log_throttle(&self, t: Throttle) {
        tracing::warn!(
            plugin = %self.name,
            used_percent = t.used_percent,
            budget_percent = t.budget_percent,
            "plugin '{}' is throttled: used {}% CPU, budget {}%",
            self.name,
            t.used_percent,
            t.budget_percent
        );
    }

    /// When the current CPU window ends.
    pub(crate) fn cpu_window_end(&self) -> Instant {
        self.cpu.window_end(Instant::now())
    }

    /// The CPU budget's state now.
    pub fn cpu_status(&self) -> CpuStatus {
        self.cpu.status(Instant::now())
    }

    /// The supervision in force and its state.
    pub fn supervision_status(&self) -> SupervisionStatus {
        self.supervision.lock().status()
    }

    /// Set the supervision settings.
    pub fn set_supervision(&self, config: Supervision) {
        self.supervision.lock().config = config;
    }

    /// The plugin's last answer to a health check, and when.
    pub fn health_report(&self) -> Option<HealthReport> {
        self.health.lock().clone()
    }

    /// Store a health-check answer.
    pub fn set_health_report(&self, health: Health) {
        *self.health.lock() = Some(HealthReport::now(health));
    }

    /// Errors counted since load.
    pub fn error_count(&self) -> u64 {
        self.error_count.load(Ordering::Relaxed)
    }

    /// Count a crash: a call that trapped (a panic, an out-of-bounds access, unreachable code).
    /// Unlike an error the plugin returned, a denial, a timeout or a cap it ran into (memory,
    /// stack, fuel: [`PluginError::Exhausted`](crate::PluginError::Exhausted)), a client cannot
    /// make a correct plugin crash, so crashes are what the grace period of a hot reload watches.
    pub fn record_crash(&self) {
        self.crash_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Count the crash, when `error` is one (see [`PluginState::record_crash`]).
    pub fn record_failure(&self, error: &crate::PluginError) {
        if matches!(error, crate::PluginError::Trap(_)) {
            self.record_crash();
        }
    }

    /// Crashes counted since load.
    pub fn crash_count(&self) -> u64 {
        self.crash_count.load(Ordering::Relaxed)
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<ErrorRecord> {
        self.last_error.lock().clone()
    }

    /// Record when loading finished and how long it took.
    pub fn set_loaded(&self, at: SystemTime, took: Duration) {
        *self.loaded_at.lock() = Some(at);
        self.load_duration_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// When the plugin was loaded.
    pub fn loaded_at(&self) -> Option<SystemTime> {
        *self.loaded_at.lock()
    }

    /// How long loading took.
    pub fn load_duration(&self) -> Duration {
        Duration::from_micros(self.load_duration_us.load(Ordering::Relaxed))
    }

    /// Counters of one hook type.
    pub fn hook(&self, hook: HookType) -> &HookCounters {
        &self.hooks[hook_index(hook)]
    }

    /// The metrics the plugin records about itself.
    pub fn metrics(&self) -> &std::sync::Arc<PluginMetrics> {
        &self.metrics
    }

    /// Counters of route handling.
    pub fn routes(&self) -> &HookCounters {
        &self.routes
    }

    /// A snapshot of every hook type that ran at least once.
    pub fn hook_metrics(&self) -> Vec<(HookType, HookMetrics)> {
        HookType::ALL
            .iter()
            .map(|h| (*h, self.hook(*h).snapshot()))
            .filter(|(_, m)| m.execution_count > 0)
            .collect()
    }
}

fn action_name(action: ThresholdAction) -> &'static str {
    match action {
        ThresholdAction::Log => "log",
        ThresholdAction::Disable => "disable",
        ThresholdAction::Alert => "alert",
    }
}

pub(crate) fn hook_index(hook: HookType) -> usize {
    match hook {
        HookType::Startup => 0,
        HookType::Shutdown => 1,
        HookType::PreRequest => 2,
        HookType::PostRequest => 3,
        HookType::PreResponse => 4,
        HookType::PostResponse => 5,
        HookType::Error => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_the_atomic() {
        let s = PluginState::default();
        assert_eq!(s.status(), Status::Unloaded);
        for status in Status::ALL {
            s.set_status(status);
            assert_eq!(s.status(), status);
        }
    }

    #[test]
    fn fail_records_error_and_status() {
        let s = PluginState::default();
        s.set_phase(Phase::Starting);
        s.fail("boom");
        assert_eq!(s.status(), Status::Error);
        assert_eq!(s.phase(), Phase::Idle);
        assert_eq!(s.error_count(), 1);
        assert_eq!(s.last_error().map(|e| e.message), Some("boom".to_string()));
    }

    #[test]
    fn hook_counters_average() {
        let c = HookCounters::default();
        c.record(Duration::from_micros(10), false);
        c.record(Duration::from_micros(30), true);
        let m = c.snapshot();
        assert_eq!(m.execution_count, 2);
        assert_eq!(m.error_count, 1);
        assert_eq!(m.average_duration_us, 20);
    }
}
