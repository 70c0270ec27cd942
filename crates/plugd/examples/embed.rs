//! plugd embedded in an existing axum application, next to the application's own routes, with a
//! native plugin compiled in and the wasm plugins of `examples/plugd.yaml` loaded from disk.
//!
//! ```sh
//! scripts/build-examples.sh
//! cargo run -p plugd --example embed
//! curl localhost:3000/app/hello              # the application's own route
//! curl localhost:3000/plugins/clock/now      # the native plugin
//! curl 'localhost:3000/plugins/hello/greet?name=Ada'   # a wasm plugin
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use plugd::manifest::{HostConfig, Manifest, Permission};
use plugd::{NativePlugin, Response};

/// A native plugin: a route that tells the time (docs/native-plugins.md).
fn clock() -> Result<NativePlugin, plugd::manifest::ManifestError> {
    let manifest = Manifest::builder("clock", "1.0.0")
        .description("Tells the time")
        .author("you")
        .permission(Permission::Router)
        .build()?;
    Ok(
        NativePlugin::new(manifest).route(http::Method::GET, "/now", |_ctx, _ex| async {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Ok(Response::json(
                http::StatusCode::OK,
                &serde_json::json!({ "unix": now }),
            ))
        }),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = HostConfig::from_path(&root.join("examples/plugd.yaml"))?;
    let runtime = plugd::wasm::WasmRuntime::new(plugd::wasm::RuntimeOptions::from_config(&config))?;
    // SQLite storage and status tables under data_dir, as `plugd serve` has them.
    let host = plugd::with_embedded_backends(plugd::Host::builder(), &config)?
        .config(config)
        .loader(runtime)
        .plugin(clock()?)
        .build()?;
    host.start().await?;

    let admin = plugd::server::AdminToken::resolve(host.config())?;
    // The application's own routes first; everything else goes through plugd.
    let app = Router::new()
        .route("/app/hello", get(|| async { "hello from the application" }))
        .merge(plugd::server::router(host.clone(), admin.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("listening on http://127.0.0.1:3000");
    // The admin API and dashboard on an origin of their own (admin.listen), out of plugins' reach.
    if let Some(at) = host.config().admin.listen_addr() {
        let admin_listener = tokio::net::TcpListener::bind(&at).await?;
        tracing::info!("admin API and dashboard on http://{at}/admin/");
        let admin_app = plugd::server::admin_router(host.clone(), admin);
        let served = plugd::server::serve_router(
            admin_listener,
            admin_app,
            &host.config().server,
            std::future::pending(),
        );
        tokio::spawn(served);
    }
    // The timeouts and caps of the config's `server:` section (slow clients, header caps, the
    // connection cap), as `plugd serve` applies them.
    plugd::server::serve_router(listener, app, &host.config().server, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    host.shutdown().await;
    Ok(())
}
