//! The host side of every WIT import, for one instance. Each call checks the plugin's effective
//! permissions; calls this build does not provide answer `host-error::unsupported`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use plugd_core::{
    AuditLog, Exchange, HookType, HostError, Identity, MiddlewareReg, Permission, PluginCache,
    PluginMetrics, PluginState, PluginStore, Publisher, Registrations, RouteOptions, Services,
};
use wasmtime::ResourceLimiter;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::plugd::plugin as wit;
use crate::bindings::types;

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
    pub(crate) audit: Option<Arc<AuditLog>>,
    /// Where a denied call counts as the plugin's error.
    pub(crate) state: Option<Arc<PluginState>>,
    /// The largest response body it may set.
    pub(crate) max_response_bytes: usize,
}

/// The data of one wasm instance's store.
pub(crate) struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// Its memory cap (linear memories and tables).
    pub(crate) limits: crate::limits::Limiter,
    pub(crate) shared: Arc<Shared>,
    /// Registrations collected while `init` runs; `None` outside `init`.
    pub(crate) registering: Option<Registrations>,
    /// When the current call must end.
    pub(crate) deadline: Instant,
    /// A rule the current call broke through a host call that the guest may have ignored (a
    /// response body over the cap): turned into the plugin's error when the call returns.
    pub(crate) violation: Option<String>,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl InstanceState {
    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// Check a permission; a denial is recorded in the audit log.
    fn require(&self, permission: Permission, call: &str) -> Result<(), HostError> {
        if self.shared.granted.contains(&permission) {
            return Ok(());
        }
        let e = HostError::permission_denied(&self.shared.name, permission);
        self.audit(permission.as_str(), call);
        self.count_denial(call, &e);
        Err(e)
    }

    fn audit(&self, capability: &str, detail: &str) {
        if let Some(a) = &self.shared.audit {
            a.record(&self.shared.name, capability, detail);
        }
    }

    /// Pass a result on, recording a denial in the audit log.
    fn audited<T>(
        &self,
        r: Result<T, HostError>,
        capability: &str,
        call: &str,
    ) -> Result<T, types::HostError> {
        if let Err(e @ HostError::Denied(m)) = &r {
            self.audit(capability, &format!("{call}: {m}"));
            self.count_denial(call, e);
        }
        r.map_err(to_wit)
    }

    /// A denied call counts against the plugin (error count, last error).
    fn count_denial(&self, call: &str, e: &HostError) {
        if let Some(state) = &self.shared.state {
            state.record_error(format!("{call}: {e}"));
        }
    }

    fn cache(&self) -> Result<PluginCache, types::HostError> {
        self.shared
            .cache
            .clone()
            .ok_or_else(|| to_wit(HostError::unsupported("cache")))
    }

    fn metrics(&self) -> Result<Arc<PluginMetrics>, types::HostError> {
        self.shared
            .metrics
            .clone()
            .ok_or_else(|| to_wit(HostError::unsupported("metrics")))
    }

    fn registering(&mut self) -> Result<&mut Registrations, HostError> {
        self.registering
            .as_mut()
            .ok_or_else(|| HostError::Invalid("registrations are only accepted during init".into()))
    }

    fn exchange(&self, r: &Resource<Exchange>) -> &Exchange {
        // The host pushes the exchange before the call and removes it after: a live borrow handle
        // always names it.
        match self.table.get(r) {
            Ok(ex) => ex,
            Err(_) => &EMPTY,
        }
    }

    fn exchange_mut(&mut self, r: &Resource<Exchange>) -> Result<&mut Exchange, HostError> {
        self.table
            .get_mut(r)
            .map_err(|e| HostError::Invalid(format!("exchange handle: {e}")))
    }

    /// Apply one change to the exchange; the exchange decides whether this stage allows it.
    fn edit(
        &mut self,
        r: &Resource<Exchange>,
        change: impl FnOnce(&mut Exchange) -> Result<(), HostError>,
    ) -> Result<(), types::HostError> {
        self.exchange_mut(r).and_then(change).map_err(to_wit)
    }
}

static EMPTY: std::sync::LazyLock<Exchange> = std::sync::LazyLock::new(Exchange::default);

