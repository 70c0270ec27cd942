//! The host: loads plugins from the host config (through a [`Loader`]) and from native code,
//! orders them, runs their lifecycle and publishes their hooks and routes to the dispatcher.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::RwLock;
use plugd_manifest::{
    ErrorThreshold, FailurePolicy, HookType, HostConfig, Manifest, OnFailure, Permission,
    PluginEntry,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::access::RequestAccess;
use crate::audit::{AuditEntry, AuditLog};
use crate::cache::{CacheBackend, MemoryCache, PluginCache};
use crate::call::{Call, guarded};
use crate::capabilities::{Auditor, Capabilities, CapabilityOptions};
use crate::check::{Checked, check_entry, check_package, framework_error, merged_before_after};
use crate::cpu::CpuStatus;
use crate::database::SqlBackend;
use crate::dispatch::{DispatchTable, Dispatcher};
use crate::error::{BoxError, LoadError, PluginError};
use crate::events::{Event, EventBus, EventTransport, Publisher, SubscriptionInfo};
use crate::health::HealthReport;
use crate::kv::{KvBackend, MemoryKv, PluginStore};
use crate::order::{OrderError, OrderNode, order_nodes};
use crate::plugin::{Health, InitContext, Plugin, Registrations};
use crate::services::Services;
use crate::state::{DisabledBy, ErrorRecord, HookMetrics, Phase, PluginState, Status};
use crate::status::{MemoryStatus, StatusSink};
use crate::supervise::{NOTICE_CAPACITY, Notice, SupervisionStatus, SupervisorSlot};
use crate::tasks::Tasks;
use crate::threshold::ThresholdStatus;

mod prometheus;
mod reload;
mod watching;
pub use reload::{ReloadCounters, ReloadOutcome};
pub use watching::ConfigReloadReport;

/// The version plugins' `framework.version` requirements are checked against.
pub const FRAMEWORK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a [`Loader`] is given to prepare one plugin.
#[derive(Debug)]
pub struct LoaderContext<'a> {
    /// The plugin's directory.
    pub dir: &'a Path,
    /// Its manifest.
    pub manifest: &'a Manifest,
    /// Its entry in the host config.
    pub entry: &'a PluginEntry,
    /// The effective permissions.
    pub granted: &'a BTreeSet<Permission>,
    /// The validated config.
    pub config: &'a Map<String, Value>,
    /// Its storage.
    pub store: PluginStore,
    /// The host config.
    pub host: &'a HostConfig,
    /// The plugin's event publisher.
    pub publisher: Publisher,
    /// The host's services.
    pub services: Arc<Services>,
    /// Where the plugin's own metrics go.
    pub metrics: Arc<crate::PluginMetrics>,
    /// Its namespace of the cache (for the `cache` capability).
    pub cache: PluginCache,
    /// Where denied calls are recorded.
    pub audit: Arc<AuditLog>,
    /// Its gated capabilities (database, network, exec, config, filesystem), opened per its
    /// grants; denials are counted against it and audited.
    pub capabilities: Capabilities,
    /// Its live state: a denied host call counts against it here.
    pub state: Arc<PluginState>,
    /// The component's bytes as the package check verified them, for a folder installed from
    /// a package ([`plugd_pkg::check_for_load`]); `None` otherwise. A loader compiles these
    /// rather than reading the file again, which may have been changed since the check.
    pub component: Option<Arc<[u8]>>,
}

/// Turns a plugin directory into a [`Plugin`]: the wasm runtime is one.
#[async_trait]
pub trait Loader: Send + Sync + 'static {
    /// Prepare the plugin (compile, check its contract). Runs before `init`, off the request path.
    /// The error is the loader's own, boxed; the host reports it as [`LoadError::Runtime`]
    /// (`failed to load plugin '<name>': <error>`).
    async fn load(&self, ctx: LoaderContext<'_>) -> Result<Arc<dyn Plugin>, BoxError>;

    /// Add the loader's own series (a wasm engine's pool, say) to `/metrics`, in the
    /// Prometheus text format.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

/// Per-call deadlines of one plugin.
#[derive(Debug, Clone)]
pub(crate) struct CallLimits {
    pub(crate) timeout: Duration,
    pub(crate) hook_timeouts: BTreeMap<HookType, Duration>,
    /// Its instances (a wasm plugin's lifecycle calls run on each in turn).
    pub(crate) instances: u32,
}

impl CallLimits {
    /// The longest deadline any of its calls has.
    pub(crate) fn longest(&self) -> Duration {
        self.hook_timeouts
            .values()
            .copied()
            .fold(self.timeout, Duration::max)
    }

    pub(crate) fn hook_timeout(&self, hook: HookType) -> Duration {
        self.hook_timeouts
            .get(&hook)
            .copied()
            .unwrap_or(self.timeout)
    }
}

/// One plugin as the host holds it.
pub(crate) struct Loaded {
    pub(crate) name: String,
    pub(crate) manifest: Option<Manifest>,
    pub(crate) kind: &'static str,
    pub(crate) enabled: bool,
    pub(crate) plugin: Arc<dyn Plugin>,
    pub(crate) state: Arc<PluginState>,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) limits: CallLimits,
    pub(crate) granted: BTreeSet<Permission>,
    pub(crate) config: ArcSwap<Map<String, Value>>,
    pub(crate) store: PluginStore,
    pub(crate) registrations: ArcSwap<Registrations>,
    /// `<plugin dir>/assets`, canonical, when the plugin has one.
    pub(crate) assets: Option<PathBuf>,
    /// Its timer and background tasks while it runs.
    pub(crate) tasks: Tasks,
    /// Its gated capabilities, opened at load.
    pub(crate) capabilities: Option<Capabilities>,
    /// The reload gate of its name, shared by all its versions.
    pub(crate) gate: Arc<crate::gate::Gate>,
    /// The config entry it was loaded from (`None` for a native plugin).
    pub(crate) entry: parking_lot::RwLock<Option<PluginEntry>>,
    /// What it may see and do of requests (intercept scope, identity, hidden headers).
    pub(crate) access: Arc<RequestAccess>,
    /// Where what it is refused on the request path is counted and audited.
    pub(crate) auditor: Auditor,
}

/// Why a plugin's code is torn down (see [`Host::teardown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Teardown {
    /// The host stops.
    Shutdown,
    /// It is unloaded: its services and cache namespace go too.
    Unload,
    /// A reload replaces it (or puts the previous version back): its services go.
    Replace,
    /// It stops serving but stays (a failed start, a disable, a supervised restart): errors are
    /// logged, not counted.
    Quiesce,
}

/// Who gave a config: only the operator's host config file is expanded from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigFrom {
    HostConfigFile,
    Caller,
}

/// A placeholder for a plugin that never loaded: answers nothing, counts as failed.
struct Absent;
impl Plugin for Absent {}

static ABSENT: std::sync::LazyLock<Arc<dyn Plugin>> = std::sync::LazyLock::new(|| Arc::new(Absent));

/// Whether the host holds no code for this plugin (it never loaded).
pub(crate) fn is_absent(p: &Loaded) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(&p.plugin), Arc::as_ptr(&*ABSENT))
}

