//! `backends:` and `fleet:` of the host config: which engine keeps each capability's state
//! (the embedded defaults, or PostgreSQL, Redis and NATS JetStream shared by a fleet of
//! instances), how to reach each engine, and how the instances of a fleet roll a plugin out.

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::units::{DurationValue, de_duration, ser_duration};

/// Where plugins' key/value storage and the status tables live.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    /// SQLite files under `data_dir` (the default).
    #[default]
    Sqlite,
    /// PostgreSQL at `backends.postgres.url`, shared by the fleet.
    Postgres,
}

/// Where the `cache` capability keeps its entries.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CacheEngine {
    /// In this process's memory (the default).
    #[default]
    Memory,
    /// Redis at `backends.redis.url`, shared by the fleet.
    Redis,
}

/// How events travel.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EventsEngine {
    /// Inside this process only (the default).
    #[default]
    Local,
    /// NATS JetStream at `backends.nats.url`: between the instances of the fleet, durable,
    /// at least once.
    Nats,
}

/// Whether each plugin gets a Redis ACL user of its own.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RedisAcl {
    /// Where the server supports ACLs (Redis 6 and later).
    #[default]
    Auto,
    /// Always: a server without ACLs is an error.
    On,
    /// Never: one connection for all plugins, each in its key prefix.
    Off,
}

/// `backends`: the engine of each capability, and the servers of the fleet's engines.
///
/// ```
/// use plugd_manifest::{Format, HostConfig, StoreEngine};
///
/// let yaml = "backends:\n  storage: postgres\n  postgres: { url: 'postgres://plugd:s3cret@db/plugd' }\n";
/// let config = HostConfig::from_str(yaml, Format::Yaml, None).unwrap();
/// assert_eq!(config.backends.storage, StoreEngine::Postgres);
/// let shown = serde_json::to_string(&config.backends).unwrap();
/// assert!(shown.contains("postgres://plugd:***@db/plugd") && !shown.contains("s3cret"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BackendsConfig {
    /// Plugins' key/value storage (`storage` interface): `sqlite` (default) or `postgres`.
    pub storage: StoreEngine,
    /// The status tables (plugins, hooks, metric events, audit), one row set per instance:
    /// `sqlite` (default, `host.db`) or `postgres`.
    pub status: StoreEngine,
    /// The `database` capability: `sqlite` (a file per plugin, default) or `postgres` (a
    /// schema and a role per plugin).
    pub database: StoreEngine,
    /// The `cache` capability: `memory` (default) or `redis`.
    pub cache: CacheEngine,
    /// Events between plugins: `local` (default) or `nats` (the fleet).
    pub events: EventsEngine,
    /// The PostgreSQL server, when an engine above is `postgres`.
    pub postgres: Option<PostgresSettings>,
    /// The Redis server, when `cache` is `redis`.
    pub redis: Option<RedisSettings>,
    /// The NATS server (JetStream), when `events` is `nats` or `fleet` is on.
    pub nats: Option<NatsSettings>,
}

/// `backends.postgres`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database` (the password through `${VAR}`).
    #[serde(serialize_with = "ser_redacted_url")]
    pub url: String,
    /// Connections of the host's pool (default 16).
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// How long a connection may take to open (default 5s).
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    #[schemars(with = "DurationValue")]
    pub connect_timeout: Duration,
    /// How long one statement of the host may take (default 5s).
    #[serde(
        default = "default_timeout",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    #[schemars(with = "DurationValue")]
    pub timeout: Duration,
    /// The schema of the host's own tables (default `plugd`).
    #[serde(default = "default_schema")]
    pub schema: String,
}

/// `backends.redis`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…`.
    #[serde(serialize_with = "ser_redacted_url")]
    pub url: String,
    /// Connections (default 8).
    #[serde(default = "default_redis_pool")]
    pub pool_size: usize,
    /// How long a connection may take to open (default 5s).
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    #[schemars(with = "DurationValue")]
    pub connect_timeout: Duration,
    /// How long one command may take (default 2s).
    #[serde(
        default = "default_cache_timeout",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    #[schemars(with = "DurationValue")]
    pub timeout: Duration,
    /// The prefix of every key plugd writes (default `plugd`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// An ACL user per plugin: `auto` (default), `on`, `off`.
    #[serde(default)]
    pub acl: RedisAcl,
}

/// `backends.nats`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// `nats://[user:password@]host:port` (`tls://` for TLS).
    #[serde(serialize_with = "ser_redacted_url")]
    pub url: String,
    /// How long the connection may take to open (default 5s).
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    #[schemars(with = "DurationValue")]
    pub connect_timeout: Duration,
    /// How long a request to the server may take (default 5s).
    #[serde(
        default = "default_timeout",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    #[schemars(with = "DurationValue")]
    pub timeout: Duration,
    /// The JetStream stream of events (default `PLUGD_EVENTS`).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// The subject prefix of events (default `plugd.events`).
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// How long the stream keeps an event (default 24h).
    #[serde(
        default = "default_max_age",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    #[schemars(with = "DurationValue")]
    pub max_age: Duration,
}

