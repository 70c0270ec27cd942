//! The `database` capability in SQLite ([`SqliteDatabase`], a [`plugd_core::SqlBackend`]): one
//! file per plugin, `<data_dir>/plugins/<name>/db.sqlite` (WAL; the file and its `-wal` and
//! `-shm` mode 0600 whatever the umask), a connection of its own per plugin: no lock is shared
//! by two plugins. Every call runs on tokio's blocking pool; SQLite's progress handler interrupts
//! it at its deadline.
//!
//! The core keeps the policy (the permission, the deadlines, the result caps, the audit); this
//! file keeps what is SQLite's. The connection is opened with an authorizer that refuses, for the
//! plugin's SQL:
//! - `ATTACH` and `DETACH` (the plugin has one file, nothing else; `VACUUM INTO` is an attach);
//! - every `PRAGMA` except a read-only list ([`READ_ONLY_PRAGMAS`]; `user_version`,
//!   `schema_version` and `page_size` only without a value);
//! - extension loading (the `load_extension` SQL function; the C API is off as well);
//! - `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT` and `RELEASE`: every call runs in autocommit, so
//!   a transaction never spans two guest calls;
//! - writes to the host's migration record, [`MIGRATIONS_TABLE`];
//! - `CREATE TEMP` tables, indexes, views and triggers: the `temp` schema lives outside the file
//!   and its size cap.
//!
//! Besides: no attached database at all (`SQLITE_LIMIT_ATTACHED` 0), `SQLITE_DBCONFIG_DEFENSIVE`,
//! `trusted_schema` off, foreign keys on, and the file capped at [`MAX_DATABASE_BYTES`]
//! (`max_page_count`; past it an insert fails with "the database is full" and what is stored
//! stays).
//!
//! Memory and disk (security review H4): no string, blob or row longer than [`MAX_VALUE_BYTES`]
//! and a row's header (`SQLITE_LIMIT_LENGTH`; SQLite refuses `zeroblob(1e9)` before allocating
//! it), no statement
//! longer than [`MAX_SQL_BYTES`] (`SQLITE_LIMIT_SQL_LENGTH`), the result cap counted value by
//! value while the rows are stepped (a value is measured before it is copied), and temporary
//! data (sorts, `UNION`s, materialised subqueries) in temporary files with at most the page
//! cache in memory, for no longer than the call's deadline. No heap limit: SQLite's are
//! process-wide, so one plugin's query at the limit would fail every other plugin's database and
//! storage, and the host's status tables.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use plugd_core::database_limits::{
    MAX_DATABASE_BYTES, MAX_SQL_BYTES, MAX_VALUE_BYTES, MIGRATIONS_TABLE,
};
use plugd_core::{
    BackendError, Migration, ResultLimits, Rows, SqlBackend, SqlConnection, SqlError, SqlValue,
    Statement,
};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params_from_iter};

const BACKEND: &str = "sqlite";

/// The PRAGMAs a plugin may run: read-only ones. `user_version`, `schema_version` and
/// `page_size` only without a value (with one they set it).
pub const READ_ONLY_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "user_version",
    "schema_version",
    "page_size",
    "page_count",
    "freelist_count",
];
const READ_ONLY_WITHOUT_VALUE: &[&str] = &["user_version", "schema_version", "page_size"];

/// `SQLITE_LIMIT_LENGTH` bounds rows as well as values: room for a row's header and small
/// columns beside a value of [`MAX_VALUE_BYTES`].
const ROW_SLACK: usize = 64 * 1024;

/// What a plugin may not do when it creates a TEMP object.
const TEMP_DENIED: &str = "create TEMP tables, indexes, views or triggers (they live outside the database and its size cap; create them in the database)";

/// Plugins' SQL databases in SQLite: a file per plugin under `data_dir`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use plugd_core::{Auditor, Database};
/// let dir = tempfile::tempdir().unwrap();
/// let backend = plugd_sqlite::SqliteDatabase::new(dir.path());
/// let db = Database::open("notes", &backend, &[], Auditor::new("notes", None, None)).await.unwrap();
/// db.execute("CREATE TABLE n (text TEXT)", &[]).await.unwrap();
/// assert!(dir.path().join("plugins/notes/db.sqlite").exists());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SqliteDatabase {
    data_dir: PathBuf,
}

