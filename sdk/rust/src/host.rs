//! Thin wrappers over the host's imports. Every call is checked by the host against the plugin's
//! effective permissions; a refused call returns an [`Error`](crate::Error) whose kind is
//! [`ErrorKind::Denied`](crate::ErrorKind::Denied) and whose message is the host's
//! (`permission denied: plugin 'x' attempted database access without permission`).

use crate::bindings::plugd::plugin as wit;

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Structured logging into the host's log, tagged with the plugin's name. Always available.
///
/// ```ignore
/// log::info("cache warmed");
/// log::with_fields(log::Level::Warn, "slow upstream", &[("url", url), ("ms", &ms.to_string())]);
/// ```
pub mod log {
    use super::{pairs, wit};

    /// A log level.
    pub use wit::types::LogLevel as Level;

    /// Logs `message` at `level` with `key=value` fields.
    pub fn with_fields(level: Level, message: impl AsRef<str>, fields: &[(&str, &str)]) {
        wit::log::log(level, message.as_ref(), &pairs(fields));
    }

    /// Logs at `trace`.
    pub fn trace(message: impl AsRef<str>) {
        wit::log::log(Level::Trace, message.as_ref(), &[]);
    }
    /// Logs at `debug`.
    pub fn debug(message: impl AsRef<str>) {
        wit::log::log(Level::Debug, message.as_ref(), &[]);
    }
    /// Logs at `info`.
    pub fn info(message: impl AsRef<str>) {
        wit::log::log(Level::Info, message.as_ref(), &[]);
    }
    /// Logs at `warn`.
    pub fn warn(message: impl AsRef<str>) {
        wit::log::log(Level::Warn, message.as_ref(), &[]);
    }
    /// Logs at `error`.
    pub fn error(message: impl AsRef<str>) {
        wit::log::log(Level::Error, message.as_ref(), &[]);
    }

    /// Keeps only this plugin's lines at `level` or above from now on (the operator can change
    /// it too); lines under it never count against its log rate.
    pub fn set_level(level: Level) {
        wit::log::set_log_level(level);
    }
}

/// The plugin's own metrics, namespaced and labelled with the plugin by the host. Always available.
///
/// ```ignore
/// metrics::counter("greetings", 1.0)?;
/// metrics::histogram_with("latency_ms", 12.5, &[("route", "/greet")])?;
/// ```
pub mod metrics {
    use super::{pairs, wit};
    use crate::Result;

    /// Adds `value` to a counter.
    pub fn counter(name: &str, value: f64) -> Result<()> {
        Ok(wit::metrics::counter_add(name, value, &[])?)
    }
    /// Adds `value` to a counter with these labels.
    pub fn counter_with(name: &str, value: f64, labels: &[(&str, &str)]) -> Result<()> {
        Ok(wit::metrics::counter_add(name, value, &pairs(labels))?)
    }
    /// Sets a gauge.
    pub fn gauge(name: &str, value: f64) -> Result<()> {
        Ok(wit::metrics::gauge_set(name, value, &[])?)
    }
    /// Sets a gauge with these labels.
    pub fn gauge_with(name: &str, value: f64, labels: &[(&str, &str)]) -> Result<()> {
        Ok(wit::metrics::gauge_set(name, value, &pairs(labels))?)
    }
    /// Records an observation in a histogram.
    pub fn histogram(name: &str, value: f64) -> Result<()> {
        Ok(wit::metrics::histogram_observe(name, value, &[])?)
    }
    /// Records an observation in a histogram with these labels.
    pub fn histogram_with(name: &str, value: f64, labels: &[(&str, &str)]) -> Result<()> {
        Ok(wit::metrics::histogram_observe(
            name,
            value,
            &pairs(labels),
        )?)
    }
}

/// The plugin's persistent key/value store, shared by all its instances and isolated from other
/// plugins. Always available. A read-modify-write is not atomic across instances.
///
/// ```ignore
/// let n: u64 = storage::get_json("visits")?.unwrap_or(0);
/// storage::set_json("visits", &(n + 1))?;
/// ```
pub mod storage {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::wit;
    use crate::{Error, Result};

