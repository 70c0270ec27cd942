//! The `database` capability: one SQLite file per plugin (`<data_dir>/plugins/<name>/db.sqlite`).
//!
//! The connection is opened with an authorizer that refuses, for the plugin's SQL:
//! - `ATTACH` and `DETACH` (the plugin has one file, nothing else);
//! - every `PRAGMA` except a read-only list ([`READ_ONLY_PRAGMAS`]; `user_version`,
//!   `schema_version` and `page_size` only without a value);
//! - extension loading (the `load_extension` SQL function; the C API is off as well);
//! - `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT` and `RELEASE`: every call runs in autocommit, so
//!   a transaction never spans two guest calls. [`Database::transaction`] is the one way to run
//!   several statements all-or-nothing;
//! - writes to the host's migration record, `_plugd_migrations`.
//!
//! A refused statement is [`HostError::Denied`]
//! (`database access denied: plugin 'x' may not attach another database ('/etc/x.db')`),
//! counted against the plugin and audited. Statements take bound parameters ([`SqlValue`]), one
//! statement per call. Every call has a deadline ([`DEFAULT_TIMEOUT`], shortened with
//! [`Database::with_timeout`]): the work runs on a blocking thread, SQLite's progress handler
//! interrupts it at the deadline, and the caller stops waiting then in any case. Results are capped
//! at [`MAX_ROWS`] rows and [`MAX_RESULT_BYTES`] bytes; the file at [`MAX_DATABASE_BYTES`].
//!
//! Migrations: the `*.sql` files of the plugin's `migrations/` folder are applied at load in
//! lexical order of their names, each in its own transaction, and recorded in
//! `_plugd_migrations (name, sha256, applied_at)`. A migration that was applied and has changed
//! since is a load error that names the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params_from_iter};
use sha2::{Digest, Sha256};

use crate::audit::Auditor;
use crate::error::HostError;

/// The deadline of one call unless shortened.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of one migration at load.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Rows one query may return.
pub const MAX_ROWS: usize = 10_000;
/// Bytes one query may return (text and blobs at their length, numbers at 8).
pub const MAX_RESULT_BYTES: usize = 8 * 1024 * 1024;
/// Statements one [`Database::transaction`] may hold.
pub const MAX_TRANSACTION_STATEMENTS: usize = 1_000;
/// The largest a plugin's database file may grow (SQLite's `max_page_count`).
pub const MAX_DATABASE_BYTES: u64 = 1024 * 1024 * 1024;
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
/// The host's record of applied migrations, in the plugin's database.
pub const MIGRATIONS_TABLE: &str = "_plugd_migrations";

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
    plugin: Arc<str>,
    path: PathBuf,
    conn: Mutex<Connection>,
    guard: Arc<Guard>,
    auditor: Auditor,
}

/// One plugin's database. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
    timeout: Duration,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("plugin", &self.inner.plugin)
            .field("path", &self.inner.path)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A failure inside a call, before it becomes a [`HostError`].
