//! The host: loads plugins from the host config (through a [`Loader`]) and from native code,
//! orders them, runs their lifecycle and publishes their hooks and routes to the dispatcher.
//!
//! [`Host`] is one value with its parts in submodules, each a job a reader can hold:
//! - `builder`: [`HostBuilder`], the config, loader, native plugins and backends;
//! - `entries`: from config entries to ordered candidates (manifest, grants, package check);
//! - `lifecycle`: load, init, start, stop, unload and the one teardown sequence;
//! - `calls`: commands, a single hook, event delivery and timers, outside the request path;
//! - `reload`: hot reload with rollback; `watching`: the file watcher and config reloads;
//! - `registrar`: plugins' middleware changes at run time, published as a new dispatch table;
//! - `resolve`: the start order of the plugins held now, or with one more (`ResolveDependencies`);
//! - `supervisor`: restarts, threshold actions and health polls; `config`: plugins' config
//!   at run time;
//! - `views`, `health`, `status`, `prometheus`: what the host shows and writes of its plugins.
//!
//! Modules outside `host` never name it: they work on [`crate::loaded::Loaded`], and the host
//! calls them (`tests/it/layout.rs` checks that no module cycle comes back).

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use plugd_manifest::HostConfig;

use crate::admission::Admission;
use crate::audit::{AuditEntry, AuditLog};
use crate::cache::CacheBackend;
use crate::database::SqlBackend;
use crate::dispatch::Dispatcher;
use crate::error::LoadError;
use crate::events::{EventBus, Publisher};
use crate::exec::CommandRunner;
use crate::kv::{KvBackend, PluginStore, StorageQuota};
use crate::loaded::Loaded;
use crate::loader::Loader;
use crate::logs::LogLevel;
use crate::outbound::HttpClient;
use crate::services::Services;
use crate::state::PluginState;
use crate::status::StatusSink;
use crate::supervise::{Notice, SupervisorSlot};
use crate::watch::FileWatcher;

use builder::Native;

mod builder;
mod calls;
mod config;
mod entries;
mod health;
mod lifecycle;
mod prometheus;
mod providers;
mod registrar;
mod reload;
mod resolve;
mod status;
mod supervisor;
mod views;
mod watching;

pub use builder::HostBuilder;
pub use health::{HealthSummary, PluginSummary, Readiness};
pub(crate) use lifecycle::Teardown;
pub use reload::{ReloadCounters, ReloadOutcome};
pub use views::{HookInfo, PluginHealth, PluginInfo, PluginMetricsReport};
pub use watching::ConfigReloadReport;

pub(crate) struct Inner {
    pub(crate) config: HostConfig,
    pub(crate) kv: Arc<dyn KvBackend>,
    /// One storage handle per plugin, so that its quota counts every write once.
    pub(crate) stores: parking_lot::Mutex<std::collections::HashMap<String, PluginStore>>,
    sql: Option<Arc<dyn SqlBackend>>,
    pub(crate) status_sink: Arc<dyn StatusSink>,
    loader: Option<Arc<dyn Loader>>,
    natives: parking_lot::Mutex<Vec<Native>>,
    /// In start order.
    pub(crate) plugins: Arc<RwLock<Vec<Arc<Loaded>>>>,
    services: Arc<Services>,
    dispatcher: Dispatcher,
    pub(crate) bus: Arc<EventBus>,
    cache: Arc<dyn CacheBackend>,
    http: Option<Arc<dyn HttpClient>>,
    commands: Option<Arc<dyn CommandRunner>>,
    pub(crate) watcher: Option<Arc<dyn FileWatcher>>,
    admission: Arc<dyn Admission>,
    pub(crate) audit: Arc<AuditLog>,
    started_at: SystemTime,
    reloads: reload::Reloads,
    /// The file watcher, when `plugins.hot_reload` is on.
    watching: parking_lot::Mutex<Option<(crate::watch::Watch, tokio::task::JoinHandle<()>)>>,
    /// Held by supervised restarts, threshold disables, enable/disable, unload and stop, so that
    /// they never run over each other.
    pub(crate) lifecycle: tokio::sync::Mutex<()>,
    /// Plugins' reports to the supervisor task.
    notices: tokio::sync::mpsc::Sender<Notice>,
    pub(crate) supervisor: parking_lot::Mutex<SupervisorSlot>,
    /// Between the end of start and the beginning of stop: supervised restarts may run.
    pub(crate) supervising: std::sync::atomic::AtomicBool,
    /// Held while a dispatch table is built and published, so that a run-time registration
    /// and a lifecycle change never publish over each other's newer table.
    pub(crate) publishing: parking_lot::Mutex<()>,
    /// Set when stop begins: the host is shutting down (not ready).
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// The writer of the status tables and its background task.
    pub(crate) status: crate::status::StatusSlot,
}