impl SqliteDatabase {
    /// Databases under `data_dir` (files are created on first open).
    pub fn new(data_dir: &Path) -> SqliteDatabase {
        SqliteDatabase {
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The file of `plugin`.
    pub fn path(&self, plugin: &str) -> PathBuf {
        self.data_dir.join("plugins").join(plugin).join("db.sqlite")
    }
}

#[async_trait]
impl SqlBackend for SqliteDatabase {
    fn dialect(&self) -> &'static str {
        "sqlite"
    }

    async fn open(&self, plugin: &str) -> Result<Arc<dyn SqlConnection>, BackendError> {
        if plugin.is_empty() || plugin.contains(['/', '\\', '\0']) || plugin.starts_with('.') {
            return Err(failed(format!("'{plugin}' is not a plugin name")));
        }
        let path = self.path(plugin);
        let connection = tokio::task::spawn_blocking(move || SqliteConnection::open(&path))
            .await
            .map_err(failed)??;
        Ok(Arc::new(connection))
    }
}

fn failed(what: impl std::fmt::Display) -> BackendError {
    BackendError::new(BACKEND, what.to_string())
}

/// What the authorizer and the progress handler share with the calls.
#[derive(Debug, Default)]
struct Guard {
    /// The host's own statements (BEGIN/COMMIT/ROLLBACK of a transaction, the migration record)
    /// pass the authorizer while this is set.
    host: AtomicBool,
    /// When the running call must stop; the progress handler interrupts SQLite past it.
    deadline: Mutex<Option<Instant>>,
    /// Why the authorizer refused the statement being prepared.
    denied: Mutex<Option<String>>,
}

impl Guard {
    fn expired(&self) -> bool {
        self.deadline.lock().is_some_and(|d| Instant::now() >= d)
    }

    fn deny(&self, reason: String) -> Authorization {
        let mut denied = self.denied.lock();
        if denied.is_none() {
            *denied = Some(reason);
        }
        Authorization::Deny
    }

