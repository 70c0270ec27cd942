//! Fleet control of plugd on NATS JetStream.
//!
//! The instances of a fleet share a NATS server (the one `backends.nats` names) and a fleet name
//! (`fleet.name`). Through it each instance:
//!
//! - **says how it is**: every `fleet.heartbeat` it writes an [`InstanceReport`] (its plugins,
//!   their versions, status and route counters) to the key-value bucket `<name>-instances`,
//!   whose entries expire, so an instance that died drops out of the fleet by itself;
//! - **follows the fleet's changes**: a plugin version reloaded or a plugin config changed
//!   through one instance's admin API (`plugd reload`, `plugd install`, the dashboard) is
//!   recorded in the bucket `<name>-desired`, and the version's package is put in the object
//!   store `<name>-packages`; every other instance watches the bucket and applies the change
//!   (installs the package into its plugins folder and hot-reloads, or applies the config);
//! - **takes orders**: `plugd.fleet.<name>.<instance>.apply` asks one instance to go to a
//!   version (request/reply), which is how a [rollout](Fleet::start_rollout) moves the fleet
//!   one instance at a time, watching each one's error rate and p99 against the old version's
//!   and rolling every instance back when the new version is worse.
//!
//! Nothing here is in the request path.

#![warn(missing_docs)]

mod control;
mod report;
mod rollout;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use futures_util::StreamExt;
use parking_lot::Mutex;
use plugd_core::Host;
use plugd_manifest::{HostConfig, RolloutSettings};
use plugd_pkg::{InstallSource, Package, PluginsDir, Trust, UnpackLimits, VERSIONS_DIR};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

pub use report::{InstanceReport, PluginReport, Window};
pub use rollout::{RolloutReport, RolloutState, RolloutStep};

/// Largest package the fleet moves between instances.
pub const MAX_PACKAGE_BYTES: usize = 256 * 1024 * 1024;

/// How an instance joins its fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The fleet's name (`fleet.name`): the buckets and subjects are named after it.
    pub name: String,
    /// This instance's name, unique in the fleet.
    pub instance: String,
    /// Its admin API as the others reach it.
    pub advertise: String,
    /// How often it writes its report.
    pub heartbeat: Duration,
    /// How a rollout decides.
    pub rollout: RolloutSettings,
    /// How long a request to NATS or another instance may take.
    pub timeout: Duration,
}

impl FleetOptions {
    /// The options `config` gives (`fleet`, `backends.nats.timeout`); the instance is named
    /// after the host name and the listen port when `fleet.instance` does not name it.
    pub fn from_config(config: &HostConfig) -> FleetOptions {
        let instance = config.instance_name();
        let advertise = config.fleet.advertise.clone().unwrap_or_else(|| {
            let listen = config
                .admin
                .listen_addr()
                .unwrap_or_else(|| config.server.listen.clone());
            format!("http://{listen}")
        });
        FleetOptions {
            name: config.fleet.name.clone(),
            instance,
            advertise,
            heartbeat: config.fleet.heartbeat,
            rollout: config.fleet.rollout.clone(),
            timeout: config
                .backends
                .nats
                .as_ref()
                .map_or(Duration::from_secs(5), |n| n.timeout),
        }
    }
}

/// Why a fleet call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// NATS refused or did not answer.
    #[error("fleet: NATS failed to {what}: {message}")]
    Nats {
        /// What the fleet was doing.
        what: String,
        /// What NATS said.
        message: String,
    },
    /// A version could not be applied on this instance.
    #[error("fleet: {0}")]
    Apply(String),
    /// The request cannot be done (an unknown plugin or version, a rollout already running).
    #[error("fleet: {0}")]
    Refused(String),
}

fn nats(what: impl Into<String>) -> impl FnOnce(&dyn std::fmt::Display) -> FleetError {
    let what = what.into();
    move |e| FleetError::Nats {
        what,
        message: e.to_string(),
    }
}

/// A version or config change recorded for the fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Desired {
    /// The instance the change was made on (it has it already).
    origin: String,
    /// `version.<plugin>`: the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    /// `config.<plugin>`: the config as the admin gave it (secret keys may be `[redacted]`:
    /// each instance then keeps its own value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<Map<String, Value>>,
}

/// What `…apply` asks of an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApplyCommand {
    plugin: String,
    version: String,
}

