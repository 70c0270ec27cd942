//! The host config: `plugd.yaml` / `plugd.json` / `plugd.toml`, with the keys listed in
//! docs/design.md#host-config.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backends::{BackendsConfig, FleetSettings};
use crate::environment::{self, Applied, EnvError, Environment};
use crate::exec::ExecGrant;
use crate::failure::FailurePolicy;
use crate::format::{DecodeError, Format, at_position, decode, decode_value, parse_tree};
use crate::manifest::is_valid_plugin_name;
use crate::tls::TlsConfig;
use crate::units::{
    ByteSize, DurationValue, de_byte_size, de_duration, de_hook_durations, de_opt_byte_size,
    de_opt_duration, ser_duration, ser_hook_durations, ser_opt_duration,
};
use crate::{HookType, Manifest, Permission, Priority};

/// The host's configuration.
///
/// Every key has a default, so an empty file is a valid config. Relative paths (`data_dir`,
/// `plugins.directory`, a plugin's `path`, `plugins.trusted_keys`, `server.tls`) are resolved against the
/// config file's folder; without a file they stay relative, that is, relative to the current
/// directory.
///
/// ```
/// use plugd_manifest::{Format, HostConfig};
/// use std::path::Path;
///
/// let yaml = "plugins:\n  plugins:\n    - name: hello\n      permissions: { router: true }\n";
/// let config = HostConfig::from_str(yaml, Format::Yaml, Some(Path::new("/etc/plugd/plugd.yaml")))
///     .unwrap();
/// let hello = config.plugin("hello").unwrap();
/// assert_eq!(hello.path, Path::new("/etc/plugd/plugins/hello"));
/// assert_eq!(config.data_dir, Path::new("/etc/plugd/data"));
/// assert_eq!(config.server.listen, "127.0.0.1:8080");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostConfig {
    /// The HTTP listener.
    pub server: ServerConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Where the host keeps its state (default `./data`).
    pub data_dir: PathBuf,
    /// The plugins.
    pub plugins: PluginsConfig,
    /// The status tables in `host.db`.
    pub status: StatusSettings,
    /// The engine of each capability's state: the embedded defaults, or the fleet's servers.
    pub backends: BackendsConfig,
    /// This instance as a member of a fleet.
    pub fleet: FleetSettings,
    /// The config file, when read from one.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            server: ServerConfig::default(),
            admin: AdminConfig::default(),
            data_dir: PathBuf::from("./data"),
            plugins: PluginsConfig::default(),
            status: StatusSettings::default(),
            backends: BackendsConfig::default(),
            fleet: FleetSettings::default(),
            source: None,
        }
    }
}

impl HostConfig {
    /// This instance's name in a fleet and in the shared status tables: `fleet.instance`, else
    /// the machine's host name and the listen port (`web-1-8080`).
    pub fn instance_name(&self) -> String {
        if let Some(name) = &self.fleet.instance {
            return name.clone();
        }
        let port = self.server.listen.rsplit_once(':').map_or("0", |(_, p)| p);
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "plugd".to_string());
        let host: String = host
            .chars()
            .take(48)
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{host}-{port}")
    }
}

/// The JSON Schema (draft 2020-12) of the host config, generated from the types the config is
/// read into. Editors use it for completion and validation; it is committed as
/// `schemas/plugd.schema.json` (`plugd schema config` prints it). It checks the shape;
/// [`HostConfig`]'s own checks (plugin names, limits, a plugin listed twice) say more.
///
/// ```
/// let schema = plugd_manifest::host_config_json_schema();
/// assert_eq!(schema["title"], "plugd host config");
/// assert_eq!(schema["additionalProperties"], false);
/// assert!(schema["properties"]["plugins"].is_object());
/// ```
pub fn host_config_json_schema() -> Value {
    let mut schema = schemars::schema_for!(RawHostConfig).to_value();
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "$id".into(),
            Value::String("https://example.invalid/plugd/schemas/plugd.schema.json".into()),
        );
    }
    schema
}

/// `status`: the tables `plugins`, `plugin_hooks` and `plugin_metrics` in `host.db`, written
/// in one transaction every `interval` by a background task (never a write per request).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusSettings {
    /// Whether the tables are written (default true).
    pub enabled: bool,
    /// Time between two writes (default 5s).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub interval: Duration,
    /// How long rows of `plugin_metrics` are kept (default 7 days).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub retention: Duration,
}

impl Default for StatusSettings {
    fn default() -> Self {
        StatusSettings {
            enabled: true,
            interval: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `server`: the HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: String,
    /// Largest request body in bytes (default 2 MiB); written as an integer or `"2MiB"`,
    /// `"512KiB"`, `"1MB"`.
    #[serde(deserialize_with = "de_byte_size")]
    #[schemars(with = "ByteSize")]
    pub body_limit: u64,
    /// Send a plugin's own error text to the client in 500/503 answers (default false: the
    /// client gets the plugin's name and a request id, and the log line with that id holds the
    /// details). For development: the text can hold another request's data.
    pub expose_errors: bool,
    /// How long a client may take to send a request's line and headers (default 10s), counted
    /// from its first byte; a client still sending them then (a slowloris) has its connection
    /// closed. Applies to the admin listener too.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub header_read_timeout: Duration,
    /// How long a connection may sit with no request in progress before the server closes it
    /// (default 60s): a kept-alive connection between two requests, or a new one that has sent
    /// nothing.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub idle_timeout: Duration,
    /// How long a client may take to send a request's body, counted from the end of its headers
    /// (default 30s); a body still arriving then is cut: the client gets 408 and the connection
    /// is closed.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub body_read_timeout: Duration,
    /// Most connections served at once on each listener (default 10000; keep it under the
    /// process's open-file limit, `ulimit -n`). A connection over the cap is not accepted until
    /// one closes: it waits in the kernel's listen queue, and the connections already open are
    /// served as before.
    pub max_connections: usize,
    /// Most header fields in one request (default 100); a request with more gets 431 and its
    /// connection is closed.
    pub max_headers: usize,
    /// Largest request line and headers of one request, in bytes (default 64KiB); written like
    /// `body_limit`. A request over it gets 431 and its connection is closed.
    #[serde(deserialize_with = "de_byte_size")]
    #[schemars(with = "ByteSize")]
    pub max_header_bytes: u64,
    /// HTTPS on this listener (default none: plain HTTP), and on the admin API with
    /// `admin.listen: shared`; a separate admin listener stays plain HTTP, for loopback. The PEM
    /// certificate chain and private key, relative to the config file; a server reads them
    /// again when either file changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Log one line per request (default false): method, path (the query left out), status,
    /// duration, response bytes, peer address and request id, at `info` on the tracing target
    /// `plugd::access`.
    pub access_log: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            body_limit: 2 * 1024 * 1024,
            expose_errors: false,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            tls: None,
            access_log: false,
        }
    }
}

/// `admin`: the admin API.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The listener of the admin API and the dashboard (`/admin/...`), default
    /// [`AdminConfig::DEFAULT_LISTEN`] (`127.0.0.1:8081`): an origin of their own, out of reach
    /// of any content a plugin serves. A bare port (`9090` or `:9090`) means loopback,
    /// `127.0.0.1:9090`. `shared` serves them on `server.listen` beside the plugins instead — an
    /// explicit choice with a risk (README, "Security model"): the host then refuses service
    /// worker scripts from plugins and strips `Service-Worker-Allowed` from their responses.
    pub listen: Option<String>,
    /// The bearer token (`PLUGD_ADMIN_TOKEN` wins over it; without either, a generated one).
    /// `${VAR}` is expanded. Never serialized: it serializes as `"[redacted]"`.
    #[serde(serialize_with = "ser_redacted")]
    pub token: Option<String>,
    /// Host endpoints that need the admin token too: `healthz`, `readyz`, `metrics`. Empty by
    /// default: `/healthz`, `/readyz` and `/metrics` are public (load balancers, orchestrators
    /// and Prometheus call them).
    pub protect: Vec<Protected>,
}

/// `admin.protect`: a host endpoint that needs the admin token.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    schemars::JsonSchema,
    Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Protected {
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
}

impl AdminConfig {
    /// Where the admin API listens when `admin.listen` is not set.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:8081";
    /// The `admin.listen` value that serves the admin API on `server.listen`.
    pub const SHARED: &'static str = "shared";

    /// Whether the operator chose to serve the admin API on the main listener
    /// (`admin.listen: shared`).
    pub fn is_shared(&self) -> bool {
        self.listen.as_deref().map(str::trim) == Some(Self::SHARED)
    }

    /// The address of the admin listener: [`AdminConfig::DEFAULT_LISTEN`] when `admin.listen`
    /// is not set, `None` when it is `shared`; a bare port (`9090`, `:9090`) becomes
    /// `127.0.0.1:9090`; anything else is used as written.
    ///
    /// ```
    /// use plugd_manifest::AdminConfig;
    ///
    /// let mut admin = AdminConfig::default();
    /// assert_eq!(admin.listen_addr().as_deref(), Some("127.0.0.1:8081"));
    /// admin.listen = Some("shared".into());
    /// assert_eq!(admin.listen_addr(), None);
    /// assert!(admin.is_shared());
    /// admin.listen = Some(":9090".into());
    /// assert_eq!(admin.listen_addr().as_deref(), Some("127.0.0.1:9090"));
    /// admin.listen = Some("9090".into());
    /// assert_eq!(admin.listen_addr().as_deref(), Some("127.0.0.1:9090"));
    /// admin.listen = Some("0.0.0.0:9090".into());
    /// assert_eq!(admin.listen_addr().as_deref(), Some("0.0.0.0:9090"));
    /// ```
    pub fn listen_addr(&self) -> Option<String> {
        if self.is_shared() {
            return None;
        }
        let listen = self
            .listen
            .as_deref()
            .unwrap_or(Self::DEFAULT_LISTEN)
            .trim();
        let port = listen.strip_prefix(':').unwrap_or(listen);
        Some(
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                format!("127.0.0.1:{port}")
            } else {
                listen.to_string()
            },
        )
    }

    /// Whether `endpoint` needs the admin token (`admin.protect`).
    pub fn protects(&self, endpoint: Protected) -> bool {
        self.protect.contains(&endpoint)
    }
}

/// `serialize_with` for a secret: `"[redacted]"` when set, `null` when not.
fn ser_redacted<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("[redacted]"),
        None => s.serialize_none(),
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("protect", &self.protect)
            .finish()
    }
}

/// `plugins`: which plugins run, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginsConfig {
    /// Whether the plugin system runs at all (default true).
    pub enabled: bool,
    /// The default folder of plugins (default `./plugins`, relative to the config file).
    pub directory: PathBuf,
    /// Load unlisted plugins found in `directory`, with no grants (default false).
    pub autoload: bool,
    /// What a plugin failure at start does to the host.
    pub on_failure: OnFailure,
    /// Watch plugin files and reload on change (default false).
    pub hot_reload: bool,
    /// Debounce of the file watcher (default 500ms).
    #[serde(serialize_with = "ser_duration")]
    pub reload_delay: Duration,
    /// How often plugins' health is checked (default 30s).
    #[serde(serialize_with = "ser_duration")]
    pub health_check_interval: Duration,
    /// How a reload gates requests.
    pub reload: ReloadSettings,
    /// Error threshold for every plugin (a plugin's own block overrides it).
    pub error_threshold: ErrorThreshold,
    /// Restarts of plugins that end in `error` (a plugin's own block overrides it).
    pub supervision: Supervision,
    /// Sandbox limits for every plugin (a plugin's own block overrides them).
    pub limits: Limits,
    /// The wasm instance pool.
    pub pool: PoolSettings,
    /// Refuse plugins without a signature from a trusted key. Read from the file, it defaults
    /// to true when `trusted_keys` is non-empty and false otherwise; only an explicit
    /// `require_signatures: false` lets unsigned plugins load beside trusted keys.
    pub require_signatures: bool,
    /// Public keys whose signatures are trusted (relative to the config file). With any, a
    /// signature is checked against these keys only, whether or not signatures are required.
    pub trusted_keys: Vec<PathBuf>,
    /// Plugins refused by name and version range.
    pub blocked: Vec<Blocked>,
    /// The plugins, with their grants and config.
    pub plugins: Vec<PluginEntry>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            enabled: true,
            directory: PathBuf::from("./plugins"),
            autoload: false,
            on_failure: OnFailure::default(),
            hot_reload: false,
            reload_delay: Duration::from_millis(500),
            health_check_interval: Duration::from_secs(30),
            reload: ReloadSettings::default(),
            error_threshold: ErrorThreshold::default(),
            supervision: Supervision::default(),
            limits: Limits::default(),
            pool: PoolSettings::default(),
            require_signatures: false,
            trusted_keys: Vec::new(),
            blocked: Vec::new(),
            plugins: Vec::new(),
        }
    }
}

impl PluginsConfig {
    /// The limits of a plugin: the global ones, overridden by its own block.
    pub fn limits_for(&self, entry: &PluginEntry) -> Limits {
        match &entry.limits {
            Some(o) => self.limits.with_override(o),
            None => self.limits.clone(),
        }
    }

