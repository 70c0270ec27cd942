//! The host side of every WIT import, for one instance. Each call checks the plugin's effective
//! permissions; calls this build does not provide answer `host-error::unsupported`. The gated
//! capabilities (database, outbound, exec, host-config) are `plugd_core::Capabilities`, shared
//! with native plugins; a call into them is limited to what is left of the guest call's deadline.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use plugd_core::{
    Capabilities, CommandOutput, Exchange, HookType, HostError, Identity, IncomingResponse,
    LogLevel, MiddlewareReg, OutgoingRequest, OutputStream, Permission, PluginCache, PluginError,
    PluginLog, PluginMetrics, PluginStore, Publisher, Registrar, Registrations, RouteOptions, Rows,
    Services, SqlValue, Statement,
};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::v0_2::plugd::plugin as wit;
use crate::bindings::v0_2::types;
use crate::limits::Limiter;
use crate::output::GuestOutput;
use crate::reads::{self, Reads};

/// What every instance of one plugin shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) granted: BTreeSet<Permission>,
    /// The validated config as JSON, handed to `init` and `plugin-config`.
    pub(crate) config_json: RwLock<String>,
    pub(crate) store: PluginStore,
    pub(crate) publisher: Option<Publisher>,
    pub(crate) subscribes: Vec<String>,
    pub(crate) services: Option<Arc<Services>>,
    pub(crate) exports: Vec<String>,
    pub(crate) metrics: Option<Arc<PluginMetrics>>,
    pub(crate) cache: Option<PluginCache>,
    /// The gated capabilities; also where every denial is counted and audited.
    pub(crate) capabilities: Capabilities,
    /// The largest response body it may set.
    pub(crate) max_response_bytes: usize,
    /// Its log stream: `log` calls and its stdout/stderr.
    pub(crate) log: PluginLog,
    /// Where `register-middleware` and `unregister-middleware` go outside `init`: set by each
    /// `init` (the host's handle on the version that serves).
    pub(crate) registrar: RwLock<Option<Registrar>>,
    /// What each of its hooks, middleware and routes reads (contract 0.2): from the first
    /// instance's `init`, and middleware changed while it runs. Read by every call without a
    /// lock.
    pub(crate) reads: arc_swap::ArcSwap<Reads>,
}

/// The data of one wasm instance's store.
pub(crate) struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// Its memory cap (linear memories and tables).
    pub(crate) limits: Limiter,
    pub(crate) shared: Arc<Shared>,
    /// Registrations collected while `init` runs; `None` outside `init`.
    pub(crate) registering: Option<Registrations>,
    /// When the current call must end.
    pub(crate) deadline: Instant,
    /// A rule the current call broke through a host call that the guest may have ignored (a
    /// response body over the cap): turned into the plugin's error when the call returns.
    pub(crate) violation: Option<String>,
    /// The exchange lent to the guest for the current hook, middleware or route call (swapped
    /// in and out by the call; an empty exchange between calls). The `exchange` functions read
    /// it; a 0.1 guest's `exchange` handle names it, only ever as a borrow valid for that call.
    pub(crate) lent: Exchange,
    /// Whether `lent` is the current call's exchange (false in calls without one).
    pub(crate) lending: bool,
    /// The fields declared while `init` runs (contract 0.2).
    pub(crate) reading: Reads,
    /// wasi:http: the outgoing-handler's gate and the requests in flight (`wasi_http.rs`).
    pub(crate) http: crate::wasi_http::HttpState,
}

/// How a store for one instance is made: what differs between a contract plugin's long-lived
/// instances and a proxy component's instance per request.
pub(crate) struct StoreSpec {
    /// The cap of its linear memories and tables, bytes.
    pub(crate) memory_cap: usize,
    /// Whether its `/data` is preopened read-only (the plugin is over its disk quota).
    pub(crate) read_only: bool,
    /// The most open files, directories and streams it may hold, beside the few handles every
    /// instance holds (stdio, the preopen).
    pub(crate) max_handles: usize,
    /// When its first call must end.
    pub(crate) deadline: Instant,
}

