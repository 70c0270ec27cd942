//! The status tables of `host.db`, shaped like the seed's: `plugins` (one row per plugin),
//! `plugin_hooks` (one row per plugin and hook type, `route` included) and `plugin_metrics`
//! (one row per metric event), with `plugin_audit` for denied calls.
//!
//! The request path only bumps the atomic counters it always did. A background task reads them
//! every `status.interval` and writes everything in one transaction, so the database sees one
//! write batch per interval whatever the traffic. A failed batch (a full disk, say) rolls back
//! and is retried at the next tick: nothing already stored is lost, and the counters it missed
//! are still in memory.
//!
//! Times are UTC text in SQLite's own format (`2026-11-22 08:30:00.123`), so that
//! `recorded_at > datetime('now', '-1 hour')` works as written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};

use crate::audit::AuditEntry;
use crate::error::HostError;
use crate::host::{Host, Loaded};
use crate::state::HookMetrics;

/// The tables, created when `host.db` is opened.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS plugins (
    name             TEXT PRIMARY KEY,
    version          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    enabled          INTEGER NOT NULL,
    error_count      INTEGER NOT NULL,
    last_error       TEXT,
    last_error_at    TEXT,
    loaded_at        TEXT,
    load_duration_ms REAL NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plugin_hooks (
    plugin_name       TEXT NOT NULL,
    hook_type         TEXT NOT NULL,
    execution_count   INTEGER NOT NULL,
    total_duration_ms REAL NOT NULL,
    error_count       INTEGER NOT NULL,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (plugin_name, hook_type)
);
CREATE TABLE IF NOT EXISTS plugin_metrics (
    id           INTEGER PRIMARY KEY,
    plugin_name  TEXT NOT NULL,
    metric_name  TEXT NOT NULL,
    metric_value REAL NOT NULL,
    recorded_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS plugin_metrics_by_name
    ON plugin_metrics (plugin_name, metric_name, recorded_at);
CREATE TABLE IF NOT EXISTS plugin_audit (
    id          INTEGER PRIMARY KEY,
    plugin_name TEXT NOT NULL,
    capability  TEXT NOT NULL,
    detail      TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
";

/// A time as SQLite writes it: `YYYY-MM-DD HH:MM:SS.fff`, UTC.
pub(crate) fn sql_time(at: SystemTime) -> String {
    rfc3339_to_sql(&humantime::format_rfc3339_millis(at).to_string())
}

/// `2026-11-22T08:30:00.123Z` → `2026-11-22 08:30:00.123`.
fn rfc3339_to_sql(t: &str) -> String {
    t.trim_end_matches('Z').replacen('T', " ", 1)
}

/// What one plugin looked like at a tick.
struct Snapshot {
    name: String,
    version: String,
    kind: &'static str,
    status: &'static str,
    enabled: bool,
    error_count: u64,
    last_error: Option<(String, String)>,
    loaded_at: Option<SystemTime>,
    load_duration_ms: f64,
    hooks: Vec<(&'static str, HookMetrics)>,
    route_executions: u64,
}

impl Snapshot {
    fn of(p: &Loaded) -> Snapshot {
        let state = &p.state;
        let mut hooks: Vec<(&'static str, HookMetrics)> = state
            .hook_metrics()
            .into_iter()
            .map(|(hook, m)| (hook.as_str(), m))
            .collect();
        let routes = state.routes().snapshot();
        if routes.execution_count > 0 {
            hooks.push(("route", routes));
        }
        Snapshot {
            name: p.name.clone(),
            version: p
                .manifest
                .as_ref()
                .map(|m| m.version.to_string())
                .unwrap_or_default(),
            kind: p.kind,
            status: state.status().as_str(),
            enabled: p.enabled,
            error_count: state.error_count(),
            last_error: state
                .last_error()
                .map(|e| (e.message, rfc3339_to_sql(&e.at))),
            loaded_at: state.loaded_at(),
            load_duration_ms: state.load_duration().as_secs_f64() * 1000.0,
            hooks,
            route_executions: routes.execution_count,
        }
    }
}

/// What the previous successful batch saw of a plugin, to turn counters into events.
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    errors: u64,
    requests: u64,
    loaded_at: Option<SystemTime>,
}

/// How far a counter moved since it was seen: a counter that went down was reset (a reload
/// gives the plugin new counters), so everything it holds is new.
fn moved(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

/// The writer's memory between batches.
#[derive(Debug, Default)]
pub(crate) struct StatusWriter {
    seen: HashMap<String, Seen>,
    audit_seq: u64,
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

impl StatusWriter {
    /// Write one batch: every plugin of `plugins`, the metric events since the last batch, and
    /// the audit entries after `audit_seq`. One transaction; on error nothing is written and
    /// the writer's memory is unchanged, so the next batch covers the same events.
    pub(crate) fn write(
        &mut self,
        conn: &mut Connection,
        plugins: &[Arc<Loaded>],
        audit: (Vec<AuditEntry>, u64),
        retention: Duration,
    ) -> rusqlite::Result<StatusBatch> {
        let now = SystemTime::now();
        let at = sql_time(now);
        let snapshots: Vec<Snapshot> = plugins.iter().map(|p| Snapshot::of(p)).collect();
        let mut seen = self.seen.clone();
        let mut batch = StatusBatch::default();
        let tx = conn.transaction()?;
        {
            let mut upsert_plugin = tx.prepare_cached(
                "INSERT INTO plugins (name, version, kind, status, enabled, error_count,
                     last_error, last_error_at, loaded_at, load_duration_ms, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (name) DO UPDATE SET
                     version = excluded.version, kind = excluded.kind, status = excluded.status,
                     enabled = excluded.enabled, error_count = excluded.error_count,
                     last_error = excluded.last_error, last_error_at = excluded.last_error_at,
                     loaded_at = excluded.loaded_at, load_duration_ms = excluded.load_duration_ms,
                     updated_at = excluded.updated_at",
            )?;
            let mut upsert_hook = tx.prepare_cached(
                "INSERT INTO plugin_hooks (plugin_name, hook_type, execution_count,
                     total_duration_ms, error_count, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (plugin_name, hook_type) DO UPDATE SET
                     execution_count = excluded.execution_count,
                     total_duration_ms = excluded.total_duration_ms,
                     error_count = excluded.error_count, updated_at = excluded.updated_at",
            )?;
            let mut event = tx.prepare_cached(
                "INSERT INTO plugin_metrics (plugin_name, metric_name, metric_value, recorded_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for s in &snapshots {
                let (last_error, last_error_at) = match &s.last_error {
                    Some((message, at)) => (Some(message.as_str()), Some(at.as_str())),
                    None => (None, None),
                };
                upsert_plugin.execute(params![
                    s.name,
                    s.version,
                    s.kind,
                    s.status,
                    s.enabled,
                    s.error_count as i64,
                    last_error,
                    last_error_at,
                    s.loaded_at.map(sql_time),
                    s.load_duration_ms,
                    at,
                ])?;
                batch.plugins += 1;
                for (hook, m) in &s.hooks {
                    upsert_hook.execute(params![
                        s.name,
                        hook,
                        m.execution_count as i64,
                        m.total_duration_us as f64 / 1000.0,
                        m.error_count as i64,
                        at,
                    ])?;
                    batch.hooks += 1;
                }

                let before = seen.get(&s.name).cloned().unwrap_or_default();
                let errors = moved(s.error_count, before.errors);
                let requests = moved(s.route_executions, before.requests);
                let mut events: Vec<(&str, f64)> = Vec::new();
                if errors > 0 {
                    events.push(("error", errors as f64));
                }
                if requests > 0 {
                    events.push(("requests", requests as f64));
                }
                if s.loaded_at.is_some() && s.loaded_at != before.loaded_at {
                    events.push(("load_duration_ms", s.load_duration_ms));
                }
                for (name, value) in events {
                    event.execute(params![s.name, name, value, at])?;
                    batch.metric_events += 1;
                }
                seen.insert(
                    s.name.clone(),
                    Seen {
                        errors: s.error_count,
                        requests: s.route_executions,
                        loaded_at: s.loaded_at,
                    },
                );
            }

            // Plugins the host no longer holds stay listed, as unloaded.
            let present: std::collections::HashSet<&str> =
                snapshots.iter().map(|s| s.name.as_str()).collect();
            let listed: Vec<String> = tx
                .prepare_cached("SELECT name FROM plugins WHERE status != 'unloaded'")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            for name in listed.iter().filter(|n| !present.contains(n.as_str())) {
                tx.execute(
                    "UPDATE plugins SET status = 'unloaded', updated_at = ?2 WHERE name = ?1",
                    params![name, at],
                )?;
                seen.remove(name);
            }

            let mut audit_row = tx.prepare_cached(
                "INSERT INTO plugin_audit (plugin_name, capability, detail, recorded_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for e in &audit.0 {
                audit_row.execute(params![
                    e.plugin,
                    e.capability,
                    e.detail,
                    rfc3339_to_sql(&e.at)
                ])?;
                batch.audit_entries += 1;
            }

            let cutoff = sql_time(now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH));
            tx.execute(
                "DELETE FROM plugin_metrics WHERE recorded_at < ?1",
                params![cutoff],
            )?;
            tx.execute(
                "DELETE FROM plugin_audit WHERE recorded_at < ?1",
                params![cutoff],
            )?;
        }
        tx.commit()?;
        self.seen = seen;
        self.audit_seq = audit.1;
        Ok(batch)
    }
}

/// The writer and its background task, kept in the host.
#[derive(Debug, Default)]
pub(crate) struct StatusSlot {
    writer: parking_lot::Mutex<StatusWriter>,
    task: parking_lot::Mutex<Option<(tokio::task::JoinHandle<()>, Arc<tokio::sync::Notify>)>>,
}

impl Host {
    /// Write the status tables of `host.db` now, in one transaction: one row per plugin in
    /// `plugins`, one per plugin and hook type in `plugin_hooks`, the events since the last
    /// batch in `plugin_metrics` (`error` and `requests` counts, `load_duration_ms` after a
    /// load), and new denied calls in `plugin_audit`. A background task does this every
    /// `status.interval` while the host runs, and once more when it stops.
    pub fn write_status(&self) -> Result<StatusBatch, HostError> {
        let inner = &self.inner;
        let plugins = inner.plugins.read().clone();
        let mut writer = inner.status.writer.lock();
        let audit = inner.audit.since(writer.audit_seq);
        let retention = inner.config.status.retention;
        let conn = inner.store.connection().clone();
        let mut conn = conn.lock();
        writer
            .write(&mut conn, &plugins, audit, retention)
            .map_err(|e| HostError::Failed(format!("writing the status tables of host.db: {e}")))
    }

    /// Start the background writer, when `status.enabled` and not running yet.
    pub(crate) fn ensure_status_writer(&self) {
        let settings = &self.inner.config.status;
        if !settings.enabled || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut task = self.inner.status.task.lock();
        if task.as_ref().is_some_and(|(t, _)| !t.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let stop = Arc::new(tokio::sync::Notify::new());
        let every = settings.interval;
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopped.notified() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let host = Host { inner };
                let written = tokio::task::spawn_blocking(move || host.write_status()).await;
                match written {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "status tables not written; retrying at the next tick")
                    }
                    Err(e) => tracing::warn!(error = %e, "status writer failed"),
                }
            }
        });
        *task = Some((handle, stop));
    }

    /// Stop the background writer and write a last batch (at shutdown).
    pub(crate) async fn stop_status_writer(&self) {
        let task = self.inner.status.task.lock().take();
        let Some((handle, stop)) = task else { return };
        stop.notify_one();
        let _ = handle.await;
        let host = self.clone();
        match tokio::task::spawn_blocking(move || host.write_status()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "last status batch not written"),
            Err(e) => tracing::warn!(error = %e, "status writer failed"),
        }
    }
}

