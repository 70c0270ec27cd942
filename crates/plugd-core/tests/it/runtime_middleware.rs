//! Middleware registered and unregistered while a plugin runs, through the `Registrar` it keeps
//! from `init`: the next request sees the change, a request in flight keeps the table it started
//! with, and the checks and caps of `init` hold.

use std::sync::Arc;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{
    Action, Exchange, Host, HostError, InitContext, MAX_MIDDLEWARE, Plugin, PluginError, Registrar,
    Response, RouteOptions,
};

use crate::{Journal, Recorder, config, manifest_with};

/// A plugin with a `guard` middleware over its `/x…` routes (it marks the response `x-guard`),
/// whose `/x/off` handler unregisters it and `/on` registers it again.
#[derive(Default)]
struct Switch {
    registrar: Arc<Mutex<Option<Registrar>>>,
}

#[async_trait::async_trait]
impl Plugin for Switch {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        for route in ["/x", "/x/off", "/on"] {
            ctx.register_route("GET", route, RouteOptions::default())?;
        }
        ctx.register_middleware("guard", 10, &["/plugins/switch/x*"])?;
        *self.registrar.lock() = Some(ctx.registrar()?);
        Ok(())
    }

    async fn handle_request(
        &self,
        route: &str,
        _ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        let registrar = self.registrar.lock().clone().expect("kept in init");
        match route {
            "/x/off" => registrar.unregister_middleware("guard")?,
            "/on" => registrar.register_middleware("guard", 10, &["/plugins/switch/x*"])?,
            _ => {}
        }
        Ok(Response::new(http::StatusCode::OK))
    }

    async fn on_request(&self, _mw: &str, _ex: &mut Exchange) -> Result<Action, PluginError> {
        Ok(Action::Continue)
    }

    async fn on_response(&self, middleware: &str, ex: &mut Exchange) -> Result<(), PluginError> {
        ex.set_response_header("x-guard", middleware)?;
        Ok(())
    }
}

async fn get(host: &Host, path: &str) -> plugd_core::Response {
    host.dispatcher()
        .handle(Exchange::new(Method::GET, path))
        .await
}

async fn start(
    permissions: &str,
    other: Option<Recorder>,
) -> (Host, Arc<Mutex<Option<Registrar>>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let switch = Switch::default();
    let registrar = switch.registrar.clone();
    let mut builder = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest_with("switch", permissions, ""), switch);
    if let Some(other) = other {
        builder = builder.native(crate::manifest(other.name, ""), other);
    }
    let host = builder.build().unwrap();
    host.start().await.unwrap();
    (host, registrar, dir)
}

#[tokio::test]
async fn a_plugin_unregisters_its_middleware_from_a_handler_and_the_next_request_is_not_intercepted()
 {
    let (host, _registrar, _dir) = start("router", None).await;
    assert_eq!(host.dispatcher().table().middleware_count(), 1);
    let r = get(&host, "/plugins/switch/x").await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.headers.get("x-guard").map(|v| v.to_str().unwrap())
        ),
        (200, Some("guard"))
    );

    // The request that unregisters it started with the table that has it: its middleware's
    // response step still runs for that request.
    let r = get(&host, "/plugins/switch/x/off").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("x-guard").unwrap(), "guard");
    assert_eq!(host.dispatcher().table().middleware_count(), 0);

    // The next request is not intercepted.
    let r = get(&host, "/plugins/switch/x").await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("x-guard").is_none(), "{:?}", r.headers);

    // Registered again at run time: intercepted again.
    assert_eq!(get(&host, "/plugins/switch/on").await.status, 200);
    let r = get(&host, "/plugins/switch/x").await;
    assert_eq!(r.headers.get("x-guard").unwrap(), "guard");
    host.shutdown().await;
}

