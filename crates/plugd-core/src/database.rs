//! The `database` capability: a plugin's own SQL database. The port a backend implements
//! ([`SqlBackend`], which opens one plugin's database as a [`SqlConnection`]), and the policy the
//! core keeps in front of it ([`Database`]), whatever the engine:
//!
//! - **One database per plugin.** A backend opens a plugin's database by the plugin's name; no
//!   statement of one plugin reaches another's.
//! - **Bound parameters, one statement per call.** Values travel as [`SqlValue`]s, never spliced
//!   into the SQL text.
//! - **No transaction spans two calls.** Every call runs in autocommit; the plugin may not begin,
//!   commit or roll back a transaction itself. [`Database::transaction`] is the one way to run
//!   several statements all-or-nothing (at most [`MAX_TRANSACTION_STATEMENTS`]).
//! - **Deadlines.** Every call has one ([`DEFAULT_TIMEOUT`], shortened with
//!   [`Database::with_timeout`] to what is left of a guest call): the backend runs the work off
//!   the async workers and interrupts it at the deadline, and the caller stops waiting then in any
//!   case.
//! - **Capped results.** At most [`MAX_ROWS`] rows and [`MAX_RESULT_BYTES`] bytes per query
//!   ([`ResultLimits`]); the backend stops reading at the first value past them (it measures a
//!   value before it copies it), and the core checks again.
//! - **Capped input.** SQL text of at most [`MAX_SQL_BYTES`], bound text and blobs of at most
//!   [`MAX_VALUE_BYTES`] (no query could return a longer value), checked before the backend sees
//!   them; a backend refuses a longer value the SQL computes (`zeroblob(1e9)`) before it builds
//!   it, and keeps the plugin's data within [`MAX_DATABASE_BYTES`], temporary objects included.
//! - **Refusals are audited.** SQL the backend's rules refuse is [`HostError::Denied`]
//!   (`database access denied: plugin 'x' may not attach another database ('/etc/x.db')`),
//!   counted against the plugin and written to the audit log.
//! - **Migrations.** The `*.sql` files of the plugin's `migrations/` folder ([`Migration::read_dir`])
//!   are applied at load in lexical order of their names, each in its own transaction with its
//!   record in [`MIGRATIONS_TABLE`] (name, sha256, time). A migration that was applied and has
//!   changed since is a load error that names the file; the plugin may not change the record.
//! - **Dialects.** A backend speaks one SQL dialect ([`SqlBackend::dialect`]); a plugin lists
//!   those it is written in (manifest `database: { dialects: [sqlite, postgres] }`, default
//!   `[sqlite]`) and is refused at load when the backend's is not among them. Its migrations
//!   for a dialect are in `migrations/<dialect>/` ([`Migration::dir`]); the flat
//!   `migrations/*.sql` are the SQLite ones.
//!
//! Backends: `plugd_sqlite::SqliteDatabase` (a SQLite file per plugin, the embedded default),
//! `plugd_postgres::PostgresSql` (a schema and a role per plugin).
//! Every backend runs the conformance suite, `plugd_core::testing::sql_backend` (feature
//! `testing`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::audit::Auditor;
use crate::error::{BackendError, HostError};

/// The deadline of one call unless shortened.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of one migration at load.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Rows one query may return.
pub const MAX_ROWS: usize = 10_000;
/// Bytes one query may return (text and blobs at their length, numbers at 8, NULL at 1).
pub const MAX_RESULT_BYTES: usize = 8 * 1024 * 1024;
/// The longest text or blob a plugin may bind, store or compute: the result cap, since no query
/// could return a longer one.
pub const MAX_VALUE_BYTES: usize = MAX_RESULT_BYTES;
/// The longest SQL text of one statement a plugin may send (values travel as parameters).
pub const MAX_SQL_BYTES: usize = 1024 * 1024;
/// Statements one [`Database::transaction`] may hold.
pub const MAX_TRANSACTION_STATEMENTS: usize = 1_000;
/// The largest a plugin's database may grow.
pub const MAX_DATABASE_BYTES: u64 = 1024 * 1024 * 1024;
/// The host's record of applied migrations, in the plugin's database: `(name, sha256,
/// applied_at)`. The plugin may read it, never change it.
pub const MIGRATIONS_TABLE: &str = "_plugd_migrations";

/// How long the caller waits past the deadline for the backend to report its interrupt.
const GRACE: Duration = Duration::from_millis(250);

/// A value bound to, or read from, a statement (the WIT `sql-value`).
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl SqlValue {
    /// What the value counts for against [`ResultLimits::max_bytes`]: text and blobs at their
    /// length, numbers at 8, NULL at 1.
    ///
    /// ```
    /// use plugd_core::SqlValue;
    /// assert_eq!(SqlValue::Text("hé".into()).result_bytes(), 3);
    /// assert_eq!(SqlValue::Integer(7).result_bytes(), 8);
    /// ```
    pub fn result_bytes(&self) -> usize {
        match self {
            SqlValue::Null => 1,
            SqlValue::Integer(_) | SqlValue::Real(_) => 8,
            SqlValue::Text(t) => t.len(),
            SqlValue::Blob(b) => b.len(),
        }
    }
}

/// A query's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<SqlValue>>,
}

/// One statement of a [`Database::transaction`].
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// One SQL statement.
    pub sql: String,
    /// Its parameters (`?1`, `?2`, … or `?`).
    pub params: Vec<SqlValue>,
}

impl Statement {
    /// A statement with its parameters.
    pub fn new(sql: impl Into<String>, params: Vec<SqlValue>) -> Statement {
        Statement {
            sql: sql.into(),
            params,
        }
    }
}

/// How much one query may return; a backend stops reading past either
/// ([`SqlError::TooManyRows`], [`SqlError::TooLarge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultLimits {
    /// Rows.
    pub max_rows: usize,
    /// Bytes, counted by [`SqlValue::result_bytes`].
    pub max_bytes: usize,
}

impl Default for ResultLimits {
    fn default() -> Self {
        ResultLimits {
            max_rows: MAX_ROWS,
            max_bytes: MAX_RESULT_BYTES,
        }
    }
}

