//! [`RedisCache`]: the `cache` capability on a Redis server shared by every plugd instance.
//!
//! Keys: an entry is `<prefix>:cache:<plugin>:<key>`; a plugin's books are
//! `<prefix>:cache-meta:<plugin>:{sizes,expiry,bytes}` (a hash key -> value bytes, a sorted set
//! of expiries, the byte total). Writes, deletes and clears are Lua scripts over the entry and
//! the books, so the quota holds across instances; reads are a plain `GET` (Redis expires the
//! values itself with `PX`). Plugin names are `[a-z0-9-]` and prefixes `[A-Za-z0-9_]`, so no
//! plugin's key space or user name can overlap another's, whatever bytes its keys hold.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use plugd_core::{BackendError, CacheBackend, CacheQuota, CacheSetError};
use redis::aio::ConnectionManager;
use redis::{
    Client, ConnectionInfo, ErrorKind, FromRedisValue, Script, ServerErrorKind,
    aio::ConnectionManagerConfig,
};
use tokio::sync::OnceCell;

use crate::options::{AclMode, RedisError, RedisOptions, redact};

const SET_LUA: &str = include_str!("set.lua");
const DELETE_LUA: &str = include_str!("delete.lua");
const CLEAR_LUA: &str = include_str!("clear.lua");

/// What a plugin's ACL user may run: the commands of a plain read and of the three scripts,
/// nothing else (no `KEYS`, `FLUSHALL`, `CONFIG`, no channels).
const PLUGIN_COMMANDS: &[&str] = &[
    "+get",
    "+eval",
    "+evalsha",
    "+time",
    "+set",
    "+del",
    "+hget",
    "+hset",
    "+hdel",
    "+hlen",
    "+hscan",
    "+zadd",
    "+zrem",
    "+zrangebyscore",
    "+zremrangebyscore",
    "+incrby",
    "+decrby",
];

/// A plugin's connection, authenticated as its ACL user.
struct PluginConnection {
    conn: ConnectionManager,
    /// This instance's password of the user (each instance adds its own).
    password: String,
}

/// The `cache` capability in Redis. Cheap to clone: clones share the connections.
///
/// ```no_run
/// # async fn run() -> Result<(), plugd_redis::RedisError> {
/// use std::sync::Arc;
/// use plugd_core::PluginCache;
/// use plugd_redis::{RedisCache, RedisOptions};
///
/// let redis = RedisCache::connect(&RedisOptions::default()).await?;
/// redis.ping().await?;
/// let cache = PluginCache::new("greeter", Arc::new(redis));
/// cache.set("hello", b"world", None).await.unwrap();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    /// The redacted URL, for messages.
    url: String,
    /// The password of the URL, scrubbed from every message.
    secret: Option<String>,
    info: ConnectionInfo,
    shared: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    mode: AclMode,
    /// Whether plugins run as ACL users of their own (decided at connect, turned off by `auto`
    /// when the server refuses `ACL SETUSER`).
    acl: AtomicBool,
    plugins: Mutex<HashMap<String, Arc<OnceCell<PluginConnection>>>>,
    set: Script,
    delete: Script,
    clear: Script,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .field("pool_size", &self.inner.shared.len())
            .field("acl_users", &self.acl_users())
            .finish()
    }
}

/// The keys of one plugin.
struct Keys {
    sizes: String,
    expiry: String,
    bytes: String,
}

fn check_plugin(plugin: &str) -> Result<(), BackendError> {
    if plugin.is_empty()
        || plugin.len() > 128
        || !plugin
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(BackendError::new(
            "redis",
            format!("invalid plugin name '{plugin}': plugin names are 1 to 128 of [a-z0-9-]"),
        ));
    }
    Ok(())
}

fn manager_config(options_connect: Duration, timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options_connect))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

