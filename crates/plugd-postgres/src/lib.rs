//! The PostgreSQL backends of plugd, for a fleet of hosts that share one server, behind the
//! capability interfaces that `plugd-core` defines:
//!
//! - [`PostgresKv`] ([`plugd_core::KvBackend`]): plugin key/value storage, one table
//!   (`<schema>.kv`, a row per plugin and key), every write committed when it is acknowledged;
//! - [`PostgresStatus`] ([`plugd_core::StatusSink`]): the status tables of `plugd-sqlite`'s
//!   `host.db` with an `instance` column in each, one transaction per report, and the fleet view
//!   ([`Postgres::fleet_plugins`]);
//! - [`PostgresSql`] ([`plugd_core::SqlBackend`]): the `database` capability, isolated by
//!   PostgreSQL itself: a schema `plugin_<name>` and a role `plugd_plugin_<name>` per plugin, whose
//!   statements run on connections logged in as that role.
//!
//! One [`Postgres`] holds the host's pool (its own tables, and the administration of the
//! plugins' roles); [`Postgres::connect`] creates the host schema and tables, idempotently and
//! safely when several hosts start at once.
//!
//! ```no_run
//! # async fn run() -> Result<(), plugd_postgres::PostgresError> {
//! use std::sync::Arc;
//! use plugd_postgres::{Postgres, PostgresOptions, SqlOptions};
//!
//! let pg = Postgres::connect(&PostgresOptions::new("postgres://plugd@db.internal/plugd")).await?;
//! let host = plugd_core::Host::builder()
//!     .kv(Arc::new(pg.kv()))
//!     .sql(Arc::new(pg.sql(SqlOptions::default())))
//!     .status_sink(Arc::new(pg.status("web-1")))
//!     .build()
//!     .unwrap();
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::NoTls;

mod database;
mod kv;
mod status;

pub use database::{PostgresSql, PostgresSqlConnection, SqlOptions, plugin_role, plugin_schema};
pub use kv::PostgresKv;
pub use status::{FleetPlugin, PostgresStatus};

/// The name backends give in their errors (`postgres: ...`).
pub(crate) const BACKEND: &str = "postgres";

/// Where the server is and how the host uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The server, as a URL (`postgres://user:password@host:5432/db`) or `key=value` pairs.
    pub url: String,
    /// Connections of the host's pool (its tables, the storage, the plugins' roles).
    pub pool_size: usize,
    /// How long connecting may take; past it a call fails instead of waiting.
    pub connect_timeout: Duration,
    /// How long one call of the host's pool may wait for a connection and run.
    pub timeout: Duration,
    /// The schema of the host's own tables.
    pub schema: String,
}

impl PostgresOptions {
    /// The defaults for the server at `url`: a pool of 8, 5s to connect, 5s per call, schema
    /// `plugd`.
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            schema: "plugd".into(),
        }
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("schema", &self.schema)
            .finish()
    }
}

/// What went wrong connecting to the server or setting it up. Never holds a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The options are wrong (the URL, the schema name).
    #[error("PostgreSQL options: {0}")]
    Config(String),
    /// The server could not be reached or refused the host.
    #[error("cannot connect to PostgreSQL at {server}: {message}")]
    Connect {
        /// The server, password redacted.
        server: String,
        /// Why.
        message: String,
    },
    /// Setting up the host's schema and tables failed.
    #[error("cannot set up the schema '{schema}' on PostgreSQL at {server}: {message}")]
    Setup {
        /// The server, password redacted.
        server: String,
        /// The host schema.
        schema: String,
        /// Why.
        message: String,
    },
    /// A query of the host's tables failed.
    #[error("PostgreSQL at {server}: {message}")]
    Query {
        /// The server, password redacted.
        server: String,
        /// Why.
        message: String,
    },
}

/// `url` with its password replaced by `***` (`postgres://user:***@host/db`); a `key=value`
/// string loses its `password=` value the same way.
///
/// ```
/// assert_eq!(
///     plugd_postgres::redact("postgres://app:s3cret@db:5432/plugd"),
///     "postgres://app:***@db:5432/plugd"
/// );
/// assert_eq!(plugd_postgres::redact("host=db password=s3cret"), "host=db password=***");
/// ```
pub fn redact(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url)
        && parsed.has_host()
    {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("***"));
        }
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        if !pairs.is_empty() {
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return parsed.to_string();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.trim().eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A PostgreSQL identifier the host makes up (a schema, a role): lowercase letters, digits and
/// `_`, not starting with a digit, at most 63 bytes. Quoted all the same where it is used.
pub(crate) fn check_identifier(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} '{name}' must be 1 to 63 lowercase letters, digits or '_', not starting with a digit"
        ))
    }
}

