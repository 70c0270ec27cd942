//! The host's status records: one row per plugin, one per plugin and hook type (`route`
//! included), metric events and denied calls — written by a status backend ([`StatusSink`]; the
//! SQLite one keeps them in `host.db` as the tables `plugins`, `plugin_hooks`, `plugin_metrics`
//! (shaped as the contract's dashboard expects) and `plugin_audit`; docs/design.md#state).
//!
//! The request path only bumps the atomic counters it always did. A background task reads them
//! every `status.interval` into a [`StatusReport`] and hands it to the backend, which writes it
//! all or nothing. Counter deltas since the last *written* report become metric events: a report
//! that failed to be written (a full disk, a database that went away) leaves the writer's memory
//! unchanged, so the next one covers the same events — nothing already stored is lost, and the
//! counters it missed are still in memory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::audit::AuditEntry;
use crate::error::BackendError;
use crate::loaded::Loaded;
use crate::state::{ErrorRecord, HookMetrics};

/// One plugin as a report shows it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Its version ("" without a manifest).
    pub version: String,
    /// "wasm" or "native".
    pub kind: String,
    /// Its status (`running`, `error`, …).
    pub status: String,
    /// Whether the operator enabled it.
    pub enabled: bool,
    /// Errors counted since it loaded.
    pub error_count: u64,
    /// Its last error and when.
    pub last_error: Option<ErrorRecord>,
    /// When it was loaded.
    pub loaded_at: Option<SystemTime>,
    /// How long loading took.
    pub load_duration_ms: f64,
    /// Counters per hook type that ran (`route` for its routes).
    pub hooks: Vec<(String, HookMetrics)>,
}

/// A metric event since the last written report: `error` (errors counted), `requests` (route
/// calls), `load_duration_ms` (after a load).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MetricEvent {
    /// The plugin.
    pub plugin: String,
    /// `error`, `requests` or `load_duration_ms`.
    pub metric: &'static str,
    /// How many, or how long.
    pub value: f64,
}

/// One tick's status, as a backend writes it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StatusReport {
    /// When it was taken.
    pub at: SystemTime,
    /// Every plugin the host holds. Rows of plugins not in the report stay, marked `unloaded`.
    pub plugins: Vec<PluginStatus>,
    /// The metric events since the last written report.
    pub events: Vec<MetricEvent>,
    /// Denied calls since the last written report.
    pub audit: Vec<AuditEntry>,
    /// Events and audit rows older than this are dropped (`status.retention`).
    pub retention: Duration,
}

/// What one batch wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusBatch {
    /// Rows of `plugins` written.
    pub plugins: usize,
    /// Rows of `plugin_hooks` written.
    pub hooks: usize,
    /// Rows added to `plugin_metrics`.
    pub metric_events: usize,
    /// Rows added to `plugin_audit`.
    pub audit_entries: usize,
}

impl StatusBatch {
    /// What writing `report` adds, counted the way every backend counts it.
    pub fn of(report: &StatusReport) -> StatusBatch {
        StatusBatch {
            plugins: report.plugins.len(),
            hooks: report.plugins.iter().map(|p| p.hooks.len()).sum(),
            metric_events: report.events.len(),
            audit_entries: report.audit.len(),
        }
    }
}

/// Where the host's status records go. A write is all or nothing: on an error nothing of the
/// report is kept, and the host sends the same events again with the next one.
#[async_trait]
pub trait StatusSink: Send + Sync + fmt::Debug + 'static {
    /// Write `report`: upsert its plugins and their hooks, mark plugins not in it `unloaded`,
    /// append its events and audit entries, and drop those older than its retention.
    async fn write(&self, report: &StatusReport) -> Result<StatusBatch, BackendError>;
}

/// Status kept in memory: the last report written (the default of a bare `Host::builder()`).
#[derive(Debug, Default)]
pub struct MemoryStatus {
    last: StdMutex<Option<StatusReport>>,
}

impl MemoryStatus {
    /// The last report written.
    pub fn last(&self) -> Option<StatusReport> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}

#[async_trait]
impl StatusSink for MemoryStatus {
    async fn write(&self, report: &StatusReport) -> Result<StatusBatch, BackendError> {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(report.clone());
        }
        Ok(StatusBatch::of(report))
    }
}