/// A store for one instance of the plugin `shared`: stdout and stderr into its log stream, its
/// own files at `/data` when it has `filesystem` (and nothing else), its memory cap, and a
/// deadline checked at every epoch tick — past it the guest is interrupted, before it the guest
/// yields to tokio. The caller arms the epoch deadline and the fuel for each call.
pub(crate) fn new_store(
    engine: &Engine,
    shared: &Arc<Shared>,
    spec: StoreSpec,
) -> Result<Store<InstanceState>, PluginError> {
    let mut wasi = WasiCtxBuilder::new();
    // Its stdout and stderr are lines of its log stream, not the host's own streams.
    wasi.stdout(GuestOutput::new(&shared.log, OutputStream::Stdout));
    wasi.stderr(GuestOutput::new(&shared.log, OutputStream::Stderr));
    // `filesystem`: the plugin's own files directory at /data, and nothing else; read-only
    // while the plugin is over its disk quota.
    if let Some(dir) = shared.capabilities.files_dir() {
        let perms = if spec.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        wasi.preopened_dir(dir, "/data", perms).map_err(|e| {
            PluginError::Failed(format!("cannot preopen {} at /data: {e}", dir.display()))
        })?;
    }
    let mut table = ResourceTable::new();
    table.set_max_capacity(spec.max_handles);
    let state = InstanceState {
        wasi: wasi.build(),
        table,
        lent: Exchange::default(),
        lending: false,
        reading: Reads::default(),
        http: crate::wasi_http::HttpState::new(&shared.name, shared.capabilities.clone()),
        limits: Limiter::new(spec.memory_cap),
        shared: shared.clone(),
        registering: None,
        deadline: spec.deadline,
        violation: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| s.limiter());
    store.epoch_deadline_callback(|ctx| {
        if Instant::now() >= ctx.data().deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            // tokio's own yield: it lets the worker poll the I/O driver before it resumes this
            // guest. A plain wake-and-return-Pending puts the guest back in the worker's LIFO
            // slot, and a worker that only runs spinning guests then looks at its sockets once
            // every 61 ticks (0.6 s): everyone's latency.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        }
    });
    Ok(store)
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for InstanceState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        self.http.view(&mut self.table, self.deadline)
    }
}

impl InstanceState {
    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// Check a permission; a denial is counted against the plugin and audited.
    fn require(&self, permission: Permission, call: &str) -> Result<(), HostError> {
        self.shared.capabilities.require(permission, call)
    }

    /// Pass a result on; a denial is counted against the plugin and audited.
    fn audited<T>(
        &self,
        r: Result<T, HostError>,
        capability: &str,
        call: &str,
    ) -> Result<T, types::HostError> {
        self.shared
            .capabilities
            .auditor()
            .check(r, capability, call)
            .map_err(to_wit)
    }

    /// What is left of the current guest call's deadline: the most a host call may take.
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The plugin's cache namespace, each call bounded by what is left of the guest call.
    fn cache(&self) -> Result<PluginCache, types::HostError> {
        self.shared
            .cache
            .as_ref()
            .map(|c| c.with_timeout(self.remaining()))
            .ok_or_else(|| to_wit(HostError::unsupported("cache")))
    }

    fn metrics(&self) -> Result<Arc<PluginMetrics>, types::HostError> {
        self.shared
            .metrics
            .clone()
            .ok_or_else(|| to_wit(HostError::unsupported("metrics")))
    }

    /// A middleware change: into the registrations being collected during `init`, or, once the
    /// plugin runs, through its registrar (published to the dispatch table at once).
    fn change_middleware(
        &mut self,
        change: impl FnOnce(&mut Registrations, &Shared) -> Result<(), HostError>,
        later: impl FnOnce(&Registrar) -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        let shared = self.shared.clone();
        if let Some(regs) = self.registering.as_mut() {
            return change(regs, &shared);
        }
        let registrar = shared.registrar.read().clone();
        match registrar {
            Some(r) => later(&r),
            None => Err(HostError::Invalid(
                "middleware can be changed during init and while the plugin runs, not before its init".into(),
            )),
        }
    }