/// `"name"`, quoted for SQL (the names are checked; the quotes keep keywords working).
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A pool to the server of `config`: connections made within `connect_timeout`, checked
/// (`Verified`: an empty query) before each use so that one broken by a lost server is
/// replaced, and a wait for a free connection bounded by `wait`.
pub(crate) fn pool(
    config: tokio_postgres::Config,
    connect: Option<impl deadpool_postgres::Connect + 'static>,
    size: usize,
    connect_timeout: Duration,
    wait: Duration,
) -> Result<Pool, String> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Verified,
    };
    let manager = match connect {
        Some(c) => Manager::from_connect(config, c, manager_config),
        None => Manager::from_config(config, NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(wait),
            create: Some(connect_timeout),
            recycle: Some(connect_timeout),
        })
        .build()
        .map_err(|e| e.to_string())
}

/// A pool error as text: what happened, never the password.
pub(crate) fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            "no connection of the pool came free in time".into()
        }
        PoolError::Timeout(deadpool_postgres::TimeoutType::Create) => {
            "connecting timed out (is the server reachable?)".into()
        }
        PoolError::Timeout(deadpool_postgres::TimeoutType::Recycle) => {
            "checking a pooled connection timed out (is the server reachable?)".into()
        }
        PoolError::Backend(e) => pg_message(e),
        other => other.to_string(),
    }
}

/// What a `tokio_postgres` error says: the server's message when there is one, else the
/// client's with its cause (`error connecting to server: Connection refused`).
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    if e.is_closed() {
        return "the connection was closed (is the server reachable?)".into();
    }
    let mut text = e.to_string();
    if let Some(source) = std::error::Error::source(e) {
        let cause = source.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// The host's connection to PostgreSQL: a pool, and the backends made from it.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    config: tokio_postgres::Config,
    server: String,
    options: PostgresOptions,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("server", &self.server)
            .field("schema", &self.options.schema)
            .field("pool_size", &self.options.pool_size)
            .finish()
    }
}

/// The advisory lock the host's schema set-up holds (`pg_advisory_xact_lock`): hosts that start
/// at once create the tables one after the other. "plugd" in ASCII.
const SETUP_LOCK: i64 = i64::from_be_bytes(*b"\0\0\0plugd");

