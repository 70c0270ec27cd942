//! The in-process host a test drives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use plugd_core::{
    Action, Event, Exchange, HookType, Host, Plugin, PluginError, PluginInfo, PluginStore, Status,
};
use plugd_manifest::{ExecRule, HostConfig, LimitsOverride, Manifest, Permission, PluginEntry};
use serde_json::{Map, Value};

use crate::logs::{LogLine, capture};
use crate::request::{TestRequest, TestResponse};
use crate::{Error, metrics};

/// How long `wait_*` helpers poll before they give up (generous: a loaded CI box is slow).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// Topic patterns the harness subscribes to so that it records every event: `*` matches one
/// segment, so one pattern per depth (up to 8 segments).
const TAP_DEPTHS: usize = 8;

/// The name the harness subscribes under.
pub const TAP: &str = "plugd-test";

/// A plugin folder to load, with the config and grants a test gives it.
///
/// By default a plugin is granted every permission its manifest declares, gets an empty config
/// (the schema's defaults apply) and runs one instance, so in-memory state is shared by calls.
///
/// ```
/// use plugd_test::TestPlugin;
/// use plugd_manifest::Permission;
/// let p = TestPlugin::new("../../examples/plugins/hello")
///     .config(serde_json::json!({ "greeting": "Hi" }))
///     .grants([Permission::Router]);
/// assert_eq!(p.path(), std::path::Path::new("../../examples/plugins/hello"));
/// ```
#[derive(Debug, Clone)]
pub struct TestPlugin {
    path: PathBuf,
    config: Map<String, Value>,
    grants: Option<Vec<Permission>>,
    edit: Vec<fn(&mut PluginEntry)>,
    network: Vec<String>,
    exec: Vec<ExecRule>,
    intercept_paths: Vec<String>,
    hide_headers: Vec<String>,
    instances: u32,
}