    /// Change the fields middleware reads: those being collected during `init`, or, once the
    /// plugin runs, the plugin's (read by the next call).
    fn change_reads(&mut self, change: impl Fn(&mut Reads)) {
        if self.registering.is_some() {
            change(&mut self.reading);
        } else {
            self.shared.reads.rcu(|reads| {
                let mut reads = Reads::clone(reads);
                change(&mut reads);
                reads
            });
        }
    }

    fn registering(&mut self) -> Result<&mut Registrations, HostError> {
        self.registering
            .as_mut()
            .ok_or_else(|| HostError::Invalid("registrations are only accepted during init".into()))
    }

    /// Read the current call's exchange; `T::default()` (none, empty) in a call without one.
    fn read<T: Default>(&self, f: impl FnOnce(&Exchange) -> T) -> T {
        if self.lending {
            f(&self.lent)
        } else {
            T::default()
        }
    }

    /// Apply one change to the current call's exchange, which decides whether its stage allows
    /// it; `denied` in a call without one.
    fn edit(
        &mut self,
        change: impl FnOnce(&mut Exchange) -> Result<(), HostError>,
    ) -> Result<(), types::HostError> {
        if !self.lending {
            return Err(types::HostError::Denied(
                "there is no exchange outside a hook, middleware or route call".into(),
            ));
        }
        change(&mut self.lent).map_err(to_wit)
    }
}

/// Core errors become WIT errors.
pub(crate) fn to_wit(e: HostError) -> types::HostError {
    match e {
        HostError::Denied(m) => types::HostError::Denied(m),
        HostError::Unsupported(m) => types::HostError::Unsupported(m),
        HostError::NotFound(m) => types::HostError::NotFound(m),
        HostError::Invalid(m) | HostError::OverLimit { message: m, .. } => {
            types::HostError::Invalid(m)
        }
        HostError::Failed(m) => types::HostError::Failed(m),
        // A kind of error this build of the contract has no name for.
        other => types::HostError::Failed(other.to_string()),
    }
}

fn unsupported<T>(call: &str) -> Result<T, types::HostError> {
    Err(to_wit(HostError::unsupported(call)))
}

pub(crate) fn hook_from_wit(h: types::HookType) -> HookType {
    match h {
        types::HookType::Startup => HookType::Startup,
        types::HookType::Shutdown => HookType::Shutdown,
        types::HookType::PreRequest => HookType::PreRequest,
        types::HookType::PostRequest => HookType::PostRequest,
        types::HookType::PreResponse => HookType::PreResponse,
        types::HookType::PostResponse => HookType::PostResponse,
        types::HookType::Error => HookType::Error,
    }
}

pub(crate) fn hook_to_wit(h: HookType) -> types::HookType {
    match h {
        HookType::Startup => types::HookType::Startup,
        HookType::Shutdown => types::HookType::Shutdown,
        HookType::PreRequest => types::HookType::PreRequest,
        HookType::PostRequest => types::HookType::PostRequest,
        HookType::PreResponse => types::HookType::PreResponse,
        HookType::PostResponse => types::HookType::PostResponse,
        HookType::Error => types::HookType::Error,
    }
}

impl types::Host for InstanceState {}

