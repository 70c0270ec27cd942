//! The `database` capability in PostgreSQL ([`PostgresSql`], a [`plugd_core::SqlBackend`]),
//! isolated by PostgreSQL itself rather than by inspecting the plugin's SQL:
//!
//! - **A schema and a role per plugin.** Plugin `notes-app` gets the schema `plugin_notes_app`
//!   (owned by the host, so the plugin cannot drop what the host keeps there) on which its role
//!   `plugd_plugin_notes_app` has `USAGE` and `CREATE`, and nothing else anywhere: the role is
//!   `LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS` with a
//!   `CONNECTION LIMIT`, its `search_path` is its schema and its `statement_timeout` is set.
//!   PUBLIC loses `CREATE` on `public`, everything on the host schema and `TEMPORARY` on the
//!   database ([`crate::Postgres::connect`]).
//! - **The plugin's statements run logged in as its role**, on a small pool of its own: `SET
//!   ROLE`, `RESET ROLE` or `SET SESSION AUTHORIZATION` have nowhere to go. Each open sets a
//!   fresh random password (on an admin connection, as its SCRAM verifier: the password itself
//!   never reaches the server's log) that the pool logs in with; when another
//!   host of the fleet has set a newer one since, a refused login sets a fresh one again.
//! - **One statement per call**: the extended protocol refuses several. Transaction control
//!   (`BEGIN`, `COMMIT`, `SAVEPOINT`, …), `COPY` and `PREPARE` are refused before they are
//!   sent, so that no transaction or session state spans two calls of a pooled connection.
//! - **Deadlines**: at its deadline a statement is cancelled (the server's cancel request) and
//!   the call is [`SqlError::Timeout`].
//! - **Migrations** run on the plugin's connection, in one transaction with their record in
//!   `plugin_<name>._plugd_migrations`, which the plugin may read but not change: the record is
//!   written by a `SECURITY DEFINER` function of the host's that the plugin's role may call.
//!
//! Values: integers (`int2`, `int4`, `int8`, `oid`, `bool` as 0/1) are `Integer`; `float4`,
//! `float8` are `Real`; text types, `json`, `jsonb`, `uuid`, `date`, `timestamp[tz]` and
//! `numeric` (with a scale) are `Text`; `numeric` without a scale that fits is `Integer`;
//! `bytea` is `Blob`. A column of another type is refused before the statement runs, with the
//! cast that would fix it. A parameter is sent in the type PostgreSQL inferred for it: a
//! number as that number type, text as text (PostgreSQL parses it into any other type).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::Pool;
use parking_lot::Mutex;
use plugd_core::database_limits::MIGRATIONS_TABLE;
use plugd_core::{
    BackendError, Migration, ResultLimits, Rows, SqlBackend, SqlConnection, SqlError, SqlValue,
    Statement,
};
use rand::Rng;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

use crate::{Postgres, pg_message, quoted};

/// How the `database` capability uses the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// Connections of one plugin's pool (per host).
    pub pool_size: usize,
    /// The `CONNECTION LIMIT` of a plugin's role, for the whole fleet.
    pub connection_limit: u32,
    /// The `statement_timeout` set on a plugin's role: a backstop beside the per-call cancel.
    pub statement_timeout: Duration,
}

impl Default for SqlOptions {
    /// 4 connections per plugin and host, 32 per role, a 60s statement timeout.
    fn default() -> Self {
        SqlOptions {
            pool_size: 4,
            connection_limit: 32,
            statement_timeout: Duration::from_secs(60),
        }
    }
}

/// The schema of `plugin` (`notes-app` → `plugin_notes_app`), or why the name does not fit.
///
/// ```
/// assert_eq!(plugd_postgres::plugin_schema("notes-app").unwrap(), "plugin_notes_app");
/// assert!(plugd_postgres::plugin_schema("Notes").is_err());
/// ```
pub fn plugin_schema(plugin: &str) -> Result<String, String> {
    Ok(format!("plugin_{}", sanitized(plugin)?))
}

/// The role of `plugin` (`notes-app` → `plugd_plugin_notes_app`), or why the name does not fit.
pub fn plugin_role(plugin: &str) -> Result<String, String> {
    Ok(format!("plugd_plugin_{}", sanitized(plugin)?))
}