/// Core errors become WIT errors.
pub(crate) fn to_wit(e: HostError) -> types::HostError {
    match e {
        HostError::Denied(m) => types::HostError::Denied(m),
        HostError::Unsupported(m) => types::HostError::Unsupported(m),
        HostError::NotFound(m) => types::HostError::NotFound(m),
        HostError::Invalid(m) => types::HostError::Invalid(m),
        HostError::Failed(m) => types::HostError::Failed(m),
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

impl wit::http::Host for InstanceState {}

impl wit::http::HostExchange for InstanceState {
    fn method(&mut self, r: Resource<Exchange>) -> String {
        self.exchange(&r).method.to_string()
    }
    fn path(&mut self, r: Resource<Exchange>) -> String {
        self.exchange(&r).path.clone()
    }
    fn query(&mut self, r: Resource<Exchange>) -> String {
        self.exchange(&r).query.clone()
    }
    fn query_param(&mut self, r: Resource<Exchange>, name: String) -> Option<String> {
        self.exchange(&r).query_param(&name)
    }
    fn route_param(&mut self, r: Resource<Exchange>, name: String) -> Option<String> {
        self.exchange(&r).route_param(&name)
    }
    fn header(&mut self, r: Resource<Exchange>, name: String) -> Option<String> {
        self.exchange(&r).header(&name)
    }
    fn headers(&mut self, r: Resource<Exchange>) -> Vec<(String, String)> {
        self.exchange(&r).header_pairs()
    }
    fn body(&mut self, r: Resource<Exchange>) -> Vec<u8> {
        self.exchange(&r).body.to_vec()
    }
    fn set_header(
        &mut self,
        r: Resource<Exchange>,
        name: String,
        value: String,
    ) -> Result<(), types::HostError> {
        self.edit(&r, |ex| ex.set_header(&name, &value))
    }
    fn remove_header(
        &mut self,
        r: Resource<Exchange>,
        name: String,
    ) -> Result<(), types::HostError> {
        self.edit(&r, |ex| ex.remove_header(&name))
    }
    fn status(&mut self, r: Resource<Exchange>) -> Option<u16> {
        self.exchange(&r).status()
    }
    fn response_header(&mut self, r: Resource<Exchange>, name: String) -> Option<String> {
        self.exchange(&r).response_header(&name)
    }
    fn response_headers(&mut self, r: Resource<Exchange>) -> Vec<(String, String)> {
        self.exchange(&r).response_header_pairs()
    }
    fn response_body(&mut self, r: Resource<Exchange>) -> Option<Vec<u8>> {
        self.exchange(&r)
            .response
            .as_ref()
            .map(|resp| resp.body.to_vec())
    }
    fn set_status(&mut self, r: Resource<Exchange>, status: u16) -> Result<(), types::HostError> {
        self.edit(&r, |ex| ex.set_status(status))
    }
    fn set_response_header(
        &mut self,
        r: Resource<Exchange>,
        name: String,
        value: String,
    ) -> Result<(), types::HostError> {
        self.edit(&r, |ex| ex.set_response_header(&name, &value))
    }
    fn remove_response_header(
        &mut self,
        r: Resource<Exchange>,
        name: String,
    ) -> Result<(), types::HostError> {
        self.edit(&r, |ex| ex.remove_response_header(&name))
    }
    fn set_response_body(
        &mut self,
        r: Resource<Exchange>,
        body: Vec<u8>,
    ) -> Result<(), types::HostError> {
        let cap = self.shared.max_response_bytes;
        if body.len() > cap {
            let m = crate::plugin::response_too_large(
                &self.shared.name,
                body.len(),
                cap,
                "exchange.set-response-body",
            );
            self.violation.get_or_insert_with(|| m.clone());
            return Err(types::HostError::Invalid(m));
        }
        self.edit(&r, |ex| ex.set_response_body(body))
    }
    fn error(&mut self, r: Resource<Exchange>) -> Option<String> {
        self.exchange(&r).error.clone()
    }
    fn identity(&mut self, r: Resource<Exchange>) -> Option<types::Identity> {
        self.exchange(&r)
            .identity
            .as_ref()
            .map(|i| types::Identity {
                subject: i.subject.clone(),
                roles: i.roles.clone(),
            })
    }
    fn set_identity(
        &mut self,
        r: Resource<Exchange>,
        identity: Option<types::Identity>,
    ) -> Result<(), types::HostError> {
        let identity = identity.map(|i| Identity {
            subject: i.subject,
            roles: i.roles,
        });
        self.edit(&r, |ex| ex.set_identity(identity))
    }
    fn local(&mut self, r: Resource<Exchange>, key: String) -> Option<String> {
        self.exchange(&r).locals.get(&key).cloned()
    }
    fn set_local(&mut self, r: Resource<Exchange>, key: String, value: String) {
        if let Ok(ex) = self.exchange_mut(&r) {
            ex.locals.insert(key, value);
        }
    }
    fn drop(&mut self, _r: Resource<Exchange>) -> wasmtime::Result<()> {
        // Exchanges are only ever lent to the guest; the host owns and removes them.
        Ok(())
    }
}

impl wit::log::Host for InstanceState {
    fn log(&mut self, level: types::LogLevel, message: String, fields: Vec<(String, String)>) {
        let plugin = self.shared.name.as_str();
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        match level {
            types::LogLevel::Trace => {
                tracing::trace!(target: "plugin", plugin, fields, "{message}")
            }
            types::LogLevel::Debug => {
                tracing::debug!(target: "plugin", plugin, fields, "{message}")
            }
            types::LogLevel::Info => tracing::info!(target: "plugin", plugin, fields, "{message}"),
            types::LogLevel::Warn => tracing::warn!(target: "plugin", plugin, fields, "{message}"),
            types::LogLevel::Error => {
                tracing::error!(target: "plugin", plugin, fields, "{message}")
            }
        }
    }
}

impl wit::metrics::Host for InstanceState {
    fn counter_add(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> Result<(), types::HostError> {
        self.metrics()?
            .counter_add(&name, value, &labels)
            .map_err(to_wit)
    }
    fn gauge_set(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> Result<(), types::HostError> {
        self.metrics()?
            .gauge_set(&name, value, &labels)
            .map_err(to_wit)
    }
    fn histogram_observe(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> Result<(), types::HostError> {
        self.metrics()?
            .histogram_observe(&name, value, &labels)
            .map_err(to_wit)
    }
}

impl wit::storage::Host for InstanceState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::HostError> {
        self.shared.store.get(&key).map_err(to_wit)
    }
    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), types::HostError> {
        self.shared.store.set(&key, &value).map_err(to_wit)
    }
    fn delete(&mut self, key: String) -> Result<bool, types::HostError> {
        self.shared.store.delete(&key).map_err(to_wit)
    }
    fn list(&mut self, prefix: String) -> Result<Vec<String>, types::HostError> {
        self.shared.store.list(&prefix).map_err(to_wit)
    }
    fn clear(&mut self) -> Result<(), types::HostError> {
        self.shared.store.clear().map_err(to_wit)
    }
}

impl wit::config::Host for InstanceState {
    fn plugin_config(&mut self) -> String {
        self.shared.config_json.read().clone()
    }
    fn host_config(&mut self, _key: String) -> Result<Option<String>, types::HostError> {
        self.require(Permission::Config, "config.host-config")
            .map_err(to_wit)?;
        unsupported("config.host-config")
    }
}

impl wit::registry::Host for InstanceState {
    fn register_hook(
        &mut self,
        hook: types::HookType,
        priority: i32,
    ) -> Result<(), types::HostError> {
        self.registering()
            .and_then(|r| r.add_hook(hook_from_wit(hook), priority))
            .map_err(to_wit)
    }
    fn register_route(
        &mut self,
        method: String,
        path: String,
        options: types::RouteOptions,
    ) -> Result<(), types::HostError> {
        let name = self.shared.name.clone();
        let shared = self.shared.clone();
        let options = RouteOptions {
            required_roles: options.required_roles,
        };
        let r = self
            .registering()
            .and_then(|r| r.add_route(&name, &shared.granted, &method, &path, options));
        self.audited(r, "router", "registry.register-route")
    }
    fn register_middleware(
        &mut self,
        name: String,
        priority: i32,
        routes: Vec<String>,
    ) -> Result<(), types::HostError> {
        let shared = self.shared.clone();
        let reg = MiddlewareReg {
            name,
            priority,
            routes,
        };
        let r = self
            .registering()
            .and_then(|r| r.add_middleware(&shared.name, &shared.granted, reg));
        self.audited(r, "router", "registry.register-middleware")
    }
    fn unregister_middleware(&mut self, name: String) -> Result<(), types::HostError> {
        self.registering()
            .and_then(|r| r.remove_middleware(&name))
            .map_err(to_wit)
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
        services
            .call(&self.shared.name, &plugin, &service, &method, &payload)
            .await
            .map_err(to_wit)
    }
}

impl wit::database::Host for InstanceState {
    fn execute(&mut self, _: String, _: Vec<types::SqlValue>) -> Result<u64, types::HostError> {
        self.require(Permission::Database, "database.execute")
            .map_err(to_wit)?;
        unsupported("database.execute")
    }
    fn query(
        &mut self,
        _: String,
        _: Vec<types::SqlValue>,
    ) -> Result<types::Rows, types::HostError> {
        self.require(Permission::Database, "database.query")
            .map_err(to_wit)?;
        unsupported("database.query")
    }
    fn transaction(&mut self, _: Vec<types::Statement>) -> Result<Vec<u64>, types::HostError> {
        self.require(Permission::Database, "database.transaction")
            .map_err(to_wit)?;
        unsupported("database.transaction")
    }
}

impl wit::cache::Host for InstanceState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::HostError> {
        self.require(Permission::Cache, "cache.get")
            .map_err(to_wit)?;
        Ok(self.cache()?.get(&key))
    }
    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), types::HostError> {
        self.require(Permission::Cache, "cache.set")
            .map_err(to_wit)?;
        self.cache()?
            .set(&key, &value, ttl_ms.map(std::time::Duration::from_millis))
            .map_err(to_wit)
    }
    fn delete(&mut self, key: String) -> Result<bool, types::HostError> {
        self.require(Permission::Cache, "cache.delete")
            .map_err(to_wit)?;
        Ok(self.cache()?.delete(&key))
    }
}

impl wit::outbound::Host for InstanceState {
    fn fetch(
        &mut self,
        _: types::OutgoingRequest,
    ) -> Result<types::IncomingResponse, types::HostError> {
        self.require(Permission::Network, "outbound.fetch")
            .map_err(to_wit)?;
        unsupported("outbound.fetch")
    }
}

impl wit::exec::Host for InstanceState {
    fn run(
        &mut self,
        _: String,
        _: Vec<String>,
        _: Vec<u8>,
        _: Option<u32>,
    ) -> Result<types::CommandOutput, types::HostError> {
        self.require(Permission::Exec, "exec.run").map_err(to_wit)?;
        unsupported("exec.run")
    }
}
