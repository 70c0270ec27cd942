//! Plugin key/value storage in SQLite: one file per plugin, `<data_dir>/plugins/<name>/kv.sqlite`
//! (WAL, mode 0600), opened on the plugin's first storage call. Every call runs on tokio's
//! blocking pool, never on an async worker, and takes only its own plugin's connection: a plugin
//! that hammers its storage never waits — or makes another wait — on anything another plugin
//! holds (SQLite's write lock is per file). A call the caller stops waiting for (its deadline)
//! is interrupted.
//!
//! Keys of an older plugd, kept in one `plugin_kv` table of `host.db`, move into the plugin's
//! file when it is first opened: nothing already stored is lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use plugd_core::{BackendError, KvBackend, KvUsage};
use rusqlite::{Connection, InterruptHandle, OptionalExtension, params};

/// How many plugins' files stay open at once; past it the least recently used idle one is
/// closed (a host of 1,000 plugins must not hold 1,000 files).
pub const MAX_OPEN_FILES: usize = 256;

const BACKEND: &str = "sqlite";

fn failed(what: impl std::fmt::Display) -> BackendError {
    BackendError::new(BACKEND, what.to_string())
}

/// One plugin's open file.
struct Space {
    conn: Mutex<Connection>,
    interrupt: InterruptHandle,
    last_used: AtomicU64,
}

/// Key/value storage in a SQLite file per plugin.
pub struct SqliteKv {
    data_dir: PathBuf,
    spaces: RwLock<HashMap<String, Arc<Space>>>,
}

impl std::fmt::Debug for SqliteKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKv")
            .field("data_dir", &self.data_dir)
            .field("open", &self.spaces.read().len())
            .finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Interrupts the statement running on a plugin's connection when the call is dropped before
/// it finished (the caller's deadline passed).
struct InterruptOnDrop<'a> {
    space: &'a Space,
    done: bool,
}

impl Drop for InterruptOnDrop<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.space.interrupt.interrupt();
        }
    }
}

impl SqliteKv {
    /// Storage under `data_dir` (which must exist; files are created on first use).
    pub fn new(data_dir: &Path) -> SqliteKv {
        SqliteKv {
            data_dir: data_dir.to_path_buf(),
            spaces: RwLock::default(),
        }
    }

    /// The file of `plugin`.
    pub fn path(&self, plugin: &str) -> PathBuf {
        self.data_dir.join("plugins").join(plugin).join("kv.sqlite")
    }

    /// The open file of `plugin`, opening (and migrating) it on first use.
    async fn space(&self, plugin: &str) -> Result<Arc<Space>, BackendError> {
        if let Some(s) = self.spaces.read().get(plugin) {
            s.last_used.store(now(), Ordering::Relaxed);
            return Ok(s.clone());
        }
        if plugin.is_empty() || plugin.contains(['/', '\\', '\0']) || plugin.starts_with('.') {
            return Err(failed(format!("'{plugin}' is not a plugin name")));
        }
        let path = self.path(plugin);
        let legacy = self.data_dir.join("host.db");
        let name = plugin.to_string();
        let space = tokio::task::spawn_blocking(move || open_space(&path, &legacy, &name))
            .await
            .map_err(failed)??;
        let mut spaces = self.spaces.write();
        let space = spaces.entry(plugin.to_string()).or_insert(space).clone();
        if spaces.len() > MAX_OPEN_FILES {
            evict_idle(&mut spaces);
        }
        Ok(space)
    }

    /// Run `f` on `plugin`'s connection, on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        plugin: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BackendError> {
        let space = self.space(plugin).await?;
        let mut guard = InterruptOnDrop {
            space: &space,
            done: false,
        };
        let for_call = space.clone();
        let result = tokio::task::spawn_blocking(move || f(&for_call.conn.lock()))
            .await
            .map_err(failed)?;
        guard.done = true;
        result.map_err(|e| failed(format!("{}: {e}", self.path(plugin).display())))
    }
}

/// Close the least recently used files nobody is using, down to the cap.
fn evict_idle(spaces: &mut HashMap<String, Arc<Space>>) {
    let mut idle: Vec<(u64, String)> = spaces
        .iter()
        .filter(|(_, s)| Arc::strong_count(s) == 1)
        .map(|(k, s)| (s.last_used.load(Ordering::Relaxed), k.clone()))
        .collect();
    idle.sort();
    let excess = spaces.len().saturating_sub(MAX_OPEN_FILES);
    for (_, name) in idle.into_iter().take(excess) {
        spaces.remove(&name);
    }
}