/// `[a-z0-9-]` with `-` as `_`, short enough for a role name.
fn sanitized(plugin: &str) -> Result<String, String> {
    let ok = !plugin.is_empty()
        && plugin.len() <= 50
        && plugin
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(format!(
            "'{plugin}' is not a plugin name the PostgreSQL backend can hold: 1 to 50 of a-z, 0-9 and '-'"
        ));
    }
    Ok(plugin.replace('-', "_"))
}

/// Plugins' SQL databases in PostgreSQL: a schema and a role per plugin.
#[derive(Clone)]
pub struct PostgresSql {
    pg: Postgres,
    options: SqlOptions,
}

impl fmt::Debug for PostgresSql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSql")
            .field("server", &self.pg.server())
            .field("options", &self.options)
            .finish()
    }
}

impl PostgresSql {
    pub(crate) fn new(pg: Postgres, options: SqlOptions) -> PostgresSql {
        PostgresSql { pg, options }
    }

    /// Its options.
    pub fn options(&self) -> &SqlOptions {
        &self.options
    }
}

/// A random password of 32 letters and digits.
fn fresh_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The SCRAM-SHA-256 verifier of `password` (`SCRAM-SHA-256$4096:…`): what `ALTER ROLE`
/// sends, so that the password itself never reaches the server's statement log. Letters,
/// digits and `$:+/=` only: safe inside a literal.
fn verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// What the admin connection does to (re)create a plugin's role, schema and record; run under
/// the role's advisory lock, so hosts that open the same plugin at once take turns.
fn setup_sql(role: &str, schema: &str, options: &SqlOptions, password: &str) -> String {
    let (r, s) = (quoted(role), quoted(schema));
    let attributes = format!(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {} PASSWORD '{}'",
        options.connection_limit,
        verifier(password)
    );
    let timeout_ms = options.statement_timeout.as_millis();
    let m = quoted(MIGRATIONS_TABLE);
    format!(
        "DO $plugd$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        CREATE ROLE {r} {attributes};
    ELSE
        ALTER ROLE {r} {attributes};
    END IF;
END $plugd$;
ALTER ROLE {r} SET search_path = {s};
ALTER ROLE {r} SET statement_timeout = {timeout_ms};
ALTER ROLE {r} SET idle_in_transaction_session_timeout = {timeout_ms};
CREATE SCHEMA IF NOT EXISTS {s};
REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA {s} TO {r};
CREATE TABLE IF NOT EXISTS {s}.{m} (
    name       TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
REVOKE ALL ON TABLE {s}.{m} FROM PUBLIC;
GRANT SELECT ON TABLE {s}.{m} TO {r};
CREATE OR REPLACE FUNCTION {s}._plugd_record_migration(name TEXT, sha256 TEXT) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $f$ INSERT INTO {s}.{m} (name, sha256) VALUES ($1, $2) $f$;
REVOKE ALL ON FUNCTION {s}._plugd_record_migration(TEXT, TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {s}._plugd_record_migration(TEXT, TEXT) TO {r};
"
    )
}

/// Logs a plugin's pool in as its role with the password of the last open; when the server
/// refuses it (another host of the fleet set a newer one), sets a fresh one and tries again.
pub(crate) struct RoleConnect {
    admin: Pool,
    role: String,
    password: Arc<Mutex<String>>,
}

impl RoleConnect {
    async fn connect_once(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let mut config = config.clone();
        config.password(self.password.lock().clone());
        let (client, connection) = config.connect(NoTls).await?;
        let role = self.role.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(role, error = %e, "a plugin's PostgreSQL connection ended");
            }
        });
        Ok((client, task))
    }

    /// Set a fresh password for the role (admin connection).
    async fn rotate(&self) -> Result<(), tokio_postgres::Error> {
        let fresh = fresh_password();
        let Ok(admin) = self.admin.get().await else {
            return Ok(());
        };
        admin
            .batch_execute(&format!(
                "ALTER ROLE {} PASSWORD '{}'",
                quoted(&self.role),
                verifier(&fresh)
            ))
            .await?;
        *self.password.lock() = fresh;
        Ok(())
    }
}