/// What the instance answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApplyReply {
    ok: bool,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    error: String,
}

/// This instance's membership of its fleet. Cheap to clone; the background tasks end when the
/// last clone is dropped or [`Fleet::leave`] is called.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("name", &self.inner.options.name)
            .field("instance", &self.inner.options.instance)
            .finish()
    }
}

struct Inner {
    host: Host,
    options: FleetOptions,
    client: async_nats::Client,
    instances: kv::Store,
    desired: kv::Store,
    packages: object_store::ObjectStore,
    started_at: String,
    /// The last report of every instance, as the watch of the instances bucket delivered it.
    reports: Mutex<std::collections::BTreeMap<String, InstanceReport>>,
    /// One version change at a time on this instance.
    applying: tokio::sync::Mutex<()>,
    rollouts: Mutex<Vec<Arc<Mutex<RolloutReport>>>>,
    next_rollout: AtomicU64,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// A bucket's name: the fleet's, then what it holds (`plugd-instances`).
fn bucket(fleet: &str, what: &str) -> String {
    format!("{fleet}-{what}")
}

impl Fleet {
    /// Join the fleet through `client`: make its buckets where missing, write this instance's
    /// first report, apply the changes the fleet recorded while it was away, and start the
    /// heartbeat, the watcher of changes and the command service.
    pub async fn join(
        host: Host,
        client: async_nats::Client,
        options: FleetOptions,
    ) -> Result<Fleet, FleetError> {
        if options.name.is_empty()
            || !options
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(FleetError::Refused(format!(
                "fleet.name '{}' must be letters, digits, '-' or '_'",
                options.name
            )));
        }
        let js = jetstream::new(client.clone());
        let ttl = (options.heartbeat * 5).max(Duration::from_secs(10));
        let instances = key_value(
            &js,
            kv::Config {
                bucket: bucket(&options.name, "instances"),
                description: "plugd: the instances of the fleet and how they are".into(),
                max_age: ttl,
                history: 1,
                ..Default::default()
            },
        )
        .await?;
        let desired = key_value(
            &js,
            kv::Config {
                bucket: bucket(&options.name, "desired"),
                description: "plugd: plugin versions and config changes for every instance".into(),
                history: 5,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        let name = bucket(&options.name, "packages");
        let packages = match js.get_object_store(&name).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: name.clone(),
                    description: Some("plugd: plugin packages of the fleet".into()),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| nats(format!("create the object store {name}"))(&e))?,
        };
        let fleet = Fleet {
            inner: Arc::new(Inner {
                host,
                options,
                client,
                instances,
                desired,
                packages,
                started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
                reports: Mutex::new(std::collections::BTreeMap::new()),
                applying: tokio::sync::Mutex::new(()),
                rollouts: Mutex::new(Vec::new()),
                next_rollout: AtomicU64::new(1),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        fleet.beat().await?;
        let commands = fleet
            .inner
            .client
            .subscribe(fleet.apply_subject(&fleet.inner.options.instance))
            .await
            .map_err(|e| nats("subscribe to the fleet's commands")(&e))?;
        let changes = fleet
            .inner
            .desired
            .watch_with_history(">")
            .await
            .map_err(|e| nats("watch the fleet's changes")(&e))?;
        let weak = Arc::downgrade(&fleet.inner);
        let heartbeat = tokio::spawn({
            let weak = weak.clone();
            async move {
                loop {
                    let Some(inner) = weak.upgrade() else { return };
                    let period = inner.options.heartbeat;
                    if let Err(e) = (Fleet { inner }).beat().await {
                        tracing::warn!(error = %e, "fleet heartbeat not written");
                    }
                    tokio::time::sleep(period).await;
                }
            }
        });
        let serve = tokio::spawn({
            let weak = weak.clone();
            async move { serve_commands(weak, commands).await }
        });
        let reports = tokio::spawn({
            let weak = weak.clone();
            async move { follow_reports(weak).await }
        });
        let follow = tokio::spawn(async move { follow_changes(weak, changes).await });
        fleet
            .inner
            .tasks
            .lock()
            .extend([heartbeat, serve, reports, follow]);
        tracing::info!(fleet = %fleet.inner.options.name, instance = %fleet.inner.options.instance, "joined the fleet");
        Ok(fleet)
    }

    /// Stop the heartbeat, the watcher and the command service, and drop out of the instances
    /// bucket at once.
    pub async fn leave(&self) {
        for task in self.inner.tasks.lock().drain(..) {
            task.abort();
        }
        let _ = self
            .inner
            .instances
            .delete(&self.inner.options.instance)
            .await;
    }

    /// This instance's name in the fleet.
    pub fn instance(&self) -> &str {
        &self.inner.options.instance
    }

    /// The fleet's name.
    pub fn name(&self) -> &str {
        &self.inner.options.name
    }

    fn apply_subject(&self, instance: &str) -> String {
        format!("plugd.fleet.{}.{instance}.apply", self.inner.options.name)
    }

    async fn beat(&self) -> Result<(), FleetError> {
        let o = &self.inner.options;
        let report = InstanceReport::of(
            &self.inner.host,
            &o.instance,
            &o.advertise,
            &self.inner.started_at,
        );
        let bytes = serde_json::to_vec(&report).expect("a report serializes");
        self.inner
            .instances
            .put(&o.instance, bytes.into())
            .await
            .map_err(|e| nats("write this instance's report")(&e))?;
        Ok(())
    }

    /// The instances whose last report is fresh (within three heartbeats and a second), by
    /// name: from the watch of the instances bucket this instance keeps (no call to NATS), with
    /// this instance's own report taken now.
    pub async fn instances(&self) -> Result<Vec<InstanceReport>, FleetError> {
        let fresh = self.inner.options.heartbeat.as_millis() as u64 * 3 + 1000;
        let now = report::now_ms();
        let o = &self.inner.options;
        let mut reports = self.inner.reports.lock().clone();
        reports.insert(
            o.instance.clone(),
            InstanceReport::of(
                &self.inner.host,
                &o.instance,
                &o.advertise,
                &self.inner.started_at,
            ),
        );
        Ok(reports
            .into_values()
            .filter(|r| now.saturating_sub(r.at_ms) <= fresh)
            .collect())
    }

    /// This instance's report, written to the fleet now.
    pub async fn refresh(&self) -> Result<InstanceReport, FleetError> {
        self.beat().await?;
        let o = &self.inner.options;
        Ok(InstanceReport::of(
            &self.inner.host,
            &o.instance,
            &o.advertise,
            &self.inner.started_at,
        ))
    }

    /// Tell the fleet that `plugin` now runs the version this instance runs (after a reload
    /// through its admin API): its package goes to the fleet's store, and every other instance
    /// installs and reloads it.
    pub async fn announce_version(&self, plugin: &str) -> Result<String, FleetError> {
        let version = self.running_version(plugin)?;
        self.publish_package(plugin, &version).await?;
        self.put_desired(
            &format!("version.{plugin}"),
            Desired {
                origin: self.inner.options.instance.clone(),
                version: Some(version.clone()),
                config: None,
            },
        )
        .await?;
        Ok(version)
    }

    /// Tell the fleet that `plugin`'s config changed to `config` (as the admin gave it): every
    /// other instance applies it.
    pub async fn announce_config(
        &self,
        plugin: &str,
        config: &Map<String, Value>,
    ) -> Result<(), FleetError> {
        self.put_desired(
            &format!("config.{plugin}"),
            Desired {
                origin: self.inner.options.instance.clone(),
                version: None,
                config: Some(config.clone()),
            },
        )
        .await
    }

    async fn put_desired(&self, key: &str, desired: Desired) -> Result<(), FleetError> {
        let bytes = serde_json::to_vec(&desired).expect("a change serializes");
        self.inner
            .desired
            .put(key, bytes.into())
            .await
            .map_err(|e| nats(format!("record {key}"))(&e))?;
        Ok(())
    }

    fn running_version(&self, plugin: &str) -> Result<String, FleetError> {
        self.inner
            .host
            .plugin_info(plugin)
            .map(|i| i.version)
            .ok_or_else(|| {
                FleetError::Refused(format!("no plugin '{plugin}' is loaded on this instance"))
            })
    }

    fn plugins_dir(&self) -> PluginsDir {
        PluginsDir::new(self.inner.host.config().plugins.directory.clone())
    }

    /// `plugin`'s folder on this instance, which must be `<plugins.directory>/<plugin>`: the
    /// fleet installs versions there, as `plugd install` does.
    fn plugin_folder(&self, plugin: &str) -> Result<PathBuf, FleetError> {
        let config = self.inner.host.config();
        let expected = config.plugins.directory.join(plugin);
        match config.plugin(plugin) {
            Some(entry) if entry.path != expected => Err(FleetError::Refused(format!(
                "plugin '{plugin}' is loaded from {}, not from plugins.directory ({}): the fleet installs versions only into plugins.directory",
                entry.path.display(),
                config.plugins.directory.display()
            ))),
            _ => Ok(expected),
        }
    }

    /// `plugin` at `version` from this instance's plugins folder (the installed version or a
    /// kept one), if there.
    fn local_package(&self, plugin: &str, version: &str) -> Result<Option<Package>, FleetError> {
        let folder = self.plugin_folder(plugin)?;
        let kept = self
            .plugins_dir()
            .root()
            .join(VERSIONS_DIR)
            .join(plugin)
            .join(version);
        for dir in [folder, kept] {
            if !dir.is_dir() {
                continue;
            }
            let package = Package::from_dir(&dir)
                .map_err(|e| FleetError::Apply(format!("cannot pack {}: {e}", dir.display())))?;
            if package.manifest().version.to_string() == version
                && package.manifest().name == plugin
            {
                return Ok(Some(package));
            }
        }
        Ok(None)
    }

    fn object_name(plugin: &str, version: &str) -> String {
        format!("{plugin}/{version}")
    }

    /// Put `plugin` at `version` from this instance's folder into the fleet's store (unless it
    /// is there already).
    async fn publish_package(&self, plugin: &str, version: &str) -> Result<(), FleetError> {
        let name = Self::object_name(plugin, version);
        if self.inner.packages.info(&name).await.is_ok() {
            return Ok(());
        }
        let package = self.local_package(plugin, version)?.ok_or_else(|| {
            FleetError::Refused(format!(
                "{plugin} {version} is neither installed nor kept in this instance's plugins folder, nor in the fleet's package store: install it first (`plugd install <package>`)"
            ))
        })?;
        let bytes = package
            .to_bytes()
            .map_err(|e| FleetError::Apply(format!("cannot pack {plugin} {version}: {e}")))?;
        self.inner
            .packages
            .put(name.as_str(), &mut bytes.as_slice())
            .await
            .map_err(|e| nats(format!("store the package {name}"))(&e))?;
        Ok(())
    }

    async fn fetch_package(&self, plugin: &str, version: &str) -> Result<Package, FleetError> {
        if let Some(p) = self.local_package(plugin, version)? {
            return Ok(p);
        }
        let name = Self::object_name(plugin, version);
        let mut object = self.inner.packages.get(&name).await.map_err(|e| {
            FleetError::Apply(format!(
                "{plugin} {version} is not in this instance's plugins folder and the fleet's package store does not give it: {e}"
            ))
        })?;
        let mut bytes = Vec::new();
        (&mut object)
            .take(MAX_PACKAGE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| nats(format!("read the package {name}"))(&e))?;
        if bytes.len() > MAX_PACKAGE_BYTES {
            return Err(FleetError::Apply(format!(
                "the package {name} is larger than {MAX_PACKAGE_BYTES} bytes"
            )));
        }
        let package = Package::read(&bytes, &UnpackLimits::default())
            .map_err(|e| FleetError::Apply(format!("the package {name} is refused: {e}")))?;
        let m = package.manifest();
        if m.name != plugin || m.version.to_string() != version {
            return Err(FleetError::Apply(format!(
                "the package {name} holds {} {}",
                m.name, m.version
            )));
        }
        Ok(package)
    }

    /// Go to `version` of `plugin` on this instance: the package from this instance's folder
    /// or the fleet's store, checked as `plugd install` checks it (signatures, trusted keys),
    /// installed into the plugins folder, then hot-reloaded. When the reload fails, the host
    /// keeps the old version running and the folder goes back to it. Returns (from, to).
    pub async fn apply_version(
        &self,
        plugin: &str,
        version: &str,
    ) -> Result<(String, String), FleetError> {
        let _one = self.inner.applying.lock().await;
        let from = self.running_version(plugin)?;
        if from == version {
            return Ok((from.clone(), from));
        }
        // Installed on disk already (`plugd install --no-reload`): only the reload is missing.
        let installed = self
            .plugins_dir()
            .get(plugin)
            .ok()
            .flatten()
            .is_some_and(|e| e.version.to_string() == version);
        if !installed {
            let package = self.fetch_package(plugin, version).await?;
            self.install(&package).await?;
        }
        match self.inner.host.reload_plugin(plugin).await {
            Ok(outcome) => {
                tracing::info!(plugin, from = %outcome.from_version, to = %outcome.to_version, "fleet: version applied");
                Ok((outcome.from_version, outcome.to_version))
            }
            Err(e) => {
                // The host kept the old version running; the folder goes back to it.
                if let Ok(old) = self.fetch_package(plugin, &from).await
                    && let Err(undo) = self.install(&old).await
                {
                    tracing::error!(plugin, error = %undo, "fleet: the plugins folder could not go back to the running version");
                }
                Err(FleetError::Apply(format!(
                    "{plugin} {version} did not load on {}: {e}",
                    self.inner.options.instance
                )))
            }
        }
    }

    async fn install(&self, package: &Package) -> Result<(), FleetError> {
        let config = self.inner.host.config();
        let m = package.manifest();
        let what = format!("{} {}", m.name, m.version);
        let trust = Trust::from_files(
            config.plugins.require_signatures,
            config.plugins.trusted_keys.iter().map(|p| p.as_path()),
        )
        .map_err(|e| FleetError::Apply(e.to_string()))?;
        let state = trust
            .check(&what, &package.digest(), package.signature())
            .map_err(|e| FleetError::Apply(e.to_string()))?;
        let bytes = package
            .to_bytes()
            .map_err(|e| FleetError::Apply(format!("cannot pack {what}: {e}")))?;
        let source = InstallSource {
            package_sha256: plugd_pkg::sha256_hex(&bytes),
            source: format!("fleet {}", self.inner.options.name),
            signature_state: state,
        };
        let dir = self.plugins_dir();
        let package = package.clone();
        tokio::task::spawn_blocking(move || dir.install(&package, &source))
            .await
            .map_err(|e| FleetError::Apply(format!("installing {what}: {e}")))?
            .map_err(|e| FleetError::Apply(format!("cannot install {what}: {e}")))?;
        Ok(())
    }

    /// Ask `instance` to go to `version` of `plugin` (it answers when the reload is done).
    async fn command(
        &self,
        instance: &str,
        plugin: &str,
        version: &str,
    ) -> Result<(String, String), FleetError> {
        let payload = serde_json::to_vec(&ApplyCommand {
            plugin: plugin.to_string(),
            version: version.to_string(),
        })
        .expect("a command serializes");
        let timeout = self.inner.options.rollout.step_timeout;
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(timeout));
        let answer = self
            .inner
            .client
            .send_request(self.apply_subject(instance), request)
            .await
            .map_err(|e| nats(format!("ask {instance} to apply {plugin} {version}"))(&e))?;
        let reply: ApplyReply = serde_json::from_slice(&answer.payload).map_err(|e| {
            FleetError::Apply(format!("{instance} answered what is not a reply: {e}"))
        })?;
        if reply.ok {
            Ok((reply.from, reply.to))
        } else {
            Err(FleetError::Apply(reply.error))
        }
    }
}

/// A connection to the NATS server of `backends.nats` (the password never in a message): the
/// client reconnects by itself when the server comes back.
pub async fn connect(
    settings: &plugd_manifest::NatsSettings,
) -> Result<async_nats::Client, FleetError> {
    let shown = plugd_manifest::redact_url(&settings.url);
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(settings.timeout))
        .retry_on_initial_connect()
        .name("plugd")
        .connect(settings.url.as_str());
    // With retry_on_initial_connect the client comes back at once; wait for the first connection.
    let client = connect.await.map_err(|e| FleetError::Nats {
        what: format!("connect to {shown}"),
        message: e.to_string(),
    })?;
    let deadline = std::time::Instant::now() + settings.connect_timeout;
    while client.connection_state() != async_nats::connection::State::Connected {
        if std::time::Instant::now() >= deadline {
            return Err(FleetError::Nats {
                what: format!("connect to {shown}"),
                message: format!(
                    "no connection within {}",
                    humantime::format_duration(settings.connect_timeout)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(client)
}

/// The key-value bucket `config.bucket`, made where missing. The bucket's stream is made here
/// with the key-value layout (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one message per key
/// and revision kept up to `history`): async-nats's own `create_key_value` first asks the
/// account's info, whose answer from a 2.9 server (Debian's) it cannot read.
async fn key_value(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, FleetError> {
    let name = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let stream = jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some(config.description.clone()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: config.history,
        max_age: config.max_age,
        storage: config.storage,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(stream)
        .await
        .map_err(|e| nats(format!("create the bucket {name}"))(&e))?;
    js.get_key_value(&name)
        .await
        .map_err(|e| nats(format!("open the bucket {name}"))(&e))
}

/// Keep the last report of every instance, from a watch of the instances bucket (made again
/// when NATS drops it).
async fn follow_reports(weak: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let watch = inner.instances.watch_with_history(">").await;
        let period = inner.options.heartbeat;
        drop(inner);
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: the watch of instances failed; trying again");
                tokio::time::sleep(period).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            let Some(inner) = weak.upgrade() else { return };
            let Ok(entry) = entry else { break };
            let mut reports = inner.reports.lock();
            match entry.operation {
                kv::Operation::Put => {
                    match serde_json::from_slice::<InstanceReport>(&entry.value) {
                        Ok(r) => {
                            reports.insert(entry.key.clone(), r);
                        }
                        Err(e) => {
                            tracing::warn!(key = %entry.key, error = %e, "fleet: an unreadable instance report")
                        }
                    }
                }
                _ => {
                    reports.remove(&entry.key);
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Answer `…apply` commands: one at a time, each after its reload.
async fn serve_commands(weak: std::sync::Weak<Inner>, mut commands: async_nats::Subscriber) {
    while let Some(message) = commands.next().await {
        let Some(inner) = weak.upgrade() else { return };
        let fleet = Fleet { inner };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let reply = match serde_json::from_slice::<ApplyCommand>(&message.payload) {
            Ok(c) => match fleet.apply_version(&c.plugin, &c.version).await {
                Ok((from, to)) => ApplyReply {
                    ok: true,
                    from,
                    to,
                    error: String::new(),
                },
                Err(e) => ApplyReply {
                    ok: false,
                    from: String::new(),
                    to: String::new(),
                    error: e.to_string(),
                },
            },
            Err(e) => ApplyReply {
                ok: false,
                from: String::new(),
                to: String::new(),
                error: format!("not a fleet command: {e}"),
            },
        };
        let bytes = serde_json::to_vec(&reply).expect("a reply serializes");
        if let Err(e) = fleet.inner.client.publish(reply_to, bytes.into()).await {
            tracing::warn!(error = %e, "fleet: a command's reply was not sent");
        }
    }
}

/// Apply the fleet's recorded changes made on other instances, the ones recorded before this
/// instance joined first.
async fn follow_changes(weak: std::sync::Weak<Inner>, mut changes: kv::Watch) {
    while let Some(entry) = changes.next().await {
        let Some(inner) = weak.upgrade() else { return };
        let fleet = Fleet { inner };
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: the watch of changes failed");
                continue;
            }
        };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        let Ok(desired) = serde_json::from_slice::<Desired>(&entry.value) else {
            tracing::warn!(key = %entry.key, "fleet: an unreadable change is ignored");
            continue;
        };
        if desired.origin == fleet.inner.options.instance {
            continue;
        }
        let (kind, plugin) = entry.key.split_once('.').unwrap_or(("", ""));
        if fleet.inner.host.plugin_info(plugin).is_none() {
            continue;
        }
        match (kind, desired.version, desired.config) {
            ("version", Some(version), _) => {
                if let Err(e) = fleet.apply_version(plugin, &version).await {
                    tracing::error!(plugin, %version, origin = %desired.origin, error = %e, "fleet: a version made on another instance did not apply here");
                }
            }
            ("config", _, Some(config)) => {
                match fleet.inner.host.update_plugin_config(plugin, &config).await {
                    Ok(()) => {
                        tracing::info!(plugin, origin = %desired.origin, "fleet: config applied")
                    }
                    Err(e) => {
                        tracing::error!(plugin, origin = %desired.origin, error = %e, "fleet: a config made on another instance was refused here")
                    }
                }
            }
            _ => tracing::warn!(key = %entry.key, "fleet: an unknown change is ignored"),
        }
    }
}

impl Fleet {
    pub(crate) fn next_rollout_id(&self) -> u64 {
        self.inner.next_rollout.fetch_add(1, Ordering::Relaxed)
    }
}