impl ResultLimits {
    /// Whether `rows` keeps within the limits: the error a backend returns when it does not.
    pub fn check(&self, rows: &Rows) -> Result<(), SqlError> {
        if rows.rows.len() > self.max_rows {
            return Err(SqlError::TooManyRows);
        }
        let bytes: usize = rows.rows.iter().flatten().map(SqlValue::result_bytes).sum();
        if bytes > self.max_bytes {
            return Err(SqlError::TooLarge);
        }
        Ok(())
    }
}

/// One file of a plugin's `migrations/` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The file name (`0001_notes.sql`): its place in the order and its key in the record.
    pub name: String,
    /// The SQL, one or more statements.
    pub sql: String,
    /// The SHA-256 of the file, lowercase hex: a changed migration is refused.
    pub sha256: String,
    /// The file in the plugin's folder, for messages: `migrations/0001_notes.sql`, or
    /// `migrations/postgres/0001_notes.sql` in a dialect's folder.
    pub file: String,
}

impl Migration {
    /// A migration named `name`.
    ///
    /// ```
    /// let m = plugd_core::Migration::new("0001_notes.sql", "CREATE TABLE notes (text TEXT);");
    /// assert_eq!(m.sha256.len(), 64);
    /// ```
    pub fn new(name: impl Into<String>, sql: impl Into<String>) -> Migration {
        let (name, sql) = (name.into(), sql.into());
        Migration {
            file: format!("migrations/{name}"),
            name,
            sha256: hex::encode(Sha256::digest(sql.as_bytes())),
            sql,
        }
    }

    /// The migrations folder of the plugin in `plugin_dir` for `dialect`:
    /// `migrations/<dialect>/` when that folder exists, else `migrations/` itself for `sqlite`
    /// (the flat layout of a plugin written for SQLite only), else `migrations/<dialect>/`
    /// (which does not exist: no migrations). Blocking.
    ///
    /// ```
    /// use std::path::Path;
    /// let dir = tempfile::tempdir().unwrap();
    /// let m = |d| plugd_core::Migration::dir(dir.path(), d);
    /// assert_eq!(m("sqlite"), dir.path().join("migrations"));
    /// std::fs::create_dir_all(dir.path().join("migrations/sqlite")).unwrap();
    /// assert_eq!(m("sqlite"), dir.path().join("migrations/sqlite"));
    /// assert_eq!(m("postgres"), dir.path().join("migrations/postgres"));
    /// ```
    pub fn dir(plugin_dir: &Path, dialect: &str) -> PathBuf {
        let flat = plugin_dir.join("migrations");
        let own = flat.join(dialect);
        if own.is_dir() || dialect != "sqlite" {
            own
        } else {
            flat
        }
    }

    /// The `*.sql` files of `dir`, in lexical order of their names (none when the folder does
    /// not exist). Blocking.
    pub fn read_dir(plugin: &str, dir: &Path) -> Result<Vec<Migration>, DatabaseOpenError> {
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let unreadable = |source: std::io::Error| DatabaseOpenError::ReadMigrations {
            plugin: plugin.to_string(),
            dir: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let path = entry.path();
            if !path.is_file() || path.extension().is_none_or(|x| x != "sql") {
                continue;
            }
            let name =
                entry
                    .file_name()
                    .into_string()
                    .map_err(|n| DatabaseOpenError::MigrationName {
                        plugin: plugin.to_string(),
                        name: n.to_string_lossy().into_owned(),
                    })?;
            files.push((name, path));
        }
        files.sort();
        // `migrations/` itself, or a dialect's folder in it.
        let in_migrations = dir
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|p| p == "migrations");
        let folder = match dir.file_name().and_then(|f| f.to_str()) {
            Some(dialect) if in_migrations => format!("migrations/{dialect}/"),
            _ => "migrations/".to_string(),
        };
        files
            .into_iter()
            .map(|(name, path)| {
                let file = format!("{folder}{name}");
                let bytes =
                    std::fs::read(&path).map_err(|source| DatabaseOpenError::ReadMigration {
                        plugin: plugin.to_string(),
                        file: file.clone(),
                        source,
                    })?;
                let sql =
                    String::from_utf8(bytes).map_err(|_| DatabaseOpenError::MigrationNotText {
                        plugin: plugin.to_string(),
                        file: file.clone(),
                    })?;
                Ok(Migration {
                    file,
                    ..Migration::new(name, sql)
                })
            })
            .collect()
    }
}

/// Why a backend did not run a statement. The core turns it into the plugin's [`HostError`],
/// naming the plugin and the call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The backend's rules refuse the statement; what the plugin may not do
    /// (`attach another database ('/etc/x.db')`).
    #[error("may not {0}")]
    Denied(String),
    /// What the plugin asked is wrong: syntax, an unknown table, the parameter count, several
    /// statements in one call.
    #[error("{0}")]
    Invalid(String),
    /// Running it failed (a constraint, a full disk).
    #[error("{0}")]
    Failed(String),
    /// The deadline passed: the statement was interrupted, or never started.
    #[error("interrupted at its deadline")]
    Timeout,
    /// The result has more rows than [`ResultLimits::max_rows`].
    #[error("the result has too many rows")]
    TooManyRows,
    /// The result is larger than [`ResultLimits::max_bytes`].
    #[error("the result is too large")]
    TooLarge,
    /// Statement `index` (from 0) of a transaction failed, and nothing was committed.
    #[error("statement {} failed: {source}", .index + 1)]
    Statement {
        /// Which statement, from 0.
        index: usize,
        /// Why.
        source: Box<SqlError>,
    },
    /// The backend itself failed (its server went away).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Where plugins' SQL databases live: opens one plugin's. Each database is separate, and a
/// backend holds no lock shared by all plugins across a call.
#[async_trait]
pub trait SqlBackend: Send + Sync + fmt::Debug + 'static {
    /// Open (creating when missing) the database of `plugin`, ready for its migrations. Blocking
    /// work runs off the async workers.
    async fn open(&self, plugin: &str) -> Result<Arc<dyn SqlConnection>, BackendError>;

    /// The SQL dialect of its engine, as a manifest's `database.dialects` names it (`sqlite`,
    /// `postgres`): a plugin whose manifest does not list it is refused at load, and its
    /// migrations are read from `migrations/<dialect>/` when that folder exists.
    fn dialect(&self) -> &'static str {
        "sqlite"
    }
}

