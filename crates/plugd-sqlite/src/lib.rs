//! The SQLite backends of plugd — its embedded defaults, behind the capability interfaces that
//! `plugd-core` defines:
//!
//! - [`SqliteKv`] ([`plugd_core::KvBackend`]): plugin key/value storage, a file per plugin
//!   (`<data_dir>/plugins/<name>/kv.sqlite`), off the async workers, one plugin never waiting on
//!   another;
//! - [`SqliteDatabase`] ([`plugd_core::SqlBackend`]): the `database` capability, a file per
//!   plugin (`<data_dir>/plugins/<name>/db.sqlite`) behind an authorizer, a connection of its
//!   own per plugin;
//! - [`StatusDb`] ([`plugd_core::StatusSink`]): the status tables of `<data_dir>/host.db`, and
//!   read queries on them ([`DASHBOARD_QUERIES`]).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let sqlite = plugd_sqlite::Backends::open(dir.path()).unwrap();
//! let host = plugd_core::Host::builder()
//!     .data_dir(dir.path())
//!     .kv(sqlite.kv.clone())
//!     .sql(sqlite.sql.clone())
//!     .status_sink(sqlite.status.clone())
//!     .build()
//!     .unwrap();
//! host.storage("hello").set("greetings", b"1").await.unwrap();
//! assert!(dir.path().join("plugins/hello/kv.sqlite").exists());
//! # });
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod database;
mod kv;
mod status;

pub use database::{READ_ONLY_PRAGMAS, SqliteConnection, SqliteDatabase};
pub use kv::{MAX_OPEN_FILES, SqliteKv};
pub use status::{DASHBOARD_QUERIES, SCHEMA, StatusDb, query_rows, sql_time};

/// What went wrong opening or reading the SQLite files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// A database could not be opened or set up.
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A read query failed (or was not a read).
    #[error("{}: query failed: {source}", .path.display())]
    Query {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A folder or file could not be made private.
    #[error(transparent)]
    Files(#[from] plugd_core::FileError),
}

/// The SQLite backends of one data directory.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Plugin key/value storage.
    pub kv: Arc<SqliteKv>,
    /// Plugins' SQL databases (the `database` capability).
    pub sql: Arc<SqliteDatabase>,
    /// The status tables of `host.db`.
    pub status: Arc<StatusDb>,
}

impl Backends {
    /// Open the backends of `data_dir` (created 0700 when missing).
    pub fn open(data_dir: &Path) -> Result<Backends, SqliteError> {
        let status = Arc::new(StatusDb::open(data_dir)?);
        Ok(Backends {
            kv: Arc::new(SqliteKv::new(data_dir)),
            sql: Arc::new(SqliteDatabase::new(data_dir)),
            status,
        })
    }
}
