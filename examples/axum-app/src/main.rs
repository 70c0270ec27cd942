//! `cargo run -p axum-app` (after `scripts/build-examples.sh`): the application on
//! 127.0.0.1:3000 with the plugins of `examples/axum-app/plugd.yaml`.
//!
//! ```sh
//! curl -i localhost:3000/api/orders                       # 401: the gatekeeper plugin wants a key
//! curl -i -H 'x-api-key: k1' localhost:3000/api/orders    # 200, the application's own handler
//! curl -i -H 'x-api-key: k1' 'localhost:3000/api/v1/hello/greet?name=Ada'   # a wasm plugin's route
//! open http://localhost:3000/ops/plugd/                   # the dashboard (token: data/admin-token)
//! ```

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = plugd::manifest::HostConfig::from_path(&here.join("plugd.yaml"))?;
    let server = config.server.clone();
    let (app, host) = axum_app::with_plugd(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("the application with plugd on http://127.0.0.1:3000");
    plugd::server::serve_router(listener, app, &server, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    host.shutdown().await;
    Ok(())
}
