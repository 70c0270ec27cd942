//! The [`Plugin`] trait every plugin implements, native or wasm, and what it registers.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use plugd_manifest::{HookType, Permission};
use serde_json::{Map, Value};

use crate::cache::PluginCache;
use crate::capabilities::Capabilities;
use crate::database::Database;
use crate::error::{HostError, PluginError};
use crate::events::{Event, Publisher};
use crate::exchange::{Exchange, Response};
use crate::exec::Exec;
use crate::health::Health;
use crate::host_config::HostConfigView;
use crate::kv::PluginStore;
use crate::logs::PluginLog;
use crate::metrics::PluginMetrics;
use crate::outbound::Outbound;
use crate::registrations::{MiddlewareReg, Registrations, RouteOptions};
use crate::services::Services;
use crate::tasks::Tasks;

/// What a `pre_request` hook or a middleware decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Go on; changes made to the exchange stand.
    Continue,
    /// Answer now: later pre-request hooks, middleware and the handler are skipped;
    /// post_request, pre_response and post_response hooks still run.
    Respond(Response),
}

/// What a plugin gets in `init`: its name, config, permissions, storage, and the registration calls.
#[derive(Debug)]
pub struct InitContext<'a> {
    pub(crate) name: &'a str,
    pub(crate) config: &'a Map<String, Value>,
    pub(crate) granted: &'a BTreeSet<Permission>,
    pub(crate) store: &'a PluginStore,
    pub(crate) registrations: &'a mut Registrations,
    pub(crate) subscribes: &'a [String],
    pub(crate) publisher: Option<&'a Publisher>,
    pub(crate) exports: &'a [String],
    pub(crate) services: Option<&'a Arc<Services>>,
    pub(crate) tasks: Option<&'a Tasks>,
    pub(crate) metrics: Option<&'a Arc<PluginMetrics>>,
    pub(crate) cache: Option<PluginCache>,
    pub(crate) capabilities: Option<Capabilities>,
    pub(crate) registrar: Option<Registrar>,
    pub(crate) log: Option<PluginLog>,
}

impl<'a> InitContext<'a> {
    /// A context for running a plugin's `init` outside a host (tests, tools): no events.
    pub fn new(
        name: &'a str,
        config: &'a Map<String, Value>,
        granted: &'a BTreeSet<Permission>,
        store: &'a PluginStore,
        registrations: &'a mut Registrations,
    ) -> Self {
        InitContext {
            name,
            config,
            granted,
            store,
            registrations,
            subscribes: &[],
            publisher: None,
            exports: &[],
            services: None,
            tasks: None,
            metrics: None,
            cache: None,
            capabilities: None,
            registrar: None,
            log: None,
        }
    }

    /// The same, with the handle that changes the plugin's middleware once it runs.
    pub(crate) fn with_registrar(mut self, registrar: Registrar) -> Self {
        self.registrar = Some(registrar);
        self
    }

    /// The same, with the plugin's log stream.
    pub(crate) fn with_log(mut self, log: PluginLog) -> Self {
        self.log = Some(log);
        self
    }

    /// A handle to register and unregister middleware while the plugin runs (from a route
    /// handler, a timer, an event): keep it from `init`. Its calls pass the same checks and
    /// caps as the ones in `init`, and each publishes a new dispatch table at once; requests
    /// already in flight finish with the table they started with. The changes last until the
    /// plugin's next `init` (a restart or a reload registers anew).
    pub fn registrar(&self) -> Result<Registrar, HostError> {
        self.registrar.clone().ok_or_else(|| {
            HostError::unsupported("run-time registrations (no host in this context)")
        })
    }

    /// The plugin's own log stream: lines carry its name, go through its rate limit and are
    /// kept only at or above its log level ([`PluginLog::set_level`]). Keep the handle. Without a
    /// host it still writes, under the default limits.
    pub fn log(&self) -> PluginLog {
        self.log
            .clone()
            .unwrap_or_else(|| PluginLog::new(self.name, crate::logs::LogLimits::default()))
    }

    /// The same, with the plugin's cache namespace.
    pub fn with_cache(mut self, cache: PluginCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The plugin's namespace of the host cache; needs the `cache` permission.
    pub fn cache(&self) -> Result<PluginCache, HostError> {
        if !self.granted.contains(&Permission::Cache) {
            return Err(HostError::permission_denied(self.name, Permission::Cache));
        }
        self.cache
            .clone()
            .ok_or_else(|| HostError::unsupported("cache (no host in this context)"))
    }

    /// The same, with the plugin's gated capabilities (database, network, exec, config,
    /// filesystem).
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }

    /// One gated capability: checked against the grants (a denial is counted against the
    /// plugin and audited when a host gave the capabilities).
    fn capability<T>(
        &self,
        permission: Permission,
        get: impl FnOnce(&Capabilities) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        match &self.capabilities {
            Some(c) => get(c),
            None if !self.granted.contains(&permission) => {
                Err(HostError::permission_denied(self.name, permission))
            }
            None => Err(HostError::unsupported(&format!(
                "{} (no host in this context)",
                permission.as_str()
            ))),
        }
    }

    /// The plugin's own SQL database, in the host's SQL backend (SQLite:
    /// `<data_dir>/plugins/<name>/db.sqlite`), migrations applied; needs the `database`
    /// permission. Keep the handle: it is cheap to clone and
    /// every call on it is checked and time-limited.
    pub fn database(&self) -> Result<Database, HostError> {
        self.capability(Permission::Database, |c| {
            c.database("InitContext::database")
        })
    }

    /// Outbound HTTP to the hosts of the plugin's `network.allow`; needs `network`.
    pub fn outbound(&self) -> Result<Outbound, HostError> {
        self.capability(Permission::Network, |c| c.outbound("InitContext::outbound"))
    }

    /// The commands (and arguments) of the plugin's `exec.allow`; needs `exec`.
    pub fn exec(&self) -> Result<Exec, HostError> {
        self.capability(Permission::Exec, |c| c.exec("InitContext::exec"))
    }

    /// The host config with secrets redacted; needs `config`.
    pub fn host_config(&self) -> Result<HostConfigView, HostError> {
        self.capability(Permission::Config, |c| {
            c.host_config("InitContext::host_config")
        })
    }

    /// The plugin's files directory (`<data_dir>/plugins/<name>/files`, mode 0700); needs
    /// `filesystem`. A native plugin is not sandboxed: this is where it should keep its files.
    pub fn files_dir(&self) -> Result<std::path::PathBuf, HostError> {
        self.capability(Permission::Filesystem, |c| {
            c.require(Permission::Filesystem, "InitContext::files_dir")?;
            c.files_dir()
                .map(std::path::Path::to_path_buf)
                .ok_or_else(|| HostError::unsupported("filesystem (not opened in this context)"))
        })
    }