impl wit::exchange::Host for InstanceState {
    fn method(&mut self) -> String {
        self.read(|ex| ex.method.to_string())
    }
    fn path(&mut self) -> String {
        self.read(|ex| ex.path.clone())
    }
    fn query(&mut self) -> String {
        self.read(|ex| ex.query.clone())
    }
    fn query_param(&mut self, name: String) -> Option<String> {
        self.read(|ex| ex.query_param(&name))
    }
    fn route_param(&mut self, name: String) -> Option<String> {
        self.read(|ex| ex.route_param(&name))
    }
    fn header(&mut self, name: String) -> Option<String> {
        self.read(|ex| ex.header(&name))
    }
    fn headers(&mut self) -> Vec<(String, String)> {
        self.read(Exchange::header_pairs)
    }
    fn body(&mut self) -> Vec<u8> {
        self.read(|ex| ex.body.to_vec())
    }
    fn set_header(&mut self, name: String, value: String) -> Result<(), types::HostError> {
        self.edit(|ex| ex.set_header(&name, &value))
    }
    fn remove_header(&mut self, name: String) -> Result<(), types::HostError> {
        self.edit(|ex| ex.remove_header(&name))
    }
    fn status(&mut self) -> Option<u16> {
        self.read(Exchange::status)
    }
    fn response_header(&mut self, name: String) -> Option<String> {
        self.read(|ex| ex.response_header(&name))
    }
    fn response_headers(&mut self) -> Vec<(String, String)> {
        self.read(Exchange::response_header_pairs)
    }
    fn response_body(&mut self) -> Option<Vec<u8>> {
        self.read(|ex| ex.response.as_ref().map(|resp| resp.body.to_vec()))
    }
    fn set_status(&mut self, status: u16) -> Result<(), types::HostError> {
        self.edit(|ex| ex.set_status(status))
    }
    fn set_response_header(&mut self, name: String, value: String) -> Result<(), types::HostError> {
        self.edit(|ex| ex.set_response_header(&name, &value))
    }
    fn remove_response_header(&mut self, name: String) -> Result<(), types::HostError> {
        self.edit(|ex| ex.remove_response_header(&name))
    }
    fn set_response_body(&mut self, body: Vec<u8>) -> Result<(), types::HostError> {
        let cap = self.shared.max_response_bytes;
        if body.len() > cap {
            let m = crate::limits::response_too_large(
                &self.shared.name,
                body.len(),
                cap,
                "exchange.set-response-body",
            );
            self.violation.get_or_insert_with(|| m.clone());
            return Err(types::HostError::Invalid(m));
        }
        self.edit(|ex| ex.set_response_body(body))
    }
    fn error(&mut self) -> Option<String> {
        self.read(|ex| ex.error.clone())
    }
    fn peer_address(&mut self) -> Option<String> {
        self.read(|ex| ex.peer_addr().map(|a| a.to_string()))
    }
    fn attribute(&mut self, name: String) -> Option<String> {
        self.read(|ex| ex.attribute(&name).map(str::to_string))
    }
    fn identity(&mut self) -> Option<types::Identity> {
        self.read(|ex| {
            ex.identity().map(|i| types::Identity {
                subject: i.subject.clone(),
                roles: i.roles.clone(),
            })
        })
    }
    fn set_identity(&mut self, identity: Option<types::Identity>) -> Result<(), types::HostError> {
        let identity = identity.map(|i| Identity {
            subject: i.subject,
            roles: i.roles,
        });
        self.edit(|ex| ex.set_identity(identity))
    }
    fn local(&mut self, key: String) -> Option<String> {
        self.read(|ex| ex.local(&key).map(str::to_string))
    }
    fn set_local(&mut self, key: String, value: String) {
        // The contract gives `set-local` no result: a local past the caps is dropped (and the
        // refusal audited against the plugin when its call ends), as is one outside a call
        // with an exchange.
        let _ = self.edit(|ex| ex.set_local(&key, &value));
    }
}

fn level_from_wit(level: types::LogLevel) -> LogLevel {
    match level {
        types::LogLevel::Trace => LogLevel::Trace,
        types::LogLevel::Debug => LogLevel::Debug,
        types::LogLevel::Info => LogLevel::Info,
        types::LogLevel::Warn => LogLevel::Warn,
        types::LogLevel::Error => LogLevel::Error,
    }
}

impl wit::log::Host for InstanceState {
    fn log(&mut self, level: types::LogLevel, message: String, fields: Vec<(String, String)>) {
        // Rate-limited, capped and escaped by the plugin's log stream: a line over its rate is
        // dropped and counted (`plugd_plugin_log_dropped_lines_total`).
        self.shared
            .log
            .write(level_from_wit(level), &message, &fields);
    }
    fn set_log_level(&mut self, level: types::LogLevel) {
        self.shared.log.set_level(level_from_wit(level));
    }
}