    /// The error threshold of a plugin: the global one, overridden by its own block.
    pub fn error_threshold_for(&self, entry: &PluginEntry) -> ErrorThreshold {
        match &entry.error_threshold {
            Some(o) => self.error_threshold.with_override(o),
            None => self.error_threshold.clone(),
        }
    }

    /// The supervision of a plugin: the global one, overridden by its own block.
    pub fn supervision_for(&self, entry: &PluginEntry) -> Supervision {
        match &entry.supervision {
            Some(o) => self.supervision.with_override(o),
            None => self.supervision.clone(),
        }
    }

    /// The first `blocked` entry that refuses this plugin version.
    pub fn blocked(&self, name: &str, version: &semver::Version) -> Option<&Blocked> {
        self.blocked
            .iter()
            .find(|b| b.name == name && b.versions.as_ref().is_none_or(|r| r.matches(version)))
    }
}

/// `plugins.on_failure`: what a plugin that fails to load, initialize or start does to the host.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema, Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The plugin (and its dependents) go to `error`; the rest run.
    #[default]
    Continue,
    /// The host stops.
    Abort,
}

/// `plugins.reload`: how a reload gates the plugin's requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadSettings {
    /// How long a queued request waits (default 30s).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub queue_timeout: Duration,
    /// How many requests may wait (default 1000).
    pub max_queue_size: usize,
    /// Queue requests or answer 503.
    pub queue_strategy: QueueStrategy,
    /// How long the previous version is kept in memory after a reload, for a rollback
    /// (`plugd reload --rollback`, the admin API, or `rollback_on_crashes`) (default 30s).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub grace_period: Duration,
    /// Roll back on its own to the previous version when the new one crashes (traps: a panic,
    /// out of memory, a stack overflow, fuel) this many times within the grace period. Off by
    /// default. Only crashes count: errors a client can provoke (denials, `Failed` answers,
    /// timeouts, a full instance pool) never roll a fix back to the version it replaced.
    pub rollback_on_crashes: Option<u32>,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings {
            queue_timeout: Duration::from_secs(30),
            max_queue_size: 1000,
            queue_strategy: QueueStrategy::default(),
            grace_period: Duration::from_secs(30),
            rollback_on_crashes: None,
        }
    }
}

/// `plugins.reload.queue_strategy`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema, Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum QueueStrategy {
    /// Hold requests until the reload is done.
    #[default]
    Block,
    /// Answer 503 during the reload.
    Reject,
}

/// `plugins.error_threshold` (and a plugin's own block, see [`ErrorThresholdOverride`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorThreshold {
    /// Whether the threshold is watched (default false).
    pub enabled: bool,
    /// Errors in `time_window` that trip it (default 100).
    pub max_errors: u64,
    /// The window (default 5m).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub time_window: Duration,
    /// What happens when it trips.
    pub action: ThresholdAction,
    /// Reset the count on a success (default false).
    pub reset_on_success: bool,
}

impl Default for ErrorThreshold {
    fn default() -> Self {
        ErrorThreshold {
            enabled: false,
            max_errors: 100,
            time_window: Duration::from_secs(300),
            action: ThresholdAction::default(),
            reset_on_success: false,
        }
    }
}

impl ErrorThreshold {
    /// This threshold with the fields the override sets replaced.
    pub fn with_override(&self, o: &ErrorThresholdOverride) -> ErrorThreshold {
        ErrorThreshold {
            enabled: o.enabled.unwrap_or(self.enabled),
            max_errors: o.max_errors.unwrap_or(self.max_errors),
            time_window: o.time_window.unwrap_or(self.time_window),
            action: o.action.unwrap_or(self.action),
            reset_on_success: o.reset_on_success.unwrap_or(self.reset_on_success),
        }
    }
}

/// `error_threshold.action`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema, Serialize,
)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ThresholdAction {
    /// Log a warning.
    #[default]
    Log,
    /// Disable the plugin.
    Disable,
    /// Alert the monitoring system.
    Alert,
}

/// A plugin's own `error_threshold` block: each field set replaces the global one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorThresholdOverride {
    /// See [`ErrorThreshold::enabled`].
    pub enabled: Option<bool>,
    /// See [`ErrorThreshold::max_errors`].
    pub max_errors: Option<u64>,
    /// See [`ErrorThreshold::time_window`].
    #[serde(
        deserialize_with = "de_opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    #[schemars(with = "Option<DurationValue>")]
    pub time_window: Option<Duration>,
    /// See [`ErrorThreshold::action`].
    pub action: Option<ThresholdAction>,
    /// See [`ErrorThreshold::reset_on_success`].
    pub reset_on_success: Option<bool>,
}

/// `plugins.supervision` (and a plugin's own block, see [`SupervisionOverride`]): a plugin that
/// ends in `error` (failed to load, initialize or start) is restarted with exponential backoff:
/// the n-th attempt waits `backoff_initial × 2^(n-1)`, at most `backoff_max`; after
/// `max_restarts` failed attempts in a row the host gives up. A plugin that then runs for
/// `backoff_max` without failing starts again from a clean slate (count and backoff reset).
///
/// ```
/// use plugd_manifest::{Format, HostConfig};
/// use std::time::Duration;
///
/// let c = HostConfig::from_str("plugins:\n  supervision: { max_restarts: 3, backoff_initial: 100ms }\n", Format::Yaml, None).unwrap();
/// let s = &c.plugins.supervision;
/// assert!(s.enabled);
/// assert_eq!((s.max_restarts, s.backoff_initial, s.backoff_max), (3, Duration::from_millis(100), Duration::from_secs(60)));
/// assert_eq!(s.backoff(1), Duration::from_millis(100));
/// assert_eq!(s.backoff(3), Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Supervision {
    /// Whether failed plugins are restarted (default true).
    pub enabled: bool,
    /// Failed attempts in a row before the host gives up (default 5).
    pub max_restarts: u32,
    /// Wait before the first attempt (default 1s).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub backoff_initial: Duration,
    /// Longest wait between attempts (default 60s); also how long a restarted plugin must run
    /// before its count and backoff reset.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub backoff_max: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            enabled: true,
            max_restarts: 5,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl Supervision {
    /// This supervision with the fields the override sets replaced.
    pub fn with_override(&self, o: &SupervisionOverride) -> Supervision {
        Supervision {
            enabled: o.enabled.unwrap_or(self.enabled),
            max_restarts: o.max_restarts.unwrap_or(self.max_restarts),
            backoff_initial: o.backoff_initial.unwrap_or(self.backoff_initial),
            backoff_max: o.backoff_max.unwrap_or(self.backoff_max),
        }
    }

    /// The wait before attempt `n` (1-based): `backoff_initial × 2^(n-1)`, at most `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff_initial
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// A plugin's own `supervision` block: each field set replaces the global one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionOverride {
    /// See [`Supervision::enabled`].
    pub enabled: Option<bool>,
    /// See [`Supervision::max_restarts`].
    pub max_restarts: Option<u32>,
    /// See [`Supervision::backoff_initial`].
    #[serde(
        deserialize_with = "de_opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    #[schemars(with = "Option<DurationValue>")]
    pub backoff_initial: Option<Duration>,
    /// See [`Supervision::backoff_max`].
    #[serde(
        deserialize_with = "de_opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    #[schemars(with = "Option<DurationValue>")]
    pub backoff_max: Option<Duration>,
}

/// `plugins.limits`: the sandbox of a wasm plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Memory cap per instance, MiB (default 64).
    pub memory_mb: u64,
    /// Deadline of one call (default 5s).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    #[schemars(with = "DurationValue")]
    pub timeout: Duration,
    /// Deadlines per hook, replacing `timeout` for that hook.
    #[serde(
        deserialize_with = "de_hook_durations",
        serialize_with = "ser_hook_durations"
    )]
    #[schemars(with = "BTreeMap<HookType, DurationValue>")]
    pub hook_timeouts: BTreeMap<HookType, Duration>,
    /// Instances per plugin (default: the number of tokio workers).
    pub instances: Option<u32>,
    /// CPU cap, percent (1–100).
    pub max_cpu_percent: Option<u8>,
    /// Fuel per call, when metering by fuel: a deterministic budget of wasm instructions (about
    /// one unit each). Setting it for any plugin turns fuel metering on for the whole runtime.
    pub fuel: Option<u64>,
    /// Largest response body a plugin may produce (a route's answer, an early answer of a hook or
    /// middleware, a replaced body), default 8 MiB; written as an integer or `"8MiB"`.
    #[serde(deserialize_with = "de_byte_size")]
    #[schemars(with = "ByteSize")]
    pub max_response_bytes: u64,
    /// Bytes of key/value storage the plugin may hold (keys and values), default 256 MiB.
    #[serde(deserialize_with = "de_byte_size")]
    #[schemars(with = "ByteSize")]
    pub storage_bytes: u64,
    /// Keys of key/value storage the plugin may hold, default 100,000.
    pub storage_keys: u64,
    /// Bytes under the plugin's `/data` directory (`filesystem`), default 256 MiB.
    #[serde(deserialize_with = "de_byte_size")]
    #[schemars(with = "ByteSize")]
    pub disk_bytes: u64,
    /// Files and directories under the plugin's `/data` directory, default 10,000.
    pub disk_files: u64,
    /// Files and directories one instance may hold open at once, default 256.
    pub open_files: u32,
    /// Bytes of events waiting in each of the plugin's subscription queues, default 16 MiB
    /// (the queue also holds at most 1,024 events).
    #[serde(deserialize_with = "de_byte_size")]
    #[schemars(with = "ByteSize")]
    pub event_queue_bytes: u64,
    /// Log lines per second the plugin may write (its `log` calls and its stdout/stderr lines),
    /// default 100; lines over the rate are dropped and counted.
    pub log_lines_per_second: u32,
    /// Log bytes per second, default 64 KiB.
    #[serde(deserialize_with = "de_byte_size")]
    #[schemars(with = "ByteSize")]
    pub log_bytes_per_second: u64,
    /// Seconds of the log rates a quiet plugin may save up and spend at once, default 5.
    pub log_burst_seconds: u32,
    /// Audit entries of this plugin the audit log keeps (its share of the log), default 1,000.
    pub audit_entries: u32,
    /// Bytes of values the plugin may keep in the cache (`cache`), default 64 MiB.
    #[serde(deserialize_with = "de_byte_size")]
    #[schemars(with = "ByteSize")]
    pub cache_bytes: u64,
    /// Entries the plugin may keep in the cache, default 100,000.
    pub cache_entries: u64,
}

/// Default of [`Limits::max_response_bytes`].
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            timeout: Duration::from_secs(5),
            hook_timeouts: BTreeMap::new(),
            instances: None,
            max_cpu_percent: None,
            fuel: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            storage_bytes: 256 * 1024 * 1024,
            storage_keys: 100_000,
            disk_bytes: 256 * 1024 * 1024,
            disk_files: 10_000,
            open_files: 256,
            event_queue_bytes: 16 * 1024 * 1024,
            log_lines_per_second: 100,
            log_bytes_per_second: 64 * 1024,
            log_burst_seconds: 5,
            audit_entries: 1_000,
            cache_bytes: 64 * 1024 * 1024,
            cache_entries: 100_000,
        }
    }
}

impl Limits {
    /// The deadline of a hook: its own, else `timeout`.
    pub fn hook_timeout(&self, hook: HookType) -> Duration {
        self.hook_timeouts
            .get(&hook)
            .copied()
            .unwrap_or(self.timeout)
    }

    /// These limits with the fields the override sets replaced (per-hook timeouts merge).
    pub fn with_override(&self, o: &LimitsOverride) -> Limits {
        let mut hook_timeouts = self.hook_timeouts.clone();
        hook_timeouts.extend(o.hook_timeouts.iter().map(|(k, v)| (*k, *v)));
        Limits {
            memory_mb: o.memory_mb.unwrap_or(self.memory_mb),
            timeout: o.timeout.unwrap_or(self.timeout),
            hook_timeouts,
            instances: o.instances.or(self.instances),
            max_cpu_percent: o.max_cpu_percent.or(self.max_cpu_percent),
            fuel: o.fuel.or(self.fuel),
            max_response_bytes: o.max_response_bytes.unwrap_or(self.max_response_bytes),
            storage_bytes: o.storage_bytes.unwrap_or(self.storage_bytes),
            storage_keys: o.storage_keys.unwrap_or(self.storage_keys),
            disk_bytes: o.disk_bytes.unwrap_or(self.disk_bytes),
            disk_files: o.disk_files.unwrap_or(self.disk_files),
            open_files: o.open_files.unwrap_or(self.open_files),
            event_queue_bytes: o.event_queue_bytes.unwrap_or(self.event_queue_bytes),
            log_lines_per_second: o.log_lines_per_second.unwrap_or(self.log_lines_per_second),
            log_bytes_per_second: o.log_bytes_per_second.unwrap_or(self.log_bytes_per_second),
            log_burst_seconds: o.log_burst_seconds.unwrap_or(self.log_burst_seconds),
            audit_entries: o.audit_entries.unwrap_or(self.audit_entries),
            cache_bytes: o.cache_bytes.unwrap_or(self.cache_bytes),
            cache_entries: o.cache_entries.unwrap_or(self.cache_entries),
        }
    }
}

