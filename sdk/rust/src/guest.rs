use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::bindings::exports::plugd::plugin::guest::Guest;
use crate::bindings::plugd::plugin::types as wit;
use crate::exchange::Stage;
use crate::reads::{self, Registration};
use crate::{
    Action, Config, Edit, Error, Exchange, Health, HookType, PluginMetadata, Response, Result,
};

/// A plugd plugin. Implement what you use: every method has a default.
///
/// # Lifecycle
///
/// 1. The host creates an instance and a value of your type with `Default`.
/// 2. [`init`](Plugin::init) gets the configuration (validated against the manifest's schema,
///    defaults applied). Register routes, hooks, middleware, subscriptions, services and timers
///    here, with the [`register`](crate::register) functions: registering is only valid during
///    `init`. Registrations come from the manifest and from the first instance's `init`; the other
///    instances must register the same things (or nothing).
/// 3. [`start`](Plugin::start): open connections, start background work.
/// 4. Running: the host calls [`on_hook`](Plugin::on_hook), [`handle_request`](Plugin::handle_request),
///    [`on_request`](Plugin::on_request)/[`on_response`](Plugin::on_response) (middleware),
///    [`on_event`](Plugin::on_event), [`call_service`](Plugin::call_service),
///    [`on_tick`](Plugin::on_tick), [`run_command`](Plugin::run_command) for what was registered,
///    [`on_config_change`](Plugin::on_config_change) when the operator changes the configuration
///    (an error keeps the old one), and [`health`](Plugin::health) when polled.
/// 5. [`stop`](Plugin::stop) (may be called more than once), then [`cleanup`](Plugin::cleanup).
///
/// `init`, `start`, `stop`, `cleanup` and `on_config_change` run on every instance of the pool;
/// any other call runs on any one instance. Fields of your type are per instance; keep shared
/// state in [`storage`](crate::storage) or the [`cache`](crate::cache). A panic traps the instance:
/// the call fails, the instance is discarded and a fresh one replaces it. Return `Err` for an
/// ordinary failure; its message is what the host logs.
///
/// # Hooks
///
/// | [`HookType`] | when | a hook may |
/// |---|---|---|
/// | `Startup` | once, after every plugin has started | only observe (an error is logged and counted) |
/// | `Shutdown` | once, before plugins are stopped | observe, flush what it buffered |
/// | `PreRequest` | a request arrived, before routing and middleware | add or replace request headers, set the identity, or answer at once with `Action::Respond` |
/// | `PostRequest` | a response exists (from a handler or an early answer) | read the request and response, replace the response |
/// | `PreResponse` | just before the response is written | change status and headers, replace the body |
/// | `PostResponse` | after the response was written, off the response path | only observe (logs, metrics) |
/// | `Error` | a handler, hook or middleware failed (`exchange.error()`) | produce the error response |
///
/// An early answer from `PreRequest` skips the later `PreRequest` hooks, middleware and the
/// handler; `PostRequest`, `PreResponse` and `PostResponse` still run. For `Startup` and
/// `Shutdown` the exchange is empty. The host's `/admin`, `/healthz` and `/metrics` never reach
/// plugins.
///
/// A hook's changes to the exchange (its setters) are returned with its [`Action`] and applied
/// by the host in order; a setter the hook may not use returns a `denied` error at once, and a
/// change the host refuses when it applies it (a framing header, a value past the caps) fails
/// the call (see [`Exchange`] for the details, and [`Exchange::apply_edits`] to learn the
/// host's answer inside the call). On `Action::Respond` the changes made before are applied
/// first; on `Err` they are dropped.
///
/// A hook declared in `plugin.yaml` is called without given values (every read asks the host);
/// register it in `init` with [`register::hook_reading`](crate::register::hook_reading) to have
/// what it reads passed with each call.
///
/// # Example
///
/// ```ignore
/// use plugd_guest::prelude::*;
/// use plugd_guest::register;
///
/// #[derive(Default)]
/// struct Stamp;
///
/// impl Plugin for Stamp {
///     fn init(&mut self, _config: &Config) -> Result<()> {
///         register::hook_reading(HookType::PreResponse, 100, &[Field::local("request_id")])?;
///         Ok(())
///     }
///
///     fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
///         if let Some(id) = exchange.local("request_id") {   // given with the call
///             exchange.set_response_header("x-request-id", &id)?;   // returned with the action
///         }
///         Ok(Action::Continue)
///     }
/// }
///
/// plugd_guest::export!(Stamp, name = "stamp");
/// ```
pub trait Plugin: Default + 'static {
    /// Called on every instance with the plugin's configuration; register here.
    fn init(&mut self, config: &Config) -> Result<()> {
        let _ = config;
        Ok(())
    }

    /// Called on every instance after `init`: open connections, start background work.
    fn start(&mut self) -> Result<()> {
        Ok(())
    }

    /// Called on every instance before unloading or reloading. Must be idempotent.
    fn stop(&mut self) -> Result<()> {
        Ok(())
    }

    /// Called on every instance after `stop`: release everything.
    fn cleanup(&mut self) -> Result<()> {
        Ok(())
    }

    /// A new configuration that passed schema validation. Returning `Err` keeps the old one.
    fn on_config_change(&mut self, config: &Config) -> Result<()> {
        let _ = config;
        Ok(())
    }

    /// The plugin's view of its own health, polled by the host.
    fn health(&mut self) -> Health {
        Health::Healthy
    }

    /// A hook registered in the manifest or with [`register::hook`](crate::register::hook).
    /// `Action::Respond` is honoured for `PreRequest` only; other hooks change the exchange.
    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        let _ = (hook, exchange);
        Ok(Action::Continue)
    }

    /// A request to a route registered with [`register::route`](crate::register::route); `route`
    /// is the pattern as registered (`/users/{id}`), so `match route { ... }` dispatches.
    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        let _ = exchange;
        Err(Error::msg(format!("no handler for route {route}")))
    }

    /// A registered middleware, before the handler: continue, or answer now.
    fn on_request(&mut self, middleware: &str, exchange: &Exchange) -> Result<Action> {
        let _ = (middleware, exchange);
        Ok(Action::Continue)
    }

    /// A registered middleware, after the handler: change the response through the exchange (the
    /// changes are returned with the call).
    fn on_response(&mut self, middleware: &str, exchange: &Exchange) -> Result<()> {
        let _ = (middleware, exchange);
        Ok(())
    }

    /// An event on a subscribed topic, published by plugin `source`.
    fn on_event(&mut self, topic: &str, payload: &[u8], source: &str) -> Result<()> {
        let _ = (topic, payload, source);
        Ok(())
    }

    /// A call from plugin `caller` to a service exported with
    /// [`register::export_service`](crate::register::export_service).
    fn call_service(
        &mut self,
        service: &str,
        method: &str,
        payload: &[u8],
        caller: &str,
    ) -> Result<Vec<u8>> {
        let _ = (payload, caller);
        Err(Error::msg(format!(
            "service '{service}' has no method '{method}'"
        )))
    }

    /// A timer registered with [`register::timer`](crate::register::timer) fired (on one instance).
    fn on_tick(&mut self, timer: &str) -> Result<()> {
        let _ = timer;
        Ok(())
    }

    /// An operator command (`plugd` CLI / admin API); the `Ok` text is shown to the operator.
    fn run_command(&mut self, command: &str, args: &[String]) -> Result<String> {
        let _ = args;
        Err(Error::msg(format!("unknown command: {command}")))
    }
}