impl wit::metrics::Host for InstanceState {
    fn counter_add(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> Result<(), types::HostError> {
        let r = self.metrics()?.counter_add(&name, value, &labels);
        let auditor = self.shared.capabilities.auditor();
        auditor
            .check(r, "metrics", "metrics.counter-add")
            .map_err(to_wit)
    }
    fn gauge_set(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> Result<(), types::HostError> {
        let r = self.metrics()?.gauge_set(&name, value, &labels);
        let auditor = self.shared.capabilities.auditor();
        auditor
            .check(r, "metrics", "metrics.gauge-set")
            .map_err(to_wit)
    }
    fn histogram_observe(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> Result<(), types::HostError> {
        let r = self.metrics()?.histogram_observe(&name, value, &labels);
        let auditor = self.shared.capabilities.auditor();
        auditor
            .check(r, "metrics", "metrics.histogram-observe")
            .map_err(to_wit)
    }
}

impl InstanceState {
    /// The plugin's storage, limited to what is left of the current guest call's deadline.
    fn storage(&self) -> plugd_core::PluginStore {
        self.shared.store.with_timeout(self.remaining())
    }
}

impl wit::storage::Host for InstanceState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::HostError> {
        self.storage().get(&key).await.map_err(to_wit)
    }
    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), types::HostError> {
        let r = self.storage().set(&key, &value).await;
        self.audited(r, "storage", "storage.set")
    }
    async fn delete(&mut self, key: String) -> Result<bool, types::HostError> {
        self.storage().delete(&key).await.map_err(to_wit)
    }
    async fn list(&mut self, prefix: String) -> Result<Vec<String>, types::HostError> {
        self.storage().list(&prefix).await.map_err(to_wit)
    }
    async fn clear(&mut self) -> Result<(), types::HostError> {
        self.storage().clear().await.map_err(to_wit)
    }
}

impl wit::config::Host for InstanceState {
    fn plugin_config(&mut self) -> String {
        self.shared.config_json.read().clone()
    }
    fn host_config(&mut self, key: String) -> Result<Option<String>, types::HostError> {
        let view = self
            .shared
            .capabilities
            .host_config("config.host-config")
            .map_err(to_wit)?;
        Ok(view.get(&key).map_err(to_wit)?.map(|v| v.to_string()))
    }
}

impl wit::registry::Host for InstanceState {
    fn register_hook(
        &mut self,
        hook: types::HookType,
        priority: i32,
        reads: Vec<types::Field>,
    ) -> Result<(), types::HostError> {
        let hook = hook_from_wit(hook);
        let fields = reads::parse(reads).map_err(to_wit)?;
        self.registering()
            .and_then(|r| r.add_hook(hook, priority))
            .map_err(to_wit)?;
        self.reading.add_hook(hook, fields).map_err(to_wit)
    }
    fn register_route(
        &mut self,
        method: String,
        path: String,
        options: types::RouteOptions,
    ) -> Result<(), types::HostError> {
        let fields = reads::parse(options.reads).map_err(to_wit)?;
        let name = self.shared.name.clone();
        let shared = self.shared.clone();
        let options = RouteOptions {
            required_roles: options.required_roles,
        };
        let r = self
            .registering()
            .and_then(|r| r.add_route(&name, &shared.granted, &method, &path, options));
        self.audited(r, "router", "registry.register-route")?;
        self.reading.add_route(&path, fields).map_err(to_wit)
    }
    fn register_middleware(
        &mut self,
        name: String,
        priority: i32,
        routes: Vec<String>,
        reads: Vec<types::Field>,
    ) -> Result<(), types::HostError> {
        let fields = reads::parse(reads).map_err(to_wit)?;
        let reg = MiddlewareReg {
            name: name.clone(),
            priority,
            routes,
        };
        let later = reg.clone();
        let r = self.change_middleware(
            |regs, shared| regs.add_middleware(&shared.name, &shared.granted, reg),
            |registrar| registrar.register(later),
        );
        self.audited(r, "router", "registry.register-middleware")?;
        self.change_reads(|reads| reads.set_middleware(&name, fields.clone()));
        Ok(())
    }
    fn unregister_middleware(&mut self, name: String) -> Result<(), types::HostError> {
        self.change_middleware(
            |regs, _| regs.remove_middleware(&name),
            |registrar| registrar.unregister_middleware(&name),
        )
        .map_err(to_wit)?;
        self.change_reads(|reads| reads.remove_middleware(&name));
        Ok(())
    }
    fn subscribe(&mut self, topic: String) -> Result<(), types::HostError> {
        let shared = self.shared.clone();
        self.registering()
            .and_then(|r| r.add_subscription(&shared.name, &shared.subscribes, &topic))
            .map_err(to_wit)
    }
    fn export_service(&mut self, service: String) -> Result<(), types::HostError> {
        let shared = self.shared.clone();
        self.registering()
            .and_then(|r| r.add_export(&shared.name, &shared.exports, &service))
            .map_err(to_wit)
    }
    fn register_timer(&mut self, name: String, interval_ms: u64) -> Result<(), types::HostError> {
        self.registering()
            .and_then(|r| r.add_timer(&name, std::time::Duration::from_millis(interval_ms)))
            .map_err(to_wit)
    }
}

impl wit::events::Host for InstanceState {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), types::HostError> {
        match &self.shared.publisher {
            Some(p) => {
                let r = p.publish(&topic, payload).map(drop);
                self.audited(r, "events", "events.publish")
            }
            None => unsupported("events.publish"),
        }
    }
}

