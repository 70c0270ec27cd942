//! Plugin key/value storage in PostgreSQL: one table, `<schema>.kv (plugin, key, value bytea,
//! updated_at)` with the primary key `(plugin, key)`, shared by the fleet. Every call is one
//! statement in autocommit on a pooled connection: a write is committed when it is
//! acknowledged. The plugin is a bound parameter of every statement, so one plugin's key space
//! never reaches another's; calls of different plugins share only the pool.

use async_trait::async_trait;
use plugd_core::{BackendError, KvBackend, KvUsage};

use crate::Postgres;

/// Key/value storage in the host schema's `kv` table.
#[derive(Debug, Clone)]
pub struct PostgresKv {
    pg: Postgres,
    get: String,
    set: String,
    delete: String,
    list: String,
    clear: String,
    value_len: String,
    usage: String,
}

impl PostgresKv {
    pub(crate) fn new(pg: Postgres) -> PostgresKv {
        let t = pg.table("kv");
        PostgresKv {
            get: format!("SELECT value FROM {t} WHERE plugin = $1 AND key = $2"),
            set: format!(
                "INSERT INTO {t} (plugin, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, updated_at = now()"
            ),
            delete: format!("DELETE FROM {t} WHERE plugin = $1 AND key = $2"),
            // `left(key, n) = prefix` compares literally (no LIKE wildcards); the sort is by
            // bytes (COLLATE "C"), as every backend sorts.
            list: format!(
                "SELECT key FROM {t} WHERE plugin = $1 AND left(key, char_length($2)) = $2
                 ORDER BY key COLLATE \"C\" LIMIT $3"
            ),
            clear: format!("DELETE FROM {t} WHERE plugin = $1"),
            value_len: format!(
                "SELECT octet_length(value)::bigint FROM {t} WHERE plugin = $1 AND key = $2"
            ),
            usage: format!(
                "SELECT count(*)::bigint, coalesce(sum(octet_length(key) + octet_length(value)), 0)::bigint
                 FROM {t} WHERE plugin = $1"
            ),
            pg,
        }
    }
}

#[async_trait]
impl KvBackend for PostgresKv {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.pg
            .run(async |c| {
                let stmt = c.prepare_cached(&self.get).await?;
                Ok(c.query_opt(&stmt, &[&plugin, &key])
                    .await?
                    .map(|r| r.get(0)))
            })
            .await
    }

    async fn set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        self.pg
            .run(async |c| {
                let stmt = c.prepare_cached(&self.set).await?;
                c.execute(&stmt, &[&plugin, &key, &value]).await.map(drop)
            })
            .await
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<bool, BackendError> {
        self.pg
            .run(async |c| {
                let stmt = c.prepare_cached(&self.delete).await?;
                Ok(c.execute(&stmt, &[&plugin, &key]).await? > 0)
            })
            .await
    }

    async fn list(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pg
            .run(async |c| {
                let stmt = c.prepare_cached(&self.list).await?;
                let rows = c.query(&stmt, &[&plugin, &prefix, &limit]).await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .await
    }

    async fn clear(&self, plugin: &str) -> Result<(), BackendError> {
        self.pg
            .run(async |c| {
                let stmt = c.prepare_cached(&self.clear).await?;
                c.execute(&stmt, &[&plugin]).await.map(drop)
            })
            .await
    }

    async fn value_len(&self, plugin: &str, key: &str) -> Result<Option<u64>, BackendError> {
        self.pg
            .run(async |c| {
                let stmt = c.prepare_cached(&self.value_len).await?;
                Ok(c.query_opt(&stmt, &[&plugin, &key])
                    .await?
                    .map(|r| r.get::<_, i64>(0).max(0) as u64))
            })
            .await
    }

    async fn usage(&self, plugin: &str) -> Result<KvUsage, BackendError> {
        self.pg
            .run(async |c| {
                let stmt = c.prepare_cached(&self.usage).await?;
                let row = c.query_one(&stmt, &[&plugin]).await?;
                Ok(KvUsage {
                    keys: row.get::<_, i64>(0).max(0) as u64,
                    bytes: row.get::<_, i64>(1).max(0) as u64,
                })
            })
            .await
    }
}