impl deadpool_postgres::Connect for RoleConnect {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> std::pin::Pin<
        Box<
            dyn Future<
                    Output = Result<
                        (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                        tokio_postgres::Error,
                    >,
                > + Send
                + '_,
        >,
    > {
        let config = config.clone();
        Box::pin(async move {
            match self.connect_once(&config).await {
                Err(e) if e.code() == Some(&SqlState::INVALID_PASSWORD) => {
                    self.rotate().await?;
                    self.connect_once(&config).await
                }
                other => other,
            }
        })
    }
}

#[async_trait]
impl SqlBackend for PostgresSql {
    fn dialect(&self) -> &'static str {
        "postgres"
    }

    async fn open(&self, plugin: &str) -> Result<Arc<dyn SqlConnection>, BackendError> {
        let pg = &self.pg;
        let role = plugin_role(plugin).map_err(|e| pg.backend_error(e))?;
        let schema = plugin_schema(plugin).map_err(|e| pg.backend_error(e))?;
        let password = fresh_password();
        let setup = setup_sql(&role, &schema, &self.options, &password);
        let failed = |message: String| {
            pg.backend_error(format!(
                "setting up the schema {schema} and the role {role} of plugin '{plugin}': {message}"
            ))
        };
        let mut client = pg.client().await?;
        let work = async {
            let tx = client.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1)::bigint)",
                &[&role],
            )
            .await?;
            // The statements carry the password's verifier, never the password itself.
            tx.batch_execute(&setup).await?;
            tx.commit().await
        };
        match tokio::time::timeout(pg.options().timeout, work).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(failed(pg_message(&e))),
            Err(_) => {
                return Err(failed(format!(
                    "no answer within {}",
                    humantime::format_duration(pg.options().timeout)
                )));
            }
        }
        drop(client);
        let mut config = pg.config().clone();
        config.user(&role);
        config.application_name(format!("plugd plugin {plugin}"));
        let connect = RoleConnect {
            admin: pg.pool().clone(),
            role: role.clone(),
            password: Arc::new(Mutex::new(password)),
        };
        let options = pg.options();
        let pool = crate::pool(
            config,
            Some(connect),
            self.options.pool_size,
            options.connect_timeout,
            options.timeout,
        )
        .map_err(|e| pg.backend_error(e))?;
        Ok(Arc::new(PostgresSqlConnection {
            inner: Arc::new(Inner {
                pg: pg.clone(),
                plugin: plugin.to_string(),
                schema,
                role,
                pool,
            }),
        }))
    }
}

struct Inner {
    pg: Postgres,
    plugin: String,
    schema: String,
    role: String,
    pool: Pool,
}

/// One plugin's schema, reached through a pool of connections logged in as its role. Cheap to
/// clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresSqlConnection {
    inner: Arc<Inner>,
}

impl fmt::Debug for PostgresSqlConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSqlConnection")
            .field("server", &self.inner.pg.server())
            .field("plugin", &self.inner.plugin)
            .field("schema", &self.inner.schema)
            .field("role", &self.inner.role)
            .finish()
    }
}

/// What a plugin may not run itself, by its first keyword, and why.
fn refused_keyword(sql: &str) -> Option<String> {
    let word = first_keyword(sql).to_ascii_uppercase();
    let transaction = "begin, commit or roll back transactions itself (use database.transaction, which runs its statements all-or-nothing)";
    match word.as_str() {
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE" => {
            Some(transaction.to_string())
        }
        "PREPARE" => Some(
            "prepare statements or transactions (PREPARE): the host prepares every statement; bind values as parameters".into(),
        ),
        "COPY" => Some("run COPY (use INSERT and SELECT with parameters)".into()),
        _ => None,
    }
}

/// The first word of `sql` past whitespace and comments.
fn first_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start();
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if trimmed.starts_with("/*") {
            // Comments nest in PostgreSQL.
            let (mut depth, mut i) = (0usize, 0usize);
            let b = trimmed.as_bytes();
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            rest = trimmed.get(i..).unwrap_or("");
        } else if let Some(after) = trimmed.strip_prefix('(') {
            rest = after;
        } else {
            let end = trimmed
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(trimmed.len());
            return &trimmed[..end];
        }
    }
}