    /// The value at `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>> {
        Ok(wit::storage::get(key)?)
    }
    /// Stores `value` at `key`.
    pub fn set(key: &str, value: &[u8]) -> Result<()> {
        Ok(wit::storage::set(key, value)?)
    }
    /// Deletes `key`; true when it existed.
    pub fn delete(key: &str) -> Result<bool> {
        Ok(wit::storage::delete(key)?)
    }
    /// The keys starting with `prefix` (all keys for `""`), sorted.
    pub fn list(prefix: &str) -> Result<Vec<String>> {
        Ok(wit::storage::list(prefix)?)
    }
    /// Deletes every key of the plugin.
    pub fn clear() -> Result<()> {
        Ok(wit::storage::clear()?)
    }
    /// The value at `key` as UTF-8 text.
    pub fn get_string(key: &str) -> Result<Option<String>> {
        match get(key)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Error::msg(format!("storage key '{key}' does not hold UTF-8 text"))),
        }
    }
    /// Stores text at `key`.
    pub fn set_string(key: &str, value: &str) -> Result<()> {
        set(key, value.as_bytes())
    }
    /// The value at `key` parsed as JSON.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
        match get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::msg(format!("storage key '{key}': {e}"))),
        }
    }
    /// Stores `value` as JSON at `key`.
    pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<()> {
        set(key, &serde_json::to_vec(value)?)
    }
}

/// Configuration: the plugin's own, and (with the `config` permission) the host's.
///
/// ```ignore
/// let listen = config::host("server.listen")?;              // Some(json!("127.0.0.1:8080"))
/// let timeout = config::host("plugins.limits.timeout")?;    // Some(json!("5s"))
/// let token = config::host("admin.token")?;                 // Some(json!("[redacted]")) or null
/// ```
pub mod config {
    use super::wit;
    use crate::{Config, Error, Result};

    /// The plugin's current configuration (the same object `init` received).
    pub fn plugin() -> Result<Config> {
        Config::from_json(&wit::config::plugin_config())
    }

    /// A value of the host's configuration at a dotted key (`server.listen`,
    /// `plugins.limits.timeout`, `plugins.plugins.0.name`; `""` for all of it), as JSON in the
    /// shape of the config file (durations as text such as `"5s"`). `None` when nothing is at the
    /// key. Secrets read `"[redacted]"`: every key whose name contains `token`, `secret`,
    /// `password` or `key`, and the `config` block of every other plugin. Needs the `config`
    /// permission.
    pub fn host(key: &str) -> Result<Option<serde_json::Value>> {
        match wit::config::host_config(key)? {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json).map(Some).map_err(|e| {
                Error::msg(format!("host config '{key}': invalid JSON from host: {e}"))
            }),
        }
    }
}

/// Registration of what the plugin offers. Valid during [`Plugin::init`](crate::Plugin::init);
/// middleware also while the plugin runs.
///
/// ```ignore
/// fn init(&mut self, _config: &Config) -> Result<()> {
///     register::route("GET", "/users/{id}")?;                       // needs `router`
///     register::route_with_roles("DELETE", "/users/{id}", &["admin"])?;
///     register::hook(HookType::PreRequest, 200)?;
///     register::middleware("audit", 100, &["/plugins/hello/*"])?;   // needs `router`
///     register::subscribe("user.*")?;
///     register::timer("flush", Duration::from_secs(30))?;
///     Ok(())
/// }
/// ```
///
/// # Declaring what a call reads
///
/// A hook, a route or a middleware that declares the values it reads gets them with every call:
/// reading them through the [`Exchange`](crate::Exchange) then costs no call to the host (each
/// undeclared read is one). Declare what every call reads; read the rest when needed.
///
/// ```ignore
/// register::hook_reading(HookType::PreRequest, 400, &[Field::header("authorization")])?;
/// register::route_reading("GET", "/hello", &[Field::local("client"), Field::query_param("name")])?;
/// register::middleware_reading("audit", 100, &[], &[Field::Method, Field::Path])?;
/// ```
///
/// A hook declared in `plugin.yaml` is registered by the host without reads; registering it in
/// `init` too (same priority) adds them. A registration's reads are fixed once accepted: the
/// same hook, route pattern or middleware name registered again with other reads is refused.
/// At most 64 fields per registration.
pub mod register {
    use std::time::Duration;

    use super::{millis, strings, wit};
    use crate::reads::{self, Registration};
    use crate::{Field, HookType, Result};

    /// Registers a hook at `priority` (higher runs first).
    pub fn hook(hook: HookType, priority: i32) -> Result<()> {
        hook_reading(hook, priority, &[])
    }

