//! The axum application: host routes first, plugins for everything else.

use std::future::Future;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use plugd_core::{Exchange, Host, Status};

use crate::admin::{self, AdminToken, json_error};

/// Largest admin request body.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) host: Host,
    pub(crate) admin: AdminToken,
    body_limit: usize,
}

/// The application: `/healthz`, `/metrics`, `/admin/*` (token required), and plugin dispatch for
/// every other path.
pub fn router(host: Host, admin: AdminToken) -> Router {
    let body_limit = usize::try_from(host.config().server.body_limit).unwrap_or(usize::MAX);
    let state = AppState {
        host,
        admin,
        body_limit,
    };
    let admin_routes = Router::new()
        .route("/plugins", get(admin::list_plugins).post(admin::load))
        .route(
            "/plugins/{name}",
            get(admin::get_plugin).delete(admin::unload),
        )
        .route("/plugins/{name}/health", get(admin::get_health))
        .route("/plugins/{name}/enable", post(admin::enable))
        .route("/plugins/{name}/disable", post(admin::disable))
        .route("/plugins/{name}/reload", post(admin::reload))
        .route("/config/reload", post(admin::reload_config))
        .route("/health", get(admin::all_health))
        .route(
            "/plugins/{name}/config",
            get(admin::get_config).put(admin::put_config),
        )
        .route("/audit", get(admin::audit))
        .route("/info", get(admin::info))
        .layer(axum::extract::DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .fallback(admin::unknown)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/admin", admin_routes)
        .fallback(dispatch)
        .with_state(state)
}

/// Serve until `shutdown` resolves, then stop every plugin (reverse start order) and return.
pub async fn serve(
    host: Host,
    admin: AdminToken,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(host.clone(), admin);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    host.shutdown().await;
    result
}

/// `GET /healthz`: `ok` or `degraded` (a plugin failed, was disabled by its error threshold,
/// reports itself degraded or unhealthy, or is throttled), counts by status, and a summary of
/// every plugin. Always 200: the host itself serves; plugins' trouble is in the body.
async fn healthz(State(state): State<AppState>) -> Response {
    let summary = state.host.health_summary();
    let count = |s: Status| summary.plugins.values().filter(|p| p.status == s).count();
    let uptime = SystemTime::now()
        .duration_since(state.host.started_at())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Json(serde_json::json!({
        "status": summary.status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "plugins": {
            "total": summary.plugins.len(),
            "running": count(Status::Running),
            "error": count(Status::Error),
            "disabled": count(Status::Disabled),
            "stopped": count(Status::Stopped),
        },
        "checks": summary.plugins,
    }))
    .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut r = Response::new(Body::from(state.host.render_metrics()));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Everything else goes through the plugins.
async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is over the {}-byte limit (server.body_limit)",
                    state.body_limit
                ),
            );
        }
    };
    let mut ex = Exchange::new(parts.method, parts.uri.path());
    ex.query = parts.uri.query().unwrap_or("").to_string();
    ex.headers = parts.headers;
    // Plugins never see admin credentials, even when a client sends them to a plugin route.
    if admin::bearer(&ex.headers).is_some_and(|t| state.admin.accepts(t)) {
        ex.headers.remove(axum::http::header::AUTHORIZATION);
    }
    ex.body = body;
    let r = state.host.dispatcher().handle(ex).await;
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = r.status;
    *response.headers_mut() = r.headers;
    response
}
