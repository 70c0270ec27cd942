//! The code of docs/native-plugins.md, compiled and run: the guide's plugin, its test, and the
//! axum Router made a plugin.

use axum::routing::get;
use http::{Method, StatusCode};
use plugd::manifest::{ConfigField, Manifest, Permission};
use plugd::test::TestHost;
use plugd::{Flow, HookType, NativePlugin, Response};

fn manifest() -> Result<Manifest, plugd::manifest::ManifestError> {
    Manifest::builder("greeter", "1.0.0")
        .description("Greets visitors and counts them")
        .author("you")
        .permission(Permission::Router)
        .config_field("greeting", ConfigField::string().with_default("Hello"))
        .build()
}

fn greeter(manifest: Manifest) -> NativePlugin {
    NativePlugin::new(manifest)
        // GET /plugins/greeter/hello/{name}
        .route(Method::GET, "/hello/{name}", |ctx, ex| async move {
            let greeting = ctx.config()["greeting"]
                .as_str()
                .unwrap_or("Hello")
                .to_owned();
            let seen = ctx.store().get("visits").await?.map_or(0, |v| v.len()) + 1;
            ctx.store().set("visits", &vec![b'.'; seen]).await?;
            let name = ex.route_param("name").unwrap_or_default();
            Ok(Response::json(
                StatusCode::OK,
                &serde_json::json!({
                    "message": format!("{greeting}, {name}!"),
                    "visits": seen,
                    "greeted": ex.header("x-greeted"),
                }),
            ))
        })
        // Before every request to this plugin's routes.
        .hook(HookType::PreRequest, 100, |_ctx, mut ex| async move {
            ex.set_header("x-greeted", "yes")?;
            Ok(Flow::Continue(ex))
        })
}

fn users_plugin() -> Result<NativePlugin, plugd::manifest::ManifestError> {
    let manifest = Manifest::builder("users", "1.0.0")
        .description("The users API")
        .author("you")
        .permission(Permission::Router)
        .build()?;
    let api = axum::Router::new()
        .route("/users/{id}", get(|| async { "a user" }))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024));
    Ok(plugd::server::router_plugin(manifest, api))
}

#[tokio::test]
async fn greets_and_counts() {
    let manifest = manifest().unwrap();
    let t = TestHost::builder()
        .native(manifest.clone(), greeter(manifest))
        .start()
        .await
        .unwrap();
    let res = t.get("/plugins/greeter/hello/Ada").await;
    res.assert_status(200);
    assert_eq!(res.json()["message"], "Hello, Ada!");
    assert_eq!(res.json()["greeted"], "yes");
    assert_eq!(
        t.get("/plugins/greeter/hello/Bob").await.json()["visits"],
        2
    );
    t.shutdown().await;
}

#[tokio::test]
async fn the_router_plugin_answers_under_its_mount() {
    let plugin = users_plugin().unwrap();
    let t = TestHost::builder()
        .native(plugin.manifest().clone(), plugin)
        .start()
        .await
        .unwrap();
    let res = t.get("/plugins/users/users/7").await;
    res.assert_status(200);
    assert_eq!(res.text(), "a user");
    t.shutdown().await;
}
