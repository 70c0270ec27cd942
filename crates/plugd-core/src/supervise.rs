//! The host's supervisor task: restarts plugins that end in `error` with exponential backoff
//! (`plugins.supervision`), carries out error-threshold actions off the request path (disable,
//! alert), and polls plugins' health checks every `plugins.health_check_interval`.
//!
//! One task per host, started by [`Host::start`]/[`Host::load_all`] and stopped by
//! [`Host::stop_all`]. It holds the host weakly: dropping every [`Host`] ends it. Plugins report
//! to it through a bounded channel ([`Notice`]); nothing on the request path waits for it.
//!
//! Rules:
//! - Only status `error` is supervised. A plugin disabled by the operator or by its threshold is
//!   left alone, and so is one whose required dependencies are not running (it waits for them,
//!   without using up attempts).
//! - Attempt n waits `backoff_initial × 2^(n-1)` (at most `backoff_max`) after the failure.
//!   After `max_restarts` failed attempts in a row the host gives up (shown in health) until the
//!   operator enables the plugin again.
//! - A restarted plugin that keeps running for `backoff_max` starts over: its attempt count and
//!   backoff reset.
//! - A restart is stop + cleanup + init + start on the plugin object the host holds, or a fresh
//!   load from disk (read, check, compile, init, start) when the plugin never loaded.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use plugd_manifest::Supervision;
use serde::Serialize;
use tokio::sync::mpsc;

/// Notices queued for the supervisor before plugins' reports are dropped (and logged).
pub(crate) const NOTICE_CAPACITY: usize = 1024;

/// The event topic of the threshold action `alert`.
pub const ERROR_THRESHOLD_TOPIC: &str = "plugd.plugin.error_threshold";

/// The longest the supervisor sleeps before looking at the plugins again.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(1);

/// What a plugin tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A plugin went to `error`: look now.
    Failed,
    /// Its threshold tripped with the action `disable`.
    Disable(String),
    /// Its threshold tripped with the action `alert`.
    Alert {
        plugin: String,
        errors: u64,
        max: u64,
        window: Duration,
    },
}

/// Supervision bookkeeping of one plugin (in its `PluginState`; never on the request path).
#[derive(Debug, Clone, Default)]
pub(crate) struct SupervisionState {
    pub(crate) config: Supervision,
    /// Failed attempts in a row (reset after `backoff_max` of running).
    pub(crate) attempts: u32,
    /// Restarts attempted since load.
    pub(crate) restarts: u64,
    pub(crate) last_restart: Option<SystemTime>,
    pub(crate) next_attempt: Option<(Instant, SystemTime)>,
    pub(crate) restarting: bool,
    pub(crate) gave_up: bool,
    pub(crate) waiting_for: Option<String>,
    /// Since when it runs after a restart.
    pub(crate) running_since: Option<Instant>,
}

/// What health and the admin API show of a plugin's supervision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SupervisionStatus {
    /// Whether the plugin is restarted when it ends in `error`.
    pub enabled: bool,
    /// Failed attempts in a row allowed.
    pub max_restarts: u32,
    /// Failed attempts in a row so far.
    pub attempts: u32,
    /// Restarts attempted since it loaded.
    pub restarts: u64,
    /// When the last restart was attempted (RFC 3339).
    pub last_restart: Option<String>,
    /// When the next one is due (RFC 3339).
    pub next_attempt: Option<String>,
    /// A restart is in progress.
    pub restarting: bool,
    /// The host stopped trying.
    pub gave_up: bool,
    /// A required dependency it waits for.
    pub waiting_for: Option<String>,
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl SupervisionState {
    pub(crate) fn status(&self) -> SupervisionStatus {
        SupervisionStatus {
            enabled: self.config.enabled,
            max_restarts: self.config.max_restarts,
            attempts: self.attempts,
            restarts: self.restarts,
            last_restart: self.last_restart.map(rfc3339),
            next_attempt: self.next_attempt.map(|(_, at)| rfc3339(at)),
            restarting: self.restarting,
            gave_up: self.gave_up,
            waiting_for: self.waiting_for.clone(),
        }
    }

    /// Start over: no attempts, nothing scheduled.
    pub(crate) fn clear(&mut self) {
        self.attempts = 0;
        self.next_attempt = None;
        self.gave_up = false;
        self.waiting_for = None;
        self.running_since = None;
    }

    pub(crate) fn schedule(&mut self, now: Instant) -> Duration {
        let delay = self.config.backoff(self.attempts + 1);
        self.next_attempt = Some((now + delay, SystemTime::now() + delay));
        delay
    }
}

/// The supervisor task's handle, kept by the host. The task hands the receiver back when it
/// stops, so a later start supervises again.
#[derive(Debug, Default)]
pub(crate) struct SupervisorSlot {
    pub(crate) task: Option<tokio::task::JoinHandle<Option<mpsc::Receiver<Notice>>>>,
    pub(crate) receiver: Option<mpsc::Receiver<Notice>>,
    pub(crate) stop: Arc<tokio::sync::Notify>,
}