impl TestPlugin {
    /// The plugin in folder `path` (a manifest and its component).
    pub fn new(path: impl Into<PathBuf>) -> TestPlugin {
        TestPlugin {
            path: path.into(),
            config: Map::new(),
            grants: None,
            edit: Vec::new(),
            network: Vec::new(),
            exec: Vec::new(),
            intercept_paths: Vec::new(),
            hide_headers: Vec::new(),
            instances: 1,
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The plugin's config (a JSON object), validated against its manifest's schema at load.
    /// Panics when `config` is not an object.
    pub fn config(mut self, config: Value) -> TestPlugin {
        match config {
            Value::Object(map) => self.config = map,
            other => panic!("a plugin's config must be a JSON object, not {other}"),
        }
        self
    }

    /// Grant exactly these permissions (instead of all the manifest declares). Granting one
    /// the manifest does not declare fails the load, as in a host config.
    pub fn grants(mut self, grants: impl IntoIterator<Item = Permission>) -> TestPlugin {
        self.grants = Some(grants.into_iter().collect());
        self
    }

    /// Hosts the `network` permission may reach (`network.allow`).
    pub fn network_allow(mut self, hosts: &[&str]) -> TestPlugin {
        self.network = hosts.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Commands the `exec` permission may run, each with any arguments (plain `exec.allow`
    /// entries). [`exec_rules`](TestPlugin::exec_rules) pins their arguments.
    pub fn exec_allow(mut self, commands: &[&str]) -> TestPlugin {
        self.exec = commands.iter().map(|&c| ExecRule::any_args(c)).collect();
        self
    }

    /// `exec.allow` as the operator writes it, pinned arguments included
    /// (`ExecRule::pinned("git", ["status", "--porcelain"])`).
    pub fn exec_rules(mut self, rules: impl IntoIterator<Item = ExecRule>) -> TestPlugin {
        self.exec = rules.into_iter().collect();
        self
    }

    /// The paths its request hooks and middleware see with the `intercept` grant
    /// (`intercept.paths`; default every path).
    pub fn intercept_paths(mut self, globs: &[&str]) -> TestPlugin {
        self.intercept_paths = globs.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Request headers it never sees (`hide_headers`).
    pub fn hide_headers(mut self, names: &[&str]) -> TestPlugin {
        self.hide_headers = names.iter().map(|s| s.to_ascii_lowercase()).collect();
        self
    }

    /// Instances of a wasm plugin (default 1).
    pub fn instances(mut self, instances: u32) -> TestPlugin {
        self.instances = instances.max(1);
        self
    }

    /// Change anything else of the config entry (limits, failure policy, error threshold…).
    pub fn entry(mut self, edit: fn(&mut PluginEntry)) -> TestPlugin {
        self.edit.push(edit);
        self
    }

    fn to_entry(&self) -> Result<PluginEntry, Error> {
        let manifest = Manifest::from_path(&self.path).map_err(|e| Error::Load(e.to_string()))?;
        let path = std::path::absolute(&self.path)
            .map_err(|e| Error::Load(format!("plugin folder {}: {e}", self.path.display())))?;
        // A test's config is often the plugin author's (`tests.yaml` of a downloaded plugin):
        // never expanded from the environment of whoever runs the tests (a CI's secrets).
        if let Some(var) = plugd_manifest::env_reference(&Value::Object(self.config.clone())) {
            return Err(Error::Load(format!(
                "config of plugin '{}' refers to environment variable '{var}': a test's config is not expanded from the environment; write the value, or $${{ for a literal ${{",
                manifest.name
            )));
        }
        let mut entry = PluginEntry::new(manifest.name.clone(), path);
        entry.config = self.config.clone();
        let grants: Vec<Permission> = match &self.grants {
            Some(g) => g.clone(),
            None => manifest.permissions.iter().copied().collect(),
        };
        entry.permissions = grants.into_iter().map(|p| (p, true)).collect();
        entry.network.allow = self.network.clone();
        entry.exec.allow = self.exec.clone();
        entry.intercept.paths = self.intercept_paths.clone();
        entry.hide_headers = self.hide_headers.clone();
        entry.limits = Some(LimitsOverride {
            instances: Some(self.instances),
            ..LimitsOverride::default()
        });
        for edit in &self.edit {
            edit(&mut entry);
        }
        Ok(entry)
    }
}

/// Adds one native plugin to a host builder.
type AddNative = Box<dyn FnOnce(plugd_core::HostBuilder) -> plugd_core::HostBuilder>;

/// Builds a [`TestHost`].
pub struct TestHostBuilder {
    plugins: Vec<TestPlugin>,
    natives: Vec<(Manifest, AddNative)>,
    cache_dir: Option<PathBuf>,
    config: HostConfig,
}

impl std::fmt::Debug for TestHostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHostBuilder")
            .field("plugins", &self.plugins)
            .field("natives", &self.natives.len())
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl TestHostBuilder {
    /// Load a plugin folder.
    pub fn plugin(mut self, plugin: impl Into<TestPlugin>) -> TestHostBuilder {
        self.plugins.push(plugin.into());
        self
    }

    /// Add a native plugin, as `Host::builder().native(manifest, plugin)` does.
    pub fn native(mut self, manifest: Manifest, plugin: impl Plugin) -> TestHostBuilder {
        self.natives.push((
            manifest.clone(),
            Box::new(move |b: plugd_core::HostBuilder| b.native(manifest, plugin)),
        ));
        self
    }

    /// Keep compiled components in `dir` across test runs (by default each host compiles into
    /// its own temporary folder). Compiling a Python or JavaScript component takes seconds; a
    /// cached one loads in milliseconds. The folder is trusted: use one only you can write.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> TestHostBuilder {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Change the host config the plugins run under (global limits, thresholds, …) before
    /// the plugins are added to it.
    pub fn host_config(mut self, edit: impl FnOnce(&mut HostConfig)) -> TestHostBuilder {
        edit(&mut self.config);
        self
    }

    /// Load, initialize and start every plugin. A plugin that fails to load, initialize or
    /// start is an error naming it and its cause.
    pub async fn start(self) -> Result<TestHost, Error> {
        let logs = capture();
        let log_mark = logs.mark();
        let dir = tempfile::Builder::new()
            .prefix("plugd-test-")
            .tempdir()
            .map_err(|e| Error::Load(format!("temporary data folder: {e}")))?;
        let mut config = self.config;
        config.data_dir = dir.path().to_path_buf();
        let mut names = Vec::new();
        for p in &self.plugins {
            let entry = p.to_entry()?;
            names.push(entry.name.clone());
            config.plugins.plugins.push(entry);
        }
        let mut options = plugd_wasm::RuntimeOptions::from_config(&config);
        if let Some(cache) = self.cache_dir {
            options.cache_dir = cache;
        }
        let runtime =
            plugd_wasm::WasmRuntime::new(options).map_err(|e| Error::Load(e.to_string()))?;
        // The embedded defaults, as `plugd serve` has them: SQLite under the data folder.
        let sqlite = plugd_sqlite::Backends::open(&config.data_dir)
            .map_err(|e| Error::Load(e.to_string()))?;
        let http = plugd_std::ReqwestClient::new().map_err(|e| Error::Load(e.to_string()))?;
        let mut builder = Host::builder()
            .config(config)
            .loader(runtime)
            .kv(sqlite.kv)
            .sql(sqlite.sql)
            .status_sink(sqlite.status)
            .http(std::sync::Arc::new(http))
            .commands(std::sync::Arc::new(plugd_std::ProcessRunner))
            .watcher(std::sync::Arc::new(plugd_std::NotifyWatcher))
            .admission(std::sync::Arc::new(plugd_pkg::PackageAdmission));
        for (manifest, add) in self.natives {
            names.push(manifest.name.clone());
            builder = add(builder);
        }
        let host = builder.build().map_err(|e| Error::Load(e.to_string()))?;
        host.start().await.map_err(|e| Error::Load(e.to_string()))?;
        for name in &names {
            let info = host
                .plugin_info(name)
                .ok_or_else(|| Error::Load(format!("plugin '{name}' was not loaded")))?;
            if info.status != Status::Running {
                let cause = info
                    .last_error
                    .map(|e| e.message)
                    .unwrap_or_else(|| "no error recorded".into());
                host.shutdown().await;
                return Err(Error::Load(format!(
                    "plugin '{name}' is {} after start: {cause}",
                    info.status
                )));
            }
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let bus = host.event_bus();
        for depth in 1..=TAP_DEPTHS {
            let pattern = vec!["*"; depth].join(".");
            let sink = events.clone();
            bus.subscribe(
                TAP,
                &pattern,
                Arc::new(move |event: Event| {
                    sink.lock().push(event);
                    Box::pin(async { Ok(()) })
                }),
            );
        }
        Ok(TestHost {
            host,
            names,
            events,
            log_mark,
            _data: dir,
        })
    }
}

impl From<&str> for TestPlugin {
    fn from(path: &str) -> TestPlugin {
        TestPlugin::new(path)
    }
}

impl From<PathBuf> for TestPlugin {
    fn from(path: PathBuf) -> TestPlugin {
        TestPlugin::new(path)
    }
}

impl From<&Path> for TestPlugin {
    fn from(path: &Path) -> TestPlugin {
        TestPlugin::new(path)
    }
}

/// What a hook called directly with [`TestHost::hook`] decided, and the exchange as it left it.
#[derive(Debug, Clone)]
pub struct HookOutcome {
    /// `Continue`, or `Respond` with an early answer.
    pub action: Action,
    /// The request (and response) after the hook's changes.
    pub exchange: Exchange,
}

impl HookOutcome {
    /// The early answer, when the hook gave one.
    pub fn response(&self) -> Option<TestResponse> {
        match &self.action {
            Action::Respond(r) => Some(r.clone().into()),
            Action::Continue => None,
        }
    }
}

/// An in-process plugd host for tests: no HTTP server, a temporary data folder (storage,
/// databases, files), plugins loaded from their folders and native plugins.
///
/// ```no_run
/// # async fn t() -> Result<(), plugd_test::Error> {
/// use plugd_test::TestHost;
/// let t = TestHost::load("examples/plugins/hello").await?;
/// let res = t.get("/plugins/hello/greet?name=Ada").await;
/// res.assert_status(200);
/// assert_eq!(res.json()["message"], "Hello, Ada!");
/// assert_eq!(t.storage("hello").get("greetings").await.unwrap().as_deref(), Some(&b"1"[..]));
/// assert_eq!(t.metric("plugd_custom_greetings_total", &[]), Some(1.0));
/// t.shutdown().await;
/// # Ok(()) }
/// ```
pub struct TestHost {
    host: Host,
    names: Vec<String>,
    events: Arc<Mutex<Vec<Event>>>,
    log_mark: usize,
    _data: tempfile::TempDir,
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("plugins", &self.names)
            .field("data_dir", &self._data.path())
            .finish()
    }
}

impl TestHost {
    /// A builder: add plugins, then [`TestHostBuilder::start`].
    pub fn builder() -> TestHostBuilder {
        TestHostBuilder {
            plugins: Vec::new(),
            natives: Vec::new(),
            cache_dir: None,
            config: HostConfig::default(),
        }
    }

    /// A host running one plugin folder with its defaults.
    pub async fn load(path: impl Into<TestPlugin>) -> Result<TestHost, Error> {
        TestHost::builder().plugin(path).start().await
    }

    /// The host itself, for everything the harness does not wrap.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The names of the plugins loaded, in the order they were added.
    pub fn plugins(&self) -> &[String] {
        &self.names
    }

    /// The temporary data folder (`host.db`, `plugins/<name>/`).
    pub fn data_dir(&self) -> &Path {
        self._data.path()
    }

    /// Send a request through the dispatcher: `pre_request` hooks, middleware, the route,
    /// `post_request` and `pre_response` hooks, exactly as the server would.
    pub async fn request(&self, request: impl Into<TestRequest>) -> TestResponse {
        self.host
            .dispatcher()
            .handle(request.into().into_exchange())
            .await
            .into()
    }

    /// `GET target`.
    pub async fn get(&self, target: &str) -> TestResponse {
        self.request(TestRequest::get(target)).await
    }

    /// `POST target` with a body.
    pub async fn post(&self, target: &str, body: impl Into<bytes::Bytes>) -> TestResponse {
        self.request(TestRequest::post(target).body(body)).await
    }

    /// Call one plugin's hook directly, outside the request path (no other plugin runs).
    /// A response-side hook needs [`TestRequest::with_response`].
    pub async fn hook(
        &self,
        plugin: &str,
        hook: HookType,
        request: impl Into<TestRequest>,
    ) -> Result<HookOutcome, PluginError> {
        let mut exchange = request.into().into_exchange();
        let action = self.host.call_hook(plugin, hook, &mut exchange).await?;
        Ok(HookOutcome { action, exchange })
    }

    /// Publish an event as the host: every plugin subscribed to a matching pattern gets it (on
    /// its own queue, so use [`TestHost::wait_for`] to see its effect).
    pub fn publish(&self, topic: &str, payload: impl Into<bytes::Bytes>) -> Result<usize, Error> {
        self.host
            .events()
            .publish(topic, payload)
            .map_err(|e| Error::Call(e.to_string()))
    }

    /// Every event published since the host started (by plugins and by the test), in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// Events on `topic` (a pattern: `*` matches one segment).
    pub fn events_on(&self, topic: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| plugd_core::topic_matches(topic, &e.topic))
            .collect()
    }

    /// Call a plugin's exported service as `caller` would (the test is `"plugd-test"`).
    pub async fn call_service(
        &self,
        plugin: &str,
        service: &str,
        method: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, Error> {
        self.host
            .services()
            .call(TAP, plugin, service, method, payload)
            .await
            .map_err(|e| Error::Call(e.to_string()))
    }

    /// Run a plugin's command (`run-command`), as `plugd run` does.
    pub async fn run_command(
        &self,
        plugin: &str,
        command: &str,
        args: &[&str],
    ) -> Result<String, Error> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.host
            .run_command(plugin, command, &args)
            .await
            .map_err(|e| Error::Call(e.to_string()))
    }

    /// A plugin's key/value storage, to read what it stored or to fill it before a test.
    pub fn storage(&self, plugin: &str) -> PluginStore {
        self.host.storage(plugin)
    }

    /// A stored value as UTF-8 text.
    pub async fn stored(&self, plugin: &str, key: &str) -> Option<String> {
        self.storage(plugin)
            .get(key)
            .await
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// Wait until `plugin` stored `want` under `key` (a write made off the caller's path: by
    /// an event handler, a timer), or fail after `DEFAULT_WAIT`.
    pub async fn wait_for_stored(&self, plugin: &str, key: &str, want: &str) -> Result<(), Error> {
        let deadline = Instant::now() + DEFAULT_WAIT;
        while self.stored(plugin, key).await.as_deref() != Some(want) {
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "storage {key} of {plugin} did not become {want:?} within {}",
                    humantime::format_duration(DEFAULT_WAIT)
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// What plugin `plugin` logged (and what plugd logged about it) since the host started.
    /// Empty when the test binary installed its own `tracing` subscriber first.
    pub fn logs(&self, plugin: &str) -> Vec<LogLine> {
        capture().since(self.log_mark, |l| l.plugin.as_deref() == Some(plugin))
    }

    /// Whether log capture works in this process (no other global `tracing` subscriber).
    pub fn logs_captured(&self) -> bool {
        capture().installed()
    }

    /// Every metric in the Prometheus text format, as `/metrics` shows it.
    pub fn metrics(&self) -> String {
        self.host.render_metrics()
    }

    /// One sample of `/metrics`: the metric `name` whose labels include `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metrics::sample(&self.metrics(), name, labels)
    }

    /// What the admin API shows of a plugin: status, error count, last error, routes, hooks.
    pub fn info(&self, plugin: &str) -> Option<PluginInfo> {
        self.host.plugin_info(plugin)
    }

    /// Poll `condition` every 10 ms until it holds, or fail after `DEFAULT_WAIT` (events,
    /// `post_response` hooks and timers run off the caller's path).
    pub async fn wait_for(
        &self,
        what: &str,
        condition: impl Fn(&TestHost) -> bool,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + DEFAULT_WAIT;
        loop {
            if condition(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{what} did not happen within {}",
                    humantime::format_duration(DEFAULT_WAIT)
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop every plugin (`shutdown` hooks, `stop`, `cleanup`) and drop the data folder.
    pub async fn shutdown(self) {
        self.host.shutdown().await;
    }

    /// Status, by name, of every plugin loaded.
    pub fn statuses(&self) -> BTreeMap<String, Status> {
        self.host
            .list_plugins()
            .into_iter()
            .map(|p| (p.name, p.status))
            .collect()
    }
}