/// One plugin's open database. Every call runs off the async workers, stops at `deadline`
/// ([`SqlError::Timeout`]), runs in autocommit, and leaves no transaction open behind it.
#[async_trait]
pub trait SqlConnection: Send + Sync + fmt::Debug + 'static {
    /// Where the database is, for messages (a file, a server and database; never a password).
    fn location(&self) -> String;
    /// Run one statement with bound parameters; the number of rows it changed.
    async fn execute(
        &self,
        sql: String,
        params: Vec<SqlValue>,
        deadline: Instant,
    ) -> Result<u64, SqlError>;
    /// Run one statement that returns rows, stopping past `limits`.
    async fn query(
        &self,
        sql: String,
        params: Vec<SqlValue>,
        limits: ResultLimits,
        deadline: Instant,
    ) -> Result<Rows, SqlError>;
    /// Run statements in one transaction: all are committed, or none
    /// ([`SqlError::Statement`] names the first that failed). The rows changed by each.
    async fn transaction(
        &self,
        statements: Vec<Statement>,
        deadline: Instant,
    ) -> Result<Vec<u64>, SqlError>;
    /// The sha256 recorded for migration `name` in [`MIGRATIONS_TABLE`], if it was applied.
    async fn applied_migration(
        &self,
        name: String,
        deadline: Instant,
    ) -> Result<Option<String>, SqlError>;
    /// Apply `migration` and record it, in one transaction: both, or neither. Its SQL is the
    /// plugin's, under the same rules as a call; the record is the host's.
    async fn apply_migration(
        &self,
        migration: Migration,
        deadline: Instant,
    ) -> Result<(), SqlError>;
}

/// Why a plugin's database could not be opened at load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseOpenError {
    /// The backend could not open or set up the database.
    #[error("cannot open the database of plugin '{plugin}': {source}")]
    Open {
        /// The plugin.
        plugin: String,
        /// The backend's error.
        source: BackendError,
    },
    /// The `migrations/` folder could not be read.
    #[error("cannot read the migrations of plugin '{plugin}' in {}: {source}", .dir.display())]
    ReadMigrations {
        /// The plugin.
        plugin: String,
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A migration's file name is not UTF-8.
    #[error("migration {name:?} of plugin '{plugin}': the file name is not UTF-8")]
    MigrationName {
        /// The plugin.
        plugin: String,
        /// The name, lossily.
        name: String,
    },
    /// A migration could not be read.
    #[error("cannot read migration {file} of plugin '{plugin}': {source}")]
    ReadMigration {
        /// The plugin.
        plugin: String,
        /// `migrations/<name>`.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// A migration is not UTF-8 text.
    #[error("migration {file} of plugin '{plugin}' is not UTF-8 text")]
    MigrationNotText {
        /// The plugin.
        plugin: String,
        /// `migrations/<name>`.
        file: String,
    },
    /// A migration that was applied has changed since.
    #[error(
        "migration {file} of plugin '{plugin}' has changed since it was applied (sha256 then {applied}, now {now}); restore it and put the change in a new migration"
    )]
    MigrationChanged {
        /// The plugin.
        plugin: String,
        /// `migrations/<name>`.
        file: String,
        /// The sha256 recorded when it was applied.
        applied: String,
        /// The file's sha256 now.
        now: String,
    },
    /// A migration failed; nothing of it stays.
    #[error("migration {file} of plugin '{plugin}' failed and was rolled back: {reason}")]
    MigrationFailed {
        /// The plugin.
        plugin: String,
        /// `migrations/<name>`.
        file: String,
        /// Why.
        reason: String,
    },
}

/// One plugin's database, as the plugin sees it: every call bounded by a deadline, its results
/// capped, its refusals audited. Cheap to clone; clones share the connection.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use plugd_core::{Auditor, Database, SqlValue};
/// let dir = tempfile::tempdir().unwrap();
/// let backend = plugd_sqlite::SqliteDatabase::new(dir.path());
/// let db = Database::open("notes", &backend, &[], Auditor::new("notes", None, None)).await.unwrap();
/// db.execute("CREATE TABLE n (id INTEGER, text TEXT)", &[]).await.unwrap();
/// let changed = db
///     .execute("INSERT INTO n VALUES (?1, ?2)", &[SqlValue::Integer(1), SqlValue::Text("hi".into())])
///     .await
///     .unwrap();
/// assert_eq!(changed, 1);
/// let e = db.execute("ATTACH '/tmp/other.db' AS o", &[]).await.unwrap_err();
/// assert!(e.to_string().starts_with("database access denied: plugin 'notes' may not attach"));
/// # });
/// ```
#[derive(Clone)]
pub struct Database {
    plugin: Arc<str>,
    connection: Arc<dyn SqlConnection>,
    auditor: Auditor,
    timeout: Duration,
    /// The SQL dialect of its backend ([`SqlBackend::dialect`]).
    dialect: &'static str,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("plugin", &self.plugin)
            .field("connection", &self.connection)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Database {
    /// Open the database of `plugin` in `backend` and apply `migrations` (in the order given,
    /// each once; [`Migration::read_dir`] reads a plugin's folder).
    pub async fn open(
        plugin: &str,
        backend: &dyn SqlBackend,
        migrations: &[Migration],
        auditor: Auditor,
    ) -> Result<Database, DatabaseOpenError> {
        let connection = backend
            .open(plugin)
            .await
            .map_err(|source| DatabaseOpenError::Open {
                plugin: plugin.to_string(),
                source,
            })?;
        for m in migrations {
            migrate(plugin, connection.as_ref(), m).await?;
        }
        Ok(Database {
            dialect: backend.dialect(),
            ..Database::new(plugin, connection, auditor)
        })
    }

    /// A handle on `connection`, already open, for `plugin`.
    pub fn new(plugin: &str, connection: Arc<dyn SqlConnection>, auditor: Auditor) -> Database {
        Database {
            plugin: Arc::from(plugin),
            connection,
            auditor,
            timeout: DEFAULT_TIMEOUT,
            dialect: "sqlite",
        }
    }

    /// The SQL dialect it speaks, as a manifest's `database.dialects` names it (`sqlite`,
    /// `postgres`).
    pub fn dialect(&self) -> &'static str {
        self.dialect
    }

    /// Where the database is (the backend's description: a file, a server).
    pub fn location(&self) -> String {
        self.connection.location()
    }

    /// The deadline of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same database with calls limited to `timeout` (never longer than this handle's).
    pub fn with_timeout(&self, timeout: Duration) -> Database {
        Database {
            timeout: timeout.min(self.timeout),
            ..self.clone()
        }
    }