    /// Registers a hook at `priority` whose calls are given the values of `reads`.
    pub fn hook_reading(hook: HookType, priority: i32, reads: &[Field]) -> Result<()> {
        reads::register(Registration::Hook(hook), reads, || {
            Ok(wit::registry::register_hook(hook, priority, reads)?)
        })
    }

    /// Registers a route, mounted under `/plugins/<name>`. `{param}` matches one segment, `{*rest}`
    /// the remainder. Needs `router`. [`Plugin::handle_request`](crate::Plugin::handle_request)
    /// receives `path` as the route.
    pub fn route(method: &str, path: &str) -> Result<()> {
        route_with(method, path, &[], &[])
    }

    /// Registers a route whose calls are given the values of `reads`. Routes sharing a pattern
    /// (`GET` and `POST` of `/items`) read the same fields.
    pub fn route_reading(method: &str, path: &str, reads: &[Field]) -> Result<()> {
        route_with(method, path, &[], reads)
    }

    /// Registers a route that requires an identity holding all of `roles` (401 without an
    /// identity, 403 without a role). Needs `router`.
    pub fn route_with_roles(method: &str, path: &str, roles: &[&str]) -> Result<()> {
        route_with(method, path, roles, &[])
    }

    /// Registers a route with required `roles` and `reads`.
    pub fn route_with(method: &str, path: &str, roles: &[&str], reads: &[Field]) -> Result<()> {
        reads::register(Registration::Route(path), reads, || {
            let options = wit::types::RouteOptions {
                required_roles: strings(roles),
                reads: reads.to_vec(),
            };
            Ok(wit::registry::register_route(method, path, &options)?)
        })
    }

    /// Registers a middleware at `priority` for the routes matching `routes` (globs; empty means
    /// every plugin-handled request). Needs `router`. Valid in `init` and while the plugin runs.
    pub fn middleware(name: &str, priority: i32, routes: &[&str]) -> Result<()> {
        middleware_reading(name, priority, routes, &[])
    }

    /// Registers a middleware whose calls (`on_request` and `on_response`) are given the values
    /// of `reads`.
    pub fn middleware_reading(
        name: &str,
        priority: i32,
        routes: &[&str],
        reads: &[Field],
    ) -> Result<()> {
        reads::register(Registration::Middleware(name), reads, || {
            Ok(wit::registry::register_middleware(
                name,
                priority,
                &strings(routes),
                reads,
            )?)
        })
    }

    /// Removes a middleware registered by this plugin. Like [`middleware`], valid in `init` and
    /// while the plugin runs (from a route handler, a timer, an event): the next request sees the
    /// change.
    pub fn unregister_middleware(name: &str) -> Result<()> {
        Ok(wit::registry::unregister_middleware(name)?)
    }

    /// Subscribes to a dot-named topic; `*` matches one segment.
    pub fn subscribe(topic: &str) -> Result<()> {
        Ok(wit::registry::subscribe(topic)?)
    }

    /// Exports a service other plugins can call with [`services::call`](crate::services::call).
    pub fn export_service(name: &str) -> Result<()> {
        Ok(wit::registry::export_service(name)?)
    }

    /// Registers a timer: [`Plugin::on_tick`](crate::Plugin::on_tick) every `interval`.
    pub fn timer(name: &str, interval: Duration) -> Result<()> {
        Ok(wit::registry::register_timer(name, millis(interval))?)
    }
}

/// The in-process event bus.
pub mod events {
    use serde::Serialize;

    use super::wit;
    use crate::Result;

    /// Publishes `payload` on `topic` (declared under the manifest's `events.publishes`).
    pub fn publish(topic: &str, payload: &[u8]) -> Result<()> {
        Ok(wit::events::publish(topic, payload)?)
    }

    /// Publishes `value` as JSON.
    pub fn publish_json<T: Serialize + ?Sized>(topic: &str, value: &T) -> Result<()> {
        publish(topic, &serde_json::to_vec(value)?)
    }
}

/// Services exported by other plugins.
pub mod services {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::wit;
    use crate::Result;

    /// Calls `method` of `service` exported by `plugin`.
    pub fn call(plugin: &str, service: &str, method: &str, payload: &[u8]) -> Result<Vec<u8>> {
        Ok(wit::services::call(plugin, service, method, payload)?)
    }