/// A plugin's own `limits` block: each field set replaces the global one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsOverride {
    /// See [`Limits::memory_mb`].
    pub memory_mb: Option<u64>,
    /// See [`Limits::timeout`].
    #[serde(
        deserialize_with = "de_opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    #[schemars(with = "Option<DurationValue>")]
    pub timeout: Option<Duration>,
    /// Merged into [`Limits::hook_timeouts`].
    #[serde(
        deserialize_with = "de_hook_durations",
        serialize_with = "ser_hook_durations"
    )]
    #[schemars(with = "BTreeMap<HookType, DurationValue>")]
    pub hook_timeouts: BTreeMap<HookType, Duration>,
    /// See [`Limits::instances`].
    pub instances: Option<u32>,
    /// See [`Limits::max_cpu_percent`].
    pub max_cpu_percent: Option<u8>,
    /// See [`Limits::fuel`].
    pub fuel: Option<u64>,
    /// See [`Limits::max_response_bytes`].
    #[serde(deserialize_with = "de_opt_byte_size")]
    #[schemars(with = "Option<ByteSize>")]
    pub max_response_bytes: Option<u64>,
    /// See [`Limits::storage_bytes`].
    #[serde(deserialize_with = "de_opt_byte_size")]
    #[schemars(with = "Option<ByteSize>")]
    pub storage_bytes: Option<u64>,
    /// See [`Limits::storage_keys`].
    pub storage_keys: Option<u64>,
    /// See [`Limits::disk_bytes`].
    #[serde(deserialize_with = "de_opt_byte_size")]
    #[schemars(with = "Option<ByteSize>")]
    pub disk_bytes: Option<u64>,
    /// See [`Limits::disk_files`].
    pub disk_files: Option<u64>,
    /// See [`Limits::open_files`].
    pub open_files: Option<u32>,
    /// See [`Limits::event_queue_bytes`].
    #[serde(deserialize_with = "de_opt_byte_size")]
    #[schemars(with = "Option<ByteSize>")]
    pub event_queue_bytes: Option<u64>,
    /// See [`Limits::log_lines_per_second`].
    pub log_lines_per_second: Option<u32>,
    /// See [`Limits::log_bytes_per_second`].
    #[serde(deserialize_with = "de_opt_byte_size")]
    #[schemars(with = "Option<ByteSize>")]
    pub log_bytes_per_second: Option<u64>,
    /// See [`Limits::log_burst_seconds`].
    pub log_burst_seconds: Option<u32>,
    /// See [`Limits::audit_entries`].
    pub audit_entries: Option<u32>,
    /// See [`Limits::cache_bytes`].
    #[serde(deserialize_with = "de_opt_byte_size")]
    #[schemars(with = "Option<ByteSize>")]
    pub cache_bytes: Option<u64>,
    /// See [`Limits::cache_entries`].
    pub cache_entries: Option<u64>,
}

/// `plugins.pool`: wasmtime's pooling allocator, from which wasm instances are allocated.
///
/// Each slot holds one instance (one linear memory of up to `memory_per_slot_mb`, its tables and
/// its fiber stack) and reserves address space, not RAM: about `memory_per_slot_mb` + 4 MiB of
/// guards per slot. The defaults (256 × 64 MiB) reserve ~17 GiB of address space and can never
/// commit more than 16 GiB of linear memory. A plugin whose `limits.memory_mb` exceeds the slot,
/// or whose component does not fit a slot, runs on the on-demand allocator instead. `slots: 0`
/// turns the pooling allocator off.
///
/// A slot handed back keeps the first `keep_resident_kb` of its linear memory mapped (its tables
/// up to 64 KiB), reset in place, so that the next instance there takes no page faults: a fresh
/// instance per request (a proxy component) then costs a fraction of one that faults its pages
/// in. The price is the pages a freed slot's last instance touched, up to that much, staying
/// resident until the slot is reused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// Instance slots: live wasm instances across every pooled plugin (default 256; 0: no pool).
    pub slots: u32,
    /// Linear memory per slot, MiB (default 64, at most 4096).
    pub memory_per_slot_mb: u64,
    /// Linear memory a freed slot keeps mapped for its next instance, KiB (default 1024; 0:
    /// decommit it all; at most the slot's memory).
    pub keep_resident_kb: u64,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            slots: 256,
            memory_per_slot_mb: 64,
            keep_resident_kb: 1024,
        }
    }
}

/// An entry of `plugins.blocked`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Blocked {
    /// The plugin name.
    pub name: String,
    /// The versions refused; all when absent.
    #[serde(default, deserialize_with = "de_opt_req")]
    #[schemars(with = "Option<String>")]
    pub versions: Option<semver::VersionReq>,
    /// Why, for the log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A plugin's entry in `plugins.plugins`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginEntry {
    /// The plugin name; must equal its manifest's.
    pub name: String,
    /// Whether it is loaded (default true).
    pub enabled: bool,
    /// The plugin directory (or manifest file): `path` resolved against the config file's
    /// folder, or `<plugins.directory>/<name>` when not given.
    pub path: PathBuf,
    /// Overrides the manifest's priority.
    pub priority: Option<i32>,
    /// Plugins it must come before.
    pub before: Vec<String>,
    /// Plugins it must come after.
    pub after: Vec<String>,
    /// Its config, validated later against the manifest's schema.
    pub config: Map<String, Value>,
    /// The grants, as written (`false` included).
    pub permissions: BTreeMap<Permission, bool>,
    /// What happens to requests when the plugin is in `error`.
    pub failure_policy: FailurePolicy,
    /// Its own limits.
    pub limits: Option<LimitsOverride>,
    /// Its own error threshold.
    pub error_threshold: Option<ErrorThresholdOverride>,
    /// Its own supervision.
    pub supervision: Option<SupervisionOverride>,
    /// Outbound HTTP allowlist (with the `network` permission).
    pub network: NetworkGrant,
    /// Commands it may run and the limits of their processes (with the `exec` permission).
    pub exec: ExecGrant,
    /// Which requests its hooks and middleware see (with the `intercept` permission).
    pub intercept: InterceptGrant,
    /// Request headers it never sees, lower-case (`cookie`, `authorization`): removed from
    /// every request before its hooks, middleware and routes run, and put back after.
    pub hide_headers: Vec<String>,
    /// Where its routes are served: `None` for `/plugins/<name>` (see [`PluginEntry::mount`]),
    /// `/` for top level, or a prefix such as `/api/v1/reports`.
    pub mount: Option<String>,
    /// The least level of its own log lines kept (`None`: every level; the host's log filter
    /// still applies). The admin API can change it while it runs.
    pub log_level: Option<crate::LogLevel>,
}

/// Paths the host keeps for itself: no plugin is mounted at or under them, and no plugin
/// mounted at `/` may route them.
pub const RESERVED_PATHS: [&str; 4] = ["/admin", "/healthz", "/readyz", "/metrics"];

/// Why `mount` cannot be a plugin's mount prefix, if it cannot: it starts with `/`, has no
/// trailing `/` (except `/` itself), no empty, `.` or `..` segment, only unreserved characters,
/// and is not at or under one of [`RESERVED_PATHS`].
///
/// ```
/// use plugd_manifest::mount_problem;
///
/// assert_eq!(mount_problem("/api/v1/reports"), None);
/// assert_eq!(mount_problem("/"), None);
/// assert!(mount_problem("/api/").is_some());
/// assert!(mount_problem("/admin/x").unwrap().contains("/admin"));
/// assert!(mount_problem("/a/{id}").is_some());
/// ```
pub fn mount_problem(mount: &str) -> Option<String> {
    if mount == "/" {
        return None;
    }
    let Some(rest) = mount.strip_prefix('/') else {
        return Some(format!("'{mount}' does not start with '/'"));
    };
    if rest.ends_with('/') {
        return Some(format!("'{mount}' ends with '/' (write it without)"));
    }
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Some(format!("'{mount}' holds an empty, '.' or '..' segment"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-._~".contains(*c)))
        {
            return Some(format!(
                "'{mount}' holds '{c}': a mount is letters, digits, '-', '.', '_' and '~' between slashes"
            ));
        }
    }
    RESERVED_PATHS
        .iter()
        .find(|r| mount == **r || mount.strip_prefix(**r).is_some_and(|t| t.starts_with('/')))
        .map(|r| format!("'{mount}' is at or under {r}, which the host serves itself"))
}

impl PluginEntry {
    /// Where its routes are served: the `mount` it was given, or `/plugins/<name>`.
    ///
    /// ```
    /// let mut entry = plugd_manifest::PluginEntry::new("reports", "plugins/reports");
    /// assert_eq!(entry.mount(), "/plugins/reports");
    /// entry.mount = Some("/api/v1/reports".into());
    /// assert_eq!(entry.mount(), "/api/v1/reports");
    /// ```
    pub fn mount(&self) -> String {
        match &self.mount {
            Some(m) => m.clone(),
            None => format!("/plugins/{}", self.name),
        }
    }

    /// An enabled entry with no grants, config or overrides.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        PluginEntry {
            name: name.into(),
            enabled: true,
            path: path.into(),
            priority: None,
            before: Vec::new(),
            after: Vec::new(),
            config: Map::new(),
            permissions: BTreeMap::new(),
            failure_policy: FailurePolicy::default(),
            limits: None,
            error_threshold: None,
            supervision: None,
            network: NetworkGrant::default(),
            exec: ExecGrant::default(),
            intercept: InterceptGrant::default(),
            hide_headers: Vec::new(),
            mount: None,
            log_level: None,
        }
    }

    /// The permissions granted (set to `true`).
    pub fn granted(&self) -> BTreeSet<Permission> {
        self.permissions
            .iter()
            .filter(|(_, on)| **on)
            .map(|(p, _)| *p)
            .collect()
    }
}

/// `intercept` of a plugin: which requests its hooks and middleware see once it is granted the
/// `intercept` permission (plugd's own). Without the grant they see only its own routes
/// (`/plugins/<name>/…`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterceptGrant {
    /// Globs over the request path (`/api/**`; `*` matches any run of characters, `/`
    /// included). Empty: every path plugins are reached on.
    pub paths: Vec<String>,
    /// Its hooks and middleware see the body of requests to routes that are not its own (an
    /// embedding application's, another plugin's): the host buffers the body (up to
    /// `server.body_limit`) for a request such a plugin sees. Without it they see an empty body,
    /// and a request to an application's route streams through untouched.
    pub request_body: bool,
    /// Its response hooks and middleware see the body an embedding application's handler
    /// answered (buffered up to `server.body_limit`; a longer one streams through and they see
    /// an empty body). Without it they see the status and headers only; a body it sets
    /// replaces the application's.
    pub response_body: bool,
}

/// `network` of a plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkGrant {
    /// Hosts it may call.
    pub allow: Vec<String>,
}

/// A grant the manifest does not declare. Displays the contract's message (docs/design.md#errors):
/// `permission mismatch: plugin requests 'database' permission but manifest does not declare it`,
/// followed by the plugin's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "permission mismatch: plugin requests '{permission}' permission but manifest does not declare it (plugin '{plugin}')"
)]
pub struct PermissionError {
    /// The plugin.
    pub plugin: String,
    /// The permission granted but not declared.
    pub permission: Permission,
}

/// The effective permissions of a plugin: declared by its manifest ∩ granted by its entry.
/// A grant (`true`) the manifest does not declare is an error.
///
/// ```
/// use plugd_manifest::{effective_permissions, Format, Manifest, Permission, PluginEntry};
///
/// let m = Manifest::from_str(
///     r#"{"name":"a","version":"1.0.0","description":"d","author":"x",
///         "permissions":{"router":true,"cache":true}}"#,
///     Format::Json,
///     None,
/// )
/// .unwrap();
/// let mut entry = PluginEntry::new("a", "plugins/a");
/// entry.permissions.insert(Permission::Router, true);
/// assert_eq!(effective_permissions(&m, &entry).unwrap(), [Permission::Router].into());
///
/// entry.permissions.insert(Permission::Database, true);
/// assert!(effective_permissions(&m, &entry).unwrap_err().to_string().starts_with(
///     "permission mismatch: plugin requests 'database' permission but manifest does not declare it"
/// ));
/// ```
pub fn effective_permissions(
    manifest: &Manifest,
    entry: &PluginEntry,
) -> Result<BTreeSet<Permission>, PermissionError> {
    let granted = entry.granted();
    if let Some(p) = granted.iter().find(|p| !manifest.permissions.contains(p)) {
        return Err(PermissionError {
            plugin: entry.name.clone(),
            permission: *p,
        });
    }
    Ok(granted)
}

impl HostConfig {
    /// Read the config file (format by extension), with the process's environment: `${VAR}`
    /// expanded and `PLUGD_*` overrides applied ([`HostConfig::from_str_with_env`]).
    pub fn from_path(path: &Path) -> Result<HostConfig, HostConfigError> {
        HostConfig::from_path_with_env(path, &Environment::process())
    }