enum Failure {
    Sql(rusqlite::Error),
    Host(HostError),
    Timeout,
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl Database {
    /// Open (or create) the database at `path`, install the authorizer and the limits, and
    /// apply the `*.sql` files of `migrations` (when the folder exists). The file and its
    /// `-wal` and `-shm` are mode 0600 whatever the umask. Blocking.
    pub fn open(
        plugin: &str,
        path: &Path,
        migrations: Option<&Path>,
        auditor: Auditor,
    ) -> Result<Database, String> {
        let context =
            |e: crate::private::FileError| format!("the database of plugin '{plugin}': {e}");
        crate::private::create_database_file(path).map_err(context)?;
        let conn = Connection::open(path).map_err(|e| {
            format!(
                "cannot open the database of plugin '{plugin}' at {}: {e}",
                path.display()
            )
        })?;
        let db = Database::setup(plugin, path, conn, migrations, auditor)?;
        crate::private::restrict_database_files(path).map_err(context)?;
        Ok(db)
    }

    /// A database in memory, for tests and tools.
    pub fn in_memory(plugin: &str, auditor: Auditor) -> Result<Database, String> {
        let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        Database::setup(plugin, Path::new(":memory:"), conn, None, auditor)
    }

    fn setup(
        plugin: &str,
        path: &Path,
        mut conn: Connection,
        migrations: Option<&Path>,
        auditor: Auditor,
    ) -> Result<Database, String> {
        let context = |e: rusqlite::Error| {
            format!(
                "cannot set up the database of plugin '{plugin}' at {}: {e}",
                path.display()
            )
        };
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
        if let Some(dir) = migrations {
            migrate(plugin, &conn, &guard, dir)?;
        }
        Ok(Database {
            inner: Arc::new(Inner {
                plugin: Arc::from(plugin),
                path: path.to_path_buf(),
                conn: Mutex::new(conn),
                guard,
                auditor,
            }),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The deadline of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same database with calls limited to `timeout` (never longer than this handle's).
    pub fn with_timeout(&self, timeout: Duration) -> Database {
        Database {
            inner: self.inner.clone(),
            timeout: timeout.min(self.timeout),
        }
    }

    /// Run one statement with bound parameters; the number of rows it changed.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use plugd_core::{Auditor, Database, SqlValue};
    /// let db = Database::in_memory("notes", Auditor::new("notes", None, None)).unwrap();
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
    pub async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, HostError> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        self.run("database.execute", move |conn| {
            Ok(execute_one(conn, &sql, &params)?)
        })
        .await
    }

    /// Run one statement that returns rows (a `SELECT`, or a write with `RETURNING`).
    pub async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, HostError> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        let plugin = self.inner.plugin.clone();
        self.run("database.query", move |conn| {
            query_rows(conn, &sql, &params, &plugin)
        })
        .await
    }

    /// Run statements in one transaction: all are committed, or none (the first failure rolls
    /// back and names the statement). The rows changed by each.
    pub async fn transaction(&self, statements: &[Statement]) -> Result<Vec<u64>, HostError> {
        if statements.len() > MAX_TRANSACTION_STATEMENTS {
            return Err(self.inner.auditor.check(
                Err(HostError::Invalid(format!(
                    "database.transaction of plugin '{}': {} statements, more than the limit of {MAX_TRANSACTION_STATEMENTS}",
                    self.inner.plugin,
                    statements.len()
                ))),
                "database",
                "database.transaction",
            )?);
        }
        let statements = statements.to_vec();
        let guard = self.inner.guard.clone();
        self.run("database.transaction", move |conn| {
            host_statement(conn, &guard, "BEGIN IMMEDIATE")?;
            let total = statements.len();
            let mut counts = Vec::with_capacity(total);
            for (i, s) in statements.iter().enumerate() {
                match execute_one(conn, &s.sql, &s.params) {
                    Ok(n) => counts.push(n),
                    Err(e) => {
                        rollback(conn, &guard);
                        let message = format!(
                            "statement {} of {total} failed, nothing was committed: {}",
                            i + 1,
                            describe(&e)
                        );
                        let error = if is_invalid(&e) {
                            HostError::Invalid(message)
                        } else {
                            HostError::Failed(message)
                        };
                        return Err(Failure::Host(error).with_source(e));
                    }
                }
            }
            if let Err(e) = host_statement(conn, &guard, "COMMIT") {
                rollback(conn, &guard);
                return Err(e.into());
            }
            Ok(counts)
        })
        .await
    }

    /// Run `work` on the connection on a blocking thread, within the deadline; map its failure
    /// to a [`HostError`] naming the plugin and the call, and record a denial.
    async fn run<T: Send + 'static>(
        &self,
        call: &'static str,
        work: impl FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, HostError> {
        let deadline = Instant::now() + self.timeout;
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let Some(conn) = inner.conn.try_lock_until(deadline) else {
                return Err((Failure::Timeout, None));
            };
            *inner.guard.denied.lock() = None;
            *inner.guard.deadline.lock() = Some(deadline);
            let result = work(&conn);
            *inner.guard.deadline.lock() = None;
            // Never let a transaction outlive the call (the authorizer already refuses BEGIN).
            if !conn.is_autocommit() {
                rollback(&conn, &inner.guard);
            }
            let denied = inner.guard.denied.lock().take();
            result.map_err(|f| (f, denied))
        });
        // The progress handler stops SQLite at the deadline; the caller stops waiting shortly
        // after in any case (a call queued behind another, a busy file).
        let grace = Duration::from_millis(250);
        let outcome = match tokio::time::timeout_at((deadline + grace).into(), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err((
                Failure::Host(HostError::Failed(format!("worker failed: {join}"))),
                None,
            )),
            Err(_) => Err((Failure::Timeout, None)),
        };
        let result = outcome.map_err(|(failure, denied)| self.host_error(call, failure, denied));
        self.inner.auditor.check(result, "database", call)
    }

    fn host_error(&self, call: &str, failure: Failure, denied: Option<String>) -> HostError {
        let plugin = &self.inner.plugin;
        let timed_out = || {
            HostError::Failed(format!(
                "{call} of plugin '{plugin}' timed out after {} and was interrupted",
                humantime::format_duration(self.timeout)
            ))
        };
        match failure {
            Failure::Timeout => timed_out(),
            Failure::Host(HostError::Invalid(m)) => {
                HostError::Invalid(format!("{call} of plugin '{plugin}': {m}"))
            }
            Failure::Host(HostError::Failed(m)) => {
                HostError::Failed(format!("{call} of plugin '{plugin}': {m}"))
            }
            Failure::Host(other) => other,
            Failure::Sql(e) => match sql_code(&e) {
                // SQLite reports a refused function as a plain error: the authorizer's note says.
                Some(ErrorCode::AuthorizationForStatementDenied) | Some(ErrorCode::Unknown)
                    if denied.is_some()
                        || sql_code(&e) == Some(ErrorCode::AuthorizationForStatementDenied) =>
                {
                    HostError::Denied(format!(
                        "database access denied: plugin '{plugin}' may not {}",
                        denied.as_deref().unwrap_or("run this statement")
                    ))
                }
                Some(ErrorCode::OperationInterrupted) => timed_out(),
                _ if is_invalid(&e) => {
                    HostError::Invalid(format!("{call} of plugin '{plugin}': {}", describe(&e)))
                }
                _ => HostError::Failed(format!("{call} of plugin '{plugin}': {}", describe(&e))),
            },
        }
    }
}

impl Failure {
    /// Keep an authorizer denial or an interrupt visible through a transaction's context.
    fn with_source(self, e: rusqlite::Error) -> Failure {
        match sql_code(&e) {
            Some(ErrorCode::AuthorizationForStatementDenied | ErrorCode::OperationInterrupted) => {
                Failure::Sql(e)
            }
            _ => self,
        }
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

/// A value read, and the bytes it counts for against [`MAX_RESULT_BYTES`].
fn from_sql(v: ValueRef<'_>) -> (SqlValue, usize) {
    match v {
        ValueRef::Null => (SqlValue::Null, 1),
        ValueRef::Integer(i) => (SqlValue::Integer(i), 8),
        ValueRef::Real(r) => (SqlValue::Real(r), 8),
        ValueRef::Text(t) => (
            SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
            t.len(),
        ),
        ValueRef::Blob(b) => (SqlValue::Blob(b.to_vec()), b.len()),
    }
}

fn execute_one(conn: &Connection, sql: &str, params: &[SqlValue]) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.execute(params_from_iter(params.iter().map(to_sql)))?;
    Ok(n as u64)
}

fn query_rows(
    conn: &Connection,
    sql: &str,
    params: &[SqlValue],
    plugin: &str,
) -> Result<Rows, Failure> {
    let mut stmt = conn.prepare(sql)?;
    let columns: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let width = columns.len();
    let mut rows = stmt.query(params_from_iter(params.iter().map(to_sql)))?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        if out.len() == MAX_ROWS {
            return Err(Failure::Host(HostError::Invalid(format!(
                "the result has more than {MAX_ROWS} rows; add a LIMIT and page through it (plugin '{plugin}')"
            ))));
        }
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            let (v, size) = from_sql(row.get_ref(i)?);
            bytes += size;
            values.push(v);
        }
        if bytes > MAX_RESULT_BYTES {
            return Err(Failure::Host(HostError::Invalid(format!(
                "the result is larger than {} MiB; select fewer columns or rows (plugin '{plugin}')",
                MAX_RESULT_BYTES / (1024 * 1024)
            ))));
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

/// Apply the migrations of `dir` in lexical order, each in its own transaction.
fn migrate(plugin: &str, conn: &Connection, guard: &Guard, dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Ok(());
    }
    let read = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the migrations of plugin '{plugin}' in {}: {e}",
            dir.display()
        )
    })?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| format!("migrations of plugin '{plugin}': {e}"))?;
        let path = entry.path();
        if !path.is_file() || path.extension().is_none_or(|x| x != "sql") {
            continue;
        }
        let name = entry.file_name().into_string().map_err(|n| {
            format!("migration {n:?} of plugin '{plugin}': the file name is not UTF-8")
        })?;
        files.push((name, path));
    }
    files.sort();
    for (name, path) in files {
        let file = format!("migrations/{name}");
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read migration {file} of plugin '{plugin}': {e}"))?;
        let sql = String::from_utf8(bytes.clone())
            .map_err(|_| format!("migration {file} of plugin '{plugin}' is not UTF-8 text"))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        guard.host.store(true, Ordering::Release);
        let recorded: rusqlite::Result<Option<String>> = conn
            .query_row(
                &format!("SELECT sha256 FROM {MIGRATIONS_TABLE} WHERE name = ?1"),
                [&name],
                |r| r.get(0),
            )
            .optional();
        guard.host.store(false, Ordering::Release);
        let recorded =
            recorded.map_err(|e| format!("migration {file} of plugin '{plugin}': {e}"))?;
        match recorded {
            Some(applied) if applied == sha => continue,
            Some(applied) => {
                return Err(format!(
                    "migration {file} of plugin '{plugin}' has changed since it was applied (sha256 then {applied}, now {sha}); restore it and put the change in a new migration"
                ));
            }
            None => {}
        }
        let failed = |what: String| {
            format!("migration {file} of plugin '{plugin}' failed and was rolled back: {what}")
        };
        *guard.denied.lock() = None;
        *guard.deadline.lock() = Some(Instant::now() + MIGRATION_TIMEOUT);
        host_statement(conn, guard, "BEGIN IMMEDIATE").map_err(|e| failed(e.to_string()))?;
        if let Err(e) = conn.execute_batch(&sql) {
            let reason = match (sql_code(&e), guard.denied.lock().take()) {
                (_, Some(r)) => format!("the plugin may not {r}"),
                (Some(ErrorCode::OperationInterrupted), _) => format!(
                    "it ran longer than {}",
                    humantime::format_duration(MIGRATION_TIMEOUT)
                ),
                _ => describe(&e),
            };
            rollback(conn, guard);
            return Err(failed(reason));
        }
        *guard.deadline.lock() = None;
        let applied_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        guard.host.store(true, Ordering::Release);
        let recorded = conn
            .execute(
                &format!(
                    "INSERT INTO {MIGRATIONS_TABLE} (name, sha256, applied_at) VALUES (?1, ?2, ?3)"
                ),
                [&name, &sha, &applied_at],
            )
            .and_then(|_| conn.execute_batch("COMMIT"));
        guard.host.store(false, Ordering::Release);
        if let Err(e) = recorded {
            rollback(conn, guard);
            return Err(failed(e.to_string()));
        }
        tracing::info!(plugin, migration = %name, "migration applied");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, PluginState};

    fn db() -> (Database, Arc<PluginState>, Arc<AuditLog>) {
        let state = Arc::new(PluginState::default());
        let log = Arc::new(AuditLog::default());
        let auditor = Auditor::new("p", Some(state.clone()), Some(log.clone()));
        (Database::in_memory("p", auditor).unwrap(), state, log)
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

    fn write(dir: &Path, name: &str, sql: &str) {
        std::fs::write(dir.join(name), sql).unwrap();
    }

    #[test]
    fn migrations_apply_in_order_once_and_a_changed_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        // Lexical order: 0002 needs the table 0001 makes, 0010 comes after 0002.
        write(
            &migrations,
            "0010_seed.sql",
            "INSERT INTO notes (text, tag) VALUES ('seeded', 'x');",
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
        let path = dir.path().join("db.sqlite");
        let auditor = || Auditor::new("p", None, None);
        let conn_rows = |db: &Database| {
            let conn = db.inner.conn.lock();
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
        let db = Database::open("p", &path, Some(&migrations), auditor()).unwrap();
        let recorded = conn_rows(&db);
        let names: Vec<&str> = recorded.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["0001_notes.sql", "0002_tag.sql", "0010_seed.sql"]);
        assert_eq!(
            recorded[0].1,
            hex::encode(Sha256::digest(
                b"CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);"
            ))
        );
        assert!(recorded[0].2.ends_with('Z'), "{}", recorded[0].2);
        drop(db);

        // Opening again applies nothing twice (the seed row would be duplicated).
        write(
            &migrations,
            "0011_more.sql",
            "INSERT INTO notes (text) VALUES ('more');",
        );
        let db = Database::open("p", &path, Some(&migrations), auditor()).unwrap();
        let count: i64 = db
            .inner
            .conn
            .lock()
            .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2);
        drop(db);

        write(
            &migrations,
            "0002_tag.sql",
            "ALTER TABLE notes ADD COLUMN tag2 TEXT;",
        );
        let e = Database::open("p", &path, Some(&migrations), auditor()).unwrap_err();
        assert!(
            e.starts_with(
                "migration migrations/0002_tag.sql of plugin 'p' has changed since it was applied"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_failing_migration_is_rolled_back_whole_and_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        write(&migrations, "0001_ok.sql", "CREATE TABLE t (a INTEGER);");
        write(
            &migrations,
            "0002_bad.sql",
            "CREATE TABLE u (b INTEGER);\nINSERT INTO nowhere VALUES (1);",
        );
        let path = dir.path().join("db.sqlite");
        let e = Database::open("p", &path, Some(&migrations), Auditor::new("p", None, None))
            .unwrap_err();
        assert!(
            e.starts_with("migration migrations/0002_bad.sql of plugin 'p' failed and was rolled back: no such table: nowhere"),
            "{e}"
        );
        write(&migrations, "0002_bad.sql", "ATTACH 'x.db' AS x;");
        let e = Database::open("p", &path, Some(&migrations), Auditor::new("p", None, None))
            .unwrap_err();
        assert!(
            e.contains("the plugin may not attach another database"),
            "{e}"
        );
        std::fs::remove_file(migrations.join("0002_bad.sql")).unwrap();
        let db =
            Database::open("p", &path, Some(&migrations), Auditor::new("p", None, None)).unwrap();
        let conn = db.inner.conn.lock();
        let tables: Vec<String> = conn
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
    #[test]
    fn the_database_file_and_its_wal_are_0600() {
        use crate::private::tests::mode;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let db = Database::open("p", &path, None, Auditor::new("p", None, None)).unwrap();
        db.inner
            .conn
            .lock()
            .execute_batch("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        for f in ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"] {
            assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
        }
    }
}