/// What the admin API and `ListPlugins` show of one plugin.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version ("" when the manifest could not be read).
    pub version: String,
    /// Description.
    pub description: String,
    /// Author.
    pub author: String,
    /// "wasm" or "native".
    pub kind: &'static str,
    /// Where a wasm plugin's instances are allocated: "pooling" or "on-demand".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocator: Option<&'static str>,
    /// Whether the plugin's code is loaded.
    pub loaded: bool,
    /// Whether the operator enabled it.
    pub enabled: bool,
    /// Its status.
    pub status: Status,
    /// The transitional step in progress, if any.
    pub phase: Option<&'static str>,
    /// When loading finished (RFC 3339).
    pub load_time: Option<String>,
    /// How long loading (read, compile, init, start) took.
    pub load_duration_ms: f64,
    /// Errors counted.
    pub error_count: u64,
    /// The last error.
    pub last_error: Option<ErrorRecord>,
    /// Effective permissions.
    pub permissions: Vec<Permission>,
    /// Registered hooks with priority.
    pub hooks: Vec<HookInfo>,
    /// Registered routes as `METHOD /full/path`.
    pub routes: Vec<String>,
    /// Event topic patterns it subscribes to.
    pub subscriptions: Vec<String>,
    /// Services it exports.
    pub exports: Vec<String>,
    /// Per-hook metrics of hooks that ran.
    pub hook_metrics: BTreeMap<HookType, HookMetrics>,
    /// Who disabled it, while disabled.
    pub disabled_by: Option<DisabledBy>,
    /// Its last answer to the health poll, and when.
    pub health: Option<HealthReport>,
    /// Its error threshold and the errors in its window.
    pub threshold: ThresholdStatus,
    /// Restarts by supervision.
    pub supervision: SupervisionStatus,
    /// Its CPU budget and throttling.
    pub cpu: CpuStatus,
}

/// The seed's PluginHealth: status, errors, per-hook metrics, and the plugin's own answer; with
/// the threshold, supervision and CPU budget.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginHealth {
    /// Status.
    pub status: Status,
    /// The transitional step in progress, if any.
    pub phase: Option<&'static str>,
    /// Who disabled it, while disabled.
    pub disabled_by: Option<DisabledBy>,
    /// Errors counted.
    pub error_count: u64,
    /// The last error and when.
    pub last_error: Option<ErrorRecord>,
    /// Per-hook metrics (execution count, total and average duration, errors).
    pub hook_metrics: BTreeMap<HookType, HookMetrics>,
    /// Counters of its routes.
    pub route_metrics: HookMetrics,
    /// What the plugin's `health-check` answered (running plugins only).
    pub reported: Option<Health>,
    /// When it answered (RFC 3339).
    pub checked_at: Option<String>,
    /// Its error threshold and the errors in its window.
    pub threshold: ThresholdStatus,
    /// Restarts by supervision.
    pub supervision: SupervisionStatus,
    /// Its CPU budget and throttling.
    pub cpu: CpuStatus,
}

/// One plugin's metrics, from [`Host::plugin_metrics`].
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginMetricsReport {
    /// The plugin.
    pub plugin: String,
    /// `plugd_plugin_load_duration_ms`.
    pub load_duration_ms: f64,
    /// `plugd_plugin_load_success`.
    pub load_success: bool,
    /// `plugd_plugin_status`.
    pub status: Status,
    /// `plugd_plugin_error_count`.
    pub error_count: u64,
    /// `plugd_plugin_hook_*` per hook type that ran.
    pub hooks: BTreeMap<HookType, HookMetrics>,
    /// Its routes' counters.
    pub routes: HookMetrics,
    /// The series it recorded through its context.
    pub recorded: Vec<crate::metrics::MetricSample>,
}

/// One registered hook.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HookInfo {
    /// Type.
    pub hook: HookType,
    /// Priority.
    pub priority: i32,
}

impl Loaded {
    fn info(&self) -> PluginInfo {
        let m = self.manifest.as_ref();
        let regs = self.registrations.load();
        let status = self.state.status();
        PluginInfo {
            name: self.name.clone(),
            version: m.map(|m| m.version.to_string()).unwrap_or_default(),
            description: m.map(|m| m.description.clone()).unwrap_or_default(),
            author: m.map(|m| m.author.clone()).unwrap_or_default(),
            kind: self.kind,
            allocator: self.plugin.allocator(),
            loaded: matches!(status, Status::Initialized | Status::Running),
            // Disabled by the operator since it loaded (the admin API, the CLI): not enabled now.
            enabled: self.enabled && self.state.disabled_by() != Some(DisabledBy::Operator),
            status,
            phase: self.state.phase().label(),
            load_time: self
                .state
                .loaded_at()
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            load_duration_ms: self.state.load_duration().as_secs_f64() * 1000.0,
            error_count: self.state.error_count(),
            last_error: self.state.last_error(),
            permissions: self.granted.iter().copied().collect(),
            hooks: regs
                .hooks
                .iter()
                .map(|(hook, priority)| HookInfo {
                    hook: *hook,
                    priority: *priority,
                })
                .collect(),
            routes: regs
                .routes
                .iter()
                .map(|r| format!("{} /plugins/{}{}", r.method, self.name, r.path))
                .collect(),
            subscriptions: regs.subscriptions.clone(),
            exports: regs.exports.clone(),
            hook_metrics: self.state.hook_metrics().into_iter().collect(),
            disabled_by: self.state.disabled_by(),
            health: self.state.health_report(),
            threshold: self.state.threshold_status(),
            supervision: self.state.supervision_status(),
            cpu: self.state.cpu_status(),
        }
    }

    fn health(&self, reported: Option<HealthReport>) -> PluginHealth {
        let (reported, checked_at) = match reported {
            Some(r) => (Some(r.health), Some(r.checked_at)),
            None => (None, None),
        };
        PluginHealth {
            status: self.state.status(),
            phase: self.state.phase().label(),
            disabled_by: self.state.disabled_by(),
            error_count: self.state.error_count(),
            last_error: self.state.last_error(),
            hook_metrics: self.state.hook_metrics().into_iter().collect(),
            route_metrics: self.state.routes().snapshot(),
            reported,
            checked_at,
            threshold: self.state.threshold_status(),
            supervision: self.state.supervision_status(),
            cpu: self.state.cpu_status(),
        }
    }
}

/// A native plugin handed to the builder.
struct Native {
    manifest: Manifest,
    plugin: Arc<dyn Plugin>,
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
        crate::private::make_data_dir(&config.data_dir).map_err(LoadError::Storage)?;
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
                sql: self.sql,
                status_sink,
                loader: self.loader,
                natives: parking_lot::Mutex::new(self.natives),
                plugins: plugins.clone(),
                services: Arc::new(Services::new(plugins)),
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
                status: Default::default(),
            }),
        })
    }
}

pub(crate) struct Inner {
    pub(crate) config: HostConfig,
    pub(crate) kv: Arc<dyn KvBackend>,
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

/// A plugin read from the config, ready to order.
pub(crate) struct Candidate {
    pub(crate) loaded: Loaded,
    dir: Option<PathBuf>,
    entry: Option<PluginEntry>,
    /// The component bytes the package check verified (see [`LoaderContext::component`]),
    /// until the loader takes them.
    component: Option<Arc<[u8]>>,
    priority: i32,
    /// `before`/`after` of the manifest and the config entry together.
    before: Vec<String>,
    after: Vec<String>,
    /// Why it cannot run, if it cannot.
    failure: Option<String>,
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

    /// The key/value storage of plugin `name`, as the plugin sees it.
    pub fn storage(&self, name: &str) -> PluginStore {
        PluginStore::new(name, self.inner.kv.clone())
    }

    /// When the host was built.
    pub fn started_at(&self) -> SystemTime {
        self.inner.started_at
    }

    /// Every plugin, in start order (failed ones included).
    pub fn list_plugins(&self) -> Vec<PluginInfo> {
        self.inner.plugins.read().iter().map(|p| p.info()).collect()
    }