fn random_password() -> Result<String, BackendError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|e| BackendError::new("redis", format!("no randomness for a password: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Run a script by its SHA1, loading it with `EVAL` when the server does not know it yet.
async fn eval<T: FromRedisValue>(
    conn: &mut ConnectionManager,
    script: &Script,
    source: &str,
    keys: &[&[u8]],
    args: &[&[u8]],
) -> redis::RedisResult<T> {
    let command = |name: &str, first: &str| {
        let mut cmd = redis::cmd(name);
        cmd.arg(first).arg(keys.len()).arg(keys).arg(args);
        cmd
    };
    match command("EVALSHA", script.get_hash())
        .query_async(conn)
        .await
    {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            command("EVAL", source).query_async(conn).await
        }
        result => result,
    }
}

impl RedisCache {
    /// Connect to `options.url`: `pool_size` shared connections, each checked with `PING` within
    /// `connect_timeout`, and (unless `acl: off`) whether the server has ACL users.
    pub async fn connect(options: &RedisOptions) -> Result<RedisCache, RedisError> {
        options.check()?;
        let url = redact(&options.url);
        let client = Client::open(options.url.as_str()).map_err(|e| RedisError::Invalid {
            field: "url",
            message: format!("'{url}' is not a redis:// URL ({:?})", e.kind()),
        })?;
        let info = client.get_connection_info().clone();
        let secret = info
            .redis_settings()
            .password()
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        let scrub = |message: String| match &secret {
            Some(s) => message.replace(s.as_str(), "***"),
            None => message,
        };
        let config = manager_config(options.connect_timeout, options.timeout);
        let timed_out = || RedisError::Timeout {
            url: url.clone(),
            what: "connect".into(),
            after: humantime::format_duration(options.connect_timeout).to_string(),
        };
        let mut shared = Vec::with_capacity(options.pool_size);
        for _ in 0..options.pool_size {
            let connecting = async {
                let mut conn =
                    ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
                redis::cmd("PING").query_async::<()>(&mut conn).await?;
                Ok::<_, redis::RedisError>(conn)
            };
            let conn = tokio::time::timeout(options.connect_timeout, connecting)
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| RedisError::Connect {
                    url: url.clone(),
                    message: scrub(e.to_string()),
                })?;
            shared.push(conn);
        }
        let acl = match options.acl {
            AclMode::Off => false,
            mode => {
                let mut conn = shared[0].clone();
                let mut whoami = redis::cmd("ACL");
                whoami.arg("WHOAMI");
                let whoami = whoami.query_async::<String>(&mut conn);
                match tokio::time::timeout(options.connect_timeout, whoami).await {
                    Err(_) => return Err(timed_out()),
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) if mode == AclMode::On => {
                        return Err(RedisError::AclUnavailable {
                            url,
                            message: scrub(e.to_string()),
                        });
                    }
                    Ok(Err(e)) => {
                        tracing::info!(url = %url, error = %scrub(e.to_string()), "redis cache: no ACL users, plugins share one connection");
                        false
                    }
                }
            }
        };
        Ok(RedisCache {
            inner: Arc::new(Inner {
                url,
                secret,
                info,
                shared,
                next: AtomicUsize::new(0),
                prefix: options.prefix.clone(),
                timeout: options.timeout,
                connect_timeout: options.connect_timeout,
                mode: options.acl,
                acl: AtomicBool::new(acl),
                plugins: Mutex::new(HashMap::new()),
                set: Script::new(SET_LUA),
                delete: Script::new(DELETE_LUA),
                clear: Script::new(CLEAR_LUA),
            }),
        })
    }

    /// Whether the server answers `PING` within the timeout (for `plugd check` and readiness).
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.shared();
        let ping = redis::cmd("PING");
        let call = async {
            match ping.query_async::<()>(&mut conn).await {
                Err(e) if e.is_io_error() => ping.query_async::<()>(&mut conn).await,
                result => result,
            }
        };
        match tokio::time::timeout(self.inner.timeout, call).await {
            Err(_) => Err(self.timed_out("ping")),
            Ok(Err(e)) => Err(self.failed("ping", &e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Whether each plugin's commands run as an ACL user of its own (`<prefix>-cache-<plugin>`).
    pub fn acl_users(&self) -> bool {
        self.inner.acl.load(Ordering::Relaxed)
    }

    /// The connection `plugin`'s cache commands run on: authenticated as its ACL user when
    /// [`RedisCache::acl_users`], else a shared one. For checks and diagnostics.
    pub async fn plugin_connection(&self, plugin: &str) -> Result<ConnectionManager, RedisError> {
        check_plugin(plugin).map_err(|e| RedisError::Invalid {
            field: "plugin",
            message: e.message,
        })?;
        match tokio::time::timeout(self.inner.timeout, self.connection(plugin)).await {
            Err(_) => Err(self.timed_out(&format!("connect of plugin '{plugin}'"))),
            Ok(result) => result,
        }
    }

    fn shared(&self) -> ConnectionManager {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.shared.len();
        self.inner.shared[i].clone()
    }

    fn scrub(&self, message: String) -> String {
        match &self.inner.secret {
            Some(s) => message.replace(s.as_str(), "***"),
            None => message,
        }
    }

    fn timed_out(&self, what: &str) -> RedisError {
        RedisError::Timeout {
            url: self.inner.url.clone(),
            what: what.into(),
            after: humantime::format_duration(self.inner.timeout).to_string(),
        }
    }

    fn failed(&self, what: &str, e: &redis::RedisError) -> RedisError {
        RedisError::Command {
            url: self.inner.url.clone(),
            what: what.into(),
            message: self.scrub(e.to_string()),
        }
    }

    fn user(&self, plugin: &str) -> String {
        format!("{}-cache-{plugin}", self.inner.prefix)
    }

    fn entry(&self, plugin: &str, key: &str) -> Vec<u8> {
        format!("{}:cache:{plugin}:{key}", self.inner.prefix).into_bytes()
    }

    fn keys(&self, plugin: &str) -> Keys {
        let meta = format!("{}:cache-meta:{plugin}", self.inner.prefix);
        Keys {
            sizes: format!("{meta}:sizes"),
            expiry: format!("{meta}:expiry"),
            bytes: format!("{meta}:bytes"),
        }
    }

    /// The connection for `plugin`: its own (creating its ACL user on first use) or a shared one.
    async fn connection(&self, plugin: &str) -> Result<ConnectionManager, RedisError> {
        if !self.acl_users() {
            return Ok(self.shared());
        }
        let cell = self
            .inner
            .plugins
            .lock()
            .entry(plugin.to_string())
            .or_default()
            .clone();
        match cell.get_or_try_init(|| self.open_plugin(plugin)).await {
            Ok(c) => Ok(c.conn.clone()),
            // `auto` on a server that refuses `ACL SETUSER`: the shared connection from now on.
            Err(None) => Ok(self.shared()),
            Err(Some(e)) => Err(e),
        }
    }

    /// `ACL SETUSER` for `plugin` (its keys and the script commands only) with a password of
    /// this instance, and a connection authenticated as that user. `Err(None)`: ACL users are
    /// unavailable after all and the mode is `auto` (they are now off).
    async fn open_plugin(&self, plugin: &str) -> Result<PluginConnection, Option<RedisError>> {
        let user = self.user(plugin);
        let password = random_password().map_err(|e| {
            Some(RedisError::Command {
                url: self.inner.url.clone(),
                what: format!("ACL SETUSER {user}"),
                message: e.message,
            })
        })?;
        let prefix = &self.inner.prefix;
        let mut setuser = redis::cmd("ACL");
        setuser
            .arg("SETUSER")
            .arg(&user)
            .arg("on")
            .arg(format!(">{password}"))
            .arg("resetkeys")
            .arg(format!("~{prefix}:cache:{plugin}:*"))
            .arg(format!("~{prefix}:cache-meta:{plugin}:*"))
            .arg("resetchannels")
            .arg("-@all")
            .arg(PLUGIN_COMMANDS);
        let mut admin = self.shared();
        if let Err(e) = setuser.query_async::<()>(&mut admin).await {
            let refused = matches!(
                e.kind(),
                ErrorKind::Server(ServerErrorKind::NoPerm | ServerErrorKind::ResponseError)
            );
            if refused && self.inner.mode == AclMode::Auto {
                tracing::warn!(url = %self.inner.url, error = %self.scrub(e.to_string()), "redis cache: ACL SETUSER refused, plugins share one connection");
                self.inner.acl.store(false, Ordering::Relaxed);
                return Err(None);
            }
            return Err(Some(self.failed(&format!("ACL SETUSER {user}"), &e)));
        }
        let redis = self
            .inner
            .info
            .redis_settings()
            .clone()
            .set_username(&user)
            .set_password(&password)
            .set_skip_set_lib_name();
        let info = self.inner.info.clone().set_redis_settings(redis);
        let client =
            Client::open(info).map_err(|e| Some(self.failed(&format!("connect as {user}"), &e)))?;
        let config = manager_config(self.inner.connect_timeout, self.inner.timeout);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| Some(self.failed(&format!("connect as {user}"), &e)))?;
        Ok(PluginConnection { conn, password })
    }

    /// Forget `plugin`'s connection when its user no longer takes our password (the server
    /// restarted without an ACL file, or the user was dropped): the next call sets it up again.
    fn after_error(&self, plugin: &str, e: &redis::RedisError) {
        if e.kind() == ErrorKind::AuthenticationFailed {
            self.inner.plugins.lock().remove(plugin);
        }
    }

    /// Run `call` on `plugin`'s connection within the timeout; errors name Redis, the
    /// command and the plugin.
    async fn run<T, F, Fut>(&self, what: &str, plugin: &str, call: F) -> Result<T, BackendError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        check_plugin(plugin)?;
        let what = format!("{what} of plugin '{plugin}'");
        let work = async {
            let conn = self.connection(plugin).await?;
            let result = match call(conn.clone()).await {
                // A connection that died while idle fails its first call before it reconnects:
                // once more on the new one (the calls are scripts that are safe to repeat).
                Err(e) if e.is_io_error() => call(conn).await,
                result => result,
            };
            result.map_err(|e| {
                self.after_error(plugin, &e);
                self.failed(&what, &e)
            })
        };
        match tokio::time::timeout(self.inner.timeout, work).await {
            Err(_) => Err(self.timed_out(&what).into()),
            Ok(result) => result.map_err(BackendError::from),
        }
    }
}

