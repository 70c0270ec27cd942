//! The host's status tables in PostgreSQL, shared by a fleet: the tables of `plugd-sqlite`'s
//! `host.db` (`plugins`, `plugin_hooks`, `plugin_metrics`, `plugin_audit`) with an `instance`
//! column in each, leading their keys. A host writes each report in one transaction (all or
//! nothing) and touches only its own instance's rows: marking plugins `unloaded`, dropping
//! events past the retention. [`fleet_plugins`](crate::Postgres::fleet_plugins) reads every
//! instance's plugins for the admin API.

use std::time::SystemTime;

use async_trait::async_trait;
use plugd_core::{BackendError, StatusBatch, StatusReport, StatusSink};

use crate::{Postgres, PostgresError, pg_message, quoted};

/// The host schema: the storage table and the status tables, created when missing; and what
/// PUBLIC may not do (create in `public`, use the host schema, create TEMP objects in
/// `database`), so that no plugin role has it.
pub(crate) fn schema_sql(schema: &str, database: &str) -> String {
    let s = quoted(schema);
    let db = quoted(database);
    format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {s}.kv (
    plugin     TEXT NOT NULL,
    key        TEXT COLLATE \"C\" NOT NULL,
    value      BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin, key)
);
CREATE TABLE IF NOT EXISTS {s}.plugins (
    instance         TEXT NOT NULL,
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    enabled          BOOLEAN NOT NULL,
    error_count      BIGINT NOT NULL,
    last_error       TEXT,
    last_error_at    TIMESTAMPTZ,
    loaded_at        TIMESTAMPTZ,
    load_duration_ms DOUBLE PRECISION NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (instance, name)
);
CREATE TABLE IF NOT EXISTS {s}.plugin_hooks (
    instance          TEXT NOT NULL,
    plugin_name       TEXT NOT NULL,
    hook_type         TEXT NOT NULL,
    execution_count   BIGINT NOT NULL,
    total_duration_ms DOUBLE PRECISION NOT NULL,
    error_count       BIGINT NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (instance, plugin_name, hook_type)
);
CREATE TABLE IF NOT EXISTS {s}.plugin_metrics (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance     TEXT NOT NULL,
    plugin_name  TEXT NOT NULL,
    metric_name  TEXT NOT NULL,
    metric_value DOUBLE PRECISION NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS plugin_metrics_by_name
    ON {s}.plugin_metrics (instance, plugin_name, metric_name, recorded_at);
CREATE TABLE IF NOT EXISTS {s}.plugin_audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance    TEXT NOT NULL,
    plugin_name TEXT NOT NULL,
    capability  TEXT NOT NULL,
    detail      TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS plugin_audit_by_time ON {s}.plugin_audit (instance, recorded_at);
"
    )
}

/// One plugin of one instance of the fleet, as that instance last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPlugin {
    /// The instance (`PostgresStatus`'s name).
    pub instance: String,
    /// The plugin.
    pub plugin: String,
    /// Its version ("" without a manifest).
    pub version: String,
    /// Its status (`running`, `error`, `unloaded`, …).
    pub status: String,
    /// When the instance last wrote the row.
    pub updated_at: SystemTime,
}

pub(crate) async fn fleet_plugins(pg: &Postgres) -> Result<Vec<FleetPlugin>, PostgresError> {
    let sql = format!(
        "SELECT instance, name, version, status, updated_at FROM {} ORDER BY instance, name",
        pg.table("plugins")
    );
    pg.run(async |c| c.query(&sql, &[]).await)
        .await
        .map_err(|e| {
            let prefix = format!("PostgreSQL at {}: ", pg.server());
            pg.query_error(e.message.strip_prefix(&prefix).unwrap_or(&e.message))
        })
        .map(|rows| {
            rows.iter()
                .map(|r| FleetPlugin {
                    instance: r.get(0),
                    plugin: r.get(1),
                    version: r.get(2),
                    status: r.get(3),
                    updated_at: r.get(4),
                })
                .collect()
        })
}

/// The status tables of one instance of the fleet.
#[derive(Debug, Clone)]
pub struct PostgresStatus {
    pg: Postgres,
    instance: String,
}

impl PostgresStatus {
    pub(crate) fn new(pg: Postgres, instance: &str) -> PostgresStatus {
        PostgresStatus {
            pg,
            instance: instance.to_string(),
        }
    }

    /// The instance whose rows this writes.
    pub fn instance(&self) -> &str {
        &self.instance
    }
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()
}