/// `fleet`: this instance as a member of a fleet (needs `backends.nats`).
///
/// ```
/// use plugd_manifest::{Format, HostConfig};
///
/// let yaml = "fleet: { enabled: true, instance: web-1 }\nbackends:\n  nats: { url: 'nats://127.0.0.1:4222' }\n";
/// let config = HostConfig::from_str(yaml, Format::Yaml, None).unwrap();
/// assert!(config.fleet.enabled);
/// assert_eq!(config.fleet.rollout.max_p99_ratio, 2.0);
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSettings {
    /// Whether this instance joins the fleet (default false).
    pub enabled: bool,
    /// Its name in the fleet, unique (default: the host name and the listen port).
    pub instance: Option<String>,
    /// The admin API's address as the other instances reach it (default: `admin.listen`).
    pub advertise: Option<String>,
    /// The name of the fleet: instances with the same name and NATS server form one (default
    /// `plugd`).
    pub name: String,
    /// How often the instance tells the fleet how it is (default 2s).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub heartbeat: Duration,
    /// How `plugd rollout` decides.
    pub rollout: RolloutSettings,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            enabled: false,
            instance: None,
            advertise: None,
            name: "plugd".to_string(),
            heartbeat: Duration::from_secs(2),
            rollout: RolloutSettings::default(),
        }
    }
}

/// `fleet.rollout`: a new version is kept when, over `window` after each instance took it, its
/// error rate is at most the old version's plus `max_error_rate_increase` and its p99 at most
/// `max_p99_ratio` times the old version's; otherwise every instance goes back.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutSettings {
    /// How long each instance is watched on the new version (default 10s).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub window: Duration,
    /// How long an instance may take to take the new version and be healthy (default 60s).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub step_timeout: Duration,
    /// Error rate (0 to 1) the new version may add to the old one's (default 0.01).
    pub max_error_rate_increase: f64,
    /// How many times the old version's p99 the new one may take (default 2.0).
    pub max_p99_ratio: f64,
    /// Requests a window needs before latency is judged (default 20); errors are judged from
    /// the first.
    pub min_requests: u64,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        RolloutSettings {
            window: Duration::from_secs(10),
            step_timeout: Duration::from_secs(60),
            max_error_rate_increase: 0.01,
            max_p99_ratio: 2.0,
            min_requests: 20,
        }
    }
}