    /// [`HostConfig::from_path`] with the given environment.
    pub fn from_path_with_env(
        path: &Path,
        env: &Environment,
    ) -> Result<HostConfig, HostConfigError> {
        if !path.exists() {
            return Err(HostConfigErrorKind::NotFound(path.to_path_buf()).into());
        }
        let with_file = |kind| HostConfigError {
            file: Some(path.to_path_buf()),
            kind,
        };
        let format = Format::from_path(path)
            .ok_or_else(|| with_file(HostConfigErrorKind::UnsupportedFormat))?;
        let text =
            std::fs::read_to_string(path).map_err(|e| with_file(HostConfigErrorKind::Io(e)))?;
        HostConfig::from_str_with_env(&text, format, Some(path), env)
    }

    /// Parse a config, with the process's environment ([`HostConfig::from_str_with_env`]).
    /// `origin` (the file it came from) is the base of relative paths and is named in errors.
    pub fn from_str(
        text: &str,
        format: Format,
        origin: Option<&Path>,
    ) -> Result<HostConfig, HostConfigError> {
        HostConfig::from_str_with_env(text, format, origin, &Environment::process())
    }

    /// Parse a config with `env` applied before it is checked: `${VAR}` in every string is
    /// replaced (`$${` is a literal `${`; a plugin's `config:` block is expanded when the plugin
    /// loads), then each `PLUGD_<KEY>__<KEY>…` variable overrides its key (README, "Config from
    /// the environment"). Errors name the key and the variable.
    ///
    /// ```
    /// use plugd_manifest::{Environment, Format, HostConfig};
    ///
    /// let env = Environment::from_iter([("PLUGD_PLUGINS__HOT_RELOAD", "true")]);
    /// let config = HostConfig::from_str_with_env("", Format::Yaml, None, &env).unwrap();
    /// assert!(config.plugins.hot_reload);
    /// let env = Environment::from_iter([("PLUGD_SERVER__LISTN", "0.0.0.0:80")]);
    /// let e = HostConfig::from_str_with_env("", Format::Yaml, None, &env).unwrap_err();
    /// assert_eq!(
    ///     e.to_string(),
    ///     "environment variable PLUGD_SERVER__LISTN: unknown key 'listn' in server; did you mean 'listen'?"
    /// );
    /// ```
    pub fn from_str_with_env(
        text: &str,
        format: Format,
        origin: Option<&Path>,
        env: &Environment,
    ) -> Result<HostConfig, HostConfigError> {
        let with_file = |kind| HostConfigError {
            file: origin.map(Path::to_path_buf),
            kind,
        };
        let (raw, applied) = decode_with_env(text, format, env).map_err(with_file)?;
        let base = origin
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty());
        let mut config = raw
            .resolve(base)
            .map_err(|e| with_file(name_variable(e, &applied)))?;
        config.source = origin.map(Path::to_path_buf);
        Ok(config)
    }

    /// The entry of a plugin, by name.
    pub fn plugin(&self, name: &str) -> Option<&PluginEntry> {
        self.plugins.plugins.iter().find(|p| p.name == name)
    }
}

/// A host config that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub struct HostConfigError {
    /// The config file, when there is one.
    pub file: Option<PathBuf>,
    /// What is wrong.
    #[source]
    pub kind: HostConfigErrorKind,
}

impl fmt::Display for HostConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}", file.display(), self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl From<HostConfigErrorKind> for HostConfigError {
    fn from(kind: HostConfigErrorKind) -> Self {
        HostConfigError { file: None, kind }
    }
}

/// What is wrong with a host config.
#[derive(Debug, thiserror::Error)]
pub enum HostConfigErrorKind {
    /// A syntax or type error, or a bad value (duration, size, priority, permission, …).
    #[error("failed to parse config: {message}{}", at_position(*.line, *.column))]
    Parse {
        /// What the parser said (prefixed with the dotted path of the value, when known).
        message: String,
        /// 1-based line, when the format gives it.
        line: Option<u32>,
        /// 1-based column, when the format gives it.
        column: Option<u32>,
    },
    /// A key the config does not have.
    #[error(
        "unknown key '{key}' in {}{}{}",
        if path.is_empty() { "the config" } else { path },
        at_position(*.line, *.column),
        suggestion.as_ref().map(|s| format!("; did you mean '{s}'?")).unwrap_or_default()
    )]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The dotted path of the map holding it (`plugins.plugins[0]`; empty at the top).
        path: String,
        /// The closest known key, if close.
        suggestion: Option<String>,
        /// 1-based line, when the format gives it.
        line: Option<u32>,
        /// 1-based column, when the format gives it.
        column: Option<u32>,
    },
    /// A required key is missing (a plugin entry's `name`).
    #[error("missing required field: {0}")]
    MissingField(String),
    /// A value that parses but is not valid: the dotted path and why.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The dotted path (`plugins.plugins[0].name`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// `${VAR}` names a variable that is not set.
    #[error(
        "{field} refers to environment variable '{var}', which is not set (write $${{ for a literal ${{)"
    )]
    UnsetEnv {
        /// The dotted path of the value (`admin.token`).
        field: String,
        /// The variable.
        var: String,
    },
    /// A `PLUGD_*` variable that names no key, or cannot be applied.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// Two entries of `plugins.plugins` have the same name.
    #[error("plugin '{0}' is listed twice in plugins.plugins")]
    DuplicatePlugin(String),
    /// The config file does not exist.
    #[error("config file not found: {}", .0.display())]
    NotFound(PathBuf),
    /// The file's extension is not `.yaml`, `.yml`, `.json` or `.toml`.
    #[error("unsupported config format: expected a .yaml, .yml, .json or .toml file")]
    UnsupportedFormat,
    /// The file could not be read.
    #[error("cannot read config: {0}")]
    Io(#[source] std::io::Error),
}

impl From<DecodeError> for HostConfigErrorKind {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Syntax {
                message,
                line,
                column,
            } => HostConfigErrorKind::Parse {
                message,
                line,
                column,
            },
            DecodeError::UnknownKey {
                key,
                path,
                suggestion,
                line,
                column,
            } => HostConfigErrorKind::UnknownKey {
                key,
                path,
                suggestion,
                line,
                column,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The config as written, before paths are resolved and plugin entries checked.

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(
    title = "plugd host config",
    description = "The host's configuration (plugd.yaml, plugd.json or plugd.toml). Every key has a default: an empty file is a valid config."
)]
struct RawHostConfig {
    /// The HTTP listener.
    server: ServerConfig,
    /// The admin API and dashboard.
    admin: AdminConfig,
    /// Where the host keeps its state (default `./data`, relative to the config file).
    data_dir: Option<PathBuf>,
    /// The plugins.
    plugins: RawPlugins,
    /// The status tables in `host.db`.
    status: StatusSettings,
    /// The engine of each capability's state (default: SQLite, memory, in-process).
    backends: BackendsConfig,
    /// This instance as a member of a fleet (needs `backends.nats`).
    fleet: FleetSettings,
}

/// `plugins`: which plugins run, and how.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Plugins")]
struct RawPlugins {
    /// Whether the plugin system runs at all (default true).
    enabled: Option<bool>,
    /// The default folder of plugins (default `./plugins`, relative to the config file); a
    /// listed plugin without `path` is `<directory>/<name>`.
    directory: Option<PathBuf>,
    /// Load unlisted plugins found in `directory`, with no grants (default false).
    autoload: Option<bool>,
    /// What a plugin that fails to load, initialize or start does to the host (default
    /// `continue`).
    on_failure: Option<OnFailure>,
    /// Watch plugin files and reload a plugin when they change (default false).
    hot_reload: Option<bool>,
    /// Debounce of the file watcher (default 500ms).
    #[serde(deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<DurationValue>")]
    reload_delay: Option<Duration>,
    /// How often plugins' health is checked (default 30s).
    #[serde(deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<DurationValue>")]
    health_check_interval: Option<Duration>,
    /// How a reload gates the plugin's requests.
    reload: Option<ReloadSettings>,
    /// Error threshold for every plugin (a plugin's own block overrides it).
    error_threshold: Option<ErrorThreshold>,
    /// Restarts of plugins that end in `error` (a plugin's own block overrides it).
    supervision: Option<Supervision>,
    /// Sandbox limits for every wasm plugin (a plugin's own block overrides them).
    limits: Option<Limits>,
    /// The wasm instance pool.
    pool: Option<PoolSettings>,
    /// Refuse plugins without a signature from a trusted key (default: true when `trusted_keys`
    /// lists any key, else false). `false` with trusted keys lets unsigned plugins load, but a
    /// signature is still checked against the trusted keys.
    require_signatures: Option<bool>,
    /// Public keys whose signatures are trusted (relative to the config file). Listing any
    /// requires signatures unless `require_signatures: false` is written.
    trusted_keys: Vec<PathBuf>,
    /// Plugins refused by name and version range.
    blocked: Vec<Blocked>,
    /// The plugins, with their grants and config.
    plugins: Vec<RawPluginEntry>,
}

/// A plugin's entry in `plugins.plugins`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "PluginEntry")]
struct RawPluginEntry {
    /// The plugin name; must equal its manifest's.
    name: Option<String>,
    /// Whether it is loaded (default true).
    enabled: Option<bool>,
    /// The plugin directory (or manifest file), relative to the config file; default
    /// `<plugins.directory>/<name>`.
    path: Option<PathBuf>,
    /// Overrides the manifest's priority: an integer (higher runs first) or a class
    /// (`infrastructure`, `security`, `middleware`, `business`).
    priority: Option<Priority>,
    /// Plugins it must come before.
    before: Vec<String>,
    /// Plugins it must come after.
    after: Vec<String>,
    /// Its config, validated at load against the manifest's config schema.
    config: Option<Map<String, Value>>,
    /// The permissions granted: a map `name: bool`, or a list of names. The plugin gets what
    /// its manifest declares and this grants.
    #[serde(deserialize_with = "de_grants")]
    #[schemars(with = "crate::manifest::RawPermissions")]
    permissions: BTreeMap<Permission, bool>,
    /// What happens to requests when the plugin is in `error` (default `fail_open`).
    failure_policy: FailurePolicy,
    /// Its own limits, replacing the global ones field by field.
    limits: Option<LimitsOverride>,
    /// Its own error threshold, replacing the global one field by field.
    error_threshold: Option<ErrorThresholdOverride>,
    /// Its own supervision, replacing the global one field by field.
    supervision: Option<SupervisionOverride>,
    /// Outbound HTTP allowlist (with the `network` permission).
    network: NetworkGrant,
    /// Commands it may run and the limits of their processes (with the `exec` permission).
    exec: ExecGrant,
    /// Which requests its hooks and middleware see (with the `intercept` permission; default
    /// every path).
    intercept: InterceptGrant,
    /// Request headers it never sees (`cookie`, `authorization`).
    hide_headers: Vec<String>,
    /// Where its routes are served: `/plugins/<name>` when not given, `/` for top level, or a
    /// prefix such as `/api/v1/reports`.
    mount: Option<String>,
    /// The least level of its own log lines kept: trace, debug, info, warn or error (default:
    /// every level; the host's log filter still applies).
    log_level: Option<crate::LogLevel>,
}

/// Decode the config with the environment applied to its value tree. A config the environment
/// leaves unchanged is decoded from its text, so that errors keep their line and column.
fn decode_with_env(
    text: &str,
    format: Format,
    env: &Environment,
) -> Result<(RawHostConfig, Applied), HostConfigErrorKind> {
    let Some(mut tree) = parse_tree(text, format) else {
        // A syntax error: the decoder reports it with its position.
        decode::<RawHostConfig>(text, format)?;
        return Err(HostConfigErrorKind::Parse {
            message: "the config cannot be read as a tree of values to apply the environment to"
                .into(),
            line: None,
            column: None,
        });
    };
    let applied =
        environment::apply(&mut tree, env, &host_config_json_schema()).map_err(|e| match e {
            EnvError::Unset { field, var } => HostConfigErrorKind::UnsetEnv { field, var },
            EnvError::Override { var, reason } => HostConfigErrorKind::Env { var, reason },
        })?;
    let raw = if applied.changed {
        decode_value(tree).map_err(|e| name_variable(e.into(), &applied))?
    } else {
        decode(text, format)?
    };
    Ok((raw, applied))
}

/// An error about a key an environment variable set, naming the variable.
fn name_variable(kind: HostConfigErrorKind, applied: &Applied) -> HostConfigErrorKind {
    match kind {
        HostConfigErrorKind::Parse {
            message,
            line,
            column,
        } => match applied.variable_for(&message) {
            Some(var) => HostConfigErrorKind::Parse {
                message: format!("{message} (set by environment variable {var})"),
                line,
                column,
            },
            None => HostConfigErrorKind::Parse {
                message,
                line,
                column,
            },
        },
        HostConfigErrorKind::Invalid { field, reason } => {
            match applied.variable_for(&format!("{field}:")) {
                Some(var) => HostConfigErrorKind::Invalid {
                    field,
                    reason: format!("{reason} (set by environment variable {var})"),
                },
                None => HostConfigErrorKind::Invalid { field, reason },
            }
        }
        other => other,
    }
}

/// `base.join(path)` when `path` is relative and there is a base; `.` components dropped.
fn resolve_path(base: Option<&Path>, path: &Path) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path).components().collect(),
        _ => path.to_path_buf(),
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> HostConfigErrorKind {
    HostConfigErrorKind::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_limits(
    field: &str,
    instances: Option<u32>,
    cpu: Option<u8>,
) -> Result<(), HostConfigErrorKind> {
    if instances == Some(0) {
        return Err(invalid(format!("{field}.instances"), "must be at least 1"));
    }
    if let Some(c) = cpu
        && !(1..=100).contains(&c)
    {
        return Err(invalid(
            format!("{field}.max_cpu_percent"),
            format!("{c} is not a percentage between 1 and 100"),
        ));
    }
    Ok(())
}

fn check_threshold(field: &str, t: &ErrorThresholdOverride) -> Result<(), HostConfigErrorKind> {
    if t.max_errors == Some(0) {
        return Err(invalid(format!("{field}.max_errors"), "must be at least 1"));
    }
    if t.time_window == Some(Duration::ZERO) {
        return Err(invalid(
            format!("{field}.time_window"),
            "must be longer than 0",
        ));
    }
    Ok(())
}

fn check_supervision(field: &str, s: &Supervision) -> Result<(), HostConfigErrorKind> {
    if s.backoff_initial.is_zero() {
        return Err(invalid(
            format!("{field}.backoff_initial"),
            "must be longer than 0",
        ));
    }
    if s.backoff_max < s.backoff_initial {
        return Err(invalid(
            format!("{field}.backoff_max"),
            format!(
                "{} is shorter than backoff_initial ({})",
                humantime::format_duration(s.backoff_max),
                humantime::format_duration(s.backoff_initial)
            ),
        ));
    }
    Ok(())
}

/// `intercept.paths` are path globs, and only mean something with the `intercept` grant.
fn check_intercept(
    field: &str,
    granted: &BTreeMap<Permission, bool>,
    intercept: &InterceptGrant,
) -> Result<(), HostConfigErrorKind> {
    for (i, glob) in intercept.paths.iter().enumerate() {
        if !glob.starts_with('/') || glob.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                format!("{field}.intercept.paths[{i}]"),
                format!(
                    "'{glob}' is not a path glob: it must start with '/' and hold no spaces (e.g. \"/api/**\")"
                ),
            ));
        }
    }
    if !intercept.paths.is_empty() && granted.get(&Permission::Intercept) != Some(&true) {
        return Err(invalid(
            format!("{field}.intercept.paths"),
            format!(
                "paths only apply with the intercept permission; grant it with {field}.permissions.intercept: true, or remove the paths"
            ),
        ));
    }
    Ok(())
}