    fn authorize(&self, ctx: AuthContext<'_>) -> Authorization {
        if self.host.load(Ordering::Acquire) {
            return Authorization::Allow;
        }
        match ctx.action {
            AuthAction::Attach { filename } => {
                self.deny(format!("attach another database ('{filename}')"))
            }
            AuthAction::Detach { database_name } => {
                self.deny(format!("detach a database ('{database_name}')"))
            }
            AuthAction::Pragma {
                pragma_name,
                pragma_value,
            } => {
                let name = pragma_name.to_ascii_lowercase();
                let read_only = READ_ONLY_PRAGMAS.contains(&name.as_str())
                    && !(pragma_value.is_some()
                        && READ_ONLY_WITHOUT_VALUE.contains(&name.as_str()));
                if read_only {
                    return Authorization::Allow;
                }
                let written = match pragma_value {
                    Some(v) => format!("PRAGMA {pragma_name} = {v}"),
                    None => format!("PRAGMA {pragma_name}"),
                };
                self.deny(format!(
                    "run {written} (allowed: the read-only PRAGMAs {})",
                    READ_ONLY_PRAGMAS.join(", ")
                ))
            }
            AuthAction::Function { function_name }
                if function_name.eq_ignore_ascii_case("load_extension") =>
            {
                self.deny("load extensions (load_extension)".into())
            }
            AuthAction::Transaction { .. } => self.deny(
                "begin, commit or roll back transactions itself (use database.transaction, which runs its statements all-or-nothing)".into(),
            ),
            AuthAction::Savepoint { savepoint_name, .. } => self.deny(format!(
                "use savepoints ('{savepoint_name}') (use database.transaction, which runs its statements all-or-nothing)"
            )),
            AuthAction::CreateTempTable { .. }
            | AuthAction::CreateTempIndex { .. }
            | AuthAction::CreateTempView { .. }
            | AuthAction::CreateTempTrigger { .. } => self.deny(TEMP_DENIED.into()),
            // `CREATE TABLE temp.t` is a CREATE in the temp schema, not a CREATE TEMP.
            AuthAction::CreateTable { .. }
            | AuthAction::CreateIndex { .. }
            | AuthAction::CreateView { .. }
            | AuthAction::CreateTrigger { .. }
                if ctx
                    .database_name
                    .is_some_and(|d| d.eq_ignore_ascii_case("temp")) =>
            {
                self.deny(TEMP_DENIED.into())
            }
            AuthAction::Insert { table_name }
            | AuthAction::Delete { table_name }
            | AuthAction::Update { table_name, .. }
            | AuthAction::DropTable { table_name }
            | AuthAction::AlterTable { table_name, .. }
            | AuthAction::CreateIndex { table_name, .. }
            | AuthAction::CreateTrigger { table_name, .. }
                if table_name.eq_ignore_ascii_case(MIGRATIONS_TABLE) =>
            {
                self.deny(format!("change the host's migration record {MIGRATIONS_TABLE}"))
            }
            _ => Authorization::Allow,
        }
    }
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    guard: Arc<Guard>,
}

/// One plugin's SQLite database. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteConnection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteConnection")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// A failure inside a call, before it becomes a [`SqlError`].
enum Failure {
    Sql(rusqlite::Error),
    /// Statement `index` of a transaction failed.
    Statement(usize, rusqlite::Error),
    /// A result over its limits.
    Limit(SqlError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl SqliteConnection {
    /// Open (or create) the database at `path` (its folder made 0700 when missing), with the
    /// authorizer and the limits. Blocking.
    pub fn open(path: &Path) -> Result<SqliteConnection, BackendError> {
        if let Some(dir) = path.parent() {
            plugd_core::private::make_private_dir(dir)
                .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        plugd_core::private::create_database_file(path).map_err(failed)?;
        let conn = Connection::open(path)
            .map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
        let connection = SqliteConnection::setup(path, conn)?;
        plugd_core::private::restrict_database_files(path).map_err(failed)?;
        Ok(connection)
    }

    /// A database in memory, for tests and tools.
    pub fn in_memory() -> Result<SqliteConnection, BackendError> {
        let conn = Connection::open_in_memory().map_err(failed)?;
        SqliteConnection::setup(Path::new(":memory:"), conn)
    }

    fn setup(path: &Path, mut conn: Connection) -> Result<SqliteConnection, BackendError> {
        let context = |e: rusqlite::Error| failed(format!("cannot set up {}: {e}", path.display()));
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA trusted_schema = OFF;
             PRAGMA busy_timeout = 2000;",
        )
        .map_err(context)?;
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(context)?;
        let max_pages = MAX_DATABASE_BYTES / page_size.max(512) as u64;
        conn.execute_batch(&format!("PRAGMA max_page_count = {max_pages};"))
            .map_err(context)?;
        // Memory and disk (security review H4). No value, and so no result column, larger than
        // a result may be: SQLite refuses `zeroblob(1e9)` or `randomblob(1e9)` before it
        // allocates. Temporary data (sorts, UNION, materialised views) in files, where SQLite
        // keeps at most its page cache in memory; its size is bounded by the call's deadline,
        // and TEMP objects, which outlive a call, are refused by the authorizer. The bundled
        // SQLite keeps temporary data in memory otherwise (SQLITE_TEMP_STORE=2), where a sort
        // of endless rows would grow the host until the deadline.
        //
        // No heap limit: sqlite3_hard_heap_limit64 and sqlite3_soft_heap_limit64 are
        // process-wide, not per connection. A hard limit would let one plugin's query make every
        // other plugin's database, every plugin's storage and the host's own status tables fail
        // with "out of memory" until it ends; a soft one only asks SQLite to shrink its caches.
        // The bounds above are per connection and per call instead.
        conn.set_limit(
            Limit::SQLITE_LIMIT_LENGTH,
            limit_i32(MAX_VALUE_BYTES + ROW_SLACK),
        )
        .map_err(context)?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, limit_i32(MAX_SQL_BYTES))
            .map_err(context)?;
        conn.execute_batch("PRAGMA temp_store = FILE;")
            .map_err(context)?;
        // Belt and braces beside the authorizer: no attached databases at all, no writable
        // schema tricks.
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
            .map_err(context)?;
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .map_err(context)?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
                 name       TEXT PRIMARY KEY,
                 sha256     TEXT NOT NULL,
                 applied_at TEXT NOT NULL
             ) WITHOUT ROWID;"
        ))
        .map_err(context)?;
        let guard = Arc::new(Guard::default());
        {
            let guard = guard.clone();
            conn.authorizer(Some(move |ctx: AuthContext<'_>| guard.authorize(ctx)))
                .map_err(context)?;
        }
        {
            let guard = guard.clone();
            conn.progress_handler(1_000, Some(move || guard.expired()))
                .map_err(context)?;
        }
        Ok(SqliteConnection {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                conn: Mutex::new(conn),
                guard,
            }),
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `work` on the connection on a blocking thread, stopping at `deadline`; a refusal of
    /// the authorizer becomes [`SqlError::Denied`].
    async fn run<T: Send + 'static>(
        &self,
        deadline: Instant,
        work: impl FnOnce(&Connection, &Guard) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, SqlError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let Some(conn) = inner.conn.try_lock_until(deadline) else {
                return Err(SqlError::Timeout);
            };
            *inner.guard.denied.lock() = None;
            *inner.guard.deadline.lock() = Some(deadline);
            let result = work(&conn, &inner.guard);
            *inner.guard.deadline.lock() = None;
            // Never let a transaction outlive the call (the authorizer already refuses BEGIN).
            if !conn.is_autocommit() {
                rollback(&conn, &inner.guard);
            }
            let denied = inner.guard.denied.lock().take();
            result.map_err(|f| match f {
                Failure::Sql(e) => sql_error(e, denied),
                Failure::Statement(index, e) => SqlError::Statement {
                    index,
                    source: Box::new(sql_error(e, denied)),
                },
                Failure::Limit(e) => e,
            })
        })
        .await
        .map_err(|e| SqlError::Failed(format!("worker failed: {e}")))?
    }
}

#[async_trait]
impl SqlConnection for SqliteConnection {
    fn location(&self) -> String {
        self.inner.path.display().to_string()
    }

