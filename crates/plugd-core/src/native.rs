//! Native plugins from functions and closures: [`NativePlugin`].
//!
//! A [`NativePlugin`] is a [`Plugin`] whose routes, hooks, middleware, event handlers, services,
//! timers and lifecycle steps are `async` closures (or `async fn`s) given to a builder. It
//! registers them in `init`, through the same [`InitContext`] calls a hand-written plugin makes,
//! so its permissions and its manifest's declarations are checked the same way.
//!
//! Handlers own what they get: a copy of the [`Exchange`] (routes, hooks, middleware), the
//! [`Event`], the [`ServiceCall`], and a [`PluginContext`] with the plugin's name, config,
//! storage and event publisher. Nothing is borrowed across an `await`, so a plain
//! `|ctx, ex| async move { … }` closure is a handler. A hook or middleware gives the exchange
//! back in [`Flow::Continue`] for its changes to stand.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use plugd_manifest::{HookType, Manifest};
use serde_json::{Map, Value};

use crate::error::{HostError, PluginError};
use crate::events::{Event, Publisher};
use crate::exchange::{Exchange, Response};
use crate::host::HostBuilder;
use crate::kv::PluginStore;
use crate::plugin::{Action, InitContext, Plugin};
use crate::registrations::RouteOptions;
use crate::services::Services;

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, PluginError>> + Send>>;
type Handler<A, T> = Arc<dyn Fn(PluginContext, A) -> BoxFuture<T> + Send + Sync>;
type Step = Arc<dyn Fn(PluginContext) -> BoxFuture<()> + Send + Sync>;
type InitStep = Arc<dyn Fn(&mut InitContext<'_>) -> Result<(), PluginError> + Send + Sync>;

fn handler<A, T, F, Fut>(f: F) -> Handler<A, T>
where
    F: Fn(PluginContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, PluginError>> + Send + 'static,
{
    Arc::new(move |ctx, arg| Box::pin(f(ctx, arg)))
}

fn step<F, Fut>(f: F) -> Step
where
    F: Fn(PluginContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), PluginError>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// What a native hook or middleware decides: go on with the exchange as it gave it back, or
/// answer now (in `pre_request` and middleware `on_request`; see [`Action::Respond`]).
///
/// ```
/// use plugd_core::{Flow, Response};
/// let answer = Flow::Respond(Response::error(http::StatusCode::UNAUTHORIZED, "no token"));
/// assert!(matches!(answer, Flow::Respond(_)));
/// ```
#[derive(Debug)]
// Moved once per call and matched at once: a box would cost an allocation and a `Box::new` in
// every handler for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Flow {
    /// Go on; the changes made to this exchange (headers, locals, the response) stand.
    Continue(Exchange),
    /// Answer now with this response; changes made to the exchange are dropped.
    Respond(Response),
}

/// A call to a service a native plugin exports: what [`Services::call`] passed.
///
/// ```
/// use plugd_core::ServiceCall;
/// let call = ServiceCall { method: "now".into(), payload: b"{}".to_vec(), caller: "app".into() };
/// assert_eq!(call.method, "now");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCall {
    /// The method called.
    pub method: String,
    /// Its payload (JSON by convention).
    pub payload: Vec<u8>,
    /// The calling plugin.
    pub caller: String,
}

/// What a native plugin's handlers get besides their argument: the plugin's name, its config
/// (validated against its schema, defaults applied; the latest one after a config change), its
/// storage, its event publisher and the host's services. Cheap to clone.
///
/// ```
/// use plugd_core::{NativePlugin, Response};
/// use plugd_manifest::Manifest;
///
/// let manifest = Manifest::builder("greeter", "1.0.0").description("d").author("a")
///     .permission(plugd_core::Permission::Router)
///     .build()
///     .unwrap();
/// let plugin = NativePlugin::new(manifest).route(http::Method::GET, "/hi", |ctx, _ex| async move {
///     let greeting = ctx.config()["greeting"].as_str().unwrap_or("hello").to_owned();
///     let visits = ctx.store().get("visits").await?.map_or(0, |v| v.len());
///     Ok(Response::json(http::StatusCode::OK, &serde_json::json!({ "greeting": greeting, "visits": visits })))
/// });
/// # let _ = plugin;
/// ```
#[derive(Clone)]
pub struct PluginContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    name: String,
    config: parking_lot::RwLock<Arc<Map<String, Value>>>,
    store: PluginStore,
    publisher: Option<Publisher>,
    services: Option<Arc<Services>>,
}