impl wit::services::Host for InstanceState {
    async fn call(
        &mut self,
        plugin: String,
        service: String,
        method: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, types::HostError> {
        let Some(services) = self.shared.services.clone() else {
            return unsupported("services.call");
        };
        // The callee has its own deadline; the caller's is what is left of its own call.
        let remaining = self.remaining();
        match tokio::time::timeout(
            remaining,
            services.call(&self.shared.name, &plugin, &service, &method, &payload),
        )
        .await
        {
            Ok(r) => r.map_err(to_wit),
            Err(_) => Err(types::HostError::Failed(format!(
                "services.call {plugin}.{service}.{method} did not answer within what was left of the calling plugin's deadline ({} ms)",
                remaining.as_millis()
            ))),
        }
    }
}

fn sql_from_wit(v: types::SqlValue) -> SqlValue {
    match v {
        types::SqlValue::Null => SqlValue::Null,
        types::SqlValue::Integer(i) => SqlValue::Integer(i),
        types::SqlValue::Real(r) => SqlValue::Real(r),
        types::SqlValue::Text(t) => SqlValue::Text(t),
        types::SqlValue::Blob(b) => SqlValue::Blob(b),
    }
}

fn sql_to_wit(v: SqlValue) -> types::SqlValue {
    match v {
        SqlValue::Null => types::SqlValue::Null,
        SqlValue::Integer(i) => types::SqlValue::Integer(i),
        SqlValue::Real(r) => types::SqlValue::Real(r),
        SqlValue::Text(t) => types::SqlValue::Text(t),
        SqlValue::Blob(b) => types::SqlValue::Blob(b),
    }
}

fn rows_to_wit(r: Rows) -> types::Rows {
    types::Rows {
        columns: r.columns,
        rows: r
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(sql_to_wit).collect())
            .collect(),
    }
}

impl wit::database::Host for InstanceState {
    fn dialect(&mut self) -> String {
        // Empty without an open database (no `database` permission): there is none to speak to.
        self.shared
            .capabilities
            .database_dialect()
            .unwrap_or_default()
            .to_string()
    }
    async fn execute(
        &mut self,
        sql: String,
        params: Vec<types::SqlValue>,
    ) -> Result<u64, types::HostError> {
        let db = self
            .shared
            .capabilities
            .database("database.execute")
            .map_err(to_wit)?
            .with_timeout(self.remaining());
        let params: Vec<SqlValue> = params.into_iter().map(sql_from_wit).collect();
        db.execute(&sql, &params).await.map_err(to_wit)
    }
    async fn query(
        &mut self,
        sql: String,
        params: Vec<types::SqlValue>,
    ) -> Result<types::Rows, types::HostError> {
        let db = self
            .shared
            .capabilities
            .database("database.query")
            .map_err(to_wit)?
            .with_timeout(self.remaining());
        let params: Vec<SqlValue> = params.into_iter().map(sql_from_wit).collect();
        db.query(&sql, &params)
            .await
            .map(rows_to_wit)
            .map_err(to_wit)
    }
    async fn transaction(
        &mut self,
        statements: Vec<types::Statement>,
    ) -> Result<Vec<u64>, types::HostError> {
        let db = self
            .shared
            .capabilities
            .database("database.transaction")
            .map_err(to_wit)?
            .with_timeout(self.remaining());
        let statements: Vec<Statement> = statements
            .into_iter()
            .map(|s| Statement::new(s.sql, s.params.into_iter().map(sql_from_wit).collect()))
            .collect();
        db.transaction(&statements).await.map_err(to_wit)
    }
}