    /// Run one statement with bound parameters; the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, HostError> {
        self.input_fits("database.execute", sql, params, None)?;
        let deadline = Instant::now() + self.timeout;
        let call = self
            .connection
            .execute(sql.to_string(), params.to_vec(), deadline);
        self.bounded("database.execute", deadline, call).await
    }

    /// Run one statement that returns rows (a `SELECT`, or a write with `RETURNING`).
    pub async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, HostError> {
        self.input_fits("database.query", sql, params, None)?;
        let deadline = Instant::now() + self.timeout;
        let limits = ResultLimits::default();
        let call = async {
            let rows = self
                .connection
                .query(sql.to_string(), params.to_vec(), limits, deadline)
                .await?;
            // Whatever the backend: nothing past the limits reaches the plugin.
            limits.check(&rows)?;
            Ok(rows)
        };
        self.bounded("database.query", deadline, call).await
    }

    /// Run statements in one transaction: all are committed, or none (the first failure rolls
    /// back and names the statement). The rows changed by each.
    pub async fn transaction(&self, statements: &[Statement]) -> Result<Vec<u64>, HostError> {
        let call = "database.transaction";
        if statements.len() > MAX_TRANSACTION_STATEMENTS {
            return Err(self.auditor.check(
                Err(HostError::Invalid(format!(
                    "{call} of plugin '{}': {} statements, more than the limit of {MAX_TRANSACTION_STATEMENTS}",
                    self.plugin,
                    statements.len()
                ))),
                "database",
                call,
            )?);
        }
        for (i, s) in statements.iter().enumerate() {
            self.input_fits(call, &s.sql, &s.params, Some((i, statements.len())))?;
        }
        let deadline = Instant::now() + self.timeout;
        let total = statements.len();
        let work = self.connection.transaction(statements.to_vec(), deadline);
        let result = match tokio::time::timeout_at((deadline + GRACE).into(), work).await {
            Ok(Err(SqlError::Statement { index, source })) => {
                Err(self.statement_error(call, index, total, *source))
            }
            Ok(r) => r.map_err(|e| self.host_error(call, e)),
            Err(_) => Err(self.host_error(call, SqlError::Timeout)),
        };
        self.auditor.check(result, "database", call)
    }

    /// Refuse SQL longer than [`MAX_SQL_BYTES`] and a bound value longer than
    /// [`MAX_VALUE_BYTES`] before the backend sees them; `statement` is the index and count in a
    /// transaction.
    fn input_fits(
        &self,
        call: &str,
        sql: &str,
        params: &[SqlValue],
        statement: Option<(usize, usize)>,
    ) -> Result<(), HostError> {
        use crate::audit::bytes_text;
        let problem = if sql.len() > MAX_SQL_BYTES {
            Some(format!(
                "the SQL is {} bytes, more than the limit of {}; bind values as parameters",
                sql.len(),
                bytes_text(MAX_SQL_BYTES)
            ))
        } else {
            params
                .iter()
                .position(|p| {
                    matches!(p, SqlValue::Text(_) | SqlValue::Blob(_))
                        && p.result_bytes() > MAX_VALUE_BYTES
                })
                .map(|i| {
                    format!(
                        "parameter {} is {} bytes, more than the {} one value may hold (no query could return it)",
                        i + 1,
                        params[i].result_bytes(),
                        bytes_text(MAX_VALUE_BYTES)
                    )
                })
        };
        match (problem, statement) {
            (None, _) => Ok(()),
            (Some(p), None) => Err(HostError::Invalid(format!(
                "{call} of plugin '{}': {p}",
                self.plugin
            ))),
            (Some(p), Some((index, total))) => Err(HostError::Invalid(format!(
                "{call} of plugin '{}': statement {} of {total} failed, nothing was committed: {p}",
                self.plugin,
                index + 1
            ))),
        }
    }

    /// Wait for `work` until shortly past `deadline` (the backend interrupts it at the deadline;
    /// the caller stops waiting in any case), name the plugin and the call in its failure, and
    /// record a denial.
    async fn bounded<T>(
        &self,
        call: &'static str,
        deadline: Instant,
        work: impl Future<Output = Result<T, SqlError>>,
    ) -> Result<T, HostError> {
        let result = match tokio::time::timeout_at((deadline + GRACE).into(), work).await {
            Ok(r) => r.map_err(|e| self.host_error(call, e)),
            Err(_) => Err(self.host_error(call, SqlError::Timeout)),
        };
        self.auditor.check(result, "database", call)
    }

    fn host_error(&self, call: &str, e: SqlError) -> HostError {
        let plugin = &self.plugin;
        match e {
            SqlError::Denied(what) => HostError::Denied(format!(
                "database access denied: plugin '{plugin}' may not {what}"
            )),
            SqlError::Timeout => HostError::Failed(format!(
                "{call} of plugin '{plugin}' timed out after {} and was interrupted",
                humantime::format_duration(self.timeout)
            )),
            SqlError::TooManyRows => HostError::Invalid(format!(
                "{call} of plugin '{plugin}': the result has more than {MAX_ROWS} rows; add a LIMIT and page through it"
            )),
            SqlError::TooLarge => HostError::Invalid(format!(
                "{call} of plugin '{plugin}': the result is larger than {}; select fewer columns or rows",
                crate::audit::bytes_text(MAX_RESULT_BYTES)
            )),
            SqlError::Invalid(m) => HostError::Invalid(format!("{call} of plugin '{plugin}': {m}")),
            SqlError::Statement { source, .. } => self.host_error(call, *source),
            e @ (SqlError::Failed(_) | SqlError::Backend(_)) => {
                HostError::Failed(format!("{call} of plugin '{plugin}': {e}"))
            }
        }
    }

    /// A failed statement of a transaction: a denial or a timeout is itself; anything else names
    /// the statement.
    fn statement_error(&self, call: &str, index: usize, total: usize, e: SqlError) -> HostError {
        let plugin = &self.plugin;
        let message = |m: &dyn fmt::Display| {
            format!(
                "{call} of plugin '{plugin}': statement {} of {total} failed, nothing was committed: {m}",
                index + 1
            )
        };
        match e {
            SqlError::Invalid(m) => HostError::Invalid(message(&m)),
            e @ (SqlError::Failed(_) | SqlError::Backend(_)) => HostError::Failed(message(&e)),
            other => self.host_error(call, other),
        }
    }
}