/// What PostgreSQL said, as the core's [`SqlError`].
fn sql_error(pg: &Postgres, e: &tokio_postgres::Error) -> SqlError {
    let Some(db) = e.as_db_error() else {
        if e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
            return SqlError::Backend(pg.backend_error(pg_message(e)));
        }
        // The client's own checks: the number of parameters, a value it cannot send.
        return SqlError::Invalid(pg_message(e));
    };
    let message = db.message();
    let code = db.code();
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        if message.contains(MIGRATIONS_TABLE) || message.contains("_plugd_record_migration") {
            return SqlError::Denied(format!(
                "change the host's migration record {MIGRATIONS_TABLE}"
            ));
        }
        if message.contains("temporary tables") {
            return SqlError::Denied(
                "create TEMP tables, indexes, views or triggers (they outlive the call; create them in the plugin's schema)".into(),
            );
        }
        return SqlError::Denied(format!(
            "use what PostgreSQL has not granted its role ({message})"
        ));
    }
    if *code == SqlState::QUERY_CANCELED {
        return SqlError::Timeout;
    }
    // A value the SQL computes past PostgreSQL's own 1 GB (`repeat('x', 2e9)`): refused before
    // it is built. Other program limits (an index row too long) are the plugin's to fix.
    if *code == SqlState::PROGRAM_LIMIT_EXCEEDED && message.contains("requested length too large") {
        return SqlError::TooLarge;
    }
    let class = &code.code()[..2];
    let text = match db.hint() {
        Some(hint) => format!("{message} ({hint})"),
        None => message.to_string(),
    };
    match class {
        // Syntax, unknown objects, wrong types; an unsupported feature; bad data.
        "42" | "0A" | "22" | "26" | "34" => SqlError::Invalid(text),
        // The server is going away, out of resources, or a connection problem.
        "08" | "53" | "57" | "58" | "XX" => SqlError::Backend(pg.backend_error(text)),
        _ => SqlError::Failed(text),
    }
}

/// A [`SqlValue`] bound as the type PostgreSQL inferred for its parameter.
#[derive(Debug)]
struct Param<'a>(&'a SqlValue);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let out_of_range = |n: &dyn fmt::Display| -> Box<dyn std::error::Error + Sync + Send> {
            format!("{n} is out of range for PostgreSQL type {ty}").into()
        };
        let _: IsNull = match (self.0, ty) {
            (SqlValue::Null, _) => return Ok(IsNull::Yes),
            (SqlValue::Integer(n), &Type::INT8) => n.to_sql(ty, out)?,
            (SqlValue::Integer(n), &Type::INT4) => i32::try_from(*n)
                .map_err(|_| out_of_range(n))?
                .to_sql(ty, out)?,
            (SqlValue::Integer(n), &Type::INT2) => i16::try_from(*n)
                .map_err(|_| out_of_range(n))?
                .to_sql(ty, out)?,
            (SqlValue::Integer(n), &Type::FLOAT8) => (*n as f64).to_sql(ty, out)?,
            (SqlValue::Integer(n), &Type::FLOAT4) => (*n as f32).to_sql(ty, out)?,
            (SqlValue::Integer(n), &Type::BOOL) => (*n != 0).to_sql(ty, out)?,
            (SqlValue::Real(r), &Type::FLOAT8) => r.to_sql(ty, out)?,
            (SqlValue::Real(r), &Type::FLOAT4) => (*r as f32).to_sql(ty, out)?,
            (SqlValue::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out)?,
            (SqlValue::Blob(_), _) => {
                return Err(format!(
                    "a blob cannot be bound where PostgreSQL expects {ty} (bytea takes blobs)"
                )
                .into());
            }
            // Everything else as text, in the text format: PostgreSQL parses it as the type.
            (SqlValue::Integer(n), _) => {
                out.extend_from_slice(n.to_string().as_bytes());
                IsNull::No
            }
            (SqlValue::Real(r), _) => {
                out.extend_from_slice(r.to_string().as_bytes());
                IsNull::No
            }
            (SqlValue::Text(t), _) => {
                out.extend_from_slice(t.as_bytes());
                IsNull::No
            }
        };
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, ty: &Type) -> Format {
        match (self.0, ty) {
            (SqlValue::Integer(_), &(Type::INT8 | Type::INT4 | Type::INT2))
            | (SqlValue::Integer(_) | SqlValue::Real(_), &(Type::FLOAT8 | Type::FLOAT4))
            | (SqlValue::Integer(_), &Type::BOOL)
            | (SqlValue::Blob(_), _) => Format::Binary,
            _ => Format::Text,
        }
    }

    to_sql_checked!();
}