impl wit::cache::Host for InstanceState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::HostError> {
        self.require(Permission::Cache, "cache.get")
            .map_err(to_wit)?;
        self.cache()?.get(&key).await.map_err(to_wit)
    }
    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), types::HostError> {
        self.require(Permission::Cache, "cache.set")
            .map_err(to_wit)?;
        let r = self
            .cache()?
            .set(&key, &value, ttl_ms.map(std::time::Duration::from_millis))
            .await;
        self.audited(r, "cache", "cache.set")
    }
    async fn delete(&mut self, key: String) -> Result<bool, types::HostError> {
        self.require(Permission::Cache, "cache.delete")
            .map_err(to_wit)?;
        self.cache()?.delete(&key).await.map_err(to_wit)
    }
}

impl wit::outbound::Host for InstanceState {
    async fn fetch(
        &mut self,
        request: types::OutgoingRequest,
    ) -> Result<types::IncomingResponse, types::HostError> {
        let outbound = self
            .shared
            .capabilities
            .outbound("outbound.fetch")
            .map_err(to_wit)?
            .with_timeout(self.remaining());
        let request = OutgoingRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout: request
                .timeout_ms
                .map(|ms| Duration::from_millis(u64::from(ms))),
        };
        let IncomingResponse {
            status,
            headers,
            body,
        } = outbound.fetch(request).await.map_err(to_wit)?;
        Ok(types::IncomingResponse {
            status,
            headers,
            body,
        })
    }
}