impl std::fmt::Debug for PluginContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginContext")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl PluginContext {
    /// The plugin's name.
    ///
    /// ```
    /// fn log(ctx: &plugd_core::PluginContext) { tracing::info!(plugin = ctx.name(), "hello"); }
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The plugin's config as it is now: validated against its schema, defaults applied.
    ///
    /// ```
    /// fn greeting(ctx: &plugd_core::PluginContext) -> String {
    ///     ctx.config()["greeting"].as_str().unwrap_or("hello").to_owned()
    /// }
    /// ```
    pub fn config(&self) -> Arc<Map<String, Value>> {
        self.inner.config.read().clone()
    }

    /// The plugin's storage.
    ///
    /// ```
    /// async fn count(ctx: &plugd_core::PluginContext) -> Result<(), plugd_core::HostError> {
    ///     ctx.store().set("last", b"now").await
    /// }
    /// ```
    pub fn store(&self) -> &PluginStore {
        &self.inner.store
    }

    /// The plugin's publisher, for the topics its manifest declares under `events.publishes`.
    ///
    /// ```
    /// fn announce(ctx: &plugd_core::PluginContext) -> Result<(), plugd_core::HostError> {
    ///     ctx.publisher()?.publish("clock.tick", "{}")?;
    ///     Ok(())
    /// }
    /// ```
    pub fn publisher(&self) -> Result<&Publisher, HostError> {
        self.inner
            .publisher
            .as_ref()
            .ok_or_else(|| HostError::unsupported("events (no event bus in this context)"))
    }

    /// The host's services, to call other plugins' services or import typed ones.
    ///
    /// ```
    /// async fn ask(ctx: &plugd_core::PluginContext) -> Result<Vec<u8>, plugd_core::HostError> {
    ///     ctx.services()?.call(ctx.name(), "auth", "AuthService", "whoami", b"{}").await
    /// }
    /// ```
    pub fn services(&self) -> Result<&Arc<Services>, HostError> {
        self.inner
            .services
            .as_ref()
            .ok_or_else(|| HostError::unsupported("services (no host in this context)"))
    }
}

struct Route {
    method: Method,
    path: String,
    options: RouteOptions,
    handler: Handler<Exchange, Response>,
}

struct Middleware {
    name: String,
    priority: i32,
    routes: Vec<String>,
    on_request: Option<Handler<Exchange, Flow>>,
    on_response: Option<Handler<Exchange, Exchange>>,
}