/// Apply `m` unless it was; refuse it if it changed since.
async fn migrate(
    plugin: &str,
    connection: &dyn SqlConnection,
    m: &Migration,
) -> Result<(), DatabaseOpenError> {
    let file = m.file.clone();
    let failed = |reason: String| DatabaseOpenError::MigrationFailed {
        plugin: plugin.to_string(),
        file: file.clone(),
        reason,
    };
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    let applied = connection
        .applied_migration(m.name.clone(), deadline)
        .await
        .map_err(|e| failed(e.to_string()))?;
    match applied {
        Some(applied) if applied == m.sha256 => return Ok(()),
        Some(applied) => {
            return Err(DatabaseOpenError::MigrationChanged {
                plugin: plugin.to_string(),
                file,
                applied,
                now: m.sha256.clone(),
            });
        }
        None => {}
    }
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    let run = connection.apply_migration(m.clone(), deadline);
    let outcome = tokio::time::timeout_at((deadline + GRACE).into(), run)
        .await
        .unwrap_or(Err(SqlError::Timeout));
    outcome.map_err(|e| {
        failed(match e {
            SqlError::Denied(what) => format!("the plugin may not {what}"),
            SqlError::Timeout => format!(
                "it ran longer than {}",
                humantime::format_duration(MIGRATION_TIMEOUT)
            ),
            other => other.to_string(),
        })
    })?;
    tracing::info!(plugin, migration = %m.name, "migration applied");
    Ok(())
}

/// The conformance suite every [`SqlBackend`] runs against itself (`cargo test` of its crate):
/// what the core and plugins rely on, whatever the engine. The SQL it runs is plain (SQLite's
/// column types, `WITH RECURSIVE`); an engine of another dialect maps what it must.
#[cfg(feature = "testing")]
pub mod conformance {
    use super::*;

    fn text(s: &str) -> SqlValue {
        SqlValue::Text(s.into())
    }