/// The seed's dashboard queries, in SQLite (the README shows them; a test runs them).
pub const DASHBOARD_QUERIES: [(&str, &str); 6] = [
    (
        "plugin status",
        "SELECT name, status, error_count, last_error_at
FROM plugins
WHERE status != 'running'
ORDER BY error_count DESC",
    ),
    (
        "hook performance",
        "SELECT plugin_name, hook_type,
       execution_count,
       total_duration_ms / execution_count AS avg_duration_ms,
       error_count
FROM plugin_hooks
WHERE execution_count > 0
ORDER BY avg_duration_ms DESC",
    ),
    (
        "error trends",
        "SELECT plugin_name,
       SUM(metric_value) AS error_count,
       MAX(recorded_at) AS last_error
FROM plugin_metrics
WHERE metric_name = 'error'
  AND recorded_at > datetime('now', '-1 hour')
GROUP BY plugin_name
ORDER BY error_count DESC",
    ),
    (
        "one plugin's status",
        "SELECT name, status, error_count, last_error
FROM plugins
WHERE name = :plugin",
    ),
    (
        "one plugin's hooks",
        "SELECT hook_type, execution_count, total_duration_ms, error_count
FROM plugin_hooks
WHERE plugin_name = :plugin",
    ),
    (
        "one plugin's recent errors",
        "SELECT metric_name, metric_value, recorded_at
FROM plugin_metrics
WHERE plugin_name = :plugin
  AND metric_name = 'error'
ORDER BY recorded_at DESC
LIMIT 10",
    ),
];