/// Whether a column of type `ty` can be read, and if not the refusal.
fn readable(name: &str, ty: &Type) -> Result<(), SqlError> {
    let known = matches!(
        *ty,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::CHAR
            | Type::UNKNOWN
            | Type::JSON
            | Type::JSONB
            | Type::UUID
            | Type::DATE
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::NUMERIC
            | Type::BYTEA
    );
    if known {
        Ok(())
    } else {
        Err(SqlError::Invalid(format!(
            "column '{name}' is of PostgreSQL type {ty}, which the database capability does not return; cast it in the query ({name}::text)"
        )))
    }
}

/// A value read from a column (the types [`readable`] lets through).
struct Value(SqlValue);

impl<'a> tokio_postgres::types::FromSql<'a> for Value {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Value, Box<dyn std::error::Error + Sync + Send>> {
        let text = |raw: &[u8]| -> Result<SqlValue, Box<dyn std::error::Error + Sync + Send>> {
            Ok(SqlValue::Text(std::str::from_utf8(raw)?.to_string()))
        };
        let v = match *ty {
            Type::BOOL => SqlValue::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => SqlValue::Integer(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => SqlValue::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => SqlValue::Integer(i64::from_sql(ty, raw)?),
            Type::OID => SqlValue::Integer(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => SqlValue::Real(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => SqlValue::Real(f64::from_sql(ty, raw)?),
            Type::BYTEA => SqlValue::Blob(raw.to_vec()),
            Type::CHAR => SqlValue::Text(char::from(raw.first().copied().unwrap_or(0)).to_string()),
            Type::JSONB => text(raw.get(1..).unwrap_or_default())?,
            Type::UUID => {
                let h = raw.iter().map(|b| format!("{b:02x}")).collect::<String>();
                if h.len() != 32 {
                    return Err("a uuid of the wrong length".into());
                }
                SqlValue::Text(format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                ))
            }
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let at = SystemTime::from_sql(&Type::TIMESTAMPTZ, raw)?;
                let text = crate::text_time(at);
                SqlValue::Text(if *ty == Type::TIMESTAMP {
                    text.trim_end_matches('Z').to_string()
                } else {
                    text
                })
            }
            Type::DATE => {
                let days = i32::from_sql(ty, raw)?;
                let at = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(946_684_800)
                    + Duration::from_secs(86_400 * days.max(0) as u64);
                let date = crate::text_time(at);
                if days < 0 {
                    return Err("a date before 2000 (cast it: d::text)".into());
                }
                SqlValue::Text(date[..10].to_string())
            }
            Type::NUMERIC => numeric(raw)?,
            _ => text(raw)?,
        };
        Ok(Value(v))
    }

    fn from_sql_null(_: &Type) -> Result<Value, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Value(SqlValue::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary `numeric`: an integer that fits as `Integer`, anything else as its
/// decimal text.
fn numeric(raw: &[u8]) -> Result<SqlValue, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a short numeric".into())
    };
    let (ndigits, weight, sign, dscale) = (
        word(0)? as usize,
        word(2)? as i16,
        word(4)?,
        word(6)? as usize,
    );
    match sign {
        0xC000 => return Ok(SqlValue::Text("NaN".into())),
        0xD000 => return Ok(SqlValue::Text("Infinity".into())),
        0xF000 => return Ok(SqlValue::Text("-Infinity".into())),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Result<_, _>>()?;
    let digit = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut int = String::new();
    for g in 0..=i32::from(weight) {
        if int.is_empty() {
            let d = digit(g);
            if d != 0 {
                int = d.to_string();
            }
        } else {
            int.push_str(&format!("{:04}", digit(g)));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut g = i32::from(weight) + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit(g)));
        g += 1;
    }
    frac.truncate(dscale);
    let negative = sign == 0x4000;
    if dscale == 0
        && let Ok(n) = int.parse::<i64>()
    {
        return Ok(SqlValue::Integer(if negative { -n } else { n }));
    }
    let mut text = if negative { format!("-{int}") } else { int };
    if dscale > 0 {
        text.push('.');
        text.push_str(&frac);
    }
    Ok(SqlValue::Text(text))
}

impl PostgresSqlConnection {
    /// Run `work` on a connection of the plugin's pool, cancelling the statement at `deadline`.
    async fn run<T>(
        &self,
        deadline: Instant,
        work: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let inner = &self.inner;
        let mut client = match tokio::time::timeout_at(deadline.into(), inner.pool.get()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(SqlError::Backend(inner.pg.backend_error(format!(
                    "the connection of plugin '{}' (role {}): {}",
                    inner.plugin,
                    inner.role,
                    crate::pool_error(&e)
                ))));
            }
            Err(_) => return Err(SqlError::Timeout),
        };
        let cancel = client.cancel_token();
        match tokio::time::timeout_at(deadline.into(), work(&mut client)).await {
            Ok(result) => result,
            Err(_) => {
                // Stop the statement on the server; the connection goes back to the pool only
                // once it has (or is dropped when the cancel cannot reach the server).
                tokio::spawn(async move {
                    if cancel.cancel_query(NoTls).await.is_err() {
                        drop(deadpool_postgres::Object::take(client));
                    } else {
                        drop(client);
                    }
                });
                Err(SqlError::Timeout)
            }
        }
    }