    /// Calls with a JSON request and parses a JSON answer.
    pub fn call_json<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        plugin: &str,
        service: &str,
        method: &str,
        request: &Req,
    ) -> Result<Resp> {
        let answer = call(plugin, service, method, &serde_json::to_vec(request)?)?;
        Ok(serde_json::from_slice(&answer)?)
    }
}

/// The plugin's own SQL database, kept by the host: SQLite by default (one file per plugin),
/// PostgreSQL when the host's backend is ([`dialect`] tells which). Needs `database`.
///
/// ```ignore
/// db::execute("INSERT INTO notes (id, text) VALUES (?1, ?2)", &[7.into(), "hi".into()])?;
/// let rows = db::query("SELECT text FROM notes WHERE id = ?1", &[7.into()])?;
/// let text = rows.get(0, "text").and_then(db::Value::as_str);
/// db::transaction(&[
///     db::Statement::new("UPDATE accounts SET balance = balance - ?1 WHERE id = ?2", vec![5.into(), 1.into()]),
///     db::Statement::new("UPDATE accounts SET balance = balance + ?1 WHERE id = ?2", vec![5.into(), 2.into()]),
/// ])?;
/// ```
///
/// - **Schema**: put `*.sql` files in the plugin's `migrations/` folder. The host applies them
///   at load in lexical order of their names (`0001_notes.sql`, `0002_tags.sql`), each in its own
///   transaction, and records them; changing one that was applied fails the load — add a new one.
/// - **Parameters** are bound (`?1`, `?2` or `?`), never spliced into the SQL. One statement per
///   call.
/// - **Transactions**: each call commits on its own. `BEGIN`/`COMMIT`/`SAVEPOINT` are refused;
///   [`transaction`] runs a list of statements all-or-nothing, within one call.
/// - **Refused** (kind `Denied`, counted against the plugin): `ATTACH`/`DETACH`, PRAGMAs other
///   than read-only ones (`table_info`, `index_list`, `foreign_key_list`, `user_version`, …),
///   extension loading.
/// - **Limits**: a call ends with kind `Failed` at the host's deadline (5 s, or what is left of
///   the guest call's own deadline); a result is at most 10 000 rows and 8 MiB (kind `Invalid`
///   past that: page with `LIMIT`); the file at most 1 GiB.
pub mod db {
    use super::wit;
    use crate::Result;

    /// A query's result: column names and rows of values.
    pub use wit::types::Rows;
    /// A value bound to, or read from, a statement.
    pub use wit::types::SqlValue as Value;
    /// One statement of a [`transaction`].
    pub use wit::types::Statement;

    /// The SQL dialect of the plugin's database: `"sqlite"` or `"postgres"` (the manifest's
    /// `database.dialects` lists those the plugin supports).
    ///
    /// ```ignore
    /// let now = if db::dialect() == "postgres" { "now()" } else { "datetime('now')" };
    /// ```
    pub fn dialect() -> String {
        wit::database::dialect()
    }

    /// Runs one statement that returns no rows (`CREATE`, `INSERT`, `UPDATE`, `DELETE`);
    /// returns the number of rows changed.
    pub fn execute(sql: &str, params: &[Value]) -> Result<u64> {
        Ok(wit::database::execute(sql, params)?)
    }

    /// Runs one statement that returns rows (`SELECT`, or a write with `RETURNING`).
    pub fn query(sql: &str, params: &[Value]) -> Result<Rows> {
        Ok(wit::database::query(sql, params)?)
    }

    /// Runs all statements in one transaction: committed together, or not at all (the error
    /// names the statement that failed). Returns the rows changed by each.
    pub fn transaction(statements: &[Statement]) -> Result<Vec<u64>> {
        Ok(wit::database::transaction(statements)?)
    }

    impl Statement {
        /// A statement with its parameters.
        pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Statement {
            Statement {
                sql: sql.into(),
                params,
            }
        }
    }

    impl Rows {
        /// The index of a column by name.
        pub fn column(&self, name: &str) -> Option<usize> {
            self.columns.iter().position(|c| c == name)
        }
        /// The number of rows.
        pub fn len(&self) -> usize {
            self.rows.len()
        }
        /// Whether there are no rows.
        pub fn is_empty(&self) -> bool {
            self.rows.is_empty()
        }
        /// The value in row `row` (from 0) of the column named `column`.
        pub fn get(&self, row: usize, column: &str) -> Option<&Value> {
            let i = self.column(column)?;
            self.rows.get(row)?.get(i)
        }
    }