#[async_trait]
impl StatusSink for PostgresStatus {
    async fn write(&self, report: &StatusReport) -> Result<StatusBatch, BackendError> {
        let pg = &self.pg;
        let mut client = pg.client().await?;
        let work = write(pg, &mut client, &self.instance, report);
        match tokio::time::timeout(pg.options().timeout, work).await {
            Ok(r) => {
                r.map_err(|e| pg.backend_error(format!("writing the status: {}", pg_message(&e))))
            }
            Err(_) => Err(pg.backend_error(format!(
                "writing the status took longer than {} and was rolled back",
                humantime::format_duration(pg.options().timeout)
            ))),
        }
    }
}

/// Write one report of `instance` in one transaction; on an error nothing of it is kept.
async fn write(
    pg: &Postgres,
    client: &mut deadpool_postgres::Object,
    instance: &str,
    report: &StatusReport,
) -> Result<StatusBatch, tokio_postgres::Error> {
    let (plugins, hooks, metrics, audit) = (
        pg.table("plugins"),
        pg.table("plugin_hooks"),
        pg.table("plugin_metrics"),
        pg.table("plugin_audit"),
    );
    let at = report.at;
    let tx = client.transaction().await?;
    let upsert_plugin = tx
        .prepare_cached(&format!(
            "INSERT INTO {plugins} (instance, name, version, kind, status, enabled, error_count,
                 last_error, last_error_at, loaded_at, load_duration_ms, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (instance, name) DO UPDATE SET
                 version = excluded.version, kind = excluded.kind, status = excluded.status,
                 enabled = excluded.enabled, error_count = excluded.error_count,
                 last_error = excluded.last_error, last_error_at = excluded.last_error_at,
                 loaded_at = excluded.loaded_at, load_duration_ms = excluded.load_duration_ms,
                 updated_at = excluded.updated_at"
        ))
        .await?;
    let upsert_hook = tx
        .prepare_cached(&format!(
            "INSERT INTO {hooks} (instance, plugin_name, hook_type, execution_count,
                 total_duration_ms, error_count, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (instance, plugin_name, hook_type) DO UPDATE SET
                 execution_count = excluded.execution_count,
                 total_duration_ms = excluded.total_duration_ms,
                 error_count = excluded.error_count, updated_at = excluded.updated_at"
        ))
        .await?;
    for s in &report.plugins {
        let (last_error, last_error_at) = match &s.last_error {
            Some(e) => (Some(e.message.as_str()), parse_time(&e.at)),
            None => (None, None),
        };
        tx.execute(
            &upsert_plugin,
            &[
                &instance,
                &s.name,
                &s.version,
                &s.kind,
                &s.status,
                &s.enabled,
                &(s.error_count as i64),
                &last_error,
                &last_error_at,
                &s.loaded_at,
                &s.load_duration_ms,
                &at,
            ],
        )
        .await?;
        for (hook, m) in &s.hooks {
            tx.execute(
                &upsert_hook,
                &[
                    &instance,
                    &s.name,
                    hook,
                    &(m.execution_count as i64),
                    &(m.total_duration_us as f64 / 1000.0),
                    &(m.error_count as i64),
                    &at,
                ],
            )
            .await?;
        }
    }
    // Plugins this instance no longer holds stay listed, as unloaded; other instances' rows
    // are theirs.
    let present: Vec<&str> = report.plugins.iter().map(|s| s.name.as_str()).collect();
    tx.execute(
        &format!(
            "UPDATE {plugins} SET status = 'unloaded', updated_at = $2
             WHERE instance = $1 AND status <> 'unloaded' AND NOT (name = ANY($3))"
        ),
        &[&instance, &at, &present],
    )
    .await?;
    let event = tx
        .prepare_cached(&format!(
            "INSERT INTO {metrics} (instance, plugin_name, metric_name, metric_value, recorded_at)
             VALUES ($1, $2, $3, $4, $5)"
        ))
        .await?;
    for e in &report.events {
        tx.execute(&event, &[&instance, &e.plugin, &e.metric, &e.value, &at])
            .await?;
    }
    let audit_row = tx
        .prepare_cached(&format!(
            "INSERT INTO {audit} (instance, plugin_name, capability, detail, recorded_at)
             VALUES ($1, $2, $3, $4, $5)"
        ))
        .await?;
    for e in &report.audit {
        let when = parse_time(&e.at).unwrap_or(at);
        tx.execute(
            &audit_row,
            &[&instance, &e.plugin, &e.capability, &e.detail, &when],
        )
        .await?;
    }
    let cutoff = at
        .checked_sub(report.retention)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    tx.execute(
        &format!("DELETE FROM {metrics} WHERE instance = $1 AND recorded_at < $2"),
        &[&instance, &cutoff],
    )
    .await?;
    tx.execute(
        &format!("DELETE FROM {audit} WHERE instance = $1 AND recorded_at < $2"),
        &[&instance, &cutoff],
    )
    .await?;
    tx.commit().await?;
    Ok(StatusBatch::of(report))
}