/// The plugin host. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("plugins", &self.inner.plugins.read().len())
            .finish()
    }
}

impl Host {
    /// Start building a host.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The host config in force.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The dispatcher requests go through.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.inner.dispatcher
    }

    /// The cache namespace of plugin `name`, under its `limits.cache_bytes` and
    /// `limits.cache_entries`.
    pub(crate) fn plugin_cache(&self, name: &str) -> crate::cache::PluginCache {
        let limits = self.plugin_limits(name);
        crate::cache::PluginCache::new(name, self.inner.cache.clone()).with_quota(
            crate::cache::CacheQuota {
                max_entries: usize::try_from(limits.cache_entries).unwrap_or(usize::MAX),
                max_bytes: usize::try_from(limits.cache_bytes).unwrap_or(usize::MAX),
            },
        )
    }

    /// The limits of plugin `name`: its config entry's over the global ones.
    pub(crate) fn plugin_limits(&self, name: &str) -> plugd_manifest::Limits {
        let plugins = &self.inner.config.plugins;
        match plugins.plugins.iter().find(|e| e.name == name) {
            Some(e) => plugins.limits_for(e),
            None => plugins.limits.clone(),
        }
    }

    /// The key/value storage of plugin `name`, as the plugin sees it: under its quota
    /// (`limits.storage_bytes`, `limits.storage_keys`), one count shared by every handle.
    pub fn storage(&self, name: &str) -> PluginStore {
        let limits = self.plugin_limits(name);
        let quota = StorageQuota {
            bytes: limits.storage_bytes,
            keys: limits.storage_keys,
        };
        let mut stores = self.inner.stores.lock();
        match stores.get(name) {
            Some(s) => {
                s.set_quota(quota);
                s.clone()
            }
            None => {
                let s = PluginStore::with_quota(name, self.inner.kv.clone(), quota);
                stores.insert(name.to_string(), s.clone());
                s
            }
        }
    }

    /// When the host was built.
    pub fn started_at(&self) -> SystemTime {
        self.inner.started_at
    }

    /// The service container: typed imports and calls to any plugin's exported services.
    pub fn services(&self) -> Arc<Services> {
        self.inner.services.clone()
    }

    /// Denied capability calls, oldest first; of one plugin or of all.
    pub fn audit_log(&self, plugin: Option<&str>) -> Vec<AuditEntry> {
        self.inner.audit.entries(plugin)
    }

    /// A publisher for the host itself (any topic).
    pub fn events(&self) -> Publisher {
        Publisher::host(self.inner.bus.clone())
    }

    /// The event bus, to subscribe the embedding application (or a test) to plugins' events.
    pub fn event_bus(&self) -> Arc<EventBus> {
        self.inner.bus.clone()
    }

    /// The live state of a plugin.
    pub fn plugin_state(&self, name: &str) -> Option<Arc<PluginState>> {
        self.find(name).map(|p| p.state.clone())
    }

    /// Keep only the lines of plugin `name`'s own log (its `log` calls, its stdout and stderr, a
    /// native plugin's [`InitContext::log`](crate::InitContext::log)) at `level` or above, from
    /// now on; the plugin's `log_level:` in the host config sets it at load. Lines under it are
    /// dropped before its log rate counts them.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use plugd_core::{Host, LogLevel, Plugin};
    /// use plugd_manifest::{Format, Manifest};
    ///
    /// struct Quiet;
    /// impl Plugin for Quiet {}
    /// let text = "name: quiet\nversion: 1.0.0\ndescription: d\nauthor: a\n";
    /// let manifest = Manifest::from_str(text, Format::Yaml, None).unwrap();
    /// let host = Host::builder().native(manifest, Quiet).build().unwrap();
    /// host.start().await.unwrap();
    /// host.set_log_level("quiet", LogLevel::Warn).unwrap();
    /// assert_eq!(host.log_level("quiet"), Some(LogLevel::Warn));
    /// assert!(host.set_log_level("nope", LogLevel::Warn).is_err());
    /// # });
    /// ```
    pub fn set_log_level(&self, name: &str, level: LogLevel) -> Result<(), LoadError> {
        let p = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        p.state.log().set_level(level);
        tracing::info!(plugin = %name, level = %level, "plugin log level set");
        Ok(())
    }

    /// The least level of plugin `name`'s own log lines kept; `None` for an unknown plugin.
    pub fn log_level(&self, name: &str) -> Option<LogLevel> {
        self.find(name).map(|p| p.state.log().level())
    }

    pub(crate) fn find(&self, name: &str) -> Option<Arc<Loaded>> {
        self.inner
            .plugins
            .read()
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }
}