    impl Value {
        /// The integer, if this is one.
        pub fn as_i64(&self) -> Option<i64> {
            match self {
                Value::Integer(i) => Some(*i),
                _ => None,
            }
        }
        /// The number, if this is an integer or a real.
        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Value::Integer(i) => Some(*i as f64),
                Value::Real(r) => Some(*r),
                _ => None,
            }
        }
        /// The text, if this is text.
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::Text(s) => Some(s),
                _ => None,
            }
        }
        /// The bytes, if this is a blob.
        pub fn as_bytes(&self) -> Option<&[u8]> {
            match self {
                Value::Blob(b) => Some(b),
                _ => None,
            }
        }
        /// Whether this is SQL NULL.
        pub fn is_null(&self) -> bool {
            matches!(self, Value::Null)
        }
    }

    impl From<i64> for Value {
        fn from(v: i64) -> Value {
            Value::Integer(v)
        }
    }
    impl From<i32> for Value {
        fn from(v: i32) -> Value {
            Value::Integer(v.into())
        }
    }
    impl From<u32> for Value {
        fn from(v: u32) -> Value {
            Value::Integer(v.into())
        }
    }
    impl From<bool> for Value {
        fn from(v: bool) -> Value {
            Value::Integer(v.into())
        }
    }
    impl From<f64> for Value {
        fn from(v: f64) -> Value {
            Value::Real(v)
        }
    }
    impl From<&str> for Value {
        fn from(v: &str) -> Value {
            Value::Text(v.to_owned())
        }
    }
    impl From<String> for Value {
        fn from(v: String) -> Value {
            Value::Text(v)
        }
    }
    impl From<std::borrow::Cow<'_, str>> for Value {
        fn from(v: std::borrow::Cow<'_, str>) -> Value {
            Value::Text(v.into_owned())
        }
    }
    impl From<Vec<u8>> for Value {
        fn from(v: Vec<u8>) -> Value {
            Value::Blob(v)
        }
    }
    impl From<&[u8]> for Value {
        fn from(v: &[u8]) -> Value {
            Value::Blob(v.to_vec())
        }
    }
    impl<T: Into<Value>> From<Option<T>> for Value {
        fn from(v: Option<T>) -> Value {
            v.map_or(Value::Null, Into::into)
        }
    }
}

/// The shared in-memory cache, namespaced per plugin. Needs `cache`.
pub mod cache {
    use std::time::Duration;

    use super::{millis, wit};
    use crate::Result;

    /// The value at `key`, if present and not expired.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>> {
        Ok(wit::cache::get(key)?)
    }
    /// Stores `value` at `key`, expiring after `ttl` (never for `None`).
    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        Ok(wit::cache::set(key, value, ttl.map(millis))?)
    }
    /// Deletes `key`; true when it existed.
    pub fn delete(key: &str) -> Result<bool> {
        Ok(wit::cache::delete(key)?)
    }
}

/// Outbound HTTP to the hosts the operator allowed. Needs `network`.
///
/// ```ignore
/// let answer = http::fetch(&http::Request::get("https://api.example.com/v1/items")
///     .with_header("accept", "application/json")
///     .with_timeout(Duration::from_secs(2)))?;
/// if !answer.is_success() { bail!("upstream answered {}", answer.status) }
/// let items: Vec<Item> = answer.json()?;
/// ```
///
/// - Only hosts in the plugin entry's `network.allow` (`api.example.com`, `*.example.com`,
///   `127.0.0.1:8080`, `https://api.example.com`) are reached; any other URL fails with kind
///   `Denied` before a connection is made (`network access denied: plugin 'x' may not connect
///   to 'evil.example' (not in network.allow)`), and counts against the plugin.
/// - A 4xx or 5xx answer is a response, not an error. Redirects are followed only to allowed
///   hosts; otherwise the 3xx response is returned.
/// - Limits: the body read is at most 10 MiB; the timeout is the request's own, capped by the
///   host (30 s) and by what is left of the guest call's deadline (kind `Failed` past it).
pub mod http {
    use std::time::Duration;

    use serde::de::DeserializeOwned;

    use super::wit;
    use crate::Result;

    /// The answer to an outgoing request.
    pub use wit::types::IncomingResponse;
    /// An outgoing request.
    pub use wit::types::OutgoingRequest as Request;

    /// Sends a request.
    pub fn fetch(request: &Request) -> Result<IncomingResponse> {
        Ok(wit::outbound::fetch(request)?)
    }

