//! The cost of plugd's tower layer (BENCHMARKS.md "The layer"): one axum application served
//! three ways by the same listener (`plugd::server::serve_router`), started by
//! `scripts/bench-layer.sh`.
//!
//!   bench_layer bare ADDR            the application alone
//!   bench_layer layer ADDR CONFIG    the application behind `PlugdLayer` with CONFIG's plugins
//!                                    (none, or the benchmark's wasm stack)
//!
//! The application answers `GET /app/hello` with a small JSON body; `GET /healthz` is added after
//! the layer (a route axum's `layer` does not wrap), so the plugins do not guard it.

use axum::Router;
use axum::routing::get;

fn application() -> Router {
    Router::new().route(
        "/app/hello",
        get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                r#"{"message":"hello","from":"the application"}"#,
            )
        }),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, addr) = match args.as_slice() {
        [mode, addr, ..] => (mode.as_str(), addr.as_str()),
        _ => anyhow::bail!("usage: bench_layer bare|layer ADDR [CONFIG]"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("PLUGD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let config = match args.get(2) {
        Some(path) => plugd::manifest::HostConfig::from_path(path.as_ref())?,
        None => plugd::manifest::HostConfig::default(),
    };
    let server = config.server.clone();
    let (app, host) = match mode {
        "bare" => (application(), None),
        "layer" => {
            let host = plugd::host_from_config(config)?;
            host.start().await?;
            let layer = plugd::server::PlugdLayer::new(host.clone());
            (application().layer(layer), Some(host))
        }
        other => anyhow::bail!("unknown mode {other}: bare or layer"),
    };
    let app = app.route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    plugd::server::serve_router(listener, app, &server, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    if let Some(host) = host {
        host.shutdown().await;
    }
    Ok(())
}