/// Rows of a query as text, for tools and tests.
pub fn query_rows(
    conn: &Connection,
    sql: &str,
    named: &[(&str, &str)],
) -> rusqlite::Result<Vec<BTreeMap<String, String>>> {
    let mut stmt = conn.prepare(sql)?;
    if !stmt.readonly() {
        return Err(rusqlite::Error::InvalidQuery);
    }
    let names: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let params: Vec<(&str, &dyn rusqlite::ToSql)> = named
        .iter()
        .map(|(k, v)| (*k, v as &dyn rusqlite::ToSql))
        .collect();
    let rows = stmt.query_map(params.as_slice(), |row| {
        let mut out = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let text = match row.get_ref(i)? {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Real(f) => f.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(b) => format!("<{} bytes>", b.len()),
            };
            out.insert(name.clone(), text);
        }
        Ok(out)
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_compare_as_sqlite_times() {
        let t = sql_time(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert_eq!(t, "2023-11-14 22:13:20.123");
        let conn = Connection::open_in_memory().unwrap();
        let later: bool = conn
            .query_row(
                "SELECT ?1 > datetime('2023-11-14 22:13:20', '-1 hour')",
                [&t],
                |r| r.get(0),
            )
            .unwrap();
        assert!(later);
        let earlier: bool = conn
            .query_row(
                "SELECT ?1 > datetime('2023-11-14 22:13:20', '+1 minute')",
                [&t],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!earlier);
    }

    #[test]
    fn counters_that_go_down_were_reset() {
        assert_eq!(moved(10, 4), 6);
        assert_eq!(moved(3, 4), 3);
        assert_eq!(moved(0, 0), 0);
    }

    #[test]
    fn the_readme_shows_the_queries_that_are_tested() {
        let readme = include_str!("../../../README.md");
        for (name, sql) in DASHBOARD_QUERIES {
            assert!(
                readme.contains(&format!("{sql};")),
                "README.md lacks the query '{name}' as written in DASHBOARD_QUERIES"
            );
        }
    }

    #[test]
    fn dashboard_queries_prepare_against_the_schema() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        for (name, sql) in DASHBOARD_QUERIES {
            let named: &[(&str, &str)] = if sql.contains(":plugin") {
                &[(":plugin", "x")]
            } else {
                &[]
            };
            let rows = query_rows(&conn, sql, named).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(rows.is_empty(), "{name}");
        }
    }
}
