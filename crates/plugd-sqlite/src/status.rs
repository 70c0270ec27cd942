//! The status tables of `host.db`, shaped like the contract's dashboard expects
//! (docs/design.md#state): `plugins` (one row per plugin), `plugin_hooks` (one row per plugin and
//! hook type, `route` included), `plugin_metrics` (one row per metric event) and `plugin_audit`
//! (denied calls). The core computes each [`StatusReport`]; this writes it in one transaction, on
//! the blocking pool.
//!
//! Times are UTC text in SQLite's own format (`2026-11-22 08:30:00.123`), so that
//! `recorded_at > datetime('now', '-1 hour')` works as written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use parking_lot::Mutex;
use plugd_core::{BackendError, StatusBatch, StatusReport, StatusSink};
use rusqlite::{Connection, params};

use crate::SqliteError;

/// A time as SQLite writes it: `YYYY-MM-DD HH:MM:SS.fff`, UTC.
pub fn sql_time(at: SystemTime) -> String {
    rfc3339_to_sql(&humantime::format_rfc3339_millis(at).to_string())
}

/// `2026-11-22T08:30:00.123Z` → `2026-11-22 08:30:00.123`.
fn rfc3339_to_sql(t: &str) -> String {
    t.trim_end_matches('Z').replacen('T', " ", 1)
}

/// The tables, created when `host.db` is opened.
pub const SCHEMA: &str = "
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

/// `host.db`: the status tables, written by the host's status task and read by operators.
#[derive(Clone)]
pub struct StatusDb {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for StatusDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusDb")
            .field("path", &self.path)
            .finish()
    }
}

impl StatusDb {
    /// Open (or create) `host.db` in `data_dir`, mode 0600 with its `-wal` and `-shm`.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = plugd_sqlite::StatusDb::open(dir.path()).unwrap();
    /// let rows = db.query("SELECT count(*) AS n FROM plugins", &[]).unwrap();
    /// assert_eq!(rows[0]["n"], "0");
    /// ```
    pub fn open(data_dir: &Path) -> Result<StatusDb, SqliteError> {
        plugd_core::private::make_data_dir(data_dir).map_err(SqliteError::Files)?;
        let path = data_dir.join("host.db");
        plugd_core::private::create_database_file(&path).map_err(SqliteError::Files)?;
        let open = |e| SqliteError::Open {
            path: path.clone(),
            source: e,
        };
        let conn = Connection::open(&path).map_err(open)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;",
        )
        .and_then(|()| conn.execute_batch(SCHEMA))
        .map_err(open)?;
        plugd_core::private::restrict_database_files(&path).map_err(SqliteError::Files)?;
        Ok(StatusDb {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Run a read query on `host.db` (the status tables) with named parameters; each row maps
    /// column names to values as text (`NULL` for null). Anything but a read is refused.
    pub fn query(
        &self,
        sql: &str,
        named: &[(&str, &str)],
    ) -> Result<Vec<BTreeMap<String, String>>, SqliteError> {
        query_rows(&self.conn.lock(), sql, named).map_err(|source| SqliteError::Query {
            path: self.path.clone(),
            source,
        })
    }
}

#[async_trait]
impl StatusSink for StatusDb {
    async fn write(&self, report: &StatusReport) -> Result<StatusBatch, BackendError> {
        let conn = self.conn.clone();
        let report = report.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write(&mut conn.lock(), &report))
            .await
            .map_err(|e| BackendError::new("sqlite", e.to_string()))?
            .map_err(|e| BackendError::new("sqlite", format!("{}: {e}", path.display())))
    }
}

/// Write one report in one transaction; on an error nothing of it is kept.
fn write(conn: &mut Connection, report: &StatusReport) -> rusqlite::Result<StatusBatch> {
    let at = sql_time(report.at);
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
        for s in &report.plugins {
            let (last_error, last_error_at) = match &s.last_error {
                Some(e) => (Some(e.message.as_str()), Some(rfc3339_to_sql(&e.at))),
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
            for (hook, m) in &s.hooks {
                upsert_hook.execute(params![
                    s.name,
                    hook,
                    m.execution_count as i64,
                    m.total_duration_us as f64 / 1000.0,
                    m.error_count as i64,
                    at,
                ])?;
            }
        }

        // Plugins the host no longer holds stay listed, as unloaded.
        let present: std::collections::HashSet<&str> =
            report.plugins.iter().map(|s| s.name.as_str()).collect();
        let listed: Vec<String> = tx
            .prepare_cached("SELECT name FROM plugins WHERE status != 'unloaded'")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for name in listed.iter().filter(|n| !present.contains(n.as_str())) {
            tx.execute(
                "UPDATE plugins SET status = 'unloaded', updated_at = ?2 WHERE name = ?1",
                params![name, at],
            )?;
        }

        let mut event = tx.prepare_cached(
            "INSERT INTO plugin_metrics (plugin_name, metric_name, metric_value, recorded_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for e in &report.events {
            event.execute(params![e.plugin, e.metric, e.value, at])?;
        }
        let mut audit_row = tx.prepare_cached(
            "INSERT INTO plugin_audit (plugin_name, capability, detail, recorded_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for e in &report.audit {
            audit_row.execute(params![
                e.plugin,
                e.capability,
                e.detail,
                rfc3339_to_sql(&e.at)
            ])?;
        }

        let cutoff = sql_time(
            report
                .at
                .checked_sub(report.retention)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
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
    Ok(StatusBatch::of(report))
}

/// The contract's dashboard queries (docs/design.md#state), in SQLite (the README shows them; a
/// test runs them).
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
    use std::time::Duration;

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