impl PluginStatus {
    fn of(p: &Loaded) -> PluginStatus {
        let state = &p.state;
        let mut hooks: Vec<(String, HookMetrics)> = state
            .hook_metrics()
            .into_iter()
            .map(|(hook, m)| (hook.as_str().to_string(), m))
            .collect();
        let routes = state.routes().snapshot();
        if routes.execution_count > 0 {
            hooks.push(("route".to_string(), routes));
        }
        PluginStatus {
            name: p.name.clone(),
            version: p
                .manifest
                .as_ref()
                .map(|m| m.version.to_string())
                .unwrap_or_default(),
            kind: p.kind.to_string(),
            status: state.status().as_str().to_string(),
            enabled: p.enabled,
            error_count: state.error_count(),
            last_error: state.last_error(),
            loaded_at: state.loaded_at(),
            load_duration_ms: state.load_duration().as_secs_f64() * 1000.0,
            hooks,
        }
    }

    fn route_executions(&self) -> u64 {
        self.hooks
            .iter()
            .find(|(h, _)| h == "route")
            .map_or(0, |(_, m)| m.execution_count)
    }
}

/// What the last written report saw of a plugin, to turn counters into events.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Seen {
    errors: u64,
    requests: u64,
    loaded_at: Option<SystemTime>,
}

/// How far a counter moved since it was seen: a counter that went down was reset (a reload
/// gives the plugin new counters), so everything it holds is new.
fn moved(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

/// The writer's memory between written reports.
#[derive(Debug, Default)]
pub(crate) struct StatusWriter {
    pub(crate) seen: HashMap<String, Seen>,
    pub(crate) audit_seq: u64,
}

impl StatusWriter {
    /// The report of `plugins` now, and the memory to keep once it is written.
    pub(crate) fn report(
        &self,
        plugins: &[Arc<Loaded>],
        audit: (Vec<AuditEntry>, u64),
        retention: Duration,
    ) -> (StatusReport, HashMap<String, Seen>, u64) {
        let statuses: Vec<PluginStatus> = plugins.iter().map(|p| PluginStatus::of(p)).collect();
        let mut seen = HashMap::new();
        let mut events = Vec::new();
        for s in &statuses {
            let before = self.seen.get(&s.name).cloned().unwrap_or_default();
            let requests_now = s.route_executions();
            let errors = moved(s.error_count, before.errors);
            let requests = moved(requests_now, before.requests);
            let mut event = |metric, value| {
                events.push(MetricEvent {
                    plugin: s.name.clone(),
                    metric,
                    value,
                })
            };
            if errors > 0 {
                event("error", errors as f64);
            }
            if requests > 0 {
                event("requests", requests as f64);
            }
            if s.loaded_at.is_some() && s.loaded_at != before.loaded_at {
                event("load_duration_ms", s.load_duration_ms);
            }
            seen.insert(
                s.name.clone(),
                Seen {
                    errors: s.error_count,
                    requests: requests_now,
                    loaded_at: s.loaded_at,
                },
            );
        }
        let report = StatusReport {
            at: SystemTime::now(),
            plugins: statuses,
            events,
            audit: audit.0,
            retention,
        };
        (report, seen, audit.1)
    }
}

/// The writer and its background task, kept in the host.
#[derive(Debug, Default)]
pub(crate) struct StatusSlot {
    pub(crate) writer: tokio::sync::Mutex<StatusWriter>,
    pub(crate) task:
        parking_lot::Mutex<Option<(tokio::task::JoinHandle<()>, Arc<tokio::sync::Notify>)>>,
}

/// The metric events of a report, per plugin and metric (for tests and tools).
pub fn events_by_plugin(report: &StatusReport) -> BTreeMap<(String, &'static str), f64> {
    let mut out = BTreeMap::new();
    for e in &report.events {
        *out.entry((e.plugin.clone(), e.metric)).or_default() += e.value;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_that_go_down_were_reset() {
        assert_eq!(moved(10, 4), 6);
        assert_eq!(moved(3, 4), 3);
        assert_eq!(moved(0, 0), 0);
    }
}