/// The name and version `export!` records for the plugin type.
#[doc(hidden)]
pub trait PluginInfo {
    const NAME: &'static str;
    const VERSION: &'static str;
}

/// Implements the generated `Guest` trait for a `Plugin` (used by `export!`).
#[doc(hidden)]
pub struct Adapter<P>(PhantomData<P>);

thread_local! {
    // One plugin value per instance. A component instance is single-threaded and never re-entered.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_plugin<P: Plugin, R>(f: impl FnOnce(&mut P) -> R) -> R {
    INSTANCE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let any = slot.get_or_insert_with(|| Box::new(P::default()));
        let plugin = any
            .downcast_mut::<P>()
            .expect("plugd_guest::export! used for two plugin types");
        f(plugin)
    })
}

fn wire<T>(r: Result<T>) -> std::result::Result<T, String> {
    r.map_err(Error::into_message)
}

/// A hook's or a middleware's decision as the contract returns it: `continue` carries the call's
/// edits; an early answer carries none, so the edits made before it are applied on the host
/// first (a local set before answering stays set, as the setters promise).
fn decided(action: Result<Action>, exchange: Exchange) -> Result<wit::Action> {
    match action? {
        Action::Continue => Ok(wit::Action::Continue(exchange.into_edits())),
        Action::Respond(response) => {
            exchange.apply_edits()?;
            Ok(wit::Action::Respond(response))
        }
    }
}