impl wit::exec::Host for InstanceState {
    async fn run(
        &mut self,
        command: String,
        args: Vec<String>,
        stdin: Vec<u8>,
        timeout_ms: Option<u32>,
    ) -> Result<types::CommandOutput, types::HostError> {
        let exec = self
            .shared
            .capabilities
            .exec("exec.run")
            .map_err(to_wit)?
            .with_timeout(self.remaining());
        let timeout = timeout_ms.map(|ms| Duration::from_millis(u64::from(ms)));
        let CommandOutput {
            status,
            stdout,
            stderr,
        } = exec
            .run(&command, &args, &stdin, timeout)
            .await
            .map_err(to_wit)?;
        Ok(types::CommandOutput {
            status,
            stdout,
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit::registry::Host as _;

    /// A native plugin that keeps its registrar: the handle a wasm plugin's `init` stores in
    /// `Shared`.
    struct Keeper(Arc<parking_lot::Mutex<Option<Registrar>>>);

    #[async_trait::async_trait]
    impl plugd_core::Plugin for Keeper {
        async fn init(
            &self,
            ctx: &mut plugd_core::InitContext<'_>,
        ) -> Result<(), plugd_core::PluginError> {
            ctx.register_middleware("guard", 1, &["/plugins/guest/*"])?;
            *self.0.lock() = Some(ctx.registrar()?);
            Ok(())
        }
    }

    fn state(registrar: Option<Registrar>) -> InstanceState {
        let granted: BTreeSet<Permission> = [Permission::Router].into();
        let store = PluginStore::new("guest", Arc::new(plugd_core::MemoryKv::default()));
        let shared = Shared {
            name: "guest".into(),
            granted: granted.clone(),
            config_json: RwLock::new("{}".into()),
            store,
            publisher: None,
            subscribes: Vec::new(),
            services: None,
            exports: Vec::new(),
            metrics: None,
            cache: None,
            capabilities: Capabilities::unopened(
                granted,
                plugd_core::Auditor::new("guest", None, None),
            ),
            max_response_bytes: 1024,
            log: PluginLog::new("guest", plugd_core::LogLimits::default()),
            registrar: RwLock::new(registrar),
            reads: Default::default(),
        };
        let shared = Arc::new(shared);
        InstanceState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: Limiter::new(1 << 20),
            http: crate::wasi_http::HttpState::new(&shared.name, shared.capabilities.clone()),
            shared,
            registering: None,
            deadline: Instant::now() + Duration::from_secs(5),
            violation: None,
            lent: Exchange::default(),
            lending: false,
            reading: Reads::default(),
        }
    }

    #[tokio::test]
    async fn middleware_imports_work_in_init_and_while_the_plugin_runs_and_not_before() {
        let manifest = plugd_manifest::Manifest::from_str(
            "name: guest\nversion: 1.0.0\ndescription: d\nauthor: a\npermissions: [router]\n",
            plugd_manifest::Format::Yaml,
            None,
        )
        .unwrap();
        let kept = Arc::new(parking_lot::Mutex::new(None));
        let host = plugd_core::Host::builder()
            .native(manifest, Keeper(kept.clone()))
            .build()
            .unwrap();
        host.start().await.unwrap();
        let table = || host.dispatcher().table().middleware_count();
        assert_eq!(table(), 1);

        // Before any init gave it a registrar: refused.
        let mut early = state(None);
        let e = early.unregister_middleware("guard".into()).unwrap_err();
        assert!(matches!(e, types::HostError::Invalid(_)), "{e:?}");
        assert_eq!(table(), 1);

        // While it runs: published at once.
        let registrar = kept.lock().clone();
        let mut running = state(registrar);
        running.unregister_middleware("guard".into()).unwrap();
        assert_eq!(table(), 0);
        running
            .register_middleware(
                "late".into(),
                5,
                vec!["/plugins/guest/x".into()],
                vec![types::Field::Header("x-late".into())],
            )
            .unwrap();
        assert_eq!(table(), 1);
        // Its reads reach the plugin's, for the next call of any instance.
        assert_eq!(running.shared.reads.load().middleware("late").len(), 1);
        let e = running.unregister_middleware("guard".into()).unwrap_err();
        assert!(matches!(e, types::HostError::NotFound(_)), "{e:?}");
        let e = running
            .register_middleware("wide".into(), 5, vec!["/api/*".into()], Vec::new())
            .unwrap_err();
        assert!(matches!(e, types::HostError::Denied(_)), "{e:?}");

        // During init: collected, not published.
        running.registering = Some(Registrations::default());
        running
            .register_middleware(
                "in-init".into(),
                1,
                vec!["/plugins/guest/*".into()],
                vec![types::Field::Method],
            )
            .unwrap();
        assert_eq!(table(), 1);
        let collected = running.registering.take().unwrap();
        assert_eq!(collected.middleware[0].name, "in-init");
        assert_eq!(running.reading.middleware("in-init").len(), 1);
        assert!(running.shared.reads.load().middleware("in-init").is_empty());

        // set-log-level reaches the plugin's log stream.
        wit::log::Host::set_log_level(&mut running, types::LogLevel::Warn);
        assert_eq!(running.shared.log.level(), LogLevel::Warn);
        host.shutdown().await;
    }

    #[test]
    fn outside_a_call_with_an_exchange_readers_are_empty_and_setters_denied() {
        use wit::exchange::Host as _;
        let mut s = state(None);
        s.lent = Exchange::new(http::Method::POST, "/plugins/guest/x?a=1");
        s.lent.stage = plugd_core::Stage::Hook(HookType::PreRequest);
        assert_eq!(s.method(), "");
        assert_eq!(s.query_param("a".into()), None);
        let e = s.set_header("x".into(), "1".into()).unwrap_err();
        assert!(matches!(e, types::HostError::Denied(_)), "{e:?}");
        s.set_local("k".into(), "v".into());
        assert!(s.lent.locals.is_empty());

        s.lending = true;
        assert_eq!(s.method(), "POST");
        assert_eq!(s.query_param("a".into()).as_deref(), Some("1"));
        s.set_header("x".into(), "1".into()).unwrap();
        s.set_local("k".into(), "v".into());
        assert_eq!(s.local("k".into()).as_deref(), Some("v"));
    }
}
