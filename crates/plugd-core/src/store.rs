//! Plugin key/value storage: one SQLite database (`host.db`, WAL) under the data directory, one
//! key space per plugin. A plugin's handle carries its name; it cannot name another's keys.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::HostError;

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// The host's database.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Open (or create) `host.db` in `data_dir`. The folder is made mode 0700 and `host.db`
    /// (with its `-wal` and `-shm`) 0600, whatever the umask: plugin storage is for plugd's
    /// user only.
    pub fn open(data_dir: &Path) -> Result<Store, String> {
        crate::private::make_data_dir(data_dir)?;
        let path = data_dir.join("host.db");
        crate::private::create_database_file(&path)?;
        let conn =
            Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let store = Store::init(conn).map_err(|e| format!("{}: {e}", path.display()))?;
        // The WAL files exist now (made with the database's mode; tighten leftovers).
        crate::private::restrict_database_files(&path)?;
        Ok(store)
    }

    /// A store in memory, for tests and tools.
    pub fn in_memory() -> Result<Store, String> {
        Connection::open_in_memory()
            .map_err(|e| e.to_string())
            .and_then(Store::init)
    }

    fn init(conn: Connection) -> Result<Store, String> {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS plugin_kv (
                 plugin TEXT NOT NULL,
                 key    TEXT NOT NULL,
                 value  BLOB NOT NULL,
                 updated_at INTEGER NOT NULL DEFAULT (unixepoch()),
                 PRIMARY KEY (plugin, key)
             ) WITHOUT ROWID;",
        )
        .and_then(|()| conn.execute_batch(crate::status::SCHEMA))
        .map_err(|e| e.to_string())?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Run a read query on `host.db` (the status tables, say) with named parameters; each row
    /// maps column names to values as text (`NULL` for null).
    ///
    /// ```
    /// let store = plugd_core::Store::in_memory().unwrap();
    /// let rows = store.query("SELECT count(*) AS n FROM plugins", &[]).unwrap();
    /// assert_eq!(rows[0]["n"], "0");
    /// ```
    pub fn query(
        &self,
        sql: &str,
        named: &[(&str, &str)],
    ) -> Result<Vec<std::collections::BTreeMap<String, String>>, HostError> {
        crate::status::query_rows(&self.conn.lock(), sql, named)
            .map_err(|e| HostError::Invalid(format!("host.db query: {e}")))
    }

    /// The connection, for the status writer.
    pub(crate) fn connection(&self) -> &Arc<Mutex<Connection>> {
        &self.conn
    }

    /// The storage of one plugin.
    pub fn plugin(&self, name: &str) -> PluginStore {
        PluginStore {
            plugin: Arc::from(name),
            conn: self.conn.clone(),
        }
    }
}

/// One plugin's key space.
#[derive(Debug, Clone)]
pub struct PluginStore {
    plugin: Arc<str>,
    conn: Arc<Mutex<Connection>>,
}

fn failed(e: rusqlite::Error) -> HostError {
    HostError::Failed(format!("storage: {e}"))
}

fn check_key(key: &str) -> Result<(), HostError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(HostError::Invalid(format!(
            "storage key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

impl PluginStore {
    /// The plugin this handle belongs to.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Read a value.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        check_key(key)?;
        self.conn
            .lock()
            .query_row(
                "SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
                params![&*self.plugin, key],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed)
    }

    /// Write a value.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(HostError::Invalid(format!(
                "storage value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            )));
        }
        self.conn
            .lock()
            .execute(
                "INSERT INTO plugin_kv (plugin, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, updated_at = unixepoch()",
                params![&*self.plugin, key, value],
            )
            .map(drop)
            .map_err(failed)
    }

    /// Delete a key; true when it existed.
    pub fn delete(&self, key: &str) -> Result<bool, HostError> {
        check_key(key)?;
        self.conn
            .lock()
            .execute(
                "DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
                params![&*self.plugin, key],
            )
            .map(|n| n > 0)
            .map_err(failed)
    }

    /// Keys that start with `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, HostError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key FROM plugin_kv WHERE plugin = ?1 AND substr(key, 1, length(?2)) = ?2 ORDER BY key",
            )
            .map_err(failed)?;
        let rows = stmt
            .query_map(params![&*self.plugin, prefix], |row| row.get(0))
            .map_err(failed)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(failed)
    }

    /// Delete every key.
    pub fn clear(&self) -> Result<(), HostError> {
        self.conn
            .lock()
            .execute(
                "DELETE FROM plugin_kv WHERE plugin = ?1",
                params![&*self.plugin],
            )
            .map(drop)
            .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_cannot_see_each_others_keys() {
        let store = Store::in_memory().unwrap();
        let a = store.plugin("a");
        let b = store.plugin("b");
        a.set("k", b"1").unwrap();
        assert_eq!(a.get("k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(b.get("k").unwrap(), None);
        assert!(b.list("").unwrap().is_empty());
        b.clear().unwrap();
        assert_eq!(a.get("k").unwrap(), Some(b"1".to_vec()));
        assert!(!b.delete("k").unwrap());
        assert!(a.delete("k").unwrap());
    }

    #[test]
    fn list_by_prefix_is_literal() {
        let store = Store::in_memory().unwrap();
        let a = store.plugin("a");
        for k in ["user:1", "user:2", "user%", "session:1"] {
            a.set(k, b"x").unwrap();
        }
        assert_eq!(a.list("user").unwrap(), vec!["user%", "user:1", "user:2"]);
        assert_eq!(a.list("user%").unwrap(), vec!["user%"]);
        assert_eq!(a.list("").unwrap().len(), 4);
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path())
            .unwrap()
            .plugin("a")
            .set("k", b"v")
            .unwrap();
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.plugin("a").get("k").unwrap(), Some(b"v".to_vec()));
    }

    /// Security review L6: plugin storage must not be readable by other local users, under
    /// the usual umask (022) or after an earlier version left it open.
    #[cfg(unix)]
    #[test]
    fn the_data_dir_is_0700_and_host_db_with_its_wal_0600() {
        use crate::private::tests::mode;
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let files = ["host.db", "host.db-wal", "host.db-shm"];
        let check = |store: &Store| {
            store.plugin("a").set("k", b"secret").unwrap();
            assert_eq!(mode(&data), 0o700);
            for f in files {
                assert_eq!(mode(&data.join(f)), 0o600, "{f}");
            }
        };
        let store = Store::open(&data).unwrap();
        check(&store);
        drop(store);
        // As an earlier plugd left them: open to everyone.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in files {
            let path = data.join(f);
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let store = Store::open(&data).unwrap();
        check(&store);
        assert_eq!(
            store.plugin("a").get("k").unwrap(),
            Some(b"secret".to_vec())
        );
    }

    #[test]
    fn bad_keys_are_invalid() {
        let a = Store::in_memory().unwrap().plugin("a");
        assert!(matches!(a.get(""), Err(HostError::Invalid(_))));
        assert!(matches!(
            a.set(&"k".repeat(2000), b""),
            Err(HostError::Invalid(_))
        ));
    }
}