    /// `GET url`.
    pub fn get(url: &str) -> Result<IncomingResponse> {
        fetch(&Request::get(url))
    }

    impl Request {
        /// A request without headers or body.
        pub fn new(method: &str, url: impl Into<String>) -> Request {
            Request {
                method: method.to_owned(),
                url: url.into(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout_ms: None,
            }
        }
        /// A `GET` request.
        pub fn get(url: impl Into<String>) -> Request {
            Request::new("GET", url)
        }
        /// A `POST` request with a body.
        pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
            Request::new("POST", url).with_body(body)
        }
        /// A `PUT` request with a body.
        pub fn put(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
            Request::new("PUT", url).with_body(body)
        }
        /// A `DELETE` request.
        pub fn delete(url: impl Into<String>) -> Request {
            Request::new("DELETE", url)
        }
        /// Sets a JSON body and the `content-type` header.
        pub fn with_json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Request> {
            Ok(self
                .with_header("content-type", "application/json")
                .with_body(serde_json::to_vec(value)?))
        }
        /// Adds a header.
        pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
            self.headers.push((name.into(), value.into()));
            self
        }
        /// Sets the body.
        pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
            self.body = body.into();
            self
        }
        /// Sets a timeout (capped by the host's own limit).
        pub fn with_timeout(mut self, timeout: Duration) -> Request {
            self.timeout_ms = Some(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
            self
        }
    }

    impl IncomingResponse {
        /// Whether the status is 2xx.
        pub fn is_success(&self) -> bool {
            (200..300).contains(&self.status)
        }
        /// The first header of this name (case-insensitive).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        /// The body as UTF-8 text (invalid sequences replaced).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
        /// The body parsed as JSON.
        pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
            Ok(serde_json::from_slice(&self.body)?)
        }
    }
}

/// Commands the operator allowed (no shell). Needs `exec`.
///
/// ```ignore
/// let out = exec::run("git", &["rev-parse", "HEAD"])?;
/// let sorted = exec::run_with("sort", &[], b"b\na\n", Some(Duration::from_secs(2)))?;
/// if !out.success() { bail!("git failed: {}", out.stderr_text()) }
/// ```
///
/// - The command must equal an entry of the plugin entry's `exec.allow` exactly, and the
///   arguments match that entry's patterns when the operator pinned them
///   (`{ command: git, args: [rev-parse, HEAD] }`); anything else fails with kind `Denied`
///   before a process starts (`exec denied: plugin 'x' may not run 'rm' (not in exec.allow)`,
///   `exec denied: plugin 'x' may not run 'git' with argument 1 '-c' (…)`), and counts against
///   the plugin.
/// - It runs with the given argv and no shell, an empty environment except a minimal `PATH`, the
///   plugin's data directory as working directory, and `stdin` as its input.
/// - Limits: its whole process group is killed when it exits (nothing it starts outlives the
///   call), at its timeout (the call's own, capped by the host's 30 s and by what is left of the
///   guest call's deadline) or when stdout or stderr passes 1 MiB (kind `Failed`); each process
///   has the host's resource limits (memory, file size, processes, open files, CPU time).
pub mod exec {
    use std::time::Duration;

    use super::{strings, wit};
    use crate::Result;

    /// A finished command: exit status, stdout, stderr.
    pub use wit::types::CommandOutput as Output;

    /// Runs `command` with `args`, no input, the host's default timeout.
    pub fn run(command: &str, args: &[&str]) -> Result<Output> {
        run_with(command, args, &[], None)
    }

    /// Runs `command` with `args`, `stdin` as its input and an optional timeout.
    pub fn run_with(
        command: &str,
        args: &[&str],
        stdin: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Output> {
        let timeout_ms = timeout.map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX));
        Ok(wit::exec::run(command, &strings(args), stdin, timeout_ms)?)
    }

    impl Output {
        /// Whether the command exited with status 0.
        pub fn success(&self) -> bool {
            self.status == 0
        }
        /// Stdout as UTF-8 text (invalid sequences replaced).
        pub fn stdout_text(&self) -> String {
            String::from_utf8_lossy(&self.stdout).into_owned()
        }
        /// Stderr as UTF-8 text (invalid sequences replaced).
        pub fn stderr_text(&self) -> String {
            String::from_utf8_lossy(&self.stderr).into_owned()
        }
    }
}