/// `hide_headers` are header names; kept lower-case.
fn check_hidden_headers(field: &str, names: &[String]) -> Result<Vec<String>, HostConfigErrorKind> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            http_header_name(name).ok_or_else(|| {
                invalid(
                    format!("{field}.hide_headers[{i}]"),
                    format!("'{name}' is not a header name"),
                )
            })
        })
        .collect()
}

/// A valid HTTP header name (RFC 9110 token), lower-cased.
fn http_header_name(name: &str) -> Option<String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    (!name.is_empty() && name.chars().all(token)).then(|| name.to_ascii_lowercase())
}

fn check_names(field: &str, names: &[String]) -> Result<(), HostConfigErrorKind> {
    for (i, name) in names.iter().enumerate() {
        if !is_valid_plugin_name(name) {
            return Err(invalid(
                format!("{field}[{i}]"),
                format!("'{name}' is not a valid plugin name"),
            ));
        }
    }
    Ok(())
}

/// `server`'s timeouts and caps: a zero would refuse every request.
fn check_server(server: &ServerConfig) -> Result<(), HostConfigErrorKind> {
    for (field, value) in [
        ("server.header_read_timeout", server.header_read_timeout),
        ("server.idle_timeout", server.idle_timeout),
        ("server.body_read_timeout", server.body_read_timeout),
    ] {
        if value.is_zero() {
            return Err(invalid(field, "must be longer than 0"));
        }
    }
    for (field, value) in [
        ("server.max_connections", server.max_connections as u64),
        ("server.max_headers", server.max_headers as u64),
        ("server.max_header_bytes", server.max_header_bytes),
    ] {
        if value == 0 {
            return Err(invalid(field, "must be at least 1"));
        }
    }
    Ok(())
}

impl RawHostConfig {
    fn resolve(self, base: Option<&Path>) -> Result<HostConfig, HostConfigErrorKind> {
        let defaults = PluginsConfig::default();
        let raw = self.plugins;
        let directory = resolve_path(
            base,
            raw.directory.as_deref().unwrap_or(&defaults.directory),
        );
        let limits = raw.limits.unwrap_or_default();
        check_limits("plugins.limits", limits.instances, limits.max_cpu_percent)?;
        let error_threshold = raw.error_threshold.unwrap_or_default();
        check_threshold(
            "plugins.error_threshold",
            &ErrorThresholdOverride {
                max_errors: Some(error_threshold.max_errors),
                time_window: Some(error_threshold.time_window),
                ..ErrorThresholdOverride::default()
            },
        )?;
        let supervision = raw.supervision.unwrap_or_default();
        check_supervision("plugins.supervision", &supervision)?;
        check_server(&self.server)?;
        if self.status.interval.is_zero() {
            return Err(invalid("status.interval", "must be longer than 0"));
        }
        crate::backends::check(&self.backends, &self.fleet)
            .map_err(|(field, reason)| invalid(field, reason))?;
        let pool = raw.pool.unwrap_or_default();
        if !(1..=4096).contains(&pool.memory_per_slot_mb) {
            return Err(invalid(
                "plugins.pool.memory_per_slot_mb",
                format!(
                    "{} is not between 1 and 4096 (MiB; a 32-bit linear memory holds at most 4 GiB)",
                    pool.memory_per_slot_mb
                ),
            ));
        }
        if pool.keep_resident_kb > pool.memory_per_slot_mb * 1024 {
            return Err(invalid(
                "plugins.pool.keep_resident_kb",
                format!(
                    "{} KiB is more than a slot's memory ({} MiB, plugins.pool.memory_per_slot_mb)",
                    pool.keep_resident_kb, pool.memory_per_slot_mb
                ),
            ));
        }
        for (i, b) in raw.blocked.iter().enumerate() {
            if !is_valid_plugin_name(&b.name) {
                return Err(invalid(
                    format!("plugins.blocked[{i}].name"),
                    format!("'{}' is not a valid plugin name", b.name),
                ));
            }
        }

        let mut plugins: Vec<PluginEntry> = Vec::with_capacity(raw.plugins.len());
        for (i, entry) in raw.plugins.into_iter().enumerate() {
            let field = format!("plugins.plugins[{i}]");
            let name = entry
                .name
                .filter(|n| !n.is_empty())
                .ok_or_else(|| HostConfigErrorKind::MissingField(format!("{field}.name")))?;
            if !is_valid_plugin_name(&name) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!(
                        "'{name}' is not a valid plugin name (lowercase letters, digits, '-' and '_', at most 64 characters)"
                    ),
                ));
            }
            if plugins.iter().any(|p| p.name == name) {
                return Err(HostConfigErrorKind::DuplicatePlugin(name));
            }
            check_names(&format!("{field}.before"), &entry.before)?;
            check_names(&format!("{field}.after"), &entry.after)?;
            if let Some(l) = &entry.limits {
                check_limits(&format!("{field}.limits"), l.instances, l.max_cpu_percent)?;
            }
            if let Some(t) = &entry.error_threshold {
                check_threshold(&format!("{field}.error_threshold"), t)?;
            }
            if let Some(o) = &entry.supervision {
                check_supervision(
                    &format!("{field}.supervision"),
                    &supervision.with_override(o),
                )?;
            }
            entry
                .exec
                .check()
                .map_err(|e| invalid(format!("{field}.exec.{}", e.field), e.reason))?;
            let path = match &entry.path {
                Some(p) => resolve_path(base, p),
                None => directory.join(&name),
            };
            check_intercept(&field, &entry.permissions, &entry.intercept)?;
            let hide_headers = check_hidden_headers(&field, &entry.hide_headers)?;
            if let Some(why) = entry.mount.as_deref().and_then(mount_problem) {
                return Err(invalid(format!("{field}.mount"), why));
            }
            plugins.push(PluginEntry {
                name,
                enabled: entry.enabled.unwrap_or(true),
                path,
                priority: entry.priority.map(|p| p.0),
                before: entry.before,
                after: entry.after,
                config: entry.config.unwrap_or_default(),
                permissions: entry.permissions,
                failure_policy: entry.failure_policy,
                limits: entry.limits,
                error_threshold: entry.error_threshold,
                supervision: entry.supervision,
                network: entry.network,
                exec: entry.exec,
                intercept: entry.intercept,
                hide_headers,
                mount: entry.mount,
                log_level: entry.log_level,
            });
        }

        let default_data = HostConfig::default().data_dir;
        let mut server = self.server;
        if let Some(tls) = &mut server.tls {
            *tls = tls.resolve(|p| resolve_path(base, p));
        }
        Ok(HostConfig {
            server,
            admin: self.admin,
            data_dir: resolve_path(base, self.data_dir.as_deref().unwrap_or(&default_data)),
            plugins: PluginsConfig {
                enabled: raw.enabled.unwrap_or(defaults.enabled),
                directory,
                autoload: raw.autoload.unwrap_or(defaults.autoload),
                on_failure: raw.on_failure.unwrap_or(defaults.on_failure),
                hot_reload: raw.hot_reload.unwrap_or(defaults.hot_reload),
                reload_delay: raw.reload_delay.unwrap_or(defaults.reload_delay),
                health_check_interval: raw
                    .health_check_interval
                    .unwrap_or(defaults.health_check_interval),
                reload: raw.reload.unwrap_or_default(),
                error_threshold,
                supervision,
                limits,
                pool,
                // Trusted keys mean "signed plugins only" unless switched off in so many words.
                require_signatures: raw
                    .require_signatures
                    .unwrap_or(!raw.trusted_keys.is_empty()),
                trusted_keys: raw
                    .trusted_keys
                    .iter()
                    .map(|k| resolve_path(base, k))
                    .collect(),
                blocked: raw.blocked,
                plugins,
            },
            status: self.status,
            backends: self.backends,
            fleet: self.fleet,
            source: None,
        })
    }
}

/// `deserialize_with` for grants: a map `permission: bool`, or a list of permissions (all
/// `true`). Unknown permission names are errors (`unknown permission: x`).
fn de_grants<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Permission, bool>, D::Error> {
    struct GrantsVisitor;

    impl<'de> Visitor<'de> for GrantsVisitor {
        type Value = BTreeMap<Permission, bool>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of permission names to booleans, or a list of permission names")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((p, on)) = map.next_entry::<Permission, bool>()? {
                out.insert(p, on);
            }
            Ok(out)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(p) = seq.next_element::<Permission>()? {
                out.insert(p, true);
            }
            Ok(out)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
    }

    d.deserialize_any(GrantsVisitor)
}

/// `deserialize_with` for an optional version requirement (`">=1.0.0,<2.0.0"`).
fn de_opt_req<'de, D: Deserializer<'de>>(d: D) -> Result<Option<semver::VersionReq>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    semver::VersionReq::parse(text.trim())
        .map(Some)
        .map_err(|e| de::Error::custom(format!("invalid version constraint '{text}': {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExecLimits, ExecRule};
    use serde_json::json;

    /// The contract's framework config examples (docs/design.md#contract), verbatim.
    const CONTRACT_YAML: &str = r#"plugins:
  enabled: true
  directory: ./plugins
  
  plugins:
    - name: auth-plugin
      enabled: true
      path: ./plugins/auth-plugin
      priority: 200
      config:
        jwt_secret: "my-secret-key"
        token_ttl: "24h"
        refresh_enabled: true
      permissions:
        database: true
        cache: true
        router: true
        config: true
        filesystem: false
        network: false
        exec: false
    
    - name: logging-plugin
      enabled: true
      path: ./plugins/logging-plugin
      priority: 100
      config:
        log_level: "info"
        output: "stdout"
      permissions:
        database: false
        cache: false
        router: false
        config: true
        filesystem: true
        network: false
        exec: false
"#;

    const CONTRACT_JSON: &str = r#"{
  "plugins": {
    "enabled": true,
    "directory": "./plugins",
    "plugins": [
      {
        "name": "auth-plugin",
        "enabled": true,
        "path": "./plugins/auth-plugin",
        "priority": 200,
        "config": {
          "jwt_secret": "my-secret-key",
          "token_ttl": "24h"
        },
        "permissions": {
          "database": true,
          "cache": true,
          "router": true
        }
      }
    ]
  }
}"#;

    const CONTRACT_TOML: &str = r#"[plugins]
enabled = true
directory = "./plugins"

[[plugins.plugins]]
name = "auth-plugin"
enabled = true
path = "./plugins/auth-plugin"
priority = 200

[plugins.plugins.config]
jwt_secret = "my-secret-key"
token_ttl = "24h"

[plugins.plugins.permissions]
database = true
cache = true
router = true
"#;

    /// The contract's YAML example, in JSON.
    const CONTRACT_YAML_AS_JSON: &str = r#"{"plugins": {"enabled": true, "directory": "./plugins", "plugins": [
      {"name": "auth-plugin", "enabled": true, "path": "./plugins/auth-plugin", "priority": 200,
       "config": {"jwt_secret": "my-secret-key", "token_ttl": "24h", "refresh_enabled": true},
       "permissions": {"database": true, "cache": true, "router": true, "config": true,
                       "filesystem": false, "network": false, "exec": false}},
      {"name": "logging-plugin", "enabled": true, "path": "./plugins/logging-plugin", "priority": 100,
       "config": {"log_level": "info", "output": "stdout"},
       "permissions": {"database": false, "cache": false, "router": false, "config": true,
                       "filesystem": true, "network": false, "exec": false}}]}}"#;

    /// Every key of docs/design.md#host-config, in YAML.
    const FULL_YAML: &str = r#"