impl Postgres {
    /// Connect to the server of `options` (checking that a connection opens within
    /// `connect_timeout`) and create the host schema and its tables when missing.
    pub async fn connect(options: &PostgresOptions) -> Result<Postgres, PostgresError> {
        let server = redact(&options.url);
        check_identifier("the host schema", &options.schema).map_err(PostgresError::Config)?;
        let mut config = tokio_postgres::Config::from_str(&options.url).map_err(|e| {
            PostgresError::Config(format!("the URL {server} is not a PostgreSQL URL: {e}"))
        })?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("plugd");
        }
        // The server's NOTICEs ("schema … already exists, skipping" at every start) are not the
        // operator's business: warnings and errors only.
        if config.get_options().is_none() {
            config.options("-c client_min_messages=warning");
        }
        let pool = pool(
            config.clone(),
            None::<database::RoleConnect>,
            options.pool_size,
            options.connect_timeout,
            options.timeout,
        )
        .map_err(PostgresError::Config)?;
        let pg = Postgres {
            pool,
            config,
            server,
            options: options.clone(),
        };
        pg.setup().await?;
        Ok(pg)
    }

    /// The server, password redacted.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The options it was connected with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// Check that the server answers within the call timeout (`plugd check`, readiness).
    pub async fn ping(&self) -> Result<(), PostgresError> {
        let work = async {
            let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| pg_message(&e))?;
            Ok::<_, String>(())
        };
        match tokio::time::timeout(self.options.timeout, work).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(self.query_error(message)),
            Err(_) => Err(self.query_error(format!(
                "no answer within {}",
                humantime::format_duration(self.options.timeout)
            ))),
        }
    }

    /// Plugin key/value storage in `<schema>.kv`.
    pub fn kv(&self) -> PostgresKv {
        PostgresKv::new(self.clone())
    }

    /// The status tables of `instance` (its rows, beside those of the fleet's other hosts).
    pub fn status(&self, instance: &str) -> PostgresStatus {
        PostgresStatus::new(self.clone(), instance)
    }

    /// The `database` capability: a schema and a role per plugin.
    pub fn sql(&self, options: SqlOptions) -> PostgresSql {
        PostgresSql::new(self.clone(), options)
    }

    /// Every plugin of every instance, as the instances last reported them: for the admin API's
    /// fleet view.
    pub async fn fleet_plugins(&self) -> Result<Vec<FleetPlugin>, PostgresError> {
        status::fleet_plugins(self).await
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}.{}", quoted(&self.options.schema), quoted(name))
    }

    pub(crate) fn query_error(&self, message: impl Into<String>) -> PostgresError {
        PostgresError::Query {
            server: self.server.clone(),
            message: message.into(),
        }
    }

    /// The backend error of a failed call, naming the server: `postgres: PostgreSQL at
    /// postgres://u:***@h/db: ...`.
    pub(crate) fn backend_error(&self, message: impl fmt::Display) -> plugd_core::BackendError {
        plugd_core::BackendError::new(BACKEND, format!("PostgreSQL at {}: {message}", self.server))
    }

    /// A connection of the pool within the call timeout, or the backend error naming the
    /// server.
    pub(crate) async fn client(
        &self,
    ) -> Result<deadpool_postgres::Object, plugd_core::BackendError> {
        match tokio::time::timeout(self.options.timeout, self.pool.get()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(self.backend_error(pool_error(&e))),
            Err(_) => Err(self.backend_error(format!(
                "no connection within {}",
                humantime::format_duration(self.options.timeout)
            ))),
        }
    }

    /// Run `work` on a pooled connection within the call timeout; errors name the server.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, plugd_core::BackendError>
    where
        F: AsyncFnOnce(&deadpool_postgres::Object) -> Result<T, tokio_postgres::Error>,
    {
        let timeout = self.options.timeout;
        let call = async {
            let client = self.client().await?;
            work(&client)
                .await
                .map_err(|e| self.backend_error(pg_message(&e)))
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(self.backend_error(format!(
                    "no answer within {}",
                    humantime::format_duration(timeout)
                )))
            })
    }

    /// Create the host schema and its tables under the set-up lock, and take from PUBLIC what
    /// the plugins' roles must not have.
    async fn setup(&self) -> Result<(), PostgresError> {
        let schema = &self.options.schema;
        let failed = |message: String| PostgresError::Setup {
            server: self.server.clone(),
            schema: schema.clone(),
            message,
        };
        let mut client = match tokio::time::timeout(
            self.options.connect_timeout + self.options.timeout,
            self.pool.get(),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(PostgresError::Connect {
                    server: self.server.clone(),
                    message: pool_error(&e),
                });
            }
            Err(_) => {
                return Err(PostgresError::Connect {
                    server: self.server.clone(),
                    message: format!(
                        "no connection within {}",
                        humantime::format_duration(self.options.connect_timeout)
                    ),
                });
            }
        };
        let database: String = client
            .query_one("SELECT current_database()", &[])
            .await
            .map_err(|e| failed(pg_message(&e)))?
            .get(0);
        let tx = client
            .transaction()
            .await
            .map_err(|e| failed(pg_message(&e)))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
            .await
            .map_err(|e| failed(pg_message(&e)))?;
        tx.batch_execute(&status::schema_sql(schema, &database))
            .await
            .map_err(|e| failed(pg_message(&e)))?;
        tx.commit().await.map_err(|e| failed(pg_message(&e)))?;
        Ok(())
    }
}

/// `at` as text for messages.
pub(crate) fn text_time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://u:pw@h:1/d?sslmode=disable&password=x"),
            "postgres://u:***@h:1/d?sslmode=disable&password=***"
        );
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            redact("host=h user=u password=pw dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        let options = PostgresOptions::new("postgres://u:pw@h/d");
        assert!(!format!("{options:?}").contains("pw"));
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(check_identifier("schema", "plugd").is_ok());
        assert!(check_identifier("schema", "plugin_a_b2").is_ok());
        for bad in ["", "Plugd", "a-b", "1a", "a\"b", &"a".repeat(64)] {
            assert!(check_identifier("schema", bad).is_err(), "{bad}");
        }
    }
}
