//! [`HostBuilder`]: a host's config, data directory, loader, native plugins and backends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use plugd_manifest::{HostConfig, Manifest};

use crate::cache::{CacheBackend, MemoryCache};
use crate::database::SqlBackend;
use crate::dispatch::Dispatcher;
use crate::error::LoadError;
use crate::events::{EventBus, EventTransport};
use crate::kv::{KvBackend, MemoryKv};
use crate::loaded::Loaded;
use crate::loader::Loader;
use crate::plugin::Plugin;
use crate::services::Services;
use crate::status::{MemoryStatus, StatusSink};
use crate::supervise::{NOTICE_CAPACITY, SupervisorSlot};

use super::{Host, Inner};
use crate::admission::{Admission, NoAdmission};
use crate::exec::CommandRunner;
use crate::outbound::HttpClient;
use crate::watch::FileWatcher;

/// A native plugin handed to the builder.
pub(super) struct Native {
    pub(super) manifest: Manifest,
    pub(super) plugin: Arc<dyn Plugin>,
}

/// Builds a [`Host`]; reads like the config file.
#[derive(Default)]
pub struct HostBuilder {
    config: Option<HostConfig>,
    data_dir: Option<PathBuf>,
    loader: Option<Arc<dyn Loader>>,
    natives: Vec<Native>,
    kv: Option<Arc<dyn KvBackend>>,
    status: Option<Arc<dyn StatusSink>>,
    cache: Option<Arc<dyn CacheBackend>>,
    events: Option<Arc<dyn EventTransport>>,
    http: Option<Arc<dyn HttpClient>>,
    commands: Option<Arc<dyn CommandRunner>>,
    watcher: Option<Arc<dyn FileWatcher>>,
    admission: Option<Arc<dyn Admission>>,
    sql: Option<Arc<dyn SqlBackend>>,
}

impl std::fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuilder")
            .field(
                "config",
                &self.config.as_ref().and_then(|c| c.source.clone()),
            )
            .field("natives", &self.natives.len())
            .finish()
    }
}

impl HostBuilder {
    /// Keep plugins' key/value storage in `backend` (default: [`MemoryKv`], in memory; the
    /// `plugd` façade wires SQLite under `data_dir`).
    pub fn kv(mut self, backend: Arc<dyn KvBackend>) -> Self {
        self.kv = Some(backend);
        self
    }

    /// Keep plugins' cache entries in `backend` (default: [`MemoryCache`], in this process).
    pub fn cache(mut self, backend: Arc<dyn CacheBackend>) -> Self {
        self.cache = Some(backend);
        self
    }

    /// Keep plugins' SQL databases (the `database` capability) in `backend` (default: none, and
    /// a plugin granted `database` fails to load; the `plugd` façade wires SQLite under
    /// `data_dir`).
    pub fn sql(mut self, backend: Arc<dyn SqlBackend>) -> Self {
        self.sql = Some(backend);
        self
    }

    /// Carry events to and from the other hosts of a fleet through `transport` (default: none;
    /// events stay on this host).
    pub fn events(mut self, transport: Arc<dyn EventTransport>) -> Self {
        self.events = Some(transport);
        self
    }

    /// Send plugins' outbound HTTP (the `network` capability) through `client` (default: none;
    /// a plugin granted `network` fails to load). The `plugd` façade wires reqwest
    /// (`plugd-std`); the allowlist, caps, deadlines and auditing stay in the host.
    pub fn http(mut self, client: Arc<dyn HttpClient>) -> Self {
        self.http = Some(client);
        self
    }

    /// Run plugins' commands (the `exec` capability) through `runner` (default: none; a plugin
    /// granted `exec` fails to load). The `plugd` façade wires process groups with resource
    /// limits (`plugd-std`); `exec.allow`, the environment, caps, deadlines and auditing stay in
    /// the host.
    pub fn commands(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.commands = Some(runner);
        self
    }

    /// Watch plugin folders and the config file through `watcher` when `plugins.hot_reload` is
    /// on (default: none; hot reload is then off, with an error logged at start). The `plugd`
    /// façade wires notify (`plugd-std`).
    pub fn watcher(mut self, watcher: Arc<dyn FileWatcher>) -> Self {
        self.watcher = Some(watcher);
        self
    }

    /// Check each plugin folder with `admission` before it is loaded: the blocklist, installed
    /// packages' digests, signatures (default: [`NoAdmission`], which refuses to load when the
    /// config sets `plugins.blocked`, `trusted_keys` or `require_signatures`). The `plugd` façade
    /// wires `plugd-pkg`'s.
    pub fn admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Write the status records to `sink` (default: [`MemoryStatus`], in memory; the `plugd`
    /// façade wires the status tables of SQLite's `host.db`).
    pub fn status_sink(mut self, sink: Arc<dyn StatusSink>) -> Self {
        self.status = Some(sink);
        self
    }

    /// Use this host config (default: the embedded defaults, no plugins).
    pub fn config(mut self, config: HostConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Override the data directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The loader for plugins listed in the config (the wasm runtime).
    pub fn loader(mut self, loader: impl Loader) -> Self {
        self.loader = Some(Arc::new(loader));
        self
    }

    /// Add a native plugin. It gets the grants of its config entry when the config lists it, and
    /// otherwise every permission its manifest declares (it is compiled in: trusted code).
    pub fn native(mut self, manifest: Manifest, plugin: impl Plugin) -> Self {
        self.natives.push(Native {
            manifest,
            plugin: Arc::new(plugin),
        });
        self
    }

    /// Open the host's storage and make the host. Nothing is loaded until [`Host::start`].
    pub fn build(self) -> Result<Host, LoadError> {
        let mut config = self.config.unwrap_or_default();
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        crate::private::make_data_dir(&config.data_dir)?;
        let kv = self.kv.unwrap_or_else(|| Arc::new(MemoryKv::default()));
        let status_sink = self
            .status
            .unwrap_or_else(|| Arc::new(MemoryStatus::default()));
        let cache = self
            .cache
            .unwrap_or_else(|| Arc::new(MemoryCache::default()));
        let plugins: Arc<RwLock<Vec<Arc<Loaded>>>> = Arc::default();
        let (notices, receiver) = tokio::sync::mpsc::channel(NOTICE_CAPACITY);
        let dispatcher = Dispatcher::default();
        dispatcher.set_expose_errors(config.server.expose_errors);
        Ok(Host {
            inner: Arc::new(Inner {
                config,
                kv,
                stores: Default::default(),
                sql: self.sql,
                status_sink,
                loader: self.loader,
                natives: parking_lot::Mutex::new(self.natives),
                plugins: plugins.clone(),
                services: Arc::new(Services::new(Arc::new(super::providers::PluginList(
                    plugins,
                )))),
                dispatcher,
                bus: Arc::new(
                    self.events
                        .map_or_else(EventBus::default, EventBus::with_transport),
                ),
                cache,
                audit: Arc::default(),
                started_at: SystemTime::now(),
                reloads: Default::default(),
                watching: parking_lot::Mutex::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
                notices,
                supervisor: parking_lot::Mutex::new(SupervisorSlot {
                    receiver: Some(receiver),
                    ..SupervisorSlot::default()
                }),
                supervising: std::sync::atomic::AtomicBool::new(false),
                publishing: parking_lot::Mutex::new(()),
                stopping: std::sync::atomic::AtomicBool::new(false),
                status: Default::default(),
                http: self.http,
                commands: self.commands,
                watcher: self.watcher,
                admission: self.admission.unwrap_or_else(|| Arc::new(NoAdmission)),
            }),
        })
    }
}