    /// One plugin's info.
    pub fn plugin_info(&self, name: &str) -> Option<PluginInfo> {
        self.find(name).map(|p| p.info())
    }

    /// Whether a plugin is loaded (initialized or running).
    pub fn is_loaded(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|p| matches!(p.state.status(), Status::Initialized | Status::Running))
    }

    /// Each loaded plugin's present dependencies (the seed's `GetDependencyGraph`).
    pub fn dependency_graph(&self) -> BTreeMap<String, Vec<String>> {
        let plugins = self.inner.plugins.read();
        crate::order::dependency_graph(plugins.iter().filter_map(|p| p.manifest.as_ref()))
    }

    /// A plugin's health (the seed's `GetPluginHealth`): asks a running plugin for its own view
    /// now (within its call timeout) and stores the answer as the latest poll would.
    pub async fn plugin_health(&self, name: &str) -> Option<PluginHealth> {
        let p = self.find(name)?;
        if p.state.status() == Status::Running {
            let health = crate::health::check(&p).await;
            p.state.set_health_report(health);
        }
        let reported = (p.state.status() == Status::Running)
            .then(|| p.state.health_report())
            .flatten();
        Some(p.health(reported))
    }

    /// Every plugin's health (the seed's `GetAllHealth`), with each running plugin's answer to
    /// the latest health poll (`plugins.health_check_interval`). Calls no plugin.
    pub async fn all_health(&self) -> BTreeMap<String, PluginHealth> {
        self.health_snapshot()
    }

    /// [`Host::all_health`] without `async`: what is known now.
    pub fn health_snapshot(&self) -> BTreeMap<String, PluginHealth> {
        let plugins = self.inner.plugins.read().clone();
        plugins
            .iter()
            .map(|p| {
                let reported = (p.state.status() == Status::Running)
                    .then(|| p.state.health_report())
                    .flatten();
                (p.name.clone(), p.health(reported))
            })
            .collect()
    }

    /// The seed's `SetErrorThreshold`: replace a plugin's error threshold at run time (its window
    /// starts empty).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let dir = std::env::temp_dir().join(format!("plugd-doc-threshold-{}", std::process::id()));
    /// use plugd_core::Host;
    /// use plugd_manifest::{ErrorThreshold, ThresholdAction};
    /// use std::time::Duration;
    /// # let manifest = plugd_manifest::Manifest::from_str(
    /// #     "name: auth-plugin\nversion: 1.0.0\ndescription: d\nauthor: a\n",
    /// #     plugd_manifest::Format::Yaml, None).unwrap();
    /// # struct Auth;
    /// # impl plugd_core::Plugin for Auth {}
    /// let host = Host::builder().data_dir(&dir).native(manifest, Auth).build().unwrap();
    /// host.start().await.unwrap();
    /// host.set_error_threshold("auth-plugin", ErrorThreshold {
    ///     enabled: true,
    ///     max_errors: 100,
    ///     time_window: Duration::from_secs(300),
    ///     action: ThresholdAction::Disable,
    ///     reset_on_success: true,
    /// }).unwrap();
    /// let info = host.plugin_info("auth-plugin").unwrap();
    /// assert_eq!((info.threshold.max_errors, info.threshold.time_window.as_str()), (100, "5m"));
    /// host.shutdown().await;
    /// # });
    /// ```
    pub fn set_error_threshold(
        &self,
        name: &str,
        threshold: ErrorThreshold,
    ) -> Result<(), LoadError> {
        let p = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        if threshold.max_errors == 0 {
            return Err(LoadError::Invalid(format!(
                "error threshold of plugin '{name}': max_errors must be at least 1"
            )));
        }
        if threshold.time_window.is_zero() {
            return Err(LoadError::Invalid(format!(
                "error threshold of plugin '{name}': time_window must be longer than 0"
            )));
        }
        p.state.set_error_threshold(threshold);
        Ok(())
    }

    /// A plugin's config in force, secrets included: the plugin's own view. Anything shown to a
    /// person (the admin API, a dashboard, a log) should use [`Host::plugin_config_redacted`].
    pub fn plugin_config(&self, name: &str) -> Option<Arc<Map<String, Value>>> {
        self.find(name).map(|p| p.config.load_full())
    }

    /// A plugin's config in force with its `secret: true` values replaced by
    /// [`REDACTED`](plugd_manifest::REDACTED): what the admin API and the dashboard show.
    pub fn plugin_config_redacted(&self, name: &str) -> Option<Map<String, Value>> {
        let p = self.find(name)?;
        let config = p.config.load_full();
        Some(match &p.manifest {
            Some(m) => m.config.redact(&config),
            None => (*config).clone(),
        })
    }

    /// Change a plugin's config live: validate it against the manifest's schema, hand it to the
    /// plugin's `on_config_change`, and keep it only if the plugin accepts it.
    ///
    /// The config comes from outside the host config file (the admin API, the application): it
    /// is never expanded from the host's environment — a `${VAR}` is an error, `$${` a literal
    /// `${`. A secret key given as [`REDACTED`](plugd_manifest::REDACTED) (as
    /// [`Host::plugin_config_redacted`] shows it) keeps its current value.
    pub async fn update_plugin_config(
        &self,
        name: &str,
        config: &Map<String, Value>,
    ) -> Result<(), LoadError> {
        self.change_plugin_config(name, config, ConfigFrom::Caller)
            .await
    }

    /// [`Host::update_plugin_config`] with the config of the operator's host config file
    /// (`${VAR}` expanded), for a changed file applied live.
    pub(crate) async fn apply_plugin_config(
        &self,
        name: &str,
        config: &Map<String, Value>,
    ) -> Result<(), LoadError> {
        self.change_plugin_config(name, config, ConfigFrom::HostConfigFile)
            .await
    }

