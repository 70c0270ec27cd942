//! An axum application that existed before plugd: an orders API, its own `/healthz`, its own
//! fallback. [`with_plugd`] is everything it takes to add plugd in front of and beside those
//! routes: the plugins' hooks guard and rate-limit `/api/**`, plugin routes are served where the
//! host config mounts them (`/api/v1/hello`), and the admin API and dashboard are nested under
//! `/ops/plugd/`.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

/// The application as it was: nothing of plugd in it.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/api/orders",
            get(|| async { axum::Json(json!({ "orders": [{ "id": 1, "item": "tea" }] })) }),
        )
        .route("/healthz", get(|| async { "the application is fine" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "the application has no such page") })
}

/// The application with plugd: the host of `config` started, its plugins around [`routes`],
/// the admin API and dashboard under `/ops/plugd/`. The host is returned to be shut down.
pub async fn with_plugd(
    config: plugd::manifest::HostConfig,
) -> anyhow::Result<(Router, plugd::Host)> {
    // plugd, added in:
    let host = plugd::host_from_config(config)?;
    host.start().await?;
    let admin = plugd::server::AdminToken::resolve(host.config())?;
    let app = routes()
        .layer(plugd::server::PlugdLayer::new(host.clone()).admin_token(admin.clone()))
        .nest_service("/ops/plugd", plugd::server::admin_api(host.clone(), admin));
    Ok((app, host))
}