    async fn execute(
        &self,
        sql: String,
        params: Vec<SqlValue>,
        deadline: Instant,
    ) -> Result<u64, SqlError> {
        self.run(deadline, move |conn, _| {
            Ok(execute_one(conn, &sql, &params)?)
        })
        .await
    }

    async fn query(
        &self,
        sql: String,
        params: Vec<SqlValue>,
        limits: ResultLimits,
        deadline: Instant,
    ) -> Result<Rows, SqlError> {
        self.run(deadline, move |conn, _| {
            query_rows(conn, &sql, &params, limits)
        })
        .await
    }

    async fn transaction(
        &self,
        statements: Vec<Statement>,
        deadline: Instant,
    ) -> Result<Vec<u64>, SqlError> {
        self.run(deadline, move |conn, guard| {
            host_statement(conn, guard, "BEGIN IMMEDIATE")?;
            let mut counts = Vec::with_capacity(statements.len());
            for (i, s) in statements.iter().enumerate() {
                match execute_one(conn, &s.sql, &s.params) {
                    Ok(n) => counts.push(n),
                    Err(e) => {
                        rollback(conn, guard);
                        return Err(Failure::Statement(i, e));
                    }
                }
            }
            if let Err(e) = host_statement(conn, guard, "COMMIT") {
                rollback(conn, guard);
                return Err(e.into());
            }
            Ok(counts)
        })
        .await
    }

    async fn applied_migration(
        &self,
        name: String,
        deadline: Instant,
    ) -> Result<Option<String>, SqlError> {
        self.run(deadline, move |conn, guard| {
            guard.host.store(true, Ordering::Release);
            let recorded = conn
                .query_row(
                    &format!("SELECT sha256 FROM {MIGRATIONS_TABLE} WHERE name = ?1"),
                    [&name],
                    |r| r.get(0),
                )
                .optional();
            guard.host.store(false, Ordering::Release);
            Ok(recorded?)
        })
        .await
    }

    async fn apply_migration(
        &self,
        migration: Migration,
        deadline: Instant,
    ) -> Result<(), SqlError> {
        self.run(deadline, move |conn, guard| {
            host_statement(conn, guard, "BEGIN IMMEDIATE")?;
            // The plugin's SQL, under the authorizer. A migration file is one batch, which SQLite
            // measures whole against SQLITE_LIMIT_SQL_LENGTH: the limit is the file's for it.
            conn.set_limit(
                Limit::SQLITE_LIMIT_SQL_LENGTH,
                limit_i32(migration.sql.len().max(MAX_SQL_BYTES)),
            )?;
            let applied = conn.execute_batch(&migration.sql);
            conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, limit_i32(MAX_SQL_BYTES))?;
            if let Err(e) = applied {
                rollback(conn, guard);
                return Err(e.into());
            }
            *guard.deadline.lock() = None;
            let applied_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            guard.host.store(true, Ordering::Release);
            let recorded = conn
                .execute(
                    &format!(
                        "INSERT INTO {MIGRATIONS_TABLE} (name, sha256, applied_at) VALUES (?1, ?2, ?3)"
                    ),
                    [&migration.name, &migration.sha256, &applied_at],
                )
                .and_then(|_| conn.execute_batch("COMMIT"));
            guard.host.store(false, Ordering::Release);
            if let Err(e) = recorded {
                rollback(conn, guard);
                return Err(e.into());
            }
            Ok(())
        })
        .await
    }
}

/// What SQLite said, as the core's [`SqlError`]; `denied` is the authorizer's note.
fn sql_error(e: rusqlite::Error, denied: Option<String>) -> SqlError {
    match sql_code(&e) {
        // SQLite reports a refused function as a plain error: the authorizer's note says.
        Some(ErrorCode::AuthorizationForStatementDenied) => {
            SqlError::Denied(denied.unwrap_or_else(|| "run this statement".into()))
        }
        Some(ErrorCode::Unknown) if denied.is_some() => {
            SqlError::Denied(denied.unwrap_or_default())
        }
        Some(ErrorCode::OperationInterrupted) => SqlError::Timeout,
        _ if is_invalid(&e) => SqlError::Invalid(describe(&e)),
        _ => SqlError::Failed(describe(&e)),
    }
}

fn sql_code(e: &rusqlite::Error) -> Option<ErrorCode> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        rusqlite::Error::SqlInputError { error, .. } => Some(error.code),
        _ => None,
    }
}

/// Errors in what the plugin asked (syntax, unknown table, parameter count, several statements)
/// rather than in running it.
fn is_invalid(e: &rusqlite::Error) -> bool {
    use rusqlite::Error as E;
    match e {
        E::MultipleStatement
        | E::ExecuteReturnedResults
        | E::InvalidParameterCount(..)
        | E::InvalidParameterName(_)
        | E::NulError(_) => true,
        E::SqliteFailure(f, _) => f.code == ErrorCode::Unknown || f.code == ErrorCode::TooBig,
        // An error SQLite found in the statement's text (syntax, unknown table or column).
        E::SqlInputError { .. } => true,
        _ => false,
    }
}

fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::Error as E;
    match e {
        E::MultipleStatement => {
            "one statement per call (use database.transaction to run several)".into()
        }
        E::ExecuteReturnedResults => "the statement returns rows: use database.query for it".into(),
        E::InvalidParameterCount(given, expected) => {
            format!("the statement takes {expected} parameters, {given} were given")
        }
        E::SqliteFailure(f, _) if f.code == ErrorCode::TooBig => format!(
            "a string, blob or row is larger than {} MiB, the most one value may hold (no query could return it)",
            MAX_VALUE_BYTES >> 20
        ),
        E::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => format!(
            "the database is full: it may hold at most {} MiB (nothing was written; delete rows to make room)",
            MAX_DATABASE_BYTES >> 20
        ),
        E::SqliteFailure(_, Some(m)) => m.clone(),
        E::SqlInputError { msg, offset, .. } => format!("{msg} (at byte {offset})"),
        other => other.to_string(),
    }
}

fn to_sql(v: &SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::Integer(*i),
        SqlValue::Real(r) => Value::Real(*r),
        SqlValue::Text(t) => Value::Text(t.clone()),
        SqlValue::Blob(b) => Value::Blob(b.clone()),
    }
}

fn from_sql(v: ValueRef<'_>) -> SqlValue {
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(r) => SqlValue::Real(r),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

/// What `v` counts for against the result cap, as [`SqlValue::result_bytes`] counts it, read
/// without copying it.
fn value_bytes(v: &ValueRef<'_>) -> usize {
    match v {
        ValueRef::Null => 1,
        ValueRef::Integer(_) | ValueRef::Real(_) => 8,
        ValueRef::Text(b) | ValueRef::Blob(b) => b.len(),
    }
}

/// A value SQLite refused to build while stepping (over `SQLITE_LIMIT_LENGTH`, about the result
/// cap): the result is too large.
fn value_too_big(e: rusqlite::Error) -> Failure {
    match sql_code(&e) {
        Some(ErrorCode::TooBig) => Failure::Limit(SqlError::TooLarge),
        _ => Failure::Sql(e),
    }
}

/// A byte limit as SQLite's `int`.
fn limit_i32(bytes: usize) -> i32 {
    i32::try_from(bytes).unwrap_or(i32::MAX)
}

fn execute_one(conn: &Connection, sql: &str, params: &[SqlValue]) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.execute(params_from_iter(params.iter().map(to_sql)))?;
    Ok(n as u64)
}

/// The rows of `sql`, reading no further than `limits`.
fn query_rows(
    conn: &Connection,
    sql: &str,
    params: &[SqlValue],
    limits: ResultLimits,
) -> Result<Rows, Failure> {
    let mut stmt = conn.prepare(sql)?;
    let columns: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let width = columns.len();
    let mut rows = stmt.query(params_from_iter(params.iter().map(to_sql)))?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let too_large = || Failure::Limit(SqlError::TooLarge);
    while let Some(row) = rows.next().map_err(value_too_big)? {
        if out.len() == limits.max_rows {
            return Err(Failure::Limit(SqlError::TooManyRows));
        }
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            // Measured before it is copied: the first value past the cap ends the query.
            let v = row.get_ref(i)?;
            bytes = bytes
                .checked_add(value_bytes(&v))
                .filter(|b| *b <= limits.max_bytes)
                .ok_or_else(too_large)?;
            values.push(from_sql(v));
        }
        out.push(values);
    }
    Ok(Rows { columns, rows: out })
}

/// A statement of the host's own (past the authorizer).
fn host_statement(conn: &Connection, guard: &Guard, sql: &str) -> rusqlite::Result<()> {
    guard.host.store(true, Ordering::Release);
    let r = conn.execute_batch(sql);
    guard.host.store(false, Ordering::Release);
    r
}