    fn error(&self, e: &tokio_postgres::Error) -> SqlError {
        sql_error(&self.inner.pg, e)
    }
}

/// Prepare `sql` (one statement, checked first) and bind `params`.
async fn prepare(
    client: &tokio_postgres::Client,
    sql: &str,
    pg: &Postgres,
) -> Result<tokio_postgres::Statement, SqlError> {
    if let Some(why) = refused_keyword(sql) {
        return Err(SqlError::Denied(why));
    }
    client.prepare(sql).await.map_err(|e| sql_error(pg, &e))
}

async fn execute_one(
    client: &tokio_postgres::Client,
    pg: &Postgres,
    sql: &str,
    params: &[SqlValue],
) -> Result<u64, SqlError> {
    let stmt = prepare(client, sql, pg).await?;
    let params: Vec<Param<'_>> = params.iter().map(Param).collect();
    if params.len() != stmt.params().len() {
        return Err(SqlError::Invalid(format!(
            "the statement takes {} parameters, {} were given",
            stmt.params().len(),
            params.len()
        )));
    }
    client
        .execute_raw(&stmt, params)
        .await
        .map_err(|e| sql_error(pg, &e))
}

#[async_trait]
impl SqlConnection for PostgresSqlConnection {
    fn location(&self) -> String {
        format!(
            "schema {} (role {}) on PostgreSQL at {}",
            self.inner.schema,
            self.inner.role,
            self.inner.pg.server()
        )
    }