server: { listen: "0.0.0.0:9000", body_limit: 512KiB }
admin: { listen: "127.0.0.1:9001", token: s3cret }
data_dir: /var/lib/plugd
plugins:
  enabled: true
  directory: plugins.d
  autoload: true
  on_failure: abort
  hot_reload: true
  reload_delay: 250ms
  health_check_interval: 1m
  reload: { queue_timeout: 10s, max_queue_size: 50, queue_strategy: reject, grace_period: 1m }
  error_threshold: { enabled: true, max_errors: 10, time_window: 1m, action: disable, reset_on_success: true }
  supervision: { enabled: true, max_restarts: 7, backoff_initial: 2s, backoff_max: 2m }
  limits:
    memory_mb: 32
    timeout: 2s
    hook_timeouts: { pre_request: 100ms, startup: 30s }
    instances: 4
    max_cpu_percent: 50
    fuel: 1000000
    max_response_bytes: 1MiB
  pool: { slots: 16, memory_per_slot_mb: 128 }
  require_signatures: true
  trusted_keys: [keys/release.pub]
  blocked:
    - { name: evil, versions: "<1.2.0", reason: CVE-2024-0001 }
    - { name: worse }
  plugins:
    - name: auth-plugin
      enabled: false
      path: /opt/auth
      priority: security
      before: [logging-plugin]
      after: [cache-plugin]
      config: { jwt_secret: "${JWT_SECRET}", ttl: 24h }
      permissions: [database, network]
      failure_policy: fail_closed
      limits: { memory_mb: 128, hook_timeouts: { pre_request: 50ms } }
      error_threshold: { max_errors: 3 }
      supervision: { enabled: false }
      network: { allow: [api.example.com] }
      exec: { allow: [/usr/bin/convert] }
"#;

    const FULL_JSON: &str = r#"{
  "server": {"listen": "0.0.0.0:9000", "body_limit": "512KiB"},
  "admin": {"listen": "127.0.0.1:9001", "token": "s3cret"},
  "data_dir": "/var/lib/plugd",
  "plugins": {
    "enabled": true, "directory": "plugins.d", "autoload": true, "on_failure": "abort",
    "hot_reload": true, "reload_delay": 250, "health_check_interval": "1m",
    "reload": {"queue_timeout": "10s", "max_queue_size": 50, "queue_strategy": "reject", "grace_period": 60000},
    "error_threshold": {"enabled": true, "max_errors": 10, "time_window": "1m", "action": "disable", "reset_on_success": true},
    "supervision": {"enabled": true, "max_restarts": 7, "backoff_initial": 2000, "backoff_max": "2m"},
    "limits": {"memory_mb": 32, "timeout": "2s", "hook_timeouts": {"pre_request": "100ms", "startup": "30s"},
               "instances": 4, "max_cpu_percent": 50, "fuel": 1000000, "max_response_bytes": 1048576},
    "pool": {"slots": 16, "memory_per_slot_mb": 128},
    "require_signatures": true,
    "trusted_keys": ["keys/release.pub"],
    "blocked": [{"name": "evil", "versions": "<1.2.0", "reason": "CVE-2024-0001"}, {"name": "worse"}],
    "plugins": [{
      "name": "auth-plugin", "enabled": false, "path": "/opt/auth", "priority": 300,
      "before": ["logging-plugin"], "after": ["cache-plugin"],
      "config": {"jwt_secret": "${JWT_SECRET}", "ttl": "24h"},
      "permissions": {"database": true, "network": true},
      "failure_policy": "fail_closed",
      "limits": {"memory_mb": 128, "hook_timeouts": {"pre_request": 50}},
      "error_threshold": {"max_errors": 3},
      "supervision": {"enabled": false},
      "network": {"allow": ["api.example.com"]},
      "exec": {"allow": ["/usr/bin/convert"]}
    }]
  }
}"#;

    const FULL_TOML: &str = r#"
data_dir = "/var/lib/plugd"

[server]
listen = "0.0.0.0:9000"
body_limit = 524288

[admin]
listen = "127.0.0.1:9001"
token = "s3cret"

[plugins]
enabled = true
directory = "plugins.d"
autoload = true
on_failure = "abort"
hot_reload = true
reload_delay = "250ms"
health_check_interval = "60s"
require_signatures = true
trusted_keys = ["keys/release.pub"]
blocked = [
  { name = "evil", versions = "<1.2.0", reason = "CVE-2024-0001" },
  { name = "worse" },
]

[plugins.reload]
queue_timeout = "10s"
max_queue_size = 50
queue_strategy = "reject"
grace_period = "1m"

[plugins.error_threshold]
enabled = true
max_errors = 10
time_window = "1m"
action = "disable"
reset_on_success = true

[plugins.supervision]
enabled = true
max_restarts = 7
backoff_initial = "2s"
backoff_max = "120s"

[plugins.limits]
memory_mb = 32
timeout = 2000
instances = 4
max_cpu_percent = 50
fuel = 1000000
max_response_bytes = "1MiB"
hook_timeouts = { pre_request = "100ms", startup = "30s" }

[plugins.pool]
slots = 16
memory_per_slot_mb = 128