    /// The suite's SQL (SQLite's) in the backend's dialect: for `postgres`, `$1` parameters,
    /// `BYTEA` blobs, `SERIAL` keys and its spelling of blob literals; the same checks run on
    /// every engine.
    fn in_dialect(dialect: &str, sql: &str) -> String {
        if dialect != "postgres" {
            return sql.to_string();
        }
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                out.push('$');
            } else {
                out.push(c);
            }
        }
        out.replace(" BLOB", " BYTEA")
            .replace("INTEGER PRIMARY KEY", "SERIAL PRIMARY KEY")
            .replace("x'00'", "'\\x00'::bytea")
            .replace(
                "zeroblob(999999999)",
                "decode(repeat('00', 999999999), 'hex')",
            )
    }

    /// A plugin's database through the suite: its SQL put in the backend's dialect.
    #[derive(Clone)]
    struct Db {
        db: Database,
        dialect: &'static str,
    }

    impl Db {
        async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, HostError> {
            self.db
                .execute(&in_dialect(self.dialect, sql), params)
                .await
        }

        async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, HostError> {
            self.db.query(&in_dialect(self.dialect, sql), params).await
        }

        async fn transaction(&self, statements: &[Statement]) -> Result<Vec<u64>, HostError> {
            let statements: Vec<Statement> = statements
                .iter()
                .map(|s| Statement::new(in_dialect(self.dialect, &s.sql), s.params.clone()))
                .collect();
            self.db.transaction(&statements).await
        }

        fn with_timeout(&self, timeout: Duration) -> Db {
            Db {
                db: self.db.with_timeout(timeout),
                dialect: self.dialect,
            }
        }
    }

    async fn open(backend: &dyn SqlBackend, plugin: &str, migrations: &[Migration]) -> Db {
        let db = Database::open(
            plugin,
            backend,
            migrations,
            Auditor::new(plugin, None, None),
        )
        .await
        .unwrap_or_else(|e| panic!("open {plugin}: {e}"));
        Db {
            db,
            dialect: backend.dialect(),
        }
    }

    /// Run every check against `backend`, which must start empty (a fresh directory or
    /// database) and keep a plugin's database across opens.
    pub async fn sql_backend(backend: Arc<dyn SqlBackend>) {
        databases_are_separate_and_outlive_their_handle(backend.as_ref()).await;
        values_round_trip_and_parameters_are_bound(backend.as_ref()).await;
        one_statement_per_call_in_autocommit(backend.as_ref()).await;
        a_transaction_is_all_or_nothing(backend.as_ref()).await;
        results_are_capped(backend.as_ref()).await;
        input_and_computed_values_are_capped(backend.as_ref()).await;
        temporary_objects_are_refused(backend.as_ref()).await;
        a_call_is_interrupted_at_its_deadline(backend.as_ref()).await;
        migrations_apply_once_in_order(backend.as_ref()).await;
        a_failed_migration_leaves_nothing(backend.as_ref()).await;
    }

    async fn databases_are_separate_and_outlive_their_handle(backend: &dyn SqlBackend) {
        let a = open(backend, "conformance-a", &[]).await;
        let b = open(backend, "conformance-b", &[]).await;
        a.execute("CREATE TABLE t (v TEXT)", &[]).await.unwrap();
        a.execute("INSERT INTO t (v) VALUES (?1)", &[text("a")])
            .await
            .unwrap();
        assert!(b.query("SELECT v FROM t", &[]).await.is_err());
        b.execute("CREATE TABLE t (v TEXT)", &[]).await.unwrap();
        let rows = b.query("SELECT v FROM t", &[]).await.unwrap();
        assert!(rows.rows.is_empty(), "another plugin's table: {rows:?}");
        drop(a);
        let again = open(backend, "conformance-a", &[]).await;
        let rows = again.query("SELECT v FROM t", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![text("a")]]);
    }

    async fn values_round_trip_and_parameters_are_bound(backend: &dyn SqlBackend) {
        let db = open(backend, "conformance-values", &[]).await;
        db.execute(
            "CREATE TABLE v (id INTEGER PRIMARY KEY, i BIGINT, r DOUBLE PRECISION, t TEXT, b BLOB)",
            &[],
        )
        .await
        .unwrap();
        let hostile = "x'); DROP TABLE v; --";
        let values = [
            vec![
                SqlValue::Integer(i64::MIN),
                SqlValue::Real(1.5),
                text(hostile),
                SqlValue::Blob((0..=255).collect()),
            ],
            vec![
                SqlValue::Integer(i64::MAX),
                SqlValue::Real(-0.25),
                text("ключ 🔑"),
                SqlValue::Blob(Vec::new()),
            ],
            vec![
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
            ],
        ];
        for row in &values {
            let n = db
                .execute("INSERT INTO v (i, r, t, b) VALUES (?1, ?2, ?3, ?4)", row)
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
        let rows = db
            .query("SELECT i, r, t, b FROM v ORDER BY id", &[])
            .await
            .unwrap();
        assert_eq!(rows.columns, ["i", "r", "t", "b"]);
        assert_eq!(rows.rows, values);
        let found = db
            .query("SELECT id FROM v WHERE t = ?1", &[text(hostile)])
            .await
            .unwrap();
        assert_eq!(found.rows, vec![vec![SqlValue::Integer(1)]]);
        let changed = db
            .execute("UPDATE v SET t = ?1 WHERE t IS NOT NULL", &[text("u")])
            .await
            .unwrap();
        assert_eq!(changed, 2);
        let e = db
            .execute("INSERT INTO v (t) VALUES (?1)", &[])
            .await
            .unwrap_err();
        assert!(matches!(e, HostError::Invalid(_)), "{e:?}");
    }

    async fn one_statement_per_call_in_autocommit(backend: &dyn SqlBackend) {
        let db = open(backend, "conformance-autocommit", &[]).await;
        db.execute("CREATE TABLE a (v INTEGER)", &[]).await.unwrap();
        let e = db
            .execute("INSERT INTO a VALUES (1); DROP TABLE a", &[])
            .await
            .unwrap_err();
        assert!(matches!(e, HostError::Invalid(_)), "{e:?}");
        for sql in ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT s"] {
            let e = db.execute(sql, &[]).await.unwrap_err();
            assert!(
                matches!(&e, HostError::Denied(m) if m.starts_with("database access denied: plugin 'conformance-autocommit' may not ")),
                "{sql}: {e:?}"
            );
        }
        let e = db
            .execute(&format!("DELETE FROM {MIGRATIONS_TABLE}"), &[])
            .await
            .unwrap_err();
        assert!(matches!(e, HostError::Denied(_)), "{e:?}");
        let e = db.execute("SELEC 1", &[]).await.unwrap_err().to_string();
        assert!(
            e.starts_with("database.execute of plugin 'conformance-autocommit': "),
            "{e}"
        );
    }

    async fn a_transaction_is_all_or_nothing(backend: &dyn SqlBackend) {
        let db = open(backend, "conformance-transaction", &[]).await;
        db.execute(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
            &[],
        )
        .await
        .unwrap();
        let counts = db
            .transaction(&[
                Statement::new("INSERT INTO a (v) VALUES (?1)", vec![text("one")]),
                Statement::new("INSERT INTO a (v) VALUES (?1)", vec![text("two")]),
                Statement::new("UPDATE a SET v = v || '!'", vec![]),
            ])
            .await
            .unwrap();
        assert_eq!(counts, [1, 1, 2]);
        let e = db
            .transaction(&[
                Statement::new("INSERT INTO a (v) VALUES (?1)", vec![text("three")]),
                Statement::new("INSERT INTO a (v) VALUES (NULL)", vec![]),
            ])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("database.transaction of plugin 'conformance-transaction': statement 2 of 2 failed, nothing was committed"),
            "{e}"
        );
        let e = db
            .transaction(&[
                Statement::new("INSERT INTO a (v) VALUES ('x')", vec![]),
                Statement::new("COMMIT", vec![]),
            ])
            .await
            .unwrap_err();
        assert!(matches!(e, HostError::Denied(_)), "{e:?}");
        let rows = db.query("SELECT v FROM a ORDER BY id", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![text("one!")], vec![text("two!")]]);
    }

    async fn results_are_capped(backend: &dyn SqlBackend) {
        let db = open(backend, "conformance-caps", &[]).await;
        let series = |n: usize| {
            format!(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x FROM c"
            )
        };
        let ok = db.query(&series(MAX_ROWS), &[]).await.unwrap();
        assert_eq!(ok.rows.len(), MAX_ROWS);
        let e = db.query(&series(MAX_ROWS + 1), &[]).await.unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains(&format!("more than {MAX_ROWS} rows"))),
            "{e:?}"
        );
        // 9 rows of 1 MiB of text.
        db.execute("CREATE TABLE big (t TEXT)", &[]).await.unwrap();
        db.execute(
            "INSERT INTO big (t) VALUES (?1)",
            &[SqlValue::Text("x".repeat(1 << 20))],
        )
        .await
        .unwrap();
        let e = db
            .query(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 9) SELECT t FROM c, big",
                &[],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("larger than 8 MiB")),
            "{e:?}"
        );
    }

    async fn input_and_computed_values_are_capped(backend: &dyn SqlBackend) {
        let db = open(backend, "conformance-input", &[]).await;
        db.execute("CREATE TABLE t (b BLOB)", &[]).await.unwrap();
        // At the cap: stored and returned.
        db.execute(
            "INSERT INTO t (b) VALUES (?1)",
            &[SqlValue::Blob(vec![7; MAX_VALUE_BYTES])],
        )
        .await
        .unwrap();
        let rows = db.query("SELECT length(b) FROM t", &[]).await.unwrap();
        assert_eq!(
            rows.rows,
            vec![vec![SqlValue::Integer(MAX_VALUE_BYTES as i64)]]
        );
        // Past it: refused before the backend sees it.
        let e = db
            .execute(
                "INSERT INTO t (b) VALUES (?1)",
                &[SqlValue::Blob(vec![7; MAX_VALUE_BYTES + 1])],
            )
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HostError::Invalid(format!(
                "database.execute of plugin 'conformance-input': parameter 1 is {} bytes, more than the 8 MiB one value may hold (no query could return it)",
                MAX_VALUE_BYTES + 1
            ))
        );
        let long = format!("SELECT 1 /* {} */", "x".repeat(MAX_SQL_BYTES));
        let e = db.query(&long, &[]).await.unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("more than the limit of 1 MiB; bind values as parameters")),
            "{e:?}"
        );
        let e = db
            .transaction(&[
                Statement::new("INSERT INTO t (b) VALUES (x'00')", vec![]),
                Statement::new(
                    "INSERT INTO t (b) VALUES (?1)",
                    vec![SqlValue::Text("x".repeat(MAX_VALUE_BYTES + 1))],
                ),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("statement 2 of 2 failed, nothing was committed: parameter 1 is")),
            "{e:?}"
        );
        // Computed by the SQL: refused, quickly, without the host or the engine holding it.
        let e = db
            .query("SELECT zeroblob(999999999), zeroblob(999999999)", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("larger than 8 MiB")),
            "{e:?}"
        );
        let e = db
            .execute("INSERT INTO t (b) VALUES (zeroblob(999999999))", &[])
            .await
            .unwrap_err();
        assert!(matches!(&e, HostError::Invalid(_)), "{e:?}");
        let rows = db.query("SELECT count(*) FROM t", &[]).await.unwrap();
        assert_eq!(
            rows.rows,
            vec![vec![SqlValue::Integer(1)]],
            "nothing else was stored"
        );
    }

    async fn temporary_objects_are_refused(backend: &dyn SqlBackend) {
        let db = open(backend, "conformance-temp", &[]).await;
        db.execute("CREATE TABLE t (v INTEGER)", &[]).await.unwrap();
        for sql in [
            "CREATE TEMP TABLE x (v INTEGER)",
            "CREATE TEMPORARY TABLE x (v INTEGER)",
            "CREATE TEMP VIEW x AS SELECT 1",
        ] {
            let e = db.execute(sql, &[]).await.unwrap_err();
            assert!(
                matches!(&e, HostError::Denied(m) if m.starts_with("database access denied: plugin 'conformance-temp' may not create TEMP tables")),
                "{sql}: {e:?}"
            );
        }
    }

    async fn a_call_is_interrupted_at_its_deadline(backend: &dyn SqlBackend) {
        let db = open(backend, "conformance-deadline", &[]).await;
        let db = db.with_timeout(Duration::from_millis(200));
        let e = db
            .query(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HostError::Failed(
                "database.query of plugin 'conformance-deadline' timed out after 200ms and was interrupted"
                    .into()
            )
        );
        // Free again: the work stopped.
        let rows = db.query("SELECT 42", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![SqlValue::Integer(42)]]);
    }

    async fn migrations_apply_once_in_order(backend: &dyn SqlBackend) {
        let plugin = "conformance-migrations";
        let first = [
            Migration::new(
                "0001_notes.sql",
                in_dialect(
                    backend.dialect(),
                    "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);",
                ),
            ),
            Migration::new("0002_tag.sql", "ALTER TABLE notes ADD COLUMN tag TEXT;"),
            Migration::new(
                "0010_fill.sql",
                "INSERT INTO notes (text, tag) VALUES ('filled', 'x');",
            ),
        ];
        let db = open(backend, plugin, &first).await;
        let record = db
            .query(
                &format!("SELECT name, sha256 FROM {MIGRATIONS_TABLE} ORDER BY name"),
                &[],
            )
            .await
            .unwrap();
        let expected: Vec<Vec<SqlValue>> = first
            .iter()
            .map(|m| vec![text(&m.name), text(&m.sha256)])
            .collect();
        assert_eq!(record.rows, expected);
        drop(db);
        let mut more = first.to_vec();
        more.push(Migration::new(
            "0011_more.sql",
            "INSERT INTO notes (text) VALUES ('more');",
        ));
        let db = open(backend, plugin, &more).await;
        let count = db.query("SELECT count(*) FROM notes", &[]).await.unwrap();
        assert_eq!(
            count.rows,
            vec![vec![SqlValue::Integer(2)]],
            "nothing twice"
        );
        drop(db);
        more[1] = Migration::new("0002_tag.sql", "ALTER TABLE notes ADD COLUMN tag2 TEXT;");
        let e = Database::open(plugin, backend, &more, Auditor::new(plugin, None, None))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "migration migrations/0002_tag.sql of plugin '{plugin}' has changed since it was applied"
            )),
            "{e}"
        );
    }

    async fn a_failed_migration_leaves_nothing(backend: &dyn SqlBackend) {
        let plugin = "conformance-failed-migration";
        let ok = Migration::new("0001_ok.sql", "CREATE TABLE t (a INTEGER);");
        let bad = Migration::new(
            "0002_bad.sql",
            "CREATE TABLE u (b INTEGER);\nINSERT INTO nowhere VALUES (1);",
        );
        let e = Database::open(
            plugin,
            backend,
            &[ok.clone(), bad],
            Auditor::new(plugin, None, None),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!(
                "migration migrations/0002_bad.sql of plugin '{plugin}' failed and was rolled back: "
            )),
            "{e}"
        );
        let record_writer =
            Migration::new("0002_bad.sql", format!("DELETE FROM {MIGRATIONS_TABLE};"));
        let e = Database::open(
            plugin,
            backend,
            &[ok.clone(), record_writer],
            Auditor::new(plugin, None, None),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("the plugin may not "), "{e}");
        let db = open(backend, plugin, &[ok]).await;
        assert!(
            db.query("SELECT b FROM u", &[]).await.is_err(),
            "u was rolled back with 0002"
        );
        let record = db
            .query(&format!("SELECT name FROM {MIGRATIONS_TABLE}"), &[])
            .await
            .unwrap();
        assert_eq!(record.rows, vec![vec![text("0001_ok.sql")]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, PluginState};
    use parking_lot::Mutex;

    /// A connection that answers what it is told to, or never.
    #[derive(Debug, Default)]
    struct Scripted {
        answer: Mutex<Option<Result<Rows, SqlError>>>,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl SqlConnection for Scripted {
        fn location(&self) -> String {
            "scripted".into()
        }
        async fn execute(
            &self,
            sql: String,
            _: Vec<SqlValue>,
            _: Instant,
        ) -> Result<u64, SqlError> {
            self.calls.lock().push(sql);
            let answer = self.answer.lock().take();
            match answer {
                Some(r) => r.map(|rows| rows.rows.len() as u64),
                None => std::future::pending().await,
            }
        }
        async fn query(
            &self,
            sql: String,
            _: Vec<SqlValue>,
            _: ResultLimits,
            _: Instant,
        ) -> Result<Rows, SqlError> {
            self.calls.lock().push(sql);
            let answer = self.answer.lock().take();
            match answer {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }
        async fn transaction(
            &self,
            statements: Vec<Statement>,
            _: Instant,
        ) -> Result<Vec<u64>, SqlError> {
            self.calls
                .lock()
                .push(format!("{} statements", statements.len()));
            let answer = self.answer.lock().take();
            match answer {
                Some(r) => r.map(|_| vec![1; statements.len()]),
                None => std::future::pending().await,
            }
        }
        async fn applied_migration(
            &self,
            _: String,
            _: Instant,
        ) -> Result<Option<String>, SqlError> {
            Ok(None)
        }
        async fn apply_migration(&self, m: Migration, _: Instant) -> Result<(), SqlError> {
            self.calls.lock().push(m.name);
            Ok(())
        }
    }

    fn db(answer: Option<Result<Rows, SqlError>>) -> (Database, Arc<PluginState>, Arc<AuditLog>) {
        let state = Arc::new(PluginState::default());
        let log = Arc::new(AuditLog::default());
        let auditor = Auditor::new("p", Some(state.clone()), Some(log.clone()));
        let connection = Arc::new(Scripted {
            answer: Mutex::new(answer),
            ..Scripted::default()
        });
        (Database::new("p", connection, auditor), state, log)
    }

    #[tokio::test]
    async fn a_refusal_names_the_plugin_and_is_counted_and_audited() {
        let (db, state, log) = db(Some(Err(SqlError::Denied(
            "attach another database ('/etc/x.db')".into(),
        ))));
        let e = db
            .execute("ATTACH '/etc/x.db' AS x", &[])
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HostError::Denied(
                "database access denied: plugin 'p' may not attach another database ('/etc/x.db')"
                    .into()
            )
        );
        assert_eq!(state.error_count(), 1);
        let audit = log.entries(Some("p"));
        assert_eq!(audit[0].capability, "database");
        assert!(
            audit[0]
                .detail
                .starts_with("database.execute: database access denied")
        );
    }

    #[tokio::test]
    async fn a_call_is_bounded_by_the_callers_deadline_whatever_the_backend() {
        let (db, _, _) = db(None);
        let db = db.with_timeout(Duration::from_millis(20));
        let e = db.query("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(
            e,
            HostError::Failed(
                "database.query of plugin 'p' timed out after 20ms and was interrupted".into()
            )
        );
    }

    #[tokio::test]
    async fn rows_past_the_limits_never_reach_the_plugin() {
        let too_many = Rows {
            columns: vec!["x".into()],
            rows: vec![vec![SqlValue::Integer(1)]; MAX_ROWS + 1],
        };
        let (many, _, _) = db(Some(Ok(too_many)));
        let e = many.query("SELECT x FROM t", &[]).await.unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("more than 10000 rows")),
            "{e:?}"
        );
        let too_large = Rows {
            columns: vec!["t".into()],
            rows: vec![vec![SqlValue::Blob(vec![0; 1 << 20])]; 9],
        };
        let (large, _, _) = db(Some(Ok(too_large)));
        let e = large.query("SELECT t FROM t", &[]).await.unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("larger than 8 MiB")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_transaction_over_the_statement_limit_never_reaches_the_backend() {
        let (db, _, _) = db(Some(Ok(Rows::default())));
        let statements = vec![Statement::new("SELECT 1", vec![]); MAX_TRANSACTION_STATEMENTS + 1];
        let e = db.transaction(&statements).await.unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("more than the limit of 1000")),
            "{e:?}"
        );
        let counts = db.transaction(&statements[..2]).await.unwrap();
        assert_eq!(counts, [1, 1]);
    }

    #[tokio::test]
    async fn a_failed_statement_of_a_transaction_is_named() {
        let (db, _, _) = db(Some(Err(SqlError::Statement {
            index: 1,
            source: Box::new(SqlError::Failed("NOT NULL constraint failed: a.v".into())),
        })));
        let e = db
            .transaction(&[
                Statement::new("INSERT INTO a (v) VALUES ('x')", vec![]),
                Statement::new("INSERT INTO a (v) VALUES (NULL)", vec![]),
            ])
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HostError::Failed("database.transaction of plugin 'p': statement 2 of 2 failed, nothing was committed: NOT NULL constraint failed: a.v".into())
        );
    }

    #[test]
    fn a_migration_of_a_dialects_folder_is_named_with_its_folder() {
        let plugin = tempfile::tempdir().unwrap();
        let dir = Migration::dir(plugin.path(), "postgres");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0001_notes.sql"), "CREATE TABLE notes (v TEXT);").unwrap();
        let migrations = Migration::read_dir("p", &dir).unwrap();
        assert_eq!(migrations[0].name, "0001_notes.sql", "the record's key");
        assert_eq!(migrations[0].file, "migrations/postgres/0001_notes.sql");
        std::fs::write(dir.join("0002_bin.sql"), [0xff]).unwrap();
        let e = Migration::read_dir("p", &dir).unwrap_err().to_string();
        assert_eq!(
            e,
            "migration migrations/postgres/0002_bin.sql of plugin 'p' is not UTF-8 text"
        );
        let flat = Migration::dir(plugin.path(), "sqlite");
        std::fs::write(flat.join("0001_flat.sql"), "SELECT 1;").unwrap();
        let migrations = Migration::read_dir("p", &flat).unwrap();
        assert_eq!(migrations[0].file, "migrations/0001_flat.sql");
    }

    #[test]
    fn migrations_are_the_sql_files_of_the_folder_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Migration::read_dir("p", &dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
        for (name, sql) in [
            ("0010_fill.sql", "INSERT INTO notes VALUES (1);"),
            ("0001_notes.sql", "CREATE TABLE notes (id INTEGER);"),
            ("0002_tag.sql", "ALTER TABLE notes ADD COLUMN tag TEXT;"),
            ("README.md", "not a migration"),
        ] {
            std::fs::write(dir.path().join(name), sql).unwrap();
        }
        let migrations = Migration::read_dir("p", dir.path()).unwrap();
        let names: Vec<&str> = migrations.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["0001_notes.sql", "0002_tag.sql", "0010_fill.sql"]);
        assert_eq!(
            migrations[0].sha256,
            hex::encode(Sha256::digest(b"CREATE TABLE notes (id INTEGER);"))
        );
        std::fs::write(dir.path().join("0003_bin.sql"), [0xff, 0xfe]).unwrap();
        let e = Migration::read_dir("p", dir.path())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "migration migrations/0003_bin.sql of plugin 'p' is not UTF-8 text"
        );
    }
}