#[tokio::test]
async fn unregistering_a_middleware_the_plugin_does_not_own_is_an_error_and_changes_nothing() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut spy = Recorder::new("spy", &j);
    spy.middleware = Some((5, &["/plugins/switch/*"]));
    let (host, registrar, _dir) = start("router", Some(spy)).await;
    let registrar = registrar.lock().clone().unwrap();
    assert_eq!(host.dispatcher().table().middleware_count(), 2);

    // `mw` is the spy's middleware, not the switch's.
    let e = registrar.unregister_middleware("mw").unwrap_err();
    assert!(matches!(e, HostError::NotFound(_)), "{e:?}");
    assert_eq!(e.to_string(), "no middleware named 'mw'");
    assert_eq!(host.dispatcher().table().middleware_count(), 2);
    j.lock().clear();
    let r = get(&host, "/plugins/switch/x").await;
    assert_eq!(r.status, 200);
    assert!(
        j.lock().contains(&"spy:mw request".to_string()),
        "{:?}",
        j.lock()
    );

    // Its own, twice: the second time it is gone.
    registrar.unregister_middleware("guard").unwrap();
    let e = registrar.unregister_middleware("guard").unwrap_err();
    assert!(matches!(e, HostError::NotFound(_)), "{e:?}");
    assert_eq!(host.dispatcher().table().middleware_count(), 1);
    host.shutdown().await;
}

#[tokio::test]
async fn the_checks_and_caps_of_init_hold_at_run_time() {
    let (host, registrar, _dir) = start("router", None).await;
    let registrar = registrar.lock().clone().unwrap();

    // Up to the cap (its `guard` counts), then refused and nothing published.
    for i in 1..MAX_MIDDLEWARE {
        registrar
            .register_middleware(&format!("m{i}"), 0, &["/plugins/switch/x"])
            .unwrap();
    }
    assert_eq!(host.dispatcher().table().middleware_count(), MAX_MIDDLEWARE);
    let e = registrar
        .register_middleware("one-more", 0, &["/plugins/switch/x"])
        .unwrap_err();
    assert!(matches!(e, HostError::OverLimit { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("a plugin may register at most {MAX_MIDDLEWARE} middleware")
    );
    assert_eq!(host.dispatcher().table().middleware_count(), MAX_MIDDLEWARE);

    // Without `intercept`, a middleware may cover its own routes only.
    registrar.unregister_middleware("m1").unwrap();
    let e = registrar
        .register_middleware("wide", 0, &["/api/*"])
        .unwrap_err();
    assert!(matches!(e, HostError::Denied(_)), "{e:?}");
    assert!(
        e.to_string().contains("middleware 'wide' covers '/api/*'"),
        "{e}"
    );
    let e = registrar.register_middleware("all", 0, &[]).unwrap_err();
    assert!(e.to_string().contains("covers every request"), "{e}");
    // A name already taken with other settings.
    let e = registrar
        .register_middleware("guard", 99, &["/plugins/switch/x*"])
        .unwrap_err();
    assert_eq!(e.to_string(), "middleware 'guard' is already registered");
    assert_eq!(
        host.dispatcher().table().middleware_count(),
        MAX_MIDDLEWARE - 1
    );
    host.shutdown().await;
}

#[tokio::test]
async fn without_router_there_is_no_middleware_at_run_time_either() {
    // Its init's own middleware needs `router` too, so the plugin keeps the registrar from an
    // init that registers nothing.
    struct Bare(Arc<Mutex<Option<Registrar>>>);
    #[async_trait::async_trait]
    impl Plugin for Bare {
        async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
            *self.0.lock() = Some(ctx.registrar()?);
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let kept = Arc::new(Mutex::new(None));
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest_with("bare", "cache", ""), Bare(kept.clone()))
        .build()
        .unwrap();
    host.start().await.unwrap();
    let registrar = kept.lock().clone().unwrap();
    let e = registrar
        .register_middleware("mw", 0, &["/plugins/bare/*"])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "permission denied: plugin 'bare' attempted router access without permission"
    );
    assert_eq!(host.dispatcher().table().middleware_count(), 0);

    // Once the plugin is unloaded, its registrar changes nothing.
    host.unload_plugin("bare", false).await.unwrap();
    let e = registrar.unregister_middleware("mw").unwrap_err();
    assert!(e.to_string().contains("no longer serves"), "{e}");
    host.shutdown().await;
}
