//! Native plugins made of closures (`NativePlugin`): what they register, what their handlers
//! see, and a panicking handler.

use std::time::Duration;

use http::{Method, StatusCode};
use plugd_core::{Exchange, Flow, HookType, Host, NativePlugin, Permission, Response};
use plugd_manifest::{ConfigField, Manifest};

use crate::config;

async fn host_with(plugins: Vec<NativePlugin>) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Host::builder().config(config(dir.path(), "plugins:\n  plugins: []\n"));
    for p in plugins {
        b = b.plugin(p);
    }
    let host = b.build().unwrap();
    host.start().await.unwrap();
    (host, dir)
}

fn greeter() -> NativePlugin {
    let manifest = Manifest::builder("greeter", "1.0.0")
        .description("Says hello")
        .author("test")
        .permission(Permission::Router)
        .config_field("greeting", ConfigField::string().with_default("hi"))
        .subscribes("user.*")
        .exports("Greeter", "Greets by name")
        .build()
        .unwrap();
    NativePlugin::new(manifest)
        .on_start(|ctx| async move {
            ctx.store().set("started", b"yes").await?;
            Ok(())
        })
        .hook(HookType::PreRequest, 200, |_ctx, mut ex| async move {
            ex.set_header("x-greeter-hook", "seen")?;
            Ok(Flow::Continue(ex))
        })
        .route(Method::GET, "/hello/{name}", |ctx, ex| async move {
            let greeting = ctx.config()["greeting"].as_str().unwrap_or("").to_owned();
            let started = ctx.store().get("started").await?.unwrap_or_default();
            let last_user = ctx.store().get("last.user").await?.unwrap_or_default();
            Ok(Response::json(
                StatusCode::OK,
                &serde_json::json!({
                    "greeting": greeting,
                    "name": ex.route_param("name"),
                    "hook": ex.header("x-greeter-hook"),
                    "started": String::from_utf8_lossy(&started),
                    "last_user": String::from_utf8_lossy(&last_user),
                }),
            ))
        })
        .on_response("stamp", |_ctx, mut ex| async move {
            ex.set_response_header("x-stamp", "greeter")?;
            Ok(ex)
        })
        .on_event("user.*", |ctx, event| async move {
            ctx.store().set("last.user", &event.payload).await?;
            Ok(())
        })
        .service("Greeter", |ctx, call| async move {
            let greeting = ctx.config()["greeting"].as_str().unwrap_or("").to_owned();
            Ok(format!(
                "{greeting} {} from {}",
                String::from_utf8_lossy(&call.payload),
                call.caller
            )
            .into_bytes())
        })
}

#[tokio::test]
async fn a_closure_plugin_serves_routes_hooks_middleware_events_and_services() {
    let (host, _dir) = host_with(vec![greeter()]).await;
    let info = host.plugin_info("greeter").unwrap();
    assert_eq!(info.routes, ["GET /plugins/greeter/hello/{name}"]);
    assert_eq!(info.subscriptions, ["user.*"]);
    assert_eq!(info.exports, ["Greeter"]);

    host.events().publish("user.created", "ada").unwrap();
    // Events are delivered off the publisher's path: ask until the handler has stored it.
    let mut body = serde_json::Value::Null;
    for _ in 0..200 {
        let r = host
            .dispatcher()
            .handle(Exchange::new(Method::GET, "/plugins/greeter/hello/ada"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["x-stamp"], "greeter");
        body = serde_json::from_slice(&r.body).unwrap();
        if body["last_user"] == "ada" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        body,
        serde_json::json!({
            "greeting": "hi",
            "name": "ada",
            "hook": "seen",
            "started": "yes",
            "last_user": "ada",
        })
    );

    let answer = host
        .services()
        .call("app", "greeter", "Greeter", "greet", b"Bob")
        .await
        .unwrap();
    assert_eq!(answer, b"hi Bob from app");
    host.shutdown().await;
}

#[tokio::test]
async fn a_hook_may_answer_early() {
    // A hook sees other plugins' requests with `intercept`.
    let manifest = Manifest::builder("guard", "1.0.0")
        .description("d")
        .author("a")
        .permission(Permission::Intercept)
        .build()
        .unwrap();
    let guard =
        NativePlugin::new(manifest).hook(HookType::PreRequest, 300, |_ctx, ex| async move {
            match ex.header("authorization") {
                Some(_) => Ok(Flow::Continue(ex)),
                None => Ok(Flow::Respond(Response::error(
                    StatusCode::UNAUTHORIZED,
                    "no token",
                ))),
            }
        });
    let (host, _dir) = host_with(vec![guard, greeter()]).await;
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/greeter/hello/ada"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    host.shutdown().await;
}

#[tokio::test]
async fn a_closure_route_needs_the_router_permission_as_any_plugin() {
    let manifest = Manifest::builder("sneaky", "1.0.0")
        .description("d")
        .author("a")
        .build()
        .unwrap();
    let sneaky = NativePlugin::new(manifest).route(Method::GET, "/x", |_ctx, _ex| async {
        Ok(Response::new(StatusCode::OK))
    });
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .plugin(sneaky)
        .build()
        .unwrap();
    let _ = host.start().await;
    let info = host.plugin_info("sneaky").unwrap();
    assert!(!info.loaded || info.routes.is_empty());
    let message = info.last_error.expect("the refusal is recorded").message;
    assert!(
        message.contains(
            "permission denied: plugin 'sneaky' attempted router access without permission"
        ),
        "{message}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_panicking_route_is_that_plugins_error_and_the_others_go_on() {
    let manifest = Manifest::builder("buggy", "1.0.0")
        .description("d")
        .author("a")
        .permission(Permission::Router)
        .build()
        .unwrap();
    let buggy = NativePlugin::new(manifest).route(Method::GET, "/boom", |_ctx, _ex| async {
        let empty: Vec<u8> = Vec::new();
        if empty.is_empty() {
            panic!("index out of range in buggy");
        }
        Ok(Response::new(StatusCode::OK))
    });
    let (host, _dir) = host_with(vec![buggy, greeter()]).await;

    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/buggy/boom"))
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let info = host.plugin_info("buggy").unwrap();
    assert_eq!(info.error_count, 1);
    assert_eq!(
        info.last_error.unwrap().message,
        "route GET /boom: plugin trapped: panicked: index out of range in buggy"
    );
    assert_eq!(host.plugin_state("buggy").unwrap().crash_count(), 1);

    // The host and the other plugin go on.
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/greeter/hello/ada"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(host.plugin_info("greeter").unwrap().error_count, 0);
    host.shutdown().await;
}

#[tokio::test]
async fn handlers_see_the_config_given_live() {
    let (host, _dir) = host_with(vec![greeter()]).await;
    let config = serde_json::json!({ "greeting": "bonjour" });
    host.update_plugin_config("greeter", config.as_object().unwrap())
        .await
        .unwrap();
    let answer = host
        .services()
        .call("app", "greeter", "Greeter", "greet", b"Ada")
        .await
        .unwrap();
    assert_eq!(answer, b"bonjour Ada from app");
    host.shutdown().await;
}