fn default_pool() -> usize {
    16
}
fn default_redis_pool() -> usize {
    8
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_cache_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_schema() -> String {
    "plugd".to_string()
}
fn default_prefix() -> String {
    "plugd".to_string()
}
fn default_stream() -> String {
    "PLUGD_EVENTS".to_string()
}
fn default_subject_prefix() -> String {
    "plugd.events".to_string()
}
fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// `url` with its password replaced by `***`, for messages and the admin API.
///
/// ```
/// assert_eq!(plugd_manifest::redact_url("redis://:pw@cache:6379/0"), "redis://:***@cache:6379/0");
/// assert_eq!(plugd_manifest::redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

fn ser_redacted_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// What is wrong with `backends` and `fleet`: the dotted key and why.
pub(crate) fn check(
    backends: &BackendsConfig,
    fleet: &FleetSettings,
) -> Result<(), (String, String)> {
    let bad = |field: &str, reason: String| Err((field.to_string(), reason));
    let uses_postgres =
        [backends.storage, backends.status, backends.database].contains(&StoreEngine::Postgres);
    for (engine, used, url, schemes) in [
        (
            "postgres",
            uses_postgres,
            backends.postgres.as_ref().map(|p| &p.url),
            &["postgres", "postgresql"][..],
        ),
        (
            "redis",
            backends.cache == CacheEngine::Redis,
            backends.redis.as_ref().map(|r| &r.url),
            &["redis", "rediss"][..],
        ),
        (
            "nats",
            backends.events == EventsEngine::Nats || fleet.enabled,
            backends.nats.as_ref().map(|n| &n.url),
            &["nats", "tls"][..],
        ),
    ] {
        match url {
            None if used => {
                let user = match engine {
                    "postgres" => "an engine of backends is postgres",
                    "redis" => "backends.cache is redis",
                    _ if fleet.enabled => "fleet.enabled is true",
                    _ => "backends.events is nats",
                };
                return bad(
                    &format!("backends.{engine}.url"),
                    format!("must be set: {user}"),
                );
            }
            Some(url) => {
                let scheme = url.split_once("://").map(|(s, _)| s);
                if !scheme.is_some_and(|s| schemes.contains(&s)) {
                    return bad(
                        &format!("backends.{engine}.url"),
                        format!(
                            "must start with {}:// (got '{}')",
                            schemes.join(":// or "),
                            redact_url(url)
                        ),
                    );
                }
            }
            None => {}
        }
    }
    for (field, pool) in [
        (
            "backends.postgres.pool_size",
            backends.postgres.as_ref().map(|p| p.pool_size),
        ),
        (
            "backends.redis.pool_size",
            backends.redis.as_ref().map(|r| r.pool_size),
        ),
    ] {
        if pool == Some(0) {
            return bad(field, "must be at least 1".to_string());
        }
    }
    if let Some(p) = &backends.postgres
        && (p.schema.is_empty()
            || !p
                .schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    {
        return bad(
            "backends.postgres.schema",
            "must be lowercase letters, digits and '_'".to_string(),
        );
    }
    if let Some(instance) = &fleet.instance
        && (instance.is_empty()
            || instance.len() > 64
            || !instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return bad(
            "fleet.instance",
            "must be 1 to 64 letters, digits, '-' or '_'".to_string(),
        );
    }
    let r = &fleet.rollout;
    if !(0.0..=1.0).contains(&r.max_error_rate_increase) {
        return bad(
            "fleet.rollout.max_error_rate_increase",
            "must be between 0 and 1".to_string(),
        );
    }
    if r.max_p99_ratio.is_nan() || r.max_p99_ratio < 1.0 {
        return bad(
            "fleet.rollout.max_p99_ratio",
            "must be at least 1".to_string(),
        );
    }
    if fleet.heartbeat.is_zero() || r.window.is_zero() || r.step_timeout.is_zero() {
        return bad(
            "fleet",
            "heartbeat, rollout.window and rollout.step_timeout must be longer than 0".to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{Format, HostConfig};

    fn read(yaml: &str) -> Result<HostConfig, String> {
        HostConfig::from_str(yaml, Format::Yaml, None).map_err(|e| e.to_string())
    }

    #[test]
    fn the_embedded_defaults_need_no_server() {
        let c = read("").unwrap();
        assert_eq!(c.backends, super::BackendsConfig::default());
        assert!(!c.fleet.enabled);
    }

    #[test]
    fn an_engine_without_its_server_says_which_key_is_missing() {
        assert_eq!(
            read("backends: { storage: postgres }").unwrap_err(),
            "invalid backends.postgres.url: must be set: an engine of backends is postgres"
        );
        assert_eq!(
            read("backends: { cache: redis }").unwrap_err(),
            "invalid backends.redis.url: must be set: backends.cache is redis"
        );
        assert_eq!(
            read("fleet: { enabled: true }").unwrap_err(),
            "invalid backends.nats.url: must be set: fleet.enabled is true"
        );
    }

    #[test]
    fn a_url_of_the_wrong_engine_is_refused_without_its_password() {
        let err = read("backends: { cache: redis, redis: { url: 'postgres://u:hunter2@db/x' } }")
            .unwrap_err();
        assert_eq!(
            err,
            "invalid backends.redis.url: must start with redis:// or rediss:// (got 'postgres://u:***@db/x')"
        );
    }

    #[test]
    fn unknown_engines_and_keys_are_errors() {
        assert!(
            read("backends: { storage: mysql }")
                .unwrap_err()
                .contains("mysql"),
        );
        let err = read("backends: { postgres: { url: 'postgres://db/x', pool: 3 } }").unwrap_err();
        assert!(err.contains("unknown key 'pool'"), "{err}");
        assert!(err.contains("pool_size"), "{err}");
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_never_shown() {
        // SAFETY: the variable is this test's own.
        unsafe { std::env::set_var("PLUGD_TEST_BACKENDS_PG_PASSWORD", "s3cr3t-from-env") };
        let c = read(
            "backends:\n  storage: postgres\n  postgres: { url: 'postgres://plugd:${PLUGD_TEST_BACKENDS_PG_PASSWORD}@127.0.0.1/test', pool_size: 4, timeout: 750ms }\n",
        )
        .unwrap();
        let pg = c.backends.postgres.as_ref().unwrap();
        assert_eq!(pg.url, "postgres://plugd:s3cr3t-from-env@127.0.0.1/test");
        assert_eq!(pg.pool_size, 4);
        assert_eq!(pg.timeout, std::time::Duration::from_millis(750));
        let shown = serde_json::to_string(&c).unwrap();
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn fleet_settings_are_checked() {
        let nats = "backends: { nats: { url: 'nats://127.0.0.1:4222' } }\n";
        assert!(
            read(&format!(
                "{nats}fleet: {{ enabled: true, instance: 'a b' }}"
            ))
            .unwrap_err()
            .contains("fleet.instance")
        );
        assert!(
            read(&format!(
                "{nats}fleet: {{ enabled: true, rollout: {{ max_p99_ratio: 0.5 }} }}"
            ))
            .unwrap_err()
            .contains("max_p99_ratio")
        );
        let c = read(&format!(
            "{nats}fleet: {{ enabled: true, instance: web-2, rollout: {{ window: 3s }} }}"
        ))
        .unwrap();
        assert_eq!(c.fleet.instance.as_deref(), Some("web-2"));
        assert_eq!(c.fleet.rollout.window, std::time::Duration::from_secs(3));
    }
}