[[plugins.plugins]]
name = "auth-plugin"
enabled = false
path = "/opt/auth"
priority = "security"
before = ["logging-plugin"]
after = ["cache-plugin"]
permissions = ["database", "network"]
failure_policy = "fail_closed"
config = { jwt_secret = "${JWT_SECRET}", ttl = "24h" }
limits = { memory_mb = 128, hook_timeouts = { pre_request = "50ms" } }
error_threshold = { max_errors = 3 }
supervision = { enabled = false }
network = { allow = ["api.example.com"] }
exec = { allow = ["/usr/bin/convert"] }
"#;

    fn parse(text: &str, format: Format) -> Result<HostConfig, HostConfigError> {
        HostConfig::from_str(text, format, Some(Path::new("/etc/plugd/plugd.conf")))
    }

    fn manifest(permissions: &str) -> Manifest {
        Manifest::from_str(
            &format!(
                "name: auth-plugin\nversion: 1.0.0\ndescription: d\nauthor: a\npermissions: {permissions}\n"
            ),
            Format::Yaml,
            None,
        )
        .unwrap()
    }

    #[test]
    fn contract_config_examples_parse_to_equal_values() {
        let json = parse(CONTRACT_JSON, Format::Json).unwrap();
        let toml = parse(CONTRACT_TOML, Format::Toml).unwrap();
        assert_eq!(json, toml);
        let yaml = parse(CONTRACT_YAML, Format::Yaml).unwrap();
        assert_eq!(yaml, parse(CONTRACT_YAML_AS_JSON, Format::Json).unwrap());

        let auth = json.plugin("auth-plugin").unwrap();
        assert!(auth.enabled);
        assert_eq!(auth.path, Path::new("/etc/plugd/plugins/auth-plugin"));
        assert_eq!(auth.priority, Some(200));
        assert_eq!(
            serde_json::Value::Object(auth.config.clone()),
            json!({"jwt_secret": "my-secret-key", "token_ttl": "24h"})
        );
        assert_eq!(
            auth.granted(),
            [Permission::Database, Permission::Cache, Permission::Router].into()
        );
        // The YAML example's auth-plugin grants the same and config too.
        let yaml_auth = yaml.plugin("auth-plugin").unwrap();
        assert_eq!(
            yaml_auth.granted(),
            [
                Permission::Database,
                Permission::Cache,
                Permission::Router,
                Permission::Config
            ]
            .into()
        );
        assert_eq!(yaml_auth.permissions.len(), 7);
        let logging = yaml.plugin("logging-plugin").unwrap();
        assert_eq!(logging.priority, Some(100));
        assert_eq!(
            logging.granted(),
            [Permission::Config, Permission::Filesystem].into()
        );
        assert_eq!(yaml.plugins.directory, Path::new("/etc/plugd/plugins"));
        assert!(yaml.plugin("nope").is_none());
    }

    #[test]
    fn every_key_parses_identically_in_three_formats() {
        let yaml = parse(FULL_YAML, Format::Yaml).unwrap();
        let json = parse(FULL_JSON, Format::Json).unwrap();
        let toml = parse(FULL_TOML, Format::Toml).unwrap();
        assert_eq!(yaml, json);
        assert_eq!(yaml, toml);

        let c = yaml;
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(c.server.body_limit, 512 * 1024);
        assert_eq!(c.admin.listen.as_deref(), Some("127.0.0.1:9001"));
        assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
        assert!(!format!("{:?}", c.admin).contains("s3cret"));
        assert_eq!(c.data_dir, Path::new("/var/lib/plugd"));
        let p = &c.plugins;
        assert_eq!(p.directory, Path::new("/etc/plugd/plugins.d"));
        assert!(p.autoload && p.hot_reload && p.require_signatures);
        assert_eq!(p.on_failure, OnFailure::Abort);
        assert_eq!(p.reload_delay, Duration::from_millis(250));
        assert_eq!(p.health_check_interval, Duration::from_secs(60));
        assert_eq!(
            p.reload,
            ReloadSettings {
                queue_timeout: Duration::from_secs(10),
                max_queue_size: 50,
                queue_strategy: QueueStrategy::Reject,
                grace_period: Duration::from_secs(60),
                rollback_on_crashes: None,
            }
        );
        assert_eq!(
            p.error_threshold,
            ErrorThreshold {
                enabled: true,
                max_errors: 10,
                time_window: Duration::from_secs(60),
                action: ThresholdAction::Disable,
                reset_on_success: true,
            }
        );
        assert_eq!(p.limits.memory_mb, 32);
        assert_eq!(p.limits.timeout, Duration::from_secs(2));
        assert_eq!(
            p.limits.hook_timeout(HookType::PreRequest),
            Duration::from_millis(100)
        );
        assert_eq!(
            p.limits.hook_timeout(HookType::Error),
            Duration::from_secs(2)
        );
        assert_eq!(p.limits.instances, Some(4));
        assert_eq!(p.limits.max_cpu_percent, Some(50));
        assert_eq!(p.limits.fuel, Some(1_000_000));
        assert_eq!(p.limits.max_response_bytes, 1024 * 1024);
        assert_eq!(
            p.pool,
            PoolSettings {
                slots: 16,
                memory_per_slot_mb: 128,
                keep_resident_kb: 1024,
            }
        );
        assert_eq!(
            p.trusted_keys,
            [PathBuf::from("/etc/plugd/keys/release.pub")]
        );
        assert_eq!(p.blocked.len(), 2);
        assert!(p.blocked("evil", &semver::Version::new(1, 1, 0)).is_some());
        assert!(p.blocked("evil", &semver::Version::new(1, 2, 0)).is_none());
        assert!(p.blocked("worse", &semver::Version::new(9, 0, 0)).is_some());

        let e = &p.plugins[0];
        assert!(!e.enabled);
        assert_eq!(e.path, Path::new("/opt/auth"));
        assert_eq!(e.priority, Some(300));
        assert_eq!(e.before, ["logging-plugin"]);
        assert_eq!(e.after, ["cache-plugin"]);
        assert_eq!(e.config["jwt_secret"], "${JWT_SECRET}");
        assert_eq!(
            e.granted(),
            [Permission::Database, Permission::Network].into()
        );
        assert_eq!(e.failure_policy, FailurePolicy::FailClosed);
        assert_eq!(e.network.allow, ["api.example.com"]);
        assert_eq!(e.exec.allow, [ExecRule::any_args("/usr/bin/convert")]);
        assert_eq!(e.exec.limits, ExecLimits::default());

        let limits = p.limits_for(e);
        assert_eq!(limits.memory_mb, 128);
        assert_eq!(limits.timeout, Duration::from_secs(2));
        assert_eq!(
            limits.hook_timeout(HookType::PreRequest),
            Duration::from_millis(50)
        );
        assert_eq!(
            limits.hook_timeout(HookType::Startup),
            Duration::from_secs(30)
        );
        let threshold = p.error_threshold_for(e);
        assert_eq!(threshold.max_errors, 3);
        assert_eq!(threshold.action, ThresholdAction::Disable);
        assert_eq!(
            p.supervision,
            Supervision {
                enabled: true,
                max_restarts: 7,
                backoff_initial: Duration::from_secs(2),
                backoff_max: Duration::from_secs(120),
            }
        );
        let supervision = p.supervision_for(e);
        assert!(!supervision.enabled);
        assert_eq!(supervision.max_restarts, 7);
    }

    #[test]
    fn server_timeouts_and_caps() {
        let c = HostConfig::default().server;
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.body_read_timeout, Duration::from_secs(30));
        assert_eq!(
            (c.max_connections, c.max_headers, c.max_header_bytes),
            (10_000, 100, 64 * 1024)
        );
        let c = parse(
            "server:\n  header_read_timeout: 2s\n  idle_timeout: 1m\n  body_read_timeout: 500ms\n  max_connections: 8\n  max_headers: 20\n  max_header_bytes: 16KiB\n",
            Format::Yaml,
        )
        .unwrap()
        .server;
        assert_eq!(c.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.body_read_timeout, Duration::from_millis(500));
        assert_eq!(
            (c.max_connections, c.max_headers, c.max_header_bytes),
            (8, 20, 16 * 1024)
        );
        for (text, field) in [
            ("server: { idle_timeout: 0s }", "server.idle_timeout"),
            ("server: { max_connections: 0 }", "server.max_connections"),
            ("server: { max_header_bytes: 0 }", "server.max_header_bytes"),
        ] {
            let e = parse(text, Format::Yaml).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn defaults() {
        for (text, format) in [("", Format::Yaml), ("{}", Format::Json), ("", Format::Toml)] {
            let c = HostConfig::from_str(text, format, None).unwrap();
            assert_eq!(c, HostConfig::default(), "{format}");
        }
        let c = HostConfig::default();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.server.body_limit, 2 * 1024 * 1024);
        assert_eq!(c.admin, AdminConfig::default());
        assert_eq!(c.data_dir, Path::new("./data"));
        let p = &c.plugins;
        assert!(p.enabled && !p.autoload && !p.hot_reload && !p.require_signatures);
        assert_eq!(p.directory, Path::new("./plugins"));
        assert_eq!(p.on_failure, OnFailure::Continue);
        assert_eq!(p.reload_delay, Duration::from_millis(500));
        assert_eq!(p.health_check_interval, Duration::from_secs(30));
        assert_eq!(p.reload.queue_timeout, Duration::from_secs(30));
        assert_eq!(p.reload.max_queue_size, 1000);
        assert_eq!(p.reload.queue_strategy, QueueStrategy::Block);
        assert_eq!(p.reload.grace_period, Duration::from_secs(30));
        assert!(!p.error_threshold.enabled);
        assert_eq!(p.error_threshold.max_errors, 100);
        assert_eq!(p.error_threshold.time_window, Duration::from_secs(300));
        assert_eq!(p.error_threshold.action, ThresholdAction::Log);
        assert_eq!(p.supervision, Supervision::default());
        assert!(p.supervision.enabled);
        assert_eq!(p.supervision.max_restarts, 5);
        assert_eq!(p.supervision.backoff_initial, Duration::from_secs(1));
        assert_eq!(p.supervision.backoff_max, Duration::from_secs(60));
        assert_eq!(p.limits.memory_mb, 64);
        assert_eq!(p.limits.timeout, Duration::from_secs(5));
        assert_eq!(p.limits.instances, None);
        assert_eq!(p.limits.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
        assert_eq!(
            p.pool,
            PoolSettings {
                slots: 256,
                memory_per_slot_mb: 64,
                keep_resident_kb: 1024,
            }
        );

        let c = parse("plugins:\n  plugins:\n    - name: hello\n", Format::Yaml).unwrap();
        let e = c.plugin("hello").unwrap();
        assert!(e.enabled);
        assert_eq!(e.failure_policy, FailurePolicy::FailOpen);
        assert!(e.permissions.is_empty() && e.config.is_empty() && e.limits.is_none());
        assert_eq!(
            c.source.as_deref(),
            Some(Path::new("/etc/plugd/plugd.conf"))
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let yaml = "data_dir: state\nplugins:\n  directory: ../shared/plugins\n  plugins:\n    - name: a\n      path: ./mine/a\n    - name: b\n    - name: c\n      path: /abs/c\n";
        let c = HostConfig::from_str(yaml, Format::Yaml, Some(Path::new("/srv/app/plugd.yaml")))
            .unwrap();
        assert_eq!(c.data_dir, Path::new("/srv/app/state"));
        assert_eq!(c.plugins.directory, Path::new("/srv/app/../shared/plugins"));
        assert_eq!(c.plugin("a").unwrap().path, Path::new("/srv/app/mine/a"));
        assert_eq!(
            c.plugin("b").unwrap().path,
            Path::new("/srv/app/../shared/plugins/b")
        );
        assert_eq!(c.plugin("c").unwrap().path, Path::new("/abs/c"));

        // A file in a relative folder keeps the folder.
        let c = HostConfig::from_str(yaml, Format::Yaml, Some(Path::new("examples/plugd.yaml")))
            .unwrap();
        assert_eq!(c.plugin("a").unwrap().path, Path::new("examples/mine/a"));
        // No folder (a bare file name, or no file): relative to the current directory.
        for origin in [Some(Path::new("plugd.yaml")), None] {
            let c = HostConfig::from_str(yaml, Format::Yaml, origin).unwrap();
            assert_eq!(c.plugin("a").unwrap().path, Path::new("./mine/a"));
            assert_eq!(
                c.plugin("b").unwrap().path,
                Path::new("../shared/plugins/b")
            );
        }
    }

    #[test]
    fn trusted_keys_require_signatures_unless_switched_off_explicitly() {
        // The attack: an operator lists trusted keys expecting signed-only plugins; a stripped
        // signature must not turn into "unsigned, allowed".
        let parse = |yaml: &str| {
            HostConfig::from_str(yaml, Format::Yaml, Some(Path::new("/etc/plugd/plugd.yaml")))
                .unwrap()
                .plugins
        };
        let keys_only = parse("plugins:\n  trusted_keys: [keys/release.pub]\n");
        assert!(keys_only.require_signatures);
        assert_eq!(
            keys_only.trusted_keys,
            [PathBuf::from("/etc/plugd/keys/release.pub")]
        );
        let opted_out =
            parse("plugins:\n  trusted_keys: [keys/release.pub]\n  require_signatures: false\n");
        assert!(!opted_out.require_signatures);
        assert!(!parse("plugins:\n  trusted_keys: []\n").require_signatures);
        assert!(!parse("plugins: {}\n").require_signatures);
        // Required without keys stays as written (the load-time check then says what is missing).
        assert!(parse("plugins:\n  require_signatures: true\n").require_signatures);
        // The same in JSON and TOML.
        let json = HostConfig::from_str(
            r#"{"plugins": {"trusted_keys": ["k.pub"]}}"#,
            Format::Json,
            None,
        )
        .unwrap();
        assert!(json.plugins.require_signatures);
        let toml = HostConfig::from_str(
            "[plugins]\ntrusted_keys = [\"k.pub\"]\n",
            Format::Toml,
            None,
        )
        .unwrap();
        assert!(toml.plugins.require_signatures);
    }

    #[test]
    fn unknown_keys_have_path_suggestion_and_position() {
        let cases = [
            (
                Format::Yaml,
                "plugins:\n  plugins:\n    - name: a\n      prioirty: 5\n",
                4,
                7,
            ),
            (
                Format::Json,
                "{\"plugins\": {\"plugins\": [\n  {\"name\": \"a\",\n   \"prioirty\": 5}]}}",
                3,
                4,
            ),
            (
                Format::Toml,
                "[[plugins.plugins]]\nname = \"a\"\nprioirty = 5\n",
                3,
                1,
            ),
        ];
        for (format, text, line, column) in cases {
            let err = parse(text, format).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "/etc/plugd/plugd.conf: unknown key 'prioirty' in plugins.plugins[0] at line {line} column {column}; did you mean 'priority'?"
                ),
                "{format}"
            );
        }
        for (format, text) in [
            (Format::Yaml, "servr: {}\n"),
            (Format::Json, "{\"servr\": {}}"),
            (Format::Toml, "[servr]\n"),
        ] {
            let err = HostConfig::from_str(text, format, None).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with("unknown key 'servr' in the config at line 1"),
                "{msg}"
            );
            assert!(msg.ends_with("; did you mean 'server'?"), "{msg}");
        }
        for (format, text) in [
            (Format::Yaml, "plugins:\n  limits:\n    memory: 5\n"),
            (Format::Json, "{\"plugins\": {\"limits\": {\"memory\": 5}}}"),
            (Format::Toml, "[plugins.limits]\nmemory = 5\n"),
        ] {
            let HostConfigErrorKind::UnknownKey {
                path, suggestion, ..
            } = parse(text, format).unwrap_err().kind
            else {
                panic!("{format}");
            };
            assert_eq!(path, "plugins.limits", "{format}");
            assert_eq!(suggestion.as_deref(), Some("memory_mb"), "{format}");
        }
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        for (format, text) in [
            (Format::Yaml, "server:\n  listen: [a\n"),
            (Format::Json, "{\"server\": {\"listen\": }}"),
            (Format::Toml, "[server]\nlisten = \n"),
        ] {
            let err = parse(text, format).unwrap_err();
            let HostConfigErrorKind::Parse {
                line: Some(line),
                column: Some(column),
                ..
            } = err.kind
            else {
                panic!("{format}: {err}");
            };
            let msg = err.to_string();
            assert!(
                msg.starts_with("/etc/plugd/plugd.conf: failed to parse config: "),
                "{msg}"
            );
            assert!(
                msg.ends_with(&format!(" at line {line} column {column}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn bad_values_are_errors_in_every_format() {
        let cases: [(&str, &str, &str, &str); 6] = [
            (
                "plugins:\n  plugins:\n    - name: a\n      permissions: { databse: true }\n",
                r#"{"plugins": {"plugins": [{"name": "a", "permissions": {"databse": true}}]}}"#,
                "[[plugins.plugins]]\nname = \"a\"\npermissions = { databse = true }\n",
                "plugins.plugins[0].permissions.databse: unknown permission: databse; did you mean 'database'?",
            ),
            (
                "plugins:\n  on_failure: abrt\n",
                r#"{"plugins": {"on_failure": "abrt"}}"#,
                "[plugins]\non_failure = \"abrt\"\n",
                "plugins.on_failure: unknown value 'abrt', expected one of continue, abort; did you mean 'abort'?",
            ),
            (
                "plugins:\n  reload_delay: soon\n",
                r#"{"plugins": {"reload_delay": "soon"}}"#,
                "[plugins]\nreload_delay = \"soon\"\n",
                "plugins.reload_delay: invalid duration 'soon'",
            ),
            (
                "server:\n  body_limit: 2XB\n",
                r#"{"server": {"body_limit": "2XB"}}"#,
                "[server]\nbody_limit = \"2XB\"\n",
                "server.body_limit: invalid size '2XB'",
            ),
            (
                "plugins:\n  plugins:\n    - name: a\n      priority: hgh\n",
                r#"{"plugins": {"plugins": [{"name": "a", "priority": "hgh"}]}}"#,
                "[[plugins.plugins]]\nname = \"a\"\npriority = \"hgh\"\n",
                "plugins.plugins[0].priority: invalid priority 'hgh'",
            ),
            (
                "plugins:\n  limits:\n    hook_timeouts: { pre_reqest: 1s }\n",
                r#"{"plugins": {"limits": {"hook_timeouts": {"pre_reqest": "1s"}}}}"#,
                "[plugins.limits.hook_timeouts]\npre_reqest = \"1s\"\n",
                "plugins.limits.hook_timeouts.pre_reqest: unknown hook type: pre_reqest; did you mean 'pre_request'?",
            ),
        ];
        for (yaml, json, toml, expected) in cases {
            for (format, text) in [
                (Format::Yaml, yaml),
                (Format::Json, json),
                (Format::Toml, toml),
            ] {
                let msg = HostConfig::from_str(text, format, None)
                    .unwrap_err()
                    .to_string();
                let expected = format!("failed to parse config: {expected}");
                assert!(
                    msg.starts_with(&expected),
                    "{format}: {msg}\nwanted: {expected}"
                );
                assert!(msg.contains(" at line "), "{format}: {msg}");
            }
        }
    }

    #[test]
    fn plugin_entries_are_checked() {
        for (format, text) in [
            (
                Format::Yaml,
                "plugins:\n  plugins:\n    - name: a\n    - name: a\n",
            ),
            (
                Format::Json,
                r#"{"plugins": {"plugins": [{"name": "a"}, {"name": "a"}]}}"#,
            ),
            (
                Format::Toml,
                "[[plugins.plugins]]\nname = \"a\"\n[[plugins.plugins]]\nname = \"a\"\n",
            ),
        ] {
            let err = HostConfig::from_str(text, format, None).unwrap_err();
            assert_eq!(
                err.to_string(),
                "plugin 'a' is listed twice in plugins.plugins"
            );
        }
        for (format, text) in [
            (Format::Yaml, "plugins:\n  plugins:\n    - enabled: true\n"),
            (
                Format::Json,
                r#"{"plugins": {"plugins": [{"enabled": true}]}}"#,
            ),
            (Format::Toml, "[[plugins.plugins]]\nenabled = true\n"),
        ] {
            let err = HostConfig::from_str(text, format, None).unwrap_err();
            assert_eq!(
                err.to_string(),
                "missing required field: plugins.plugins[0].name"
            );
        }
        let err = HostConfig::from_str(
            "plugins:\n  plugins:\n    - name: Bad Name\n",
            Format::Yaml,
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid plugins.plugins[0].name: 'Bad Name'"),
            "{err}"
        );
        for (text, expected) in [
            (
                "plugins:\n  error_threshold: { max_errors: 0 }\n",
                "invalid plugins.error_threshold.max_errors: must be at least 1",
            ),
            (
                "plugins:\n  plugins:\n    - name: a\n      error_threshold: { time_window: 0s }\n",
                "invalid plugins.plugins[0].error_threshold.time_window: must be longer than 0",
            ),
            (
                "plugins:\n  supervision: { backoff_initial: 0 }\n",
                "invalid plugins.supervision.backoff_initial: must be longer than 0",
            ),
            (
                "plugins:\n  supervision: { backoff_max: 10s }\n  plugins:\n    - name: a\n      supervision: { backoff_initial: 1m }\n",
                "invalid plugins.plugins[0].supervision.backoff_max: 10s is shorter than backoff_initial (1m)",
            ),
        ] {
            let err = HostConfig::from_str(text, Format::Yaml, None).unwrap_err();
            assert_eq!(err.to_string(), expected, "{text}");
        }
        let err = HostConfig::from_str(
            "plugins:\n  supervision: { max_restart: 3 }\n",
            Format::Yaml,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("unknown key 'max_restart' in plugins.supervision")
                && err.ends_with("; did you mean 'max_restarts'?"),
            "{err}"
        );
        let err = HostConfig::from_str(
            "plugins:\n  plugins:\n    - name: a\n      supervision: { backof_max: 3s }\n",
            Format::Yaml,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("unknown key 'backof_max' in plugins.plugins[0].supervision")
                && err.ends_with("; did you mean 'backoff_max'?"),
            "{err}"
        );
        let err = HostConfig::from_str(
            "plugins:\n  limits: { max_cpu_percent: 150 }\n",
            Format::Yaml,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid plugins.limits.max_cpu_percent: 150 is not a percentage between 1 and 100"
        );
        let err = HostConfig::from_str(
            "plugins:\n  plugins:\n    - name: a\n      limits: { instances: 0 }\n",
            Format::Yaml,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid plugins.plugins[0].limits.instances: must be at least 1"
        );
        let err = HostConfig::from_str(
            "plugins:\n  pool: { memory_per_slot_mb: 8192 }\n",
            Format::Yaml,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid plugins.pool.memory_per_slot_mb: 8192 is not between 1 and 4096 (MiB; a 32-bit linear memory holds at most 4 GiB)"
        );
        let err = HostConfig::from_str(
            "plugins:\n  pool: { memory_per_slot_mb: 2, keep_resident_kb: 4096 }\n",
            Format::Yaml,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid plugins.pool.keep_resident_kb: 4096 KiB is more than a slot's memory (2 MiB, plugins.pool.memory_per_slot_mb)"
        );
        let c = HostConfig::from_str(
            "plugins:\n  pool: { keep_resident_kb: 0 }\n",
            Format::Yaml,
            None,
        )
        .unwrap();
        assert_eq!(c.plugins.pool.keep_resident_kb, 0);
        // `slots: 0` turns the pooling allocator off; a plugin's own response cap overrides.
        let c = HostConfig::from_str(
            "plugins:\n  pool: { slots: 0 }\n  plugins:\n    - name: a\n      limits: { max_response_bytes: 64KiB }\n",
            Format::Yaml,
            None,
        )
        .unwrap();
        assert_eq!(c.plugins.pool.slots, 0);
        let limits = c
            .plugins
            .limits
            .with_override(c.plugin("a").unwrap().limits.as_ref().unwrap());
        assert_eq!(limits.max_response_bytes, 64 * 1024);
    }

    #[test]
    fn permission_mismatch() {
        let m = manifest("{ database: true, cache: true, router: false }");
        let mut entry = PluginEntry::new("auth-plugin", "/p");
        entry.permissions.insert(Permission::Database, true);
        entry.permissions.insert(Permission::Cache, false);
        assert_eq!(
            effective_permissions(&m, &entry).unwrap(),
            [Permission::Database].into()
        );

        // A `false` grant of an undeclared permission is fine; a `true` one is not.
        entry.permissions.insert(Permission::Exec, false);
        assert!(effective_permissions(&m, &entry).is_ok());
        entry.permissions.insert(Permission::Router, true);
        let err = effective_permissions(&m, &entry).unwrap_err();
        assert_eq!(err.permission, Permission::Router);
        assert_eq!(
            err.to_string(),
            "permission mismatch: plugin requests 'router' permission but manifest does not declare it (plugin 'auth-plugin')"
        );

        // From a config file: the contract's message, verbatim (docs/design.md#errors).
        let c = HostConfig::from_str(
            "plugins:\n  plugins:\n    - name: auth-plugin\n      permissions: { database: true }\n",
            Format::Yaml,
            None,
        )
        .unwrap();
        let err = effective_permissions(
            &manifest("{ cache: true }"),
            c.plugin("auth-plugin").unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with(
            "permission mismatch: plugin requests 'database' permission but manifest does not declare it"
        ));
    }

    #[test]
    fn from_path_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("plugd.yaml");
        let err = HostConfig::from_path(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("config file not found: {}", missing.display())
        );

        let file = dir.path().join("plugd.toml");
        std::fs::write(
            &file,
            "[plugins]\nenabled = false\n[[plugins.plugins]]\nname = \"x\"\n",
        )
        .unwrap();
        let c = HostConfig::from_path(&file).unwrap();
        assert!(!c.plugins.enabled);
        assert_eq!(
            c.plugin("x").unwrap().path,
            dir.path().join("plugins").join("x")
        );
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.source.as_deref(), Some(file.as_path()));

        std::fs::write(&file, "[plugins]\nenabeld = false\n").unwrap();
        let err = HostConfig::from_path(&file).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: unknown key 'enabeld' in plugins at line 2 column 1; did you mean 'enabled'?",
                file.display()
            )
        );

        let other = dir.path().join("plugd.ini");
        std::fs::write(&other, "").unwrap();
        let err = HostConfig::from_path(&other).unwrap_err();
        assert!(
            matches!(err.kind, HostConfigErrorKind::UnsupportedFormat),
            "{err}"
        );
    }

    #[test]
    fn serializes_as_the_file_reads_with_durations_as_text_and_the_token_redacted() {
        let yaml = "admin:\n  token: hunter2\nplugins:\n  limits:\n    timeout: 1500ms\n    hook_timeouts: { pre_request: 2s }\n  plugins:\n    - name: a\n      limits: { timeout: 3s }\n      network: { allow: [api.example.com] }\n";
        let config = HostConfig::from_str(yaml, Format::Yaml, None).unwrap();
        let v = serde_json::to_value(&config).unwrap();
        assert_eq!(v["admin"]["token"], json!("[redacted]"));
        assert_eq!(v["server"]["listen"], json!("127.0.0.1:8080"));
        assert_eq!(v["server"]["body_limit"], json!(2 * 1024 * 1024));
        assert_eq!(v["plugins"]["limits"]["timeout"], json!("1s 500ms"));
        assert_eq!(
            v["plugins"]["limits"]["hook_timeouts"]["pre_request"],
            json!("2s")
        );
        assert_eq!(v["plugins"]["health_check_interval"], json!("30s"));
        assert_eq!(v["plugins"]["plugins"][0]["limits"]["timeout"], json!("3s"));
        assert_eq!(
            v["plugins"]["plugins"][0]["network"]["allow"],
            json!(["api.example.com"])
        );
        assert!(v.get("source").is_none());
    }

    #[test]
    fn status_tables_settings() {
        let c = parse("", Format::Yaml).unwrap();
        assert_eq!(c.status, StatusSettings::default());
        assert!(c.status.enabled);
        let c = parse("status: { interval: 10s, retention: 7d }\n", Format::Yaml).unwrap();
        assert_eq!(c.status.interval, Duration::from_secs(10));
        assert_eq!(c.status.retention, Duration::from_secs(7 * 86400));
        let e = parse("status: { interval: 0s }\n", Format::Yaml).unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid status.interval: must be longer than 0"),
            "{e}"
        );
        let e = parse("status: { intreval: 1s }\n", Format::Yaml).unwrap_err();
        assert!(e.to_string().contains("did you mean 'interval'?"), "{e}");
    }

    #[test]
    fn exec_entries_pin_arguments_and_limits_default_in_every_format() {
        let yaml = r#"plugins:
  plugins:
    - name: a
      exec:
        allow:
          - git
          - { command: git, args: [status, --porcelain] }
          - { command: git, args: [log, "--max-count=*"], extra_args: true }
          - { command: date }
        limits: { memory_mb: 256, open_files: 64 }
    - name: b
"#;
        let json = r#"{"plugins": {"plugins": [{"name": "a", "exec": {
            "allow": ["git", {"command": "git", "args": ["status", "--porcelain"]},
                      {"command": "git", "args": ["log", "--max-count=*"], "extra_args": true},
                      {"command": "date"}],
            "limits": {"memory_mb": 256, "open_files": 64}}}, {"name": "b"}]}}"#;
        let toml = r#"