/// A native plugin made of closures: a [`Manifest`] (see [`Manifest::builder`]) and the handlers
/// of what it does. Add it to a host with [`HostBuilder::plugin`].
///
/// ```
/// use plugd_core::{Flow, HookType, NativePlugin, Permission, Response};
/// use plugd_manifest::Manifest;
///
/// let manifest = Manifest::builder("clock", "1.0.0").description("Tells the time").author("you")
///     .permission(Permission::Router)
///     .build()?;
/// let clock = NativePlugin::new(manifest)
///     .route(http::Method::GET, "/now", |_ctx, _ex| async {
///         Ok(Response::json(http::StatusCode::OK, &serde_json::json!({ "unix": 1_700_000_000 })))
///     })
///     .hook(HookType::PreRequest, 100, |_ctx, mut ex| async move {
///         ex.set_header("x-clock", "on")?;
///         Ok(Flow::Continue(ex))
///     });
/// let host = plugd_core::Host::builder().plugin(clock);
/// # let _ = host;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A handler that panics fails like one that returned an error: the request gets the plugin's
/// error answer, the failure counts against the plugin, and the host goes on.
pub struct NativePlugin {
    manifest: Manifest,
    routes: Vec<Route>,
    hooks: Vec<(HookType, i32, Handler<Exchange, Flow>)>,
    middleware: Vec<Middleware>,
    events: Vec<(String, Handler<Event, ()>)>,
    services: Vec<(String, Handler<ServiceCall, Vec<u8>>)>,
    timers: Vec<(String, Duration, Step)>,
    on_init: Option<InitStep>,
    on_start: Option<Step>,
    on_stop: Option<Step>,
    /// The context of the latest `init`.
    context: parking_lot::RwLock<Option<PluginContext>>,
}