impl<P: Plugin + PluginInfo> Guest for Adapter<P> {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: P::NAME.to_owned(),
            version: P::VERSION.to_owned(),
            sdk: concat!("plugd-guest ", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    fn init(config: String) -> std::result::Result<(), String> {
        let config = wire(Config::from_json(&config))?;
        wire(with_plugin(|p: &mut P| p.init(&config)))
    }

    fn start() -> std::result::Result<(), String> {
        wire(with_plugin(|p: &mut P| p.start()))
    }

    fn stop() -> std::result::Result<(), String> {
        wire(with_plugin(|p: &mut P| p.stop()))
    }

    fn cleanup() -> std::result::Result<(), String> {
        wire(with_plugin(|p: &mut P| p.cleanup()))
    }

    fn on_config_change(config: String) -> std::result::Result<(), String> {
        let config = wire(Config::from_json(&config))?;
        wire(with_plugin(|p: &mut P| p.on_config_change(&config)))
    }

    fn health_check() -> Health {
        with_plugin(|p: &mut P| p.health())
    }

    fn on_hook(
        hook: HookType,
        given: Vec<Option<String>>,
    ) -> std::result::Result<wit::Action, String> {
        let stage = match hook {
            HookType::PreRequest => Stage::Request,
            HookType::PostRequest | HookType::PreResponse => Stage::Response,
            HookType::Startup | HookType::Shutdown | HookType::PostResponse | HookType::Error => {
                Stage::Direct
            }
        };
        let exchange = Exchange::new(reads::of(Registration::Hook(hook)), given, stage);
        let action = with_plugin(|p: &mut P| p.on_hook(hook, &exchange));
        wire(decided(action, exchange))
    }

    fn handle_request(
        route: String,
        given: Vec<Option<String>>,
    ) -> std::result::Result<Response, String> {
        let exchange = Exchange::new(reads::of(Registration::Route(&route)), given, Stage::Direct);
        wire(with_plugin(|p: &mut P| p.handle_request(&route, &exchange)))
    }

    fn on_request(
        middleware: String,
        given: Vec<Option<String>>,
    ) -> std::result::Result<wit::Action, String> {
        let reads = reads::of(Registration::Middleware(&middleware));
        let exchange = Exchange::new(reads, given, Stage::Request);
        let action = with_plugin(|p: &mut P| p.on_request(&middleware, &exchange));
        wire(decided(action, exchange))
    }

    fn on_response(
        middleware: String,
        given: Vec<Option<String>>,
    ) -> std::result::Result<Vec<Edit>, String> {
        let reads = reads::of(Registration::Middleware(&middleware));
        let exchange = Exchange::new(reads, given, Stage::Response);
        wire(with_plugin(|p: &mut P| {
            p.on_response(&middleware, &exchange)
        }))?;
        Ok(exchange.into_edits())
    }

    fn on_event(
        topic: String,
        payload: Vec<u8>,
        source: String,
    ) -> std::result::Result<(), String> {
        wire(with_plugin(|p: &mut P| {
            p.on_event(&topic, &payload, &source)
        }))
    }

    fn call_service(
        service: String,
        method: String,
        payload: Vec<u8>,
        caller: String,
    ) -> std::result::Result<Vec<u8>, String> {
        wire(with_plugin(|p: &mut P| {
            p.call_service(&service, &method, &payload, &caller)
        }))
    }

    fn on_tick(timer: String) -> std::result::Result<(), String> {
        wire(with_plugin(|p: &mut P| p.on_tick(&timer)))
    }

    fn run_command(command: String, args: Vec<String>) -> std::result::Result<String, String> {
        wire(with_plugin(|p: &mut P| p.run_command(&command, &args)))
    }
}