    /// The same, with the plugin's own metrics.
    pub fn with_metrics(mut self, metrics: &'a Arc<PluginMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The same, with the plugin's background tasks.
    pub fn with_tasks(mut self, tasks: &'a Tasks) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// The plugin's background tasks (docs/design.md#lifecycle): keep the handle and spawn in
    /// `start`; the host cancels them when the plugin stops and awaits them before `cleanup`.
    pub fn tasks(&self) -> Result<Tasks, HostError> {
        self.tasks
            .cloned()
            .ok_or_else(|| HostError::unsupported("background tasks (no host in this context)"))
    }

    /// The same, with the services the manifest lets it export and the host's container.
    pub fn with_services(mut self, exports: &'a [String], services: &'a Arc<Services>) -> Self {
        self.exports = exports;
        self.services = Some(services);
        self
    }

    /// Register a middleware (needs `router`): `on_request` runs before the handler, in priority
    /// order, and may answer early; `on_response` runs after it, in reverse order.
    pub fn register_middleware(
        &mut self,
        name: &str,
        priority: i32,
        routes: &[&str],
    ) -> Result<(), HostError> {
        let reg = MiddlewareReg {
            name: name.to_string(),
            priority,
            routes: routes.iter().map(|r| r.to_string()).collect(),
        };
        self.registrations
            .add_middleware(self.name, self.granted, reg)
    }

    /// Remove a middleware registered earlier in `init`.
    pub fn unregister_middleware(&mut self, name: &str) -> Result<(), HostError> {
        self.registrations.remove_middleware(name)
    }

    /// Export a service (declared under the manifest's `exports`) that other plugins reach with
    /// [`Services::call`]; calls arrive in [`Plugin::call_service`].
    pub fn export_service(&mut self, service: &str) -> Result<(), HostError> {
        self.registrations
            .add_export(self.name, self.exports, service)
    }

    /// Export a typed service for native plugins (`Services::import::<T>`), as well as the
    /// byte-level one.
    pub fn export_typed<T: std::any::Any + Send + Sync>(
        &mut self,
        service: &str,
        value: Arc<T>,
    ) -> Result<(), HostError> {
        self.export_service(service)?;
        let services = self
            .services
            .ok_or_else(|| HostError::unsupported("services (no host in this context)"))?;
        services.insert_typed(self.name, service, value);
        Ok(())
    }

    /// The host's services, to import typed services or call any plugin's services later.
    pub fn services(&self) -> Result<Arc<Services>, HostError> {
        self.services
            .cloned()
            .ok_or_else(|| HostError::unsupported("services (no host in this context)"))
    }

    /// The same, with the topics the manifest lets it subscribe to and its publisher.
    pub fn with_events(mut self, subscribes: &'a [String], publisher: &'a Publisher) -> Self {
        self.subscribes = subscribes;
        self.publisher = Some(publisher);
        self
    }

    /// Subscribe to a topic pattern declared under the manifest's `events.subscribes`; events
    /// arrive in [`Plugin::on_event`] once the plugin runs.
    pub fn subscribe(&mut self, topic: &str) -> Result<(), HostError> {
        self.registrations
            .add_subscription(self.name, self.subscribes, topic)
    }

    /// Call [`Plugin::on_tick`] with `name` every `every` while the plugin runs (on one instance,
    /// for a wasm plugin). Timers stop before `stop` and are awaited before `cleanup`.
    pub fn register_timer(
        &mut self,
        name: &str,
        every: std::time::Duration,
    ) -> Result<(), HostError> {
        self.registrations.add_timer(name, every)
    }

    /// The plugin's publisher: keep it to publish events declared under `events.publishes`.
    pub fn publisher(&self) -> Result<Publisher, HostError> {
        self.publisher
            .cloned()
            .ok_or_else(|| HostError::unsupported("events (no event bus in this context)"))
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The plugin's config, validated against its schema, defaults applied.
    pub fn config(&self) -> &Map<String, Value> {
        self.config
    }

    /// The effective permissions.
    pub fn granted(&self) -> &BTreeSet<Permission> {
        self.granted
    }

    /// The metrics the plugin records about itself (exposed as `plugd_custom_…{plugin="<name>"}`).
    pub fn metrics(&self) -> Result<Arc<PluginMetrics>, HostError> {
        self.metrics
            .cloned()
            .ok_or_else(|| HostError::unsupported("metrics (no host in this context)"))
    }

    /// The plugin's storage.
    pub fn store(&self) -> &PluginStore {
        self.store
    }

    /// Register a hook.
    pub fn register_hook(&mut self, hook: HookType, priority: i32) -> Result<(), HostError> {
        self.registrations.add_hook(hook, priority)
    }

    /// Register a route (needs `router`).
    pub fn register_route(
        &mut self,
        method: &str,
        path: &str,
        options: RouteOptions,
    ) -> Result<(), HostError> {
        self.registrations
            .add_route(self.name, self.granted, method, path, options)
    }

    /// Merge registrations made elsewhere (by a wasm instance's `init`).
    pub fn merge(&mut self, other: Registrations) -> Result<(), HostError> {
        for (hook, priority) in other.hooks {
            self.registrations.add_hook(hook, priority)?;
        }
        for route in other.routes {
            if !self.registrations.routes.contains(&route) {
                if self.registrations.routes.len() >= crate::registrations::MAX_ROUTES {
                    return Err(HostError::OverLimit {
                        limit: "registrations",
                        message: format!(
                            "a plugin may register at most {} routes",
                            crate::registrations::MAX_ROUTES
                        ),
                    });
                }
                self.registrations.routes.push(route);
            }
        }
        for m in other.middleware {
            self.registrations
                .add_middleware(self.name, self.granted, m)?;
        }
        for service in other.exports {
            self.registrations
                .add_export(self.name, self.exports, &service)?;
        }
        for (name, every) in other.timers {
            self.registrations.add_timer(&name, every)?;
        }
        for topic in other.subscriptions {
            self.registrations
                .add_subscription(self.name, self.subscribes, &topic)?;
        }
        Ok(())
    }
}

/// Where a [`Registrar`]'s changes go: the host, which finds the plugin's running version,
/// applies the change to a copy of its registrations, checks the copy against what the plugin
/// may intercept, and stores it and publishes a new dispatch table together.
pub(crate) trait RegistrationSink: Send + Sync {
    /// Apply `change` to the registrations of plugin `name` when `code` is the code serving
    /// under that name; nothing changes when `change` or a check fails.
    fn change(
        &self,
        name: &str,
        code: &Weak<dyn Plugin>,
        change: &mut dyn FnMut(&mut Registrations) -> Result<(), HostError>,
    ) -> Result<(), HostError>;
}

/// A running plugin's handle on its middleware ([`InitContext::registrar`]): register and
/// unregister middleware after `init`, from a route handler, a timer or an event. Cheap to
/// clone.
///
/// ```no_run
/// use plugd_core::{InitContext, Plugin, PluginError, Registrar, Exchange, Response};
/// use std::sync::OnceLock;
///
/// #[derive(Default)]
/// struct Maintenance { registrar: OnceLock<Registrar> }
///
/// #[async_trait::async_trait]
/// impl Plugin for Maintenance {
///     async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
///         ctx.register_route("POST", "/off", Default::default())?;
///         let _ = self.registrar.set(ctx.registrar()?);
///         Ok(())
///     }
///     async fn handle_request(&self, _route: &str, _ex: &mut Exchange) -> Result<Response, PluginError> {
///         if let Some(r) = self.registrar.get() {
///             r.register_middleware("maintenance", 500, &["/plugins/maintenance/*"])?;
///         }
///         Ok(Response::new(http::StatusCode::NO_CONTENT))
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Registrar {
    name: Arc<str>,
    granted: Arc<BTreeSet<Permission>>,
    code: Weak<dyn Plugin>,
    sink: Arc<dyn RegistrationSink>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("plugin", &self.name)
            .finish_non_exhaustive()
    }
}

impl Registrar {
    pub(crate) fn new(
        name: &str,
        granted: &BTreeSet<Permission>,
        code: &Arc<dyn Plugin>,
        sink: Arc<dyn RegistrationSink>,
    ) -> Self {
        Registrar {
            name: Arc::from(name),
            granted: Arc::new(granted.clone()),
            code: Arc::downgrade(code),
            sink,
        }
    }

    /// Register a middleware now, as [`InitContext::register_middleware`] does in `init` (the
    /// `router` permission, the caps, what it may intercept): the next request sees it.
    pub fn register_middleware(
        &self,
        name: &str,
        priority: i32,
        routes: &[&str],
    ) -> Result<(), HostError> {
        let reg = MiddlewareReg {
            name: name.to_string(),
            priority,
            routes: routes.iter().map(|r| r.to_string()).collect(),
        };
        self.register(reg)
    }

    /// The same, with the registration spelled out (the wasm adapter's call).
    pub fn register(&self, middleware: MiddlewareReg) -> Result<(), HostError> {
        self.sink.change(&self.name, &self.code, &mut |regs| {
            regs.add_middleware(&self.name, &self.granted, middleware.clone())
        })
    }

    /// Remove one of the plugin's own middleware now: the next request no longer runs it. A
    /// name the plugin has not registered is [`HostError::NotFound`].
    pub fn unregister_middleware(&self, name: &str) -> Result<(), HostError> {
        self.sink.change(&self.name, &self.code, &mut |regs| {
            regs.remove_middleware(name)
        })
    }
}

/// A plugin: native Rust code compiled into the host, or the adapter of a wasm component.
///
/// Every method has a default, so a plugin implements only what it uses.
///
/// Lifecycle: `init` (register hooks and routes; no background work) → `start` (open connections,
/// begin work) → serving → `stop` (idempotent) → `cleanup` (release everything). Plugins start in
/// dependency order and stop in reverse. Hooks may do what docs/design.md#hooks says: `pre_request`
/// changes request headers or answers early; `post_request` replaces the response; `pre_response`
/// changes status, headers and body; `post_response`, `startup` and `shutdown` observe.
///
/// ```
/// use plugd_core::{Action, Exchange, HookType, InitContext, Plugin, PluginError};
///
/// struct RequestId;
///
/// #[async_trait::async_trait]
/// impl Plugin for RequestId {
///     async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
///         ctx.register_hook(HookType::PreRequest, 300).map_err(|e| PluginError::Failed(e.to_string()))
///     }
///     async fn on_hook(&self, _hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
///         ex.set_header("x-request-id", "42").map_err(|e| PluginError::Failed(e.to_string()))?;
///         Ok(Action::Continue)
///     }
/// }
/// ```
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Register hooks and routes; validate config.
    async fn init(&self, _ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        Ok(())
    }

    /// Begin work.
    async fn start(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Stop work. Idempotent.
    async fn stop(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Release everything.
    async fn cleanup(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// A new config that passed schema validation. An error keeps the old one.
    async fn on_config_change(&self, _config: &Map<String, Value>) -> Result<(), PluginError> {
        Ok(())
    }

    /// The plugin's own health.
    async fn health_check(&self) -> Health {
        Health::Healthy
    }

    /// A registered hook ran.
    async fn on_hook(&self, _hook: HookType, _ex: &mut Exchange) -> Result<Action, PluginError> {
        Ok(Action::Continue)
    }

    /// A registered route was requested; `route` is the pattern as registered.
    async fn handle_request(
        &self,
        route: &str,
        _ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        Err(PluginError::NotImplemented(format!(
            "no handler for route {route}"
        )))
    }

    /// An event on a topic it subscribed to. Delivered one at a time per subscription, off the
    /// publisher's path; an error is counted, never passed to the publisher.
    async fn on_event(&self, _event: &Event) -> Result<(), PluginError> {
        Ok(())
    }

    /// A registered middleware, before the handler: continue (changes stand) or answer early.
    async fn on_request(
        &self,
        _middleware: &str,
        _ex: &mut Exchange,
    ) -> Result<Action, PluginError> {
        Ok(Action::Continue)
    }

    /// A registered middleware, after the handler (or an early answer): may change the response.
    async fn on_response(&self, _middleware: &str, _ex: &mut Exchange) -> Result<(), PluginError> {
        Ok(())
    }

    /// A call to a service it exported. `caller` is the calling plugin.
    async fn call_service(
        &self,
        service: &str,
        _method: &str,
        _payload: &[u8],
        _caller: &str,
    ) -> Result<Vec<u8>, PluginError> {
        Err(PluginError::NotImplemented(format!(
            "service '{service}' has no handler"
        )))
    }

    /// A command run from the command line (`plugd run <plugin> <command> [args…]`), in a host
    /// started without the HTTP server. The output is printed.
    async fn run_command(&self, command: &str, _args: &[String]) -> Result<String, PluginError> {
        Err(PluginError::NotImplemented(format!(
            "unknown command: {command}"
        )))
    }

    /// A registered timer fired. Ticks of one timer never overlap: a tick that would start while
    /// the previous one runs is skipped.
    async fn on_tick(&self, _timer: &str) -> Result<(), PluginError> {
        Ok(())
    }

    /// Which kind of plugin this is, for display ("native", "wasm").
    fn kind(&self) -> &'static str {
        "native"
    }

    /// Where a wasm plugin's instances are allocated ("pooling", "on-demand"), for display;
    /// `None` for native plugins.
    fn allocator(&self) -> Option<&'static str> {
        None
    }

    /// What the plugin holds now (instances, memory), for `/metrics` and the admin API; `None`
    /// when the host cannot tell (native plugins share the host's memory).
    fn resources(&self) -> Option<Resources> {
        None
    }
}

/// What a plugin holds: its instances and their memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resources {
    /// Instances the plugin may have (its `limits.instances`).
    pub instances_max: usize,
    /// Instances serving a call now.
    pub instances_busy: usize,
    /// Instances waiting in its pool.
    pub instances_idle: usize,
    /// Bytes of linear memory and tables over its live instances.
    pub memory_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn routes_need_router() {
        let mut r = Registrations::default();
        let none = BTreeSet::new();
        let err = r
            .add_route("p", &none, "GET", "/x", RouteOptions::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "permission denied: plugin 'p' attempted router access without permission"
        );
        let router: BTreeSet<_> = [Permission::Router].into();
        r.add_route("p", &router, "get", "/x", RouteOptions::default())
            .unwrap();
        assert_eq!(r.routes[0].method, Method::GET);
        assert!(
            r.add_route("p", &router, "GET", "/x", RouteOptions::default())
                .is_err()
        );
        assert!(
            r.add_route("p", &router, "GET", "x", RouteOptions::default())
                .is_err()
        );
        assert!(
            r.add_route("p", &router, "GET", "/a/../b", RouteOptions::default())
                .is_err()
        );
    }

    #[test]
    fn hooks_conflicting_priorities_are_refused() {
        let mut r = Registrations::default();
        r.add_hook(HookType::PreRequest, 200).unwrap();
        r.add_hook(HookType::PreRequest, 200).unwrap();
        assert_eq!(r.hooks.len(), 1);
        assert!(r.add_hook(HookType::PreRequest, 100).is_err());
    }
}