[[plugins.plugins]]
name = "a"
exec.allow = ["git", { command = "git", args = ["status", "--porcelain"] },
              { command = "git", args = ["log", "--max-count=*"], extra_args = true },
              { command = "date" }]
exec.limits = { memory_mb = 256, open_files = 64 }

[[plugins.plugins]]
name = "b"
"#;
        for (format, text) in [
            (Format::Yaml, yaml),
            (Format::Json, json),
            (Format::Toml, toml),
        ] {
            let c = HostConfig::from_str(text, format, None).unwrap();
            let a = &c.plugin("a").unwrap().exec;
            assert_eq!(
                a.allow,
                [
                    ExecRule::any_args("git"),
                    ExecRule::pinned("git", ["status", "--porcelain"]),
                    ExecRule::pinned("git", ["log", "--max-count=*"]).with_extra_args(),
                    ExecRule::pinned("date", Vec::<String>::new()),
                ],
                "{format:?}"
            );
            assert_eq!(
                a.limits,
                ExecLimits {
                    memory_mb: 256,
                    file_size_mb: 64,
                    processes: 64,
                    open_files: 64,
                }
            );
            let b = &c.plugin("b").unwrap().exec;
            assert!(b.allow.is_empty());
            assert_eq!(b.limits, ExecLimits::default());
        }
        assert_eq!(
            ExecLimits::default(),
            ExecLimits {
                memory_mb: 1024,
                file_size_mb: 64,
                processes: 64,
                open_files: 256,
            }
        );
    }

    #[test]
    fn a_bad_exec_entry_or_limit_is_refused_naming_the_field() {
        let entry =
            |exec: &str| format!("plugins:\n  plugins:\n    - name: a\n      exec: {exec}\n");
        for (exec, expected) in [
            (
                "{ allow: [git, ''] }",
                "invalid plugins.plugins[0].exec.allow[1]: the command must not be empty",
            ),
            (
                "{ allow: ['git status'] }",
                "invalid plugins.plugins[0].exec.allow[0]: 'git status' holds whitespace: a command is one program; pin its arguments with { command: git, args: [status] }",
            ),
            (
                "{ allow: [{ command: '', args: [x] }] }",
                "invalid plugins.plugins[0].exec.allow[0].command: the command must not be empty",
            ),
            (
                "{ allow: [{ command: bin/tool }] }",
                "invalid plugins.plugins[0].exec.allow[0].command: 'bin/tool' is a relative path, which would be looked up in the plugin's data directory (the command's working directory): write a program name (looked up on plugd's PATH) or an absolute path",
            ),
            (
                r#"{ allow: [{ command: git, args: [log, "a\0b"] }] }"#,
                r#"invalid plugins.plugins[0].exec.allow[0].args[1]: "a\0b" holds a NUL byte"#,
            ),
            (
                "{ limits: { memory_mb: 4 } }",
                "invalid plugins.plugins[0].exec.limits.memory_mb: 4 is not between 16 and 1048576 (MiB)",
            ),
            (
                "{ limits: { file_size_mb: 2000000 } }",
                "invalid plugins.plugins[0].exec.limits.file_size_mb: 2000000 is not between 0 and 1048576 (MiB)",
            ),
            (
                "{ limits: { processes: 0 } }",
                "invalid plugins.plugins[0].exec.limits.processes: 0 is not between 1 and 65536",
            ),
            (
                "{ limits: { open_files: 3 } }",
                "invalid plugins.plugins[0].exec.limits.open_files: 3 is not between 16 and 1048576",
            ),
        ] {
            let err = HostConfig::from_str(&entry(exec), Format::Yaml, None).unwrap_err();
            assert_eq!(err.to_string(), expected, "{exec}");
        }
        let err = HostConfig::from_str(
            &entry("{ allow: [{ command: git, arg: [status] }] }"),
            Format::Yaml,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("unknown key 'arg' in plugins.plugins[0].exec.allow[0]")
                && err.ends_with("; did you mean 'args'?"),
            "{err}"
        );
        let err = HostConfig::from_str(&entry("{ limits: { memory: 5 } }"), Format::Yaml, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown key 'memory' in plugins.plugins[0].exec.limits"),
            "{err}"
        );
        let err = HostConfig::from_str(&entry("{ allow: [{ args: [x] }] }"), Format::Yaml, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("command"), "{err}");
        // An absolute path is a program too.
        HostConfig::from_str(
            &entry("{ allow: [/usr/bin/git, { command: /usr/bin/git, args: [status] }] }"),
            Format::Yaml,
            None,
        )
        .unwrap();
    }
}