/// Roll back whatever is open; never interrupted.
fn rollback(conn: &Connection, guard: &Guard) {
    *guard.deadline.lock() = None;
    if !conn.is_autocommit()
        && let Err(e) = host_statement(conn, guard, "ROLLBACK")
    {
        tracing::error!(error = %e, "database rollback failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use plugd_core::database_limits::MAX_ROWS;
    use plugd_core::{AuditLog, Auditor, Database, HostError, PluginState};
    use sha2::{Digest, Sha256};

    fn db() -> (Database, Arc<PluginState>, Arc<AuditLog>) {
        let state = Arc::new(PluginState::default());
        let log = Arc::new(AuditLog::default());
        let auditor = Auditor::new("p", Some(state.clone()), Some(log.clone()));
        let connection = Arc::new(SqliteConnection::in_memory().unwrap());
        (Database::new("p", connection, auditor), state, log)
    }

    /// Open the database of plugin `p` under `dir` with the migrations of `migrations`, as a
    /// host does at load.
    async fn open(dir: &Path, migrations: &Path) -> Result<Database, String> {
        let migrations = Migration::read_dir("p", migrations).map_err(|e| e.to_string())?;
        let backend = SqliteDatabase::new(dir);
        Database::open("p", &backend, &migrations, Auditor::new("p", None, None))
            .await
            .map_err(|e| e.to_string())
    }

    /// The file of plugin `p` under `dir`, opened beside the plugin's connection.
    fn file(dir: &Path) -> Connection {
        Connection::open(dir.join("plugins/p/db.sqlite")).unwrap()
    }

    #[tokio::test]
    async fn the_sqlite_backend_conforms() {
        let dir = tempfile::tempdir().unwrap();
        plugd_core::testing::sql_backend(Arc::new(SqliteDatabase::new(dir.path()))).await;
    }

    fn text(s: &str) -> SqlValue {
        SqlValue::Text(s.into())
    }

    async fn denied(db: &Database, sql: &str) -> String {
        match db.execute(sql, &[]).await {
            Err(HostError::Denied(m)) => m,
            other => panic!("{sql}: expected a denial, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_authorizer_denies_attach_pragma_writes_extensions_and_transactions() {
        let (db, state, log) = db();
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        let m = denied(&db, &format!("ATTACH '{}' AS o", other.display())).await;
        assert_eq!(
            m,
            format!(
                "database access denied: plugin 'p' may not attach another database ('{}')",
                other.display()
            )
        );
        assert!(!other.exists(), "no file was created");
        let m = denied(&db, "DETACH main").await;
        assert!(m.contains("may not detach"), "{m}");
        let m = denied(&db, "PRAGMA journal_mode = DELETE").await;
        assert!(
            m.contains("may not run PRAGMA journal_mode = DELETE"),
            "{m}"
        );
        let m = denied(&db, "PRAGMA user_version = 7").await;
        assert!(m.contains("PRAGMA user_version = 7"), "{m}");
        let m = denied(&db, "PRAGMA writable_schema").await;
        assert!(m.contains("PRAGMA writable_schema"), "{m}");
        match db.query("SELECT load_extension('/tmp/evil.so')", &[]).await {
            Err(HostError::Denied(m)) => assert!(m.contains("load extensions"), "{m}"),
            other => panic!("load_extension: {other:?}"),
        }
        for sql in [
            "BEGIN",
            "BEGIN IMMEDIATE",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT s",
            "RELEASE s",
        ] {
            let m = denied(&db, sql).await;
            assert!(m.contains("database.transaction"), "{sql}: {m}");
        }
        let m = denied(&db, "DELETE FROM _plugd_migrations").await;
        assert!(m.contains("migration record"), "{m}");
        // Each denial counted against the plugin and audited.
        assert_eq!(state.error_count(), 13);
        let audit = log.entries(Some("p"));
        assert_eq!(audit.len(), 13);
        assert_eq!(audit[0].capability, "database");
        assert!(
            audit[0]
                .detail
                .starts_with("database.execute: database access denied")
        );
        // Still usable: autocommit, and the read-only PRAGMAs pass.
        db.execute("CREATE TABLE t (a INTEGER, b TEXT)", &[])
            .await
            .unwrap();
        let info = db.query("PRAGMA table_info(t)", &[]).await.unwrap();
        assert_eq!(info.rows.len(), 2);
        let v = db.query("PRAGMA user_version", &[]).await.unwrap();
        assert_eq!(v.rows, vec![vec![SqlValue::Integer(0)]]);
        assert_eq!(state.error_count(), 13);
    }

    #[tokio::test]
    async fn vacuum_into_cannot_write_a_file_elsewhere() {
        let (db, _, _) = db();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("copy.db");
        let r = db
            .execute(&format!("VACUUM INTO '{}'", out.display()), &[])
            .await;
        assert!(
            matches!(&r, Err(HostError::Denied(m)) if m.contains("may not attach another database")),
            "{r:?}"
        );
        assert!(!out.exists());
    }

    #[tokio::test]
    async fn parameters_are_bound_never_spliced() {
        let (db, _, _) = db();
        db.execute(
            "CREATE TABLE u (id INTEGER PRIMARY KEY, name TEXT, pic BLOB, score REAL)",
            &[],
        )
        .await
        .unwrap();
        let hostile = "x'); DROP TABLE u; --";
        let n = db
            .execute(
                "INSERT INTO u (name, pic, score) VALUES (?1, ?2, ?3)",
                &[
                    text(hostile),
                    SqlValue::Blob(vec![0, 1, 2]),
                    SqlValue::Real(1.5),
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let rows = db
            .query(
                "SELECT id, name, pic, score, NULL AS n FROM u WHERE name = ?",
                &[text(hostile)],
            )
            .await
            .unwrap();
        assert_eq!(rows.columns, ["id", "name", "pic", "score", "n"]);
        assert_eq!(
            rows.rows,
            vec![vec![
                SqlValue::Integer(1),
                text(hostile),
                SqlValue::Blob(vec![0, 1, 2]),
                SqlValue::Real(1.5),
                SqlValue::Null
            ]]
        );
        let e = db
            .execute("INSERT INTO u (name) VALUES (?1)", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("takes 1 parameters, 0 were given")),
            "{e:?}"
        );
        let e = db.execute("SELECT 1; DROP TABLE u", &[]).await.unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("one statement per call")),
            "{e:?}"
        );
        let e = db.execute("SELEC 1", &[]).await.unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.starts_with("database.execute of plugin 'p': ") && m.contains("syntax error")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_transaction_is_all_or_nothing() {
        let (db, _, _) = db();
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
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Failed(m) if m.starts_with("database.transaction of plugin 'p': statement 2 of 2 failed, nothing was committed") && m.contains("NOT NULL")),
            "{e:?}"
        );
        let rows = db.query("SELECT v FROM a ORDER BY id", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![text("one!")], vec![text("two!")]]);
        // A BEGIN smuggled into a transaction is refused too, and rolls everything back.
        let e = db
            .transaction(&[
                Statement::new("INSERT INTO a (v) VALUES ('x')", vec![]),
                Statement::new("COMMIT", vec![]),
            ])
            .await
            .unwrap_err();
        assert!(matches!(e, HostError::Denied(_)), "{e:?}");
        let rows = db.query("SELECT count(*) FROM a", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![SqlValue::Integer(2)]]);
    }

    #[tokio::test]
    async fn a_query_that_runs_forever_is_interrupted_at_its_deadline() {
        let (db, _, _) = db();
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
                "database.query of plugin 'p' timed out after 200ms and was interrupted".into()
            )
        );
        // The connection is free again: the blocking thread stopped.
        let rows = db.query("SELECT 42", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![SqlValue::Integer(42)]]);
    }

    #[tokio::test]
    async fn results_are_capped_in_rows_and_bytes() {
        let (db, _, _) = db();
        let e = db
            .query(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10001) SELECT x FROM c",
                &[],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("more than 10000 rows")),
            "{e:?}"
        );
        let ok = db
            .query(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10000) SELECT x FROM c",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(ok.rows.len(), MAX_ROWS);
        let e = db
            .query(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 9) SELECT zeroblob(1048576) FROM c",
                &[],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("larger than 8 MiB")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn past_its_size_cap_an_insert_is_refused_and_what_is_stored_stays() {
        let connection = Arc::new(SqliteConnection::in_memory().unwrap());
        {
            // As the host: the plugin may not run these PRAGMAs.
            connection.inner.guard.host.store(true, Ordering::Release);
            let conn = connection.inner.conn.lock();
            let pragma = |name: &str| -> u64 {
                let n: i64 = conn
                    .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                    .unwrap();
                n as u64
            };
            assert_eq!(
                pragma("max_page_count") * pragma("page_size"),
                MAX_DATABASE_BYTES
            );
            // The same rule with a cap of 64 pages, quick to reach.
            conn.execute_batch("PRAGMA max_page_count = 64").unwrap();
            connection.inner.guard.host.store(false, Ordering::Release);
        }
        let db = Database::new("p", connection, Auditor::new("p", None, None));
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)", &[])
            .await
            .unwrap();
        db.execute("INSERT INTO t (b) VALUES (x'2a')", &[])
            .await
            .unwrap();
        let mut stored = 1;
        let full = loop {
            match db
                .execute("INSERT INTO t (b) VALUES (randomblob(20000))", &[])
                .await
            {
                Ok(_) => stored += 1,
                Err(e) => break e,
            }
            assert!(stored < 100, "64 pages never filled");
        };
        assert_eq!(
            full,
            HostError::Failed(
                "database.execute of plugin 'p': the database is full: it may hold at most 1024 MiB (nothing was written; delete rows to make room)".into()
            )
        );
        // A transaction past the cap is rolled back whole.
        let e = db
            .transaction(&[
                Statement::new("DELETE FROM t WHERE id = 1", vec![]),
                Statement::new("INSERT INTO t (b) VALUES (randomblob(200000))", vec![]),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Failed(m) if m.contains("statement 2 of 2 failed, nothing was committed: the database is full")),
            "{e:?}"
        );
        let rows = db.query("SELECT count(*) FROM t", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![SqlValue::Integer(stored)]]);
        let first = db.query("SELECT b FROM t WHERE id = 1", &[]).await.unwrap();
        assert_eq!(first.rows, vec![vec![SqlValue::Blob(vec![42])]]);
        // Room made, room used.
        db.execute("DELETE FROM t WHERE id > 2", &[]).await.unwrap();
        db.execute("INSERT INTO t (b) VALUES (randomblob(20000))", &[])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_value_is_measured_before_it_is_copied_and_the_first_past_the_cap_ends_the_query() {
        let (db, _, _) = db();
        // 8 MiB in three values: the third is one byte too many.
        let half = MAX_VALUE_BYTES / 2;
        let e = db
            .query(
                &format!("SELECT zeroblob({half}), zeroblob({half}), 1"),
                &[],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Invalid(m) if m.contains("the result is larger than 8 MiB")),
            "{e:?}"
        );
        let ok = db
            .query(
                &format!("SELECT zeroblob({half}), zeroblob({})", half - 1),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(ok.rows.len(), 1);
        // SQLite's own limits are set on the connection.
        let connection = SqliteConnection::in_memory().unwrap();
        let conn = connection.inner.conn.lock();
        assert_eq!(
            conn.limit(Limit::SQLITE_LIMIT_LENGTH).unwrap(),
            (MAX_VALUE_BYTES + ROW_SLACK) as i32
        );
        assert_eq!(
            conn.limit(Limit::SQLITE_LIMIT_SQL_LENGTH).unwrap(),
            MAX_SQL_BYTES as i32
        );
    }

    fn write(dir: &Path, name: &str, sql: &str) {
        std::fs::write(dir.join(name), sql).unwrap();
    }

    #[tokio::test]
    async fn migrations_apply_in_order_once_and_a_changed_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        // Lexical order: 0002 needs the table 0001 makes, 0010 comes after 0002.
        write(
            &migrations,
            "0010_fill.sql",
            "INSERT INTO notes (text, tag) VALUES ('filled', 'x');",
        );
        write(
            &migrations,
            "0001_notes.sql",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);",
        );
        write(
            &migrations,
            "0002_tag.sql",
            "ALTER TABLE notes ADD COLUMN tag TEXT;\nCREATE INDEX notes_tag ON notes (tag);",
        );
        write(&migrations, "README.md", "not a migration");
        let recorded = |dir: &Path| {
            let conn = file(dir);
            let mut stmt = conn
                .prepare("SELECT name, sha256, applied_at FROM _plugd_migrations ORDER BY name")
                .unwrap();
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
        };
        let db = open(dir.path(), &migrations).await.unwrap();
        let rows = recorded(dir.path());
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["0001_notes.sql", "0002_tag.sql", "0010_fill.sql"]);
        assert_eq!(
            rows[0].1,
            hex::encode(Sha256::digest(
                b"CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);"
            ))
        );
        assert!(rows[0].2.ends_with('Z'), "{}", rows[0].2);
        drop(db);

        // Opening again applies nothing twice (the row of 0010 would be duplicated).
        write(
            &migrations,
            "0011_more.sql",
            "INSERT INTO notes (text) VALUES ('more');",
        );
        let db = open(dir.path(), &migrations).await.unwrap();
        let count: i64 = file(dir.path())
            .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2);
        drop(db);

        write(
            &migrations,
            "0002_tag.sql",
            "ALTER TABLE notes ADD COLUMN tag2 TEXT;",
        );
        let e = open(dir.path(), &migrations).await.unwrap_err();
        assert!(
            e.starts_with(
                "migration migrations/0002_tag.sql of plugin 'p' has changed since it was applied"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failing_migration_is_rolled_back_whole_and_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        write(&migrations, "0001_ok.sql", "CREATE TABLE t (a INTEGER);");
        write(
            &migrations,
            "0002_bad.sql",
            "CREATE TABLE u (b INTEGER);\nINSERT INTO nowhere VALUES (1);",
        );
        let e = open(dir.path(), &migrations).await.unwrap_err();
        assert!(
            e.starts_with("migration migrations/0002_bad.sql of plugin 'p' failed and was rolled back: no such table: nowhere"),
            "{e}"
        );
        write(&migrations, "0002_bad.sql", "ATTACH 'x.db' AS x;");
        let e = open(dir.path(), &migrations).await.unwrap_err();
        assert!(
            e.contains("the plugin may not attach another database"),
            "{e}"
        );
        std::fs::remove_file(migrations.join("0002_bad.sql")).unwrap();
        let _db = open(dir.path(), &migrations).await.unwrap();
        let tables: Vec<String> = file(dir.path())
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            tables,
            ["_plugd_migrations", "t"],
            "u was rolled back with 0002"
        );
    }

    /// Security review L6: a plugin's database is its own, not other local users'.
    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_file_and_its_wal_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), &dir.path().join("migrations"))
            .await
            .unwrap();
        db.execute("CREATE TABLE t (a INTEGER)", &[]).await.unwrap();
        db.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        for f in ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"] {
            let path = dir.path().join("plugins/p").join(f);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
}