    async fn change_plugin_config(
        &self,
        name: &str,
        config: &Map<String, Value>,
        from: ConfigFrom,
    ) -> Result<(), LoadError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let p = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let manifest = p.manifest.as_ref().ok_or_else(|| {
            LoadError::Invalid(format!(
                "plugin '{name}' has no valid manifest; its config cannot change"
            ))
        })?;
        let validated = match from {
            ConfigFrom::HostConfigFile => manifest.config.validate(config),
            ConfigFrom::Caller => {
                let given = manifest.config.unredact(config, &p.config.load_full());
                manifest.config.validate_untrusted(&given)
            }
        }
        .map_err(|e| LoadError::Config {
            plugin: name.to_string(),
            message: e.to_string(),
        })?;
        if matches!(p.state.status(), Status::Running | Status::Initialized) {
            guarded(
                &p,
                Call::ConfigChange,
                p.plugin.on_config_change(&validated),
            )
            .await
            .map_err(|error| LoadError::ConfigRejected {
                plugin: name.to_string(),
                error,
            })?;
        }
        p.config.store(Arc::new(validated));
        tracing::info!(plugin = name, "config changed");
        Ok(())
    }

    /// Unload a plugin, as the seed's six steps: stop it, remove its hooks, subscriptions and
    /// middleware (with its routes, by republishing the dispatch table without it), clean it up,
    /// and remove it from the registry. Refused while running plugins depend on it, unless
    /// `force`; dependents are not unloaded.
    pub async fn unload_plugin(&self, name: &str, force: bool) -> Result<(), LoadError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let p = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let dependents: Vec<String> = self
            .inner
            .plugins
            .read()
            .iter()
            .filter(|d| d.state.status() == Status::Running)
            .filter(|d| {
                d.manifest
                    .as_ref()
                    .is_some_and(|m| m.dependencies.iter().any(|dep| dep.name == name))
            })
            .map(|d| d.name.clone())
            .collect();
        if !dependents.is_empty() && !force {
            return Err(LoadError::InUse {
                plugin: name.to_string(),
                dependents,
            });
        }
        let was_active = matches!(p.state.status(), Status::Running | Status::Initialized);
        if !was_active {
            // Nothing of its code runs: stop and cleanup are not called again.
            p.state
                .quiesced
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let unroute = || {
            let remaining: Vec<Arc<Loaded>> = {
                let mut plugins = self.inner.plugins.write();
                plugins.retain(|q| q.name != name);
                plugins.clone()
            };
            self.publish(&remaining);
        };
        self.teardown(&p, Teardown::Unload, unroute).await;
        p.state.set_status(Status::Unloaded);
        p.state.set_phase(Phase::Idle);
        tracing::info!(plugin = name, "plugin unloaded");
        Ok(())
    }

    /// Run a plugin's command (`plugd run`).
    pub async fn run_command(
        &self,
        plugin: &str,
        command: &str,
        args: &[String],
    ) -> Result<String, LoadError> {
        let p = self
            .find(plugin)
            .ok_or_else(|| LoadError::UnknownPlugin(plugin.to_string()))?;
        if p.state.status() != Status::Running {
            let mut message = format!(
                "plugin '{plugin}' is not running (status: {})",
                p.state.status()
            );
            if let Some(e) = p.state.last_error() {
                message.push_str(&format!("; last error: {}", e.message));
            }
            return Err(LoadError::Invalid(message));
        }
        guarded(
            &p,
            Call::Command(command),
            p.plugin.run_command(command, args),
        )
        .await
        .map_err(|e| LoadError::Invalid(format!("{plugin} {command}: {e}")))
    }

    /// The service container: typed imports and calls to any plugin's exported services.
    pub fn services(&self) -> Arc<Services> {
        self.inner.services.clone()
    }

    /// One plugin's metrics (the seed's `GetPluginMetrics`): load time and success, errors,
    /// per-hook and route counters, and the series it recorded about itself. The same numbers
    /// as `/metrics`, as a value.
    pub fn plugin_metrics(&self, name: &str) -> Option<PluginMetricsReport> {
        let p = self.find(name)?;
        let state = &p.state;
        Some(PluginMetricsReport {
            plugin: p.name.clone(),
            load_duration_ms: state.load_duration().as_secs_f64() * 1000.0,
            load_success: !matches!(state.status(), Status::Error),
            status: state.status(),
            error_count: state.error_count(),
            hooks: state.hook_metrics().into_iter().collect(),
            routes: state.routes().snapshot(),
            recorded: state.metrics().samples(),
        })
    }

    /// Denied capability calls, oldest first; of one plugin or of all.
    pub fn audit_log(&self, plugin: Option<&str>) -> Vec<AuditEntry> {
        self.inner.audit.entries(plugin)
    }

    /// A publisher for the host itself (any topic).
    pub fn events(&self) -> Publisher {
        Publisher::host(self.inner.bus.clone())
    }

    /// Every event subscription with its counters (delivered, dropped, failed, queued).
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.inner.bus.subscriptions()
    }

    /// Connect a running plugin's subscriptions to the bus.
    fn attach_subscriptions(&self, p: &Arc<Loaded>) {
        for topic in &p.registrations.load().subscriptions {
            let plugin = p.clone();
            self.inner.bus.subscribe(
                &p.name,
                topic,
                Arc::new(move |event: Event| {
                    let plugin = plugin.clone();
                    Box::pin(async move {
                        // A throttled subscriber gets the event when its window ends: its queue
                        // holds the rest (and drops, counted, when full).
                        while plugin.state.status() == Status::Running
                            && plugin.state.throttled().is_some()
                        {
                            tokio::time::sleep_until(plugin.state.cpu_window_end().into()).await;
                        }
                        if plugin.state.status() != Status::Running {
                            return Ok(());
                        }
                        crate::call::guarded(
                            &plugin,
                            crate::call::Call::Event(&event.topic),
                            plugin.plugin.on_event(&event),
                        )
                        .await
                    })
                }),
            );
        }
    }

    /// The plugin object the host holds for `name` (native code, or the wasm adapter), to call
    /// it directly — the test harness (`plugd-test`) calls one hook this way. `None` when no
    /// plugin of that name is loaded. Calls made through it bypass the dispatcher: no gate, no
    /// counters, no failure policy.
    pub fn plugin(&self, name: &str) -> Option<Arc<dyn Plugin>> {
        self.find(name)
            .filter(|p| !is_absent(p))
            .map(|p| p.plugin.clone())
    }

    /// Call one plugin's hook directly, outside the request path (the test harness does), as the
    /// dispatcher would call it: with the plugin's authority (its hidden headers taken out, the
    /// identity only if granted, what it is refused audited), its deadline and its counters.
    /// No other plugin runs; the stage is set to the hook.
    pub async fn call_hook(
        &self,
        name: &str,
        hook: HookType,
        ex: &mut crate::Exchange,
    ) -> Result<crate::Action, crate::PluginError> {
        let p = self
            .find(name)
            .filter(|p| !is_absent(p))
            .ok_or_else(|| crate::PluginError::Unavailable(format!("no plugin '{name}' loaded")))?;
        ex.stage = crate::Stage::Hook(hook);
        let entry = crate::dispatch::HookEntry {
            plugin: p,
            priority: 0,
        };
        crate::dispatch::call_hook(&entry, hook, ex).await
    }

    /// The event bus, to subscribe the embedding application (or a test) to plugins' events.
    pub fn event_bus(&self) -> Arc<EventBus> {
        self.inner.bus.clone()
    }

    /// The live state of a plugin.
    pub fn plugin_state(&self, name: &str) -> Option<Arc<PluginState>> {
        self.find(name).map(|p| p.state.clone())
    }

    pub(crate) fn find(&self, name: &str) -> Option<Arc<Loaded>> {
        self.inner
            .plugins
            .read()
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    fn limits(&self, entry: Option<&PluginEntry>) -> CallLimits {
        let global = &self.inner.config.plugins.limits;
        let mut limits = CallLimits {
            timeout: global.timeout,
            hook_timeouts: global.hook_timeouts.clone(),
            // The wasm runtime's default pool: one instance per tokio worker.
            instances: global.instances.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
            }),
        };
        if let Some(o) = entry.and_then(|e| e.limits.as_ref()) {
            if let Some(t) = o.timeout {
                limits.timeout = t;
            }
            if let Some(n) = o.instances {
                limits.instances = n;
            }
            limits
                .hook_timeouts
                .extend(o.hook_timeouts.iter().map(|(k, v)| (*k, *v)));
        }
        limits
    }

    /// Read one config entry: manifest, name, grants, config (see [`check_entry`]).
    pub(crate) fn read_entry(&self, entry: &PluginEntry) -> Result<Candidate, LoadError> {
        let Checked {
            manifest,
            granted,
            config,
            priority,
            before,
            after,
        } = check_entry(entry)?;
        let component = check_package(entry, &manifest, &self.inner.config.plugins)?;
        let mut loaded = self.placeholder(entry, Some(manifest));
        loaded.access = Arc::new(RequestAccess::new(&entry.name, &granted, Some(entry)));
        loaded.granted = granted;
        loaded.config = ArcSwap::from_pointee(config);
        loaded.assets = entry
            .path
            .join("assets")
            .canonicalize()
            .ok()
            .filter(|p| p.is_dir());
        Ok(Candidate {
            loaded,
            dir: Some(entry.path.clone()),
            entry: Some(entry.clone()),
            component,
            priority,
            before,
            after,
            failure: None,
        })
    }

    /// The config's plugin entries, plus, with `plugins.autoload`, an entry with no grants for
    /// every plugin folder of `plugins.directory` the config does not list.
    fn entries(&self, natives: &[Native]) -> Vec<PluginEntry> {
        let plugins = &self.inner.config.plugins;
        let mut entries = plugins.plugins.clone();
        if !plugins.autoload {
            return entries;
        }
        let Ok(dir) = std::fs::read_dir(&plugins.directory) else {
            tracing::warn!(directory = %plugins.directory.display(), "plugins.autoload: cannot read the plugins directory");
            return entries;
        };
        let mut found: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .filter(|p| Manifest::FILE_NAMES.iter().any(|f| p.join(f).exists()))
            .collect();
        found.sort();
        for path in found {
            let listed = entries.iter().any(|e| e.path == path);
            let name = match Manifest::from_path(&path) {
                Ok(m) => m.name,
                Err(_) => path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let taken = entries.iter().any(|e| e.name == name)
                || natives.iter().any(|n| n.manifest.name == name);
            if !listed && !taken {
                tracing::info!(plugin = %name, path = %path.display(), "autoloading an unlisted plugin, with no grants");
                entries.push(PluginEntry::new(name, path));
            }
        }
        entries
    }

    /// A candidate for a config entry that could not be read.
    fn failed_entry(&self, entry: &PluginEntry, error: &LoadError) -> Candidate {
        let loaded = self.placeholder(entry, None);
        loaded.state.fail(error.to_string());
        Candidate {
            loaded,
            dir: None,
            entry: Some(entry.clone()),
            component: None,
            priority: entry.priority.unwrap_or(100),
            before: entry.before.clone(),
            after: entry.after.clone(),
            failure: Some(error.to_string()),
        }
    }

    /// A plugin the host lists but does not run: one that failed to load, or one the operator
    /// disabled (status `disabled`; its manifest is read for display when it can be).
    fn placeholder(&self, entry: &PluginEntry, manifest: Option<Manifest>) -> Loaded {
        let state = self.new_state(&entry.name, Some(entry));
        // Until its grants are checked, the operator's grants bound what it guards when it
        // fails closed without ever running.
        let access = RequestAccess::new(&entry.name, &entry.granted(), Some(entry));
        let declared = manifest.as_ref().and_then(|m| m.failure_policy);
        Loaded {
            name: entry.name.clone(),
            kind: "wasm",
            enabled: entry.enabled,
            plugin: ABSENT.clone(),
            auditor: self.auditor(&entry.name, &state),
            state,
            failure_policy: entry.failure_policy.max(declared.unwrap_or_default()),
            access: Arc::new(access),
            manifest,
            limits: self.limits(Some(entry)),
            granted: BTreeSet::new(),
            config: ArcSwap::default(),
            store: self.storage(&entry.name),
            registrations: ArcSwap::default(),
            assets: None,
            tasks: Default::default(),
            capabilities: None,
            gate: self.gate(&entry.name),
            entry: parking_lot::RwLock::new(Some(entry.clone())),
        }
    }

    /// The dotted key of a plugin's entry in the host config, for errors that say what to change:
    /// `plugins.plugins[2]`, or `plugins.plugins[<new entry for 'x'>]` when it has none.
    pub(crate) fn entry_key(&self, name: &str) -> String {
        match self
            .inner
            .config
            .plugins
            .plugins
            .iter()
            .position(|e| e.name == name)
        {
            Some(i) => format!("plugins.plugins[{i}]"),
            None => format!("plugins.plugins[<new entry for '{name}'>]"),
        }
    }

    fn auditor(&self, name: &str, state: &Arc<PluginState>) -> Auditor {
        Auditor::new(name, Some(state.clone()), Some(self.inner.audit.clone()))
    }

    fn disabled_entry(&self, entry: &PluginEntry) -> Loaded {
        let manifest = Manifest::from_path(&entry.path)
            .ok()
            .filter(|m| m.name == entry.name);
        let loaded = self.placeholder(entry, manifest);
        loaded.state.set_disabled_by(Some(DisabledBy::Operator));
        loaded.state.set_status(Status::Disabled);
        loaded
    }

    /// The live state of a new plugin record: its threshold, supervision and CPU budget from its
    /// config entry (or the global settings), connected to the supervisor.
    fn new_state(&self, name: &str, entry: Option<&PluginEntry>) -> Arc<PluginState> {
        let plugins = &self.inner.config.plugins;
        let state = PluginState::new(name);
        let (threshold, supervision, limits) = match entry {
            Some(e) => (
                plugins.error_threshold_for(e),
                plugins.supervision_for(e),
                plugins.limits_for(e),
            ),
            None => (
                plugins.error_threshold.clone(),
                plugins.supervision.clone(),
                plugins.limits.clone(),
            ),
        };
        state.set_error_threshold(threshold);
        state.set_supervision(supervision);
        state.set_cpu_budget(limits.max_cpu_percent);
        state.connect(self.inner.notices.clone());
        Arc::new(state)
    }

    /// The config entry of a plugin: listed in the config, or found by `plugins.autoload`.
    pub(crate) fn entry_for(&self, name: &str) -> Option<PluginEntry> {
        // The entry in force: a config reload may have replaced the file's.
        if let Some(e) = self.find(name).and_then(|p| p.entry.read().clone()) {
            return Some(e);
        }
        if let Some(e) = self.inner.config.plugin(name) {
            return Some(e.clone());
        }
        if !self.inner.config.plugins.autoload {
            return None;
        }
        self.entries(&[]).into_iter().find(|e| e.name == name)
    }

    fn native_candidate(&self, native: Native) -> Result<Candidate, LoadError> {
        let entry = self.inner.config.plugin(&native.manifest.name).cloned();
        let granted = match &entry {
            Some(e) => plugd_manifest::effective_permissions(&native.manifest, e)
                .map_err(|e| LoadError::Invalid(e.to_string()))?,
            None => native.manifest.permissions.clone(),
        };
        let raw = entry.as_ref().map(|e| e.config.clone()).unwrap_or_default();
        let config = native
            .manifest
            .config
            .validate(&raw)
            .map_err(|e| LoadError::Config {
                plugin: native.manifest.name.clone(),
                message: e.to_string(),
            })?;
        let priority = entry
            .as_ref()
            .and_then(|e| e.priority)
            .or(native.manifest.priority)
            .unwrap_or(100);
        let (before, after) = merged_before_after(&native.manifest, entry.as_ref());
        let state = self.new_state(&native.manifest.name, entry.as_ref());
        Ok(Candidate {
            loaded: Loaded {
                name: native.manifest.name.clone(),
                kind: native.plugin.kind(),
                enabled: entry.as_ref().is_none_or(|e| e.enabled),
                plugin: native.plugin,
                auditor: self.auditor(&native.manifest.name, &state),
                state,
                failure_policy: entry
                    .as_ref()
                    .map(|e| e.failure_policy)
                    .unwrap_or_default()
                    .max(native.manifest.failure_policy.unwrap_or_default()),
                access: Arc::new(RequestAccess::new(
                    &native.manifest.name,
                    &granted,
                    entry.as_ref(),
                )),
                limits: self.limits(entry.as_ref()),
                granted,
                config: ArcSwap::from_pointee(config),
                store: self.storage(&native.manifest.name),
                registrations: ArcSwap::default(),
                assets: None,
                tasks: Default::default(),
                capabilities: None,
                gate: self.gate(&native.manifest.name),
                entry: parking_lot::RwLock::new(None),
                manifest: Some(native.manifest),
            },
            dir: None,
            entry,
            component: None,
            priority,
            before,
            after,
            failure: None,
        })
    }

    /// Load every enabled plugin of the config and every native plugin; initialize and start them
    /// in dependency and priority order; run `startup` hooks.
    ///
    /// With `plugins.on_failure: continue` (the default) a plugin that fails goes to `error`, its
    /// dependents go to `error` with "dependency 'x' failed", and the rest run. With `abort` the
    /// first failure is returned (plugins already started are stopped again).
    pub async fn start(&self) -> Result<(), LoadError> {
        let abort = self.inner.config.plugins.on_failure == OnFailure::Abort;
        self.inner
            .bus
            .start_transport()
            .await
            .map_err(|source| LoadError::Backend {
                what: "the event transport",
                source,
            })?;
        self.load_all().await?;
        let result = async {
            self.init_pass(abort).await?;
            self.start_pass(abort).await
        }
        .await;
        if let Err(e) = result {
            let plugins = self.inner.plugins.read().clone();
            self.stop_plugins(&plugins).await;
            return Err(e);
        }
        self.ensure_supervisor();
        self.ensure_status_writer();
        if self.inner.config.plugins.hot_reload
            && let Err(e) = self.watch_for_changes()
        {
            tracing::error!(error = %e, "hot_reload is on, but the files cannot be watched");
        }
        Ok(())
    }

    /// The seed's `LoadPluginsFromConfig`: read every enabled plugin of the host config (and every
    /// native plugin), check and order them, and load their code. Nothing is initialized yet.
    /// Under `on_failure: continue` a plugin that cannot load is listed with status `error`.
    pub async fn load_all(&self) -> Result<(), LoadError> {
        let abort = self.inner.config.plugins.on_failure == OnFailure::Abort;
        let mut candidates = Vec::new();
        let mut names = HashSet::new();
        // Listed (status `disabled`), never loaded.
        let mut disabled: Vec<Loaded> = Vec::new();
        let natives = std::mem::take(&mut *self.inner.natives.lock());
        let entries = self.entries(&natives);
        if self.inner.config.plugins.enabled {
            for entry in &entries {
                // A native plugin's entry gives it grants and config; it is not loaded from disk.
                if natives.iter().any(|n| n.manifest.name == entry.name) {
                    continue;
                }
                names.insert(entry.name.clone());
                if !entry.enabled {
                    disabled.push(self.disabled_entry(entry));
                    continue;
                }
                let candidate = match self.read_entry(entry) {
                    Ok(c) => c,
                    Err(e) if abort => return Err(e),
                    Err(e) => {
                        tracing::error!(plugin = %entry.name, error = %e, "plugin failed to load");
                        self.failed_entry(entry, &e)
                    }
                };
                candidates.push(candidate);
            }
        }
        for native in natives {
            if !names.insert(native.manifest.name.clone()) {
                return Err(LoadError::Duplicate(native.manifest.name.clone()));
            }
            let candidate = self.native_candidate(native)?;
            if candidate.loaded.enabled {
                candidates.push(candidate);
            } else {
                candidate
                    .loaded
                    .state
                    .set_disabled_by(Some(DisabledBy::Operator));
                candidate.loaded.state.set_status(Status::Disabled);
                disabled.push(candidate.loaded);
            }
        }

        check_frameworks(&mut candidates, abort)?;
        let order = order_candidates(&mut candidates, abort)?;
        let mut ordered: Vec<Candidate> = Vec::with_capacity(candidates.len());
        let mut slots: Vec<Option<Candidate>> = candidates.into_iter().map(Some).collect();
        for i in order {
            if let Some(c) = slots[i].take() {
                ordered.push(c);
            }
        }
        // Plugins that could not be ordered (already failed) go last, for display.
        ordered.extend(slots.into_iter().flatten());

        let mut failed: HashSet<String> = ordered
            .iter()
            .filter(|c| c.failure.is_some())
            .map(|c| c.loaded.name.clone())
            .collect();
        let mut loaded: Vec<Arc<Loaded>> = Vec::new();
        for mut c in ordered {
            if c.failure.is_none()
                && let Err(e) = self.load_one(&mut c, &failed).await
            {
                if abort {
                    return Err(e);
                }
                tracing::error!(plugin = %c.loaded.name, error = %e, "plugin failed to load");
                c.loaded.state.fail(e.to_string());
                failed.insert(c.loaded.name.clone());
            }
            loaded.push(Arc::new(c.loaded));
        }
        loaded.extend(disabled.into_iter().map(Arc::new));
        *self.inner.plugins.write() = loaded.clone();
        self.publish(&loaded);
        Ok(())
    }

    /// The seed's `InitializeAll`: initialize every loaded plugin in order, registering its hooks,
    /// routes, middleware, subscriptions, services and timers. Stops at the first failure and
    /// returns it; the plugins already initialized stay initialized.
    pub async fn initialize_all(&self) -> Result<(), LoadError> {
        self.init_pass(true).await
    }

    /// The seed's `StartAll`: start every initialized plugin in order, then run `startup` hooks.
    /// Stops at the first failure and returns it.
    pub async fn start_all(&self) -> Result<(), LoadError> {
        self.start_pass(true).await?;
        self.ensure_supervisor();
        self.ensure_status_writer();
        Ok(())
    }

    /// Initialize every plugin loaded and not yet initialized; with `stop_at_first`, the first
    /// failure ends the pass, else failures are recorded and dependents fail too.
    async fn init_pass(&self, stop_at_first: bool) -> Result<(), LoadError> {
        let plugins = self.inner.plugins.read().clone();
        let mut failed: HashSet<String> = plugins
            .iter()
            .filter(|p| p.state.status() == Status::Error)
            .map(|p| p.name.clone())
            .collect();
        let mut outcome = Ok(());
        for p in &plugins {
            if p.state.status() != Status::Loading {
                continue;
            }
            if let Err(e) = self.init_one(p, &failed).await {
                tracing::error!(plugin = %p.name, error = %e, "plugin failed to initialize");
                p.state.fail(e.to_string());
                failed.insert(p.name.clone());
                if stop_at_first {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.publish(&plugins);
        outcome
    }

    /// Start every initialized plugin; then `startup` hooks.
    async fn start_pass(&self, stop_at_first: bool) -> Result<(), LoadError> {
        let plugins = self.inner.plugins.read().clone();
        for p in &plugins {
            if p.state.status() != Status::Initialized {
                continue;
            }
            if let Err(e) = self.start_one(p).await {
                tracing::error!(plugin = %p.name, error = %e, "plugin failed to start");
                p.state.fail(e.to_string());
                self.fail_dependents(&plugins, &p.name);
                if stop_at_first {
                    return Err(e);
                }
            }
        }
        self.inner
            .dispatcher
            .run_lifecycle_hook(HookType::Startup)
            .await;
        Ok(())
    }

    /// Start one initialized plugin and connect its subscriptions and timers.
    pub(crate) async fn start_one(&self, p: &Arc<Loaded>) -> Result<(), LoadError> {
        p.state.set_phase(Phase::Starting);
        let result = guarded(p, Call::Start, p.plugin.start()).await;
        p.state.set_phase(Phase::Idle);
        result.map_err(|error| LoadError::Start {
            plugin: p.name.clone(),
            error,
        })?;
        p.state.set_status(Status::Running);
        self.attach_subscriptions(p);
        start_timers(p);
        tracing::info!(plugin = %p.name, kind = p.kind, "plugin running");
        Ok(())
    }

    /// The seed's `LoadPlugin`, at run time: read and check one plugin, require its dependencies
    /// to be running in satisfying versions, then load, initialize and start it and route to it.
    /// A plugin that fails is not added.
    pub async fn load_plugin(&self, entry: &PluginEntry) -> Result<(), LoadError> {
        if self.find(&entry.name).is_some() {
            return Err(LoadError::Duplicate(entry.name.clone()));
        }
        let mut c = self.read_entry(entry)?;
        if let Some(message) = c.loaded.manifest.as_ref().and_then(framework_error) {
            return Err(LoadError::Invalid(message));
        }
        if let Some(m) = &c.loaded.manifest {
            let plugins = self.inner.plugins.read().clone();
            for dep in &m.dependencies {
                let found = plugins
                    .iter()
                    .find(|p| p.name == dep.name && p.state.status() == Status::Running);
                match found.and_then(|p| p.manifest.as_ref()) {
                    None if dep.optional => {}
                    None => {
                        return Err(LoadError::Invalid(
                            OrderError::Missing {
                                plugin: m.name.clone(),
                                dependency: dep.name.clone(),
                                requirement: dep.version_text.clone(),
                            }
                            .to_string(),
                        ));
                    }
                    Some(d) if !dep.version.matches(&d.version) => {
                        return Err(LoadError::Invalid(
                            OrderError::Version {
                                plugin: m.name.clone(),
                                dependency: dep.name.clone(),
                                requirement: dep.version_text.clone(),
                                found: d.version.to_string(),
                            }
                            .to_string(),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        let none = HashSet::new();
        self.load_one(&mut c, &none).await?;
        let p = Arc::new(c.loaded);
        if let Err(e) = self.init_one(&p, &none).await {
            self.stop_plugins(std::slice::from_ref(&p)).await;
            return Err(e);
        }
        let plugins = {
            let mut list = self.inner.plugins.write();
            list.push(p.clone());
            list.clone()
        };
        if let Err(e) = self.start_one(&p).await {
            self.inner.plugins.write().retain(|q| !Arc::ptr_eq(q, &p));
            self.stop_plugins(std::slice::from_ref(&p)).await;
            return Err(e);
        }
        self.publish(&plugins);
        self.ensure_supervisor();
        Ok(())
    }

    /// Mark every plugin that (transitively) depends on `failed` as failed too.
    fn fail_dependents(&self, loaded: &[Arc<Loaded>], failed: &str) {
        let mut down: Vec<String> = vec![failed.to_string()];
        for p in loaded {
            let depends = p
                .manifest
                .as_ref()
                .is_some_and(|m| m.dependencies.iter().any(|d| down.contains(&d.name)));
            if depends && p.state.status() != Status::Error {
                let dep = p
                    .manifest
                    .as_ref()
                    .and_then(|m| m.dependencies.iter().find(|d| down.contains(&d.name)))
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                p.state
                    .fail(LoadError::Dependency { dependency: dep }.to_string());
                down.push(p.name.clone());
            }
        }
    }

    fn publisher_for(&self, p: &Loaded) -> Publisher {
        let publishes = p
            .manifest
            .as_ref()
            .map(|m| m.events.publishes.clone())
            .unwrap_or_default();
        Publisher::new(self.inner.bus.clone(), &p.name, &publishes)
    }

    /// Load one candidate: its code, through the loader (compile, check the contract).
    pub(crate) async fn load_one(
        &self,
        c: &mut Candidate,
        failed: &HashSet<String>,
    ) -> Result<(), LoadError> {
        let started = Instant::now();
        let name = c.loaded.name.clone();
        if let Some(dep) = failed_dependency(&c.loaded, failed) {
            return Err(LoadError::Dependency { dependency: dep });
        }
        c.loaded.state.set_status(Status::Loading);
        let capabilities = Capabilities::open(CapabilityOptions {
            plugin: &name,
            granted: &c.loaded.granted,
            host: &self.inner.config,
            entry: c.entry.as_ref(),
            plugin_dir: c.dir.as_deref(),
            auditor: Auditor::new(
                &name,
                Some(c.loaded.state.clone()),
                Some(self.inner.audit.clone()),
            ),
            sql: self.inner.sql.clone(),
        })
        .await
        .map_err(|message| LoadError::Runtime {
            plugin: name.clone(),
            source: message.into(),
        })?;
        c.loaded.capabilities = Some(capabilities.clone());
        if let (Some(dir), Some(entry), Some(manifest)) = (&c.dir, &c.entry, &c.loaded.manifest) {
            let loader = self
                .inner
                .loader
                .as_ref()
                .ok_or_else(|| LoadError::NoLoader(name.clone()))?;
            let config = c.loaded.config.load_full();
            let plugin = loader
                .load(LoaderContext {
                    dir,
                    manifest,
                    entry,
                    granted: &c.loaded.granted,
                    config: &config,
                    store: c.loaded.store.clone(),
                    host: &self.inner.config,
                    publisher: self.publisher_for(&c.loaded),
                    services: self.inner.services.clone(),
                    metrics: c.loaded.state.metrics().clone(),
                    cache: PluginCache::new(&name, self.inner.cache.clone()),
                    audit: self.inner.audit.clone(),
                    capabilities,
                    state: c.loaded.state.clone(),
                    component: c.component.take(),
                })
                .await
                .map_err(|source| LoadError::Runtime {
                    plugin: name.clone(),
                    source,
                })?;
            c.loaded.kind = plugin.kind();
            c.loaded.plugin = plugin;
        }
        c.loaded
            .state
            .set_loaded(SystemTime::now(), started.elapsed());
        Ok(())
    }

    /// Initialize one loaded plugin: its manifest's registrations, then its `init`.
    pub(crate) async fn init_one(
        &self,
        p: &Loaded,
        failed: &HashSet<String>,
    ) -> Result<(), LoadError> {
        let started = Instant::now();
        let name = p.name.clone();
        if let Some(dep) = failed_dependency(p, failed) {
            return Err(LoadError::Dependency { dependency: dep });
        }
        let registration = |e: crate::HostError| LoadError::Registration {
            plugin: name.clone(),
            message: e.to_string(),
        };
        p.state.set_phase(Phase::Initializing);
        let config = p.config.load_full();
        let (subscribes, exports) = p
            .manifest
            .as_ref()
            .map(|m| {
                (
                    m.events.subscribes.clone(),
                    m.exports.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
                )
            })
            .unwrap_or_default();
        let mut regs = Registrations::default();
        if let Some(m) = &p.manifest {
            for h in &m.hooks {
                regs.add_hook(h.hook, h.priority).map_err(registration)?;
            }
        }
        for service in &exports {
            regs.add_export(&name, &exports, service)
                .map_err(registration)?;
        }
        for topic in &subscribes {
            regs.add_subscription(&name, &subscribes, topic)
                .map_err(registration)?;
        }
        let publisher = self.publisher_for(p);
        let mut ctx = InitContext::new(&name, &config, &p.granted, &p.store, &mut regs)
            .with_events(&subscribes, &publisher)
            .with_services(&exports, &self.inner.services)
            .with_tasks(&p.tasks)
            .with_metrics(p.state.metrics())
            .with_cache(PluginCache::new(&name, self.inner.cache.clone()));
        if let Some(capabilities) = &p.capabilities {
            ctx = ctx.with_capabilities(capabilities.clone());
        }
        let result = guarded(p, Call::Init, p.plugin.init(&mut ctx)).await;
        p.state.set_phase(Phase::Idle);
        result.map_err(|error| LoadError::Init {
            plugin: name.clone(),
            error,
        })?;
        let declared = p
            .manifest
            .as_ref()
            .is_some_and(|m| m.permissions.contains(&Permission::Intercept));
        if let Err(message) = crate::dispatch::check_routes(&name, &regs) {
            return Err(LoadError::Registration {
                plugin: name.clone(),
                message,
            });
        }
        if let Some(why) = p.access.overreach(declared, &regs) {
            return Err(LoadError::Registration {
                plugin: name.clone(),
                message: format!(
                    "{why}, which needs the 'intercept' permission (a plugd addition): grant it in the host config with {}.permissions.intercept: true, and limit it with {0}.intercept.paths if it should see only some paths",
                    self.entry_key(&name)
                ),
            });
        }
        p.registrations.store(Arc::new(regs));
        p.state.set_status(Status::Initialized);
        let total = p.state.load_duration() + started.elapsed();
        p.state.set_loaded(SystemTime::now(), total);
        Ok(())
    }

    pub(crate) fn publish(&self, plugins: &[Arc<Loaded>]) {
        match DispatchTable::build(plugins) {
            Ok(table) => self.inner.dispatcher.publish(table),
            Err(e) => {
                tracing::error!(error = %e, "dispatch table rejected; keeping the previous one")
            }
        }
    }

    async fn stop_plugins(&self, plugins: &[Arc<Loaded>]) {
        for p in plugins.iter().rev() {
            if !matches!(p.state.status(), Status::Running | Status::Initialized) {
                continue;
            }
            self.teardown(p, Teardown::Shutdown, || {}).await;
            p.state.set_status(Status::Stopped);
            p.state.set_phase(Phase::Idle);
            tracing::info!(plugin = %p.name, "plugin stopped");
        }
    }

    /// The one teardown of a plugin's code, whatever ends it (shutdown, unload, a reload that
    /// replaces it, a failed start or a disable): its event delivery, services (when it goes
    /// away), cache namespace (when it is unloaded), timers and background tasks are released,
    /// then `stop` and `cleanup` run once through the guarded call (deadline, span), with
    /// `between` run after `stop` (an unload unroutes the plugin there). Failures are recorded
    /// as the plugin's errors, except under [`Teardown::Quiesce`] (it is not serving: logged).
    pub(crate) async fn teardown(&self, p: &Loaded, how: Teardown, between: impl FnOnce()) {
        p.state.set_phase(Phase::Stopping);
        self.inner.bus.unsubscribe_all(&p.name);
        if matches!(how, Teardown::Unload | Teardown::Replace) {
            self.inner.services.remove_plugin(&p.name);
        }
        if how == Teardown::Unload
            && let Err(e) = PluginCache::new(&p.name, self.inner.cache.clone())
                .clear()
                .await
        {
            tracing::warn!(plugin = %p.name, error = %e, "could not forget the unloaded plugin's cache entries");
        }
        p.tasks.cancel_all().await;
        let code_ran = !is_absent(p) && p.state.loaded_at().is_some();
        if !code_ran
            || p.state
                .quiesced
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            between();
            return;
        }
        let report = |step: &str, e: PluginError| {
            if how == Teardown::Quiesce {
                tracing::debug!(plugin = %p.name, step, error = %e, "{step} failed");
            } else {
                tracing::warn!(plugin = %p.name, step, error = %e, "plugin {step} failed");
                p.state.record_error(format!("{step}: {e}"));
            }
        };
        if let Err(e) = guarded(p, Call::Stop, p.plugin.stop()).await {
            report("stop", e);
        }
        between();
        if let Err(e) = guarded(p, Call::Cleanup, p.plugin.cleanup()).await {
            report("cleanup", e);
        }
    }

    /// The seed's `StopAll`: run `shutdown` hooks, then stop and clean up every plugin in reverse
    /// start order, each within its deadline (forced past it). Failures are recorded on the
    /// plugins and never stop the others.
    pub async fn stop_all(&self) {
        self.stop_watching();
        self.stop_supervisor().await;
        let _lifecycle = self.inner.lifecycle.lock().await;
        self.inner
            .dispatcher
            .run_lifecycle_hook(HookType::Shutdown)
            .await;
        let plugins = self.inner.plugins.read().clone();
        self.inner.dispatcher.publish(DispatchTable::default());
        self.stop_plugins(&plugins).await;
        // Disabled by a threshold just now, before the supervisor stopped them.
        for p in plugins
            .iter()
            .filter(|p| p.state.status() == Status::Disabled)
        {
            self.quiesce(p).await;
        }
        self.stop_status_writer().await;
    }

    /// [`Host::stop_all`], under the name a server uses.
    pub async fn shutdown(&self) {
        self.stop_all().await;
    }
}

/// Start a task per timer of a running plugin.
fn start_timers(p: &Arc<Loaded>) {
    let timers = p.registrations.load().timers.clone();
    for (name, every) in timers {
        let plugin = p.clone();
        p.tasks.spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            interval.tick().await; // the first tick is immediate: wait one interval instead
            loop {
                interval.tick().await;
                if plugin.state.status() != Status::Running || plugin.state.throttled().is_some() {
                    continue;
                }
                // Counted and recorded by the guarded call; a failed tick is not retried.
                let _ = crate::call::guarded(
                    &plugin,
                    crate::call::Call::Timer(&name),
                    plugin.plugin.on_tick(&name),
                )
                .await;
            }
        });
    }
}

/// The first dependency of `p` that failed.
fn failed_dependency(p: &Loaded, failed: &HashSet<String>) -> Option<String> {
    p.manifest
        .as_ref()?
        .dependencies
        .iter()
        .find(|d| failed.contains(&d.name))
        .map(|d| d.name.clone())
}

fn check_frameworks(candidates: &mut [Candidate], abort: bool) -> Result<(), LoadError> {
    for c in candidates.iter_mut().filter(|c| c.failure.is_none()) {
        let Some(message) = c.loaded.manifest.as_ref().and_then(framework_error) else {
            continue;
        };
        if abort {
            return Err(LoadError::Invalid(format!(
                "plugin '{}': {message}",
                c.loaded.name
            )));
        }
        c.loaded.state.fail(message.clone());
        c.failure = Some(message);
    }
    Ok(())
}

/// The start order of the candidates that can run. Under `continue`, a plugin whose
/// dependencies cannot be satisfied (or that sits in a cycle) is failed and left out.
fn order_candidates(candidates: &mut [Candidate], abort: bool) -> Result<Vec<usize>, LoadError> {
    loop {
        let live: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].failure.is_none())
            .collect();
        let input: Vec<OrderNode<'_>> = live
            .iter()
            .filter_map(|&i| {
                let c = &candidates[i];
                Some(OrderNode {
                    manifest: c.loaded.manifest.as_ref()?,
                    priority: c.priority,
                    before: &c.before,
                    after: &c.after,
                })
            })
            .collect();
        let error = match order_nodes(&input) {
            Ok(order) => return Ok(order.into_iter().map(|k| live[k]).collect()),
            Err(e) => e,
        };
        if abort {
            return Err(LoadError::Invalid(error.to_string()));
        }
        let culprits: Vec<String> = match &error {
            OrderError::Missing { plugin, .. } | OrderError::Version { plugin, .. } => {
                vec![plugin.clone()]
            }
            OrderError::Cycle(names) => names.clone(),
        };
        let mut changed = false;
        for c in candidates.iter_mut().filter(|c| c.failure.is_none()) {
            if culprits.contains(&c.loaded.name) {
                tracing::error!(plugin = %c.loaded.name, error = %error, "plugin cannot be ordered");
                c.loaded.state.fail(error.to_string());
                c.failure = Some(error.to_string());
                changed = true;
            }
        }
        if !changed {
            return Err(LoadError::Invalid(error.to_string()));
        }
    }
}