fn open_space(path: &Path, legacy: &Path, plugin: &str) -> Result<Arc<Space>, BackendError> {
    let at = |e: &dyn std::fmt::Display| failed(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        plugd_core::private::make_private_dir(dir).map_err(failed)?;
    }
    plugd_core::private::create_database_file(path).map_err(failed)?;
    let conn = Connection::open(path).map_err(|e| at(&e))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS kv (
             key        TEXT PRIMARY KEY,
             value      BLOB NOT NULL,
             updated_at INTEGER NOT NULL DEFAULT (unixepoch())
         ) WITHOUT ROWID;",
    )
    .map_err(|e| at(&e))?;
    plugd_core::private::restrict_database_files(path).map_err(failed)?;
    migrate_legacy(&conn, legacy, plugin).map_err(|e| {
        failed(format!(
            "moving the keys of plugin '{plugin}' from {} into {}: {e}",
            legacy.display(),
            path.display()
        ))
    })?;
    let interrupt = conn.get_interrupt_handle();
    Ok(Arc::new(Space {
        conn: Mutex::new(conn),
        interrupt,
        last_used: AtomicU64::new(now()),
    }))
}

/// Move `plugin`'s rows of an older plugd's `host.db` table `plugin_kv` into its own file. The
/// copy keeps keys the file already has (a copy that was interrupted before the delete), and
/// the rows leave `host.db` only once they are in the file.
fn migrate_legacy(conn: &Connection, legacy: &Path, plugin: &str) -> rusqlite::Result<()> {
    if !legacy.exists() {
        return Ok(());
    }
    let old = Connection::open(legacy)?;
    old.busy_timeout(std::time::Duration::from_secs(5))?;
    let has_table: bool = old
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plugin_kv'",
            [],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if !has_table {
        return Ok(());
    }
    let rows: Vec<(String, Vec<u8>)> = old
        .prepare("SELECT key, value FROM plugin_kv WHERE plugin = ?1")?
        .query_map([plugin], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok(());
    }
    conn.execute_batch("BEGIN")?;
    for (key, value) in &rows {
        conn.execute(
            "INSERT OR IGNORE INTO kv (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
    }
    conn.execute_batch("COMMIT")?;
    old.execute("DELETE FROM plugin_kv WHERE plugin = ?1", [plugin])?;
    tracing::info!(
        plugin,
        keys = rows.len(),
        "moved the plugin's keys from host.db into its own file"
    );
    Ok(())
}

#[async_trait]
impl KvBackend for SqliteKv {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let key = key.to_string();
        self.run(plugin, move |c| {
            c.prepare_cached("SELECT value FROM kv WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        let key = key.to_string();
        self.run(plugin, move |c| {
            c.prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = unixepoch()",
            )?
            .execute(params![key, value])
            .map(drop)
        })
        .await
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<bool, BackendError> {
        let key = key.to_string();
        self.run(plugin, move |c| {
            c.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                .execute([key])
                .map(|n| n > 0)
        })
        .await
    }

    async fn list(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let prefix = prefix.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(plugin, move |c| {
            c.prepare_cached(
                "SELECT key FROM kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key LIMIT ?2",
            )?
            .query_map(params![prefix, limit], |r| r.get(0))?
            .collect()
        })
        .await
    }

    async fn value_len(&self, plugin: &str, key: &str) -> Result<Option<u64>, BackendError> {
        let key = key.to_string();
        self.run(plugin, move |c| {
            c.prepare_cached("SELECT length(value) FROM kv WHERE key = ?1")?
                .query_row([key], |r| r.get::<_, i64>(0))
                .optional()
                .map(|n| n.map(|n| n.max(0) as u64))
        })
        .await
    }

    async fn usage(&self, plugin: &str) -> Result<KvUsage, BackendError> {
        self.run(plugin, |c| {
            // Bytes, not characters: a key is counted as the core counts it (UTF-8 length).
            c.query_row(
                "SELECT count(*), coalesce(sum(length(CAST(key AS BLOB)) + length(value)), 0) FROM kv",
                [],
                |r| {
                    Ok(KvUsage {
                        keys: r.get::<_, i64>(0)?.max(0) as u64,
                        bytes: r.get::<_, i64>(1)?.max(0) as u64,
                    })
                },
            )
        })
        .await
    }

    async fn clear(&self, plugin: &str) -> Result<(), BackendError> {
        self.run(plugin, |c| c.execute("DELETE FROM kv", []).map(drop))
            .await
    }
}