impl std::fmt::Debug for NativePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativePlugin")
            .field("name", &self.manifest.name)
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect::<Vec<_>>(),
            )
            .field(
                "hooks",
                &self
                    .hooks
                    .iter()
                    .map(|(h, p, _)| (*h, *p))
                    .collect::<Vec<_>>(),
            )
            .field(
                "middleware",
                &self.middleware.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .field(
                "events",
                &self.events.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            )
            .field(
                "services",
                &self.services.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            )
            .field(
                "timers",
                &self.timers.iter().map(|(t, _, _)| t).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl NativePlugin {
    /// A plugin with `manifest` and nothing to do yet.
    ///
    /// ```
    /// let manifest = plugd_manifest::Manifest::builder("empty", "0.1.0").description("d").author("a").build().unwrap();
    /// let plugin = plugd_core::NativePlugin::new(manifest);
    /// assert_eq!(plugin.manifest().name, "empty");
    /// ```
    pub fn new(manifest: Manifest) -> Self {
        NativePlugin {
            manifest,
            routes: Vec::new(),
            hooks: Vec::new(),
            middleware: Vec::new(),
            events: Vec::new(),
            services: Vec::new(),
            timers: Vec::new(),
            on_init: None,
            on_start: None,
            on_stop: None,
            context: parking_lot::RwLock::new(None),
        }
    }

    /// Its manifest.
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// let plugin = plugd_core::NativePlugin::new(manifest);
    /// assert_eq!(plugin.manifest().version.to_string(), "1.0.0");
    /// ```
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Answer `method` `path` (relative to the plugin's mount, `/plugins/<name>`; `{id}` and
    /// `{*rest}` capture, see [`Exchange::route_param`]) with `handler`, which gets a copy of the
    /// request. Needs the `router` permission.
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// use plugd_core::{NativePlugin, Response};
    /// let plugin = NativePlugin::new(manifest).route(http::Method::GET, "/users/{id}", |_ctx, ex| async move {
    ///     let id = ex.route_param("id").unwrap_or_default();
    ///     Ok(Response::json(http::StatusCode::OK, &serde_json::json!({ "id": id })))
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn route<F, Fut>(self, method: Method, path: &str, handler: F) -> Self
    where
        F: Fn(PluginContext, Exchange) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response, PluginError>> + Send + 'static,
    {
        self.route_with(method, path, RouteOptions::default(), handler)
    }

    /// [`NativePlugin::route`] with options (the roles a request's identity must hold).
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// use plugd_core::{NativePlugin, Response, RouteOptions};
    /// let admins = RouteOptions { required_roles: vec!["admin".into()] };
    /// let plugin = NativePlugin::new(manifest).route_with(http::Method::DELETE, "/cache", admins, |_ctx, _ex| async {
    ///     Ok(Response::new(http::StatusCode::NO_CONTENT))
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn route_with<F, Fut>(
        mut self,
        method: Method,
        path: &str,
        options: RouteOptions,
        handler: F,
    ) -> Self
    where
        F: Fn(PluginContext, Exchange) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response, PluginError>> + Send + 'static,
    {
        self.routes.push(Route {
            method,
            path: path.to_owned(),
            options,
            handler: self::handler(handler),
        });
        self
    }

    /// Run `handler` at the hook point `hook`, at `priority` (higher runs first). What a hook
    /// may change depends on the hook point (see [`Plugin`]); it gives the exchange back in
    /// [`Flow::Continue`], or answers in `pre_request` with [`Flow::Respond`]. A manifest that
    /// also declares the hook must give it the same priority.
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// use plugd_core::{Flow, HookType, NativePlugin, Response};
    /// let plugin = NativePlugin::new(manifest).hook(HookType::PreRequest, 300, |_ctx, ex| async move {
    ///     match ex.header("authorization") {
    ///         Some(_) => Ok(Flow::Continue(ex)),
    ///         None => Ok(Flow::Respond(Response::error(http::StatusCode::UNAUTHORIZED, "no token"))),
    ///     }
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn hook<F, Fut>(mut self, hook: HookType, priority: i32, handler: F) -> Self
    where
        F: Fn(PluginContext, Exchange) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Flow, PluginError>> + Send + 'static,
    {
        self.hooks.push((hook, priority, self::handler(handler)));
        self
    }

    /// A middleware named `name` on the routes matching `routes` (globs over the full path,
    /// `/plugins/*/admin/**`), at `priority`: `on_request` runs before the handler, in priority
    /// order, and may answer early. Add what runs after the handler with
    /// [`NativePlugin::on_response`]. Needs the `router` permission.
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// use plugd_core::{Flow, NativePlugin};
    /// let plugin = NativePlugin::new(manifest)
    ///     .middleware("stamp", 100, &["/plugins/p/**"], |_ctx, mut ex| async move {
    ///         ex.set_local("started", "now")?;
    ///         Ok(Flow::Continue(ex))
    ///     })
    ///     .on_response("stamp", |_ctx, mut ex| async move {
    ///         ex.set_response_header("x-stamped", "yes")?;
    ///         Ok(ex)
    ///     });
    /// # let _ = plugin;
    /// ```
    pub fn middleware<F, Fut>(
        mut self,
        name: &str,
        priority: i32,
        routes: &[&str],
        on_request: F,
    ) -> Self
    where
        F: Fn(PluginContext, Exchange) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Flow, PluginError>> + Send + 'static,
    {
        let on_request = Some(self::handler(on_request));
        match self.middleware.iter_mut().find(|m| m.name == name) {
            Some(m) => {
                m.priority = priority;
                m.routes = routes.iter().map(|r| r.to_string()).collect();
                m.on_request = on_request;
            }
            None => self.middleware.push(Middleware {
                name: name.to_owned(),
                priority,
                routes: routes.iter().map(|r| r.to_string()).collect(),
                on_request,
                on_response: None,
            }),
        }
        self
    }

    /// What the middleware `name` does after the handler (or an early answer), in reverse
    /// priority order: it may change the response, and gives the exchange back. A middleware
    /// given only this runs on every route of the plugin's own mount at priority 0.
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// let plugin = plugd_core::NativePlugin::new(manifest).on_response("cors", |_ctx, mut ex| async move {
    ///     ex.set_response_header("access-control-allow-origin", "*")?;
    ///     Ok(ex)
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn on_response<F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(PluginContext, Exchange) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Exchange, PluginError>> + Send + 'static,
    {
        let on_response = Some(self::handler(handler));
        match self.middleware.iter_mut().find(|m| m.name == name) {
            Some(m) => m.on_response = on_response,
            None => {
                let own = format!("/plugins/{}/**", self.manifest.name);
                self.middleware.push(Middleware {
                    name: name.to_owned(),
                    priority: 0,
                    routes: vec![own],
                    on_request: None,
                    on_response,
                })
            }
        }
        self
    }

    /// Receive the events on `topic` (a pattern the manifest declares under
    /// `events.subscribes`), one at a time, off the publisher's path.
    ///
    /// ```
    /// let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a")
    ///     .subscribes("user.*")
    ///     .build()
    ///     .unwrap();
    /// let plugin = plugd_core::NativePlugin::new(manifest).on_event("user.*", |ctx, event| async move {
    ///     ctx.store().set(&format!("last.{}", event.topic), &event.payload).await?;
    ///     Ok(())
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn on_event<F, Fut>(mut self, topic: &str, handler: F) -> Self
    where
        F: Fn(PluginContext, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), PluginError>> + Send + 'static,
    {
        self.events.push((topic.to_owned(), self::handler(handler)));
        self
    }

    /// Export the service `name` (declared under the manifest's `exports`): other plugins call
    /// it with [`Services::call`].
    ///
    /// ```
    /// let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a")
    ///     .exports("Echo", "Says it back")
    ///     .build()
    ///     .unwrap();
    /// let plugin = plugd_core::NativePlugin::new(manifest).service("Echo", |_ctx, call| async move {
    ///     Ok(call.payload)
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn service<F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(PluginContext, ServiceCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, PluginError>> + Send + 'static,
    {
        self.services
            .push((name.to_owned(), self::handler(handler)));
        self
    }

    /// Run `handler` every `every` while the plugin runs; ticks never overlap.
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// let plugin = plugd_core::NativePlugin::new(manifest)
    ///     .timer("sweep", std::time::Duration::from_secs(60), |ctx| async move {
    ///         ctx.store().delete("stale").await?;
    ///         Ok(())
    ///     });
    /// # let _ = plugin;
    /// ```
    pub fn timer<F, Fut>(mut self, name: &str, every: Duration, handler: F) -> Self
    where
        F: Fn(PluginContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), PluginError>> + Send + 'static,
    {
        self.timers.push((name.to_owned(), every, step(handler)));
        self
    }

    /// Run `f` in `init`, after the builder's registrations: for what they do not cover (a
    /// database, outbound HTTP, typed services, background tasks). An error fails the load.
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// let plugin = plugd_core::NativePlugin::new(manifest).on_init(|ctx| {
    ///     tracing::info!(plugin = ctx.name(), keys = ctx.config().len(), "initialized");
    ///     Ok(())
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn on_init<F>(mut self, f: F) -> Self
    where
        F: Fn(&mut InitContext<'_>) -> Result<(), PluginError> + Send + Sync + 'static,
    {
        self.on_init = Some(Arc::new(f));
        self
    }

    /// Run `handler` when the plugin starts (after `init`, in dependency order).
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// let plugin = plugd_core::NativePlugin::new(manifest).on_start(|ctx| async move {
    ///     ctx.store().set("started", b"yes").await?;
    ///     Ok(())
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn on_start<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(PluginContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), PluginError>> + Send + 'static,
    {
        self.on_start = Some(step(handler));
        self
    }

    /// Run `handler` when the plugin stops (it may be called more than once).
    ///
    /// ```
    /// # let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// let plugin = plugd_core::NativePlugin::new(manifest).on_stop(|ctx| async move {
    ///     tracing::info!(plugin = ctx.name(), "stopping");
    ///     Ok(())
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn on_stop<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(PluginContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), PluginError>> + Send + 'static,
    {
        self.on_stop = Some(step(handler));
        self
    }

    /// The context made in `init`; a call before it is the host's mistake, reported as one.
    fn context(&self) -> Result<PluginContext, PluginError> {
        self.context.read().clone().ok_or_else(|| {
            PluginError::Unavailable(format!(
                "native plugin '{}' was called before init",
                self.manifest.name
            ))
        })
    }

    fn register(&self, ctx: &mut InitContext<'_>) -> Result<(), HostError> {
        for (hook, priority, _) in &self.hooks {
            ctx.register_hook(*hook, *priority)?;
        }
        for route in &self.routes {
            ctx.register_route(route.method.as_str(), &route.path, route.options.clone())?;
        }
        for m in &self.middleware {
            let routes: Vec<&str> = m.routes.iter().map(String::as_str).collect();
            ctx.register_middleware(&m.name, m.priority, &routes)?;
        }
        for (topic, _) in &self.events {
            ctx.subscribe(topic)?;
        }
        for (service, _) in &self.services {
            ctx.export_service(service)?;
        }
        for (timer, every, _) in &self.timers {
            ctx.register_timer(timer, *every)?;
        }
        Ok(())
    }
}

/// Run a hook's or a middleware's handler on a copy of `ex`, and keep its changes when it goes on.
async fn flow(
    handler: &Handler<Exchange, Flow>,
    ctx: PluginContext,
    ex: &mut Exchange,
) -> Result<Action, PluginError> {
    match handler(ctx, ex.clone()).await? {
        Flow::Continue(changed) => {
            *ex = changed;
            Ok(Action::Continue)
        }
        Flow::Respond(response) => Ok(Action::Respond(response)),
    }
}

#[async_trait]
impl Plugin for NativePlugin {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        self.register(ctx)?;
        let context = PluginContext {
            inner: Arc::new(ContextInner {
                name: ctx.name().to_owned(),
                config: parking_lot::RwLock::new(Arc::new(ctx.config().clone())),
                store: ctx.store().clone(),
                publisher: ctx.publisher().ok(),
                services: ctx.services().ok(),
            }),
        };
        // Initialized again (a reload, a restart): the handlers get what this init gave.
        *self.context.write() = Some(context);
        if let Some(on_init) = &self.on_init {
            on_init(ctx)?;
        }
        Ok(())
    }

    async fn start(&self) -> Result<(), PluginError> {
        match &self.on_start {
            Some(on_start) => on_start(self.context()?).await,
            None => Ok(()),
        }
    }

    async fn stop(&self) -> Result<(), PluginError> {
        match &self.on_stop {
            Some(on_stop) => on_stop(self.context()?).await,
            None => Ok(()),
        }
    }

    async fn on_config_change(&self, config: &Map<String, Value>) -> Result<(), PluginError> {
        *self.context()?.inner.config.write() = Arc::new(config.clone());
        Ok(())
    }

    async fn on_hook(&self, hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        match self.hooks.iter().find(|(h, _, _)| *h == hook) {
            Some((_, _, handler)) => flow(handler, self.context()?, ex).await,
            // Declared in the manifest only: nothing to do.
            None => Ok(Action::Continue),
        }
    }

    async fn handle_request(
        &self,
        route: &str,
        ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        let found = self
            .routes
            .iter()
            .find(|r| r.path == route && r.method == ex.method)
            .or_else(|| {
                // HEAD answered by the GET handler, when the host routes it so.
                self.routes.iter().find(|r| {
                    r.path == route && r.method == Method::GET && ex.method == Method::HEAD
                })
            });
        match found {
            Some(r) => (r.handler)(self.context()?, ex.clone()).await,
            None => Err(PluginError::NotImplemented(format!(
                "no handler for route {} {route}",
                ex.method
            ))),
        }
    }

    async fn on_event(&self, event: &Event) -> Result<(), PluginError> {
        // Every subscription whose pattern matches; the host delivers once per subscription.
        let handlers: Vec<&Handler<Event, ()>> = self
            .events
            .iter()
            .filter(|(topic, _)| crate::events::topic_matches(topic, &event.topic))
            .map(|(_, h)| h)
            .collect();
        if handlers.is_empty() {
            return Ok(());
        }
        let ctx = self.context()?;
        for handler in handlers {
            handler(ctx.clone(), event.clone()).await?;
        }
        Ok(())
    }

    async fn on_request(&self, middleware: &str, ex: &mut Exchange) -> Result<Action, PluginError> {
        match self.middleware.iter().find(|m| m.name == middleware) {
            Some(Middleware {
                on_request: Some(handler),
                ..
            }) => flow(handler, self.context()?, ex).await,
            _ => Ok(Action::Continue),
        }
    }

    async fn on_response(&self, middleware: &str, ex: &mut Exchange) -> Result<(), PluginError> {
        if let Some(Middleware {
            on_response: Some(handler),
            ..
        }) = self.middleware.iter().find(|m| m.name == middleware)
        {
            *ex = handler(self.context()?, ex.clone()).await?;
        }
        Ok(())
    }

    async fn call_service(
        &self,
        service: &str,
        method: &str,
        payload: &[u8],
        caller: &str,
    ) -> Result<Vec<u8>, PluginError> {
        let Some((_, handler)) = self.services.iter().find(|(s, _)| s == service) else {
            return Err(PluginError::NotImplemented(format!(
                "service '{service}' has no handler"
            )));
        };
        let call = ServiceCall {
            method: method.to_owned(),
            payload: payload.to_vec(),
            caller: caller.to_owned(),
        };
        handler(self.context()?, call).await
    }

    async fn on_tick(&self, timer: &str) -> Result<(), PluginError> {
        match self.timers.iter().find(|(t, _, _)| t == timer) {
            Some((_, _, handler)) => handler(self.context()?).await,
            None => Ok(()),
        }
    }
}

impl HostBuilder {
    /// Add a [`NativePlugin`], with the manifest it was made with ([`HostBuilder::native`]).
    ///
    /// ```
    /// let manifest = plugd_manifest::Manifest::builder("p", "1.0.0").description("d").author("a").build().unwrap();
    /// let builder = plugd_core::Host::builder().plugin(plugd_core::NativePlugin::new(manifest));
    /// # let _ = builder;
    /// ```
    pub fn plugin(self, plugin: NativePlugin) -> Self {
        let manifest = plugin.manifest.clone();
        self.native(manifest, plugin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::builder("p", "1.0.0")
            .description("d")
            .author("a")
            .build()
            .unwrap()
    }

    #[test]
    fn on_response_alone_makes_a_middleware_on_the_plugins_own_mount() {
        let plugin = NativePlugin::new(manifest()).on_response("m", |_ctx, ex| async { Ok(ex) });
        assert_eq!(plugin.middleware[0].routes, ["/plugins/p/**"]);
        assert!(plugin.middleware[0].on_request.is_none());
        let plugin = plugin.middleware("m", 5, &["/x/**"], |_ctx, ex| async {
            Ok(Flow::Continue(ex))
        });
        assert_eq!(plugin.middleware.len(), 1);
        assert_eq!(plugin.middleware[0].routes, ["/x/**"]);
        assert!(plugin.middleware[0].on_response.is_some());
    }

    #[test]
    fn routes_are_kept_by_method_and_path() {
        let plugin = NativePlugin::new(manifest())
            .route(Method::GET, "/a", |_c, _e| async {
                Ok(Response::new(http::StatusCode::OK))
            })
            .route(Method::POST, "/a", |_c, _e| async {
                Ok(Response::new(http::StatusCode::OK))
            });
        let keys: Vec<(Method, &str)> = plugin
            .routes
            .iter()
            .map(|r| (r.method.clone(), r.path.as_str()))
            .collect();
        assert_eq!(keys, [(Method::GET, "/a"), (Method::POST, "/a")]);
    }

    #[tokio::test]
    async fn a_handler_called_before_init_is_unavailable() {
        let plugin = NativePlugin::new(manifest()).route(Method::GET, "/a", |_c, _e| async {
            Ok(Response::new(http::StatusCode::OK))
        });
        let mut ex = Exchange::new(Method::GET, "/plugins/p/a");
        let err = plugin.handle_request("/a", &mut ex).await.unwrap_err();
        assert_eq!(
            err,
            PluginError::Unavailable("native plugin 'p' was called before init".into())
        );
    }
}