    async fn execute(
        &self,
        sql: String,
        params: Vec<SqlValue>,
        deadline: Instant,
    ) -> Result<u64, SqlError> {
        let pg = self.inner.pg.clone();
        self.run(deadline, async move |c| {
            execute_one(c, &pg, &sql, &params).await
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
        use futures_util::TryStreamExt;
        let pg = self.inner.pg.clone();
        self.run(deadline, async move |c| {
            let stmt = prepare(c, &sql, &pg).await?;
            for column in stmt.columns() {
                readable(column.name(), column.type_())?;
            }
            if params.len() != stmt.params().len() {
                return Err(SqlError::Invalid(format!(
                    "the statement takes {} parameters, {} were given",
                    stmt.params().len(),
                    params.len()
                )));
            }
            let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
            let stream = c
                .query_raw(&stmt, bound)
                .await
                .map_err(|e| sql_error(&pg, &e))?;
            let mut stream = std::pin::pin!(stream);
            let columns: Vec<String> = stmt
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = stream.try_next().await.map_err(|e| sql_error(&pg, &e))? {
                if rows.len() == limits.max_rows {
                    return Err(SqlError::TooManyRows);
                }
                let mut values = Vec::with_capacity(columns.len());
                for (i, column) in columns.iter().enumerate() {
                    let Value(v) = row.try_get(i).map_err(|e| {
                        SqlError::Invalid(format!("column '{column}': {}", pg_message(&e)))
                    })?;
                    bytes += v.result_bytes();
                    if bytes > limits.max_bytes {
                        return Err(SqlError::TooLarge);
                    }
                    values.push(v);
                }
                rows.push(values);
            }
            Ok(Rows { columns, rows })
        })
        .await
    }

    async fn transaction(
        &self,
        statements: Vec<Statement>,
        deadline: Instant,
    ) -> Result<Vec<u64>, SqlError> {
        let pg = self.inner.pg.clone();
        let this = self.clone();
        self.run(deadline, async move |c| {
            let tx = c.transaction().await.map_err(|e| this.error(&e))?;
            let mut counts = Vec::with_capacity(statements.len());
            for (index, s) in statements.iter().enumerate() {
                match execute_one(tx.client(), &pg, &s.sql, &s.params).await {
                    Ok(n) => counts.push(n),
                    Err(source) => {
                        // Dropping the transaction rolls it back.
                        drop(tx);
                        return Err(SqlError::Statement {
                            index,
                            source: Box::new(source),
                        });
                    }
                }
            }
            tx.commit().await.map_err(|e| this.error(&e))?;
            Ok(counts)
        })
        .await
    }

    async fn applied_migration(
        &self,
        name: String,
        deadline: Instant,
    ) -> Result<Option<String>, SqlError> {
        let sql = format!(
            "SELECT sha256 FROM {}.{} WHERE name = $1",
            quoted(&self.inner.schema),
            quoted(MIGRATIONS_TABLE)
        );
        let this = self.clone();
        self.run(deadline, async move |c| {
            c.query_opt(&sql, &[&name])
                .await
                .map(|r| r.map(|r| r.get(0)))
                .map_err(|e| this.error(&e))
        })
        .await
    }

    async fn apply_migration(
        &self,
        migration: Migration,
        deadline: Instant,
    ) -> Result<(), SqlError> {
        let record = format!(
            "SELECT {}._plugd_record_migration($1, $2)",
            quoted(&self.inner.schema)
        );
        let recorded = format!(
            "SELECT sha256 FROM {}.{} WHERE name = $1",
            quoted(&self.inner.schema),
            quoted(MIGRATIONS_TABLE)
        );
        let lock = format!("plugd migrations of {}", self.inner.schema);
        let this = self.clone();
        self.run(deadline, async move |c| {
            let tx = c.transaction().await.map_err(|e| this.error(&e))?;
            // Hosts of a fleet that load the plugin at once apply its migrations one at a
            // time: past the lock, one another host applied already is done.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1)::bigint)", &[&lock])
                .await
                .map_err(|e| this.error(&e))?;
            let applied: Option<String> = tx
                .query_opt(&recorded, &[&migration.name])
                .await
                .map_err(|e| this.error(&e))?
                .map(|r| r.get(0));
            match applied {
                Some(sha) if sha == migration.sha256 => return Ok(()),
                Some(sha) => {
                    return Err(SqlError::Failed(format!(
                        "another host applied it meanwhile with another content (sha256 {sha}); the hosts of a fleet must run the same version of the plugin"
                    )));
                }
                None => {}
            }
            // The plugin's SQL, several statements, as its role.
            tx.batch_execute(&migration.sql)
                .await
                .map_err(|e| this.error(&e))?;
            tx.execute(&record, &[&migration.name, &migration.sha256])
                .await
                .map_err(|e| this.error(&e))?;
            tx.commit().await.map_err(|e| this.error(&e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_schemas_and_roles() {
        assert_eq!(plugin_schema("a-b-1").unwrap(), "plugin_a_b_1");
        assert_eq!(plugin_role("a-b-1").unwrap(), "plugd_plugin_a_b_1");
        for bad in ["", "A", "a_b", "a.b", "a\"b", "a b"] {
            assert!(plugin_role(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transaction_control_is_found_past_comments() {
        for sql in [
            "BEGIN",
            "  begin;",
            "-- x\nCOMMIT",
            "/* a /* nested */ b */ ROLLBACK",
            "start transaction",
            "savepoint s",
            "copy t to program 'id'",
        ] {
            assert!(refused_keyword(sql).is_some(), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "(SELECT 1)",
            "INSERT INTO begin VALUES (1)",
            "-- BEGIN\nSELECT 1",
        ] {
            assert!(refused_keyword(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn numerics_read_as_integers_or_text() {
        // 12345.678: ndigits 3, weight 1, sign +, dscale 3: [1, 2345, 6780].
        let raw: Vec<u8> = [3u16, 1, 0, 3, 1, 2345, 6780]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric(&raw).unwrap(), SqlValue::Text("12345.678".into()));
        let raw: Vec<u8> = [2u16, 1, 0x4000, 0, 12, 3400]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric(&raw).unwrap(), SqlValue::Integer(-123400));
        let zero: Vec<u8> = [0u16, 0, 0, 0]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric(&zero).unwrap(), SqlValue::Integer(0));
    }
}