#[async_trait]
impl CacheBackend for RedisCache {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let entry = &self.entry(plugin, key);
        self.run("get", plugin, |mut conn| async move {
            redis::cmd("GET").arg(entry).query_async(&mut conn).await
        })
        .await
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: CacheQuota,
    ) -> Result<(), CacheSetError> {
        let entry = self.entry(plugin, key);
        let k = self.keys(plugin);
        // A TTL under a millisecond still expires (PX takes whole milliseconds, at least 1).
        let ttl_ms = ttl.map_or(0, |t| t.as_millis().clamp(1, u64::MAX as u128) as u64);
        let (ttl_ms, entries, bytes) = (
            ttl_ms.to_string(),
            quota.max_entries.to_string(),
            quota.max_bytes.to_string(),
        );
        let script = &self.inner.set;
        let (entry, k, value) = (&entry, &k, &value);
        let (ttl_ms, entries, bytes) = (&ttl_ms, &entries, &bytes);
        let outcome: i64 = self
            .run("set", plugin, |mut conn| async move {
                eval(
                    &mut conn,
                    script,
                    SET_LUA,
                    &[
                        entry.as_slice(),
                        k.sizes.as_bytes(),
                        k.expiry.as_bytes(),
                        k.bytes.as_bytes(),
                    ],
                    &[
                        key.as_bytes(),
                        value.as_slice(),
                        ttl_ms.as_bytes(),
                        entries.as_bytes(),
                        bytes.as_bytes(),
                    ],
                )
                .await
            })
            .await?;
        match outcome {
            0 => Ok(()),
            1 => Err(CacheSetError::Full {
                what: "entries",
                limit: quota.max_entries,
            }),
            _ => Err(CacheSetError::Full {
                what: "bytes",
                limit: quota.max_bytes,
            }),
        }
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<bool, BackendError> {
        let entry = self.entry(plugin, key);
        let k = self.keys(plugin);
        let script = &self.inner.delete;
        let (entry, k) = (&entry, &k);
        let removed: i64 = self
            .run("delete", plugin, |mut conn| async move {
                eval(
                    &mut conn,
                    script,
                    DELETE_LUA,
                    &[
                        entry.as_slice(),
                        k.sizes.as_bytes(),
                        k.expiry.as_bytes(),
                        k.bytes.as_bytes(),
                    ],
                    &[key.as_bytes()],
                )
                .await
            })
            .await?;
        Ok(removed > 0)
    }

    async fn clear(&self, plugin: &str) -> Result<(), BackendError> {
        let entries = format!("{}:cache:{plugin}:", self.inner.prefix);
        let k = self.keys(plugin);
        let script = &self.inner.clear;
        let (entries, k) = (&entries, &k);
        self.run("clear", plugin, |mut conn| async move {
            let mut cursor = "0".to_string();
            loop {
                let (next, left): (String, i64) = eval(
                    &mut conn,
                    script,
                    CLEAR_LUA,
                    &[k.sizes.as_bytes(), k.expiry.as_bytes(), k.bytes.as_bytes()],
                    &[entries.as_bytes(), cursor.as_bytes()],
                )
                .await?;
                if left == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })
        .await?;
        // The plugin was unloaded: take this instance's password off its user (other
        // instances keep theirs) and close its connection.
        let gone = self.inner.plugins.lock().remove(plugin);
        if let Some(password) = gone.and_then(|c| c.get().map(|c| c.password.clone())) {
            let user = self.user(plugin);
            let what = format!("ACL SETUSER {user}");
            let mut admin = self.shared();
            let mut forget = redis::cmd("ACL");
            forget.arg("SETUSER").arg(&user).arg(format!("<{password}"));
            let call = forget.query_async::<()>(&mut admin);
            match tokio::time::timeout(self.inner.timeout, call).await {
                Err(_) => return Err(self.timed_out(&what).into()),
                Ok(Err(e)) => return Err(self.failed(&what, &e).into()),
                Ok(Ok(())) => {}
            }
            // No instance uses the user any more: drop it. (An instance that added its password
            // meanwhile loses its connection and sets the user up again on its next call.)
            let unused = async {
                let mut getuser = redis::cmd("ACL");
                getuser.arg("GETUSER").arg(&user);
                let rules: HashMap<String, redis::Value> = getuser.query_async(&mut admin).await?;
                let passwords = rules.get("passwords").map_or(0, |p| match p {
                    redis::Value::Array(a) => a.len(),
                    _ => 0,
                });
                if passwords == 0 {
                    let mut deluser = redis::cmd("ACL");
                    deluser.arg("DELUSER").arg(&user);
                    deluser.query_async::<()>(&mut admin).await?;
                }
                Ok::<_, redis::RedisError>(())
            };
            let what = format!("ACL DELUSER {user}");
            match tokio::time::timeout(self.inner.timeout, unused).await {
                Err(_) => return Err(self.timed_out(&what).into()),
                Ok(Err(e)) => return Err(self.failed(&what, &e).into()),
                Ok(Ok(())) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_the_manifests_own() {
        for good in ["a", "my-plugin-2", "0"] {
            assert!(check_plugin(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "a:b", "a*", "a_b", "a b", "é", &"a".repeat(129)] {
            let e = check_plugin(bad).unwrap_err();
            assert_eq!(e.backend, "redis");
            assert!(e.message.contains("invalid plugin name"), "{e}");
        }
    }

    #[test]
    fn the_acl_rules_name_no_admin_command() {
        for command in PLUGIN_COMMANDS {
            assert!(command.starts_with('+'), "{command}");
            let admin = [
                "keys",
                "scan",
                "flushall",
                "flushdb",
                "config",
                "acl",
                "script",
                "publish",
                "subscribe",
                "debug",
                "shutdown",
                "client",
                "function",
            ];
            assert!(!admin.contains(&&command[1..]), "{command}");
        }
        // Every command the scripts call is allowed (ACL applies inside scripts too).
        for script in [SET_LUA, DELETE_LUA, CLEAR_LUA] {
            for call in script.split("redis.call('").skip(1) {
                let name = call.split('\'').next().unwrap().to_ascii_lowercase();
                assert!(
                    PLUGIN_COMMANDS.contains(&format!("+{name}").as_str()),
                    "{name} is called but not allowed"
                );
            }
        }
    }
}
