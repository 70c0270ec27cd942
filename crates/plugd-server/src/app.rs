//! The axum application: host routes first, plugins for everything else.
//!
//! Listeners: the main one (`server.listen`) serves `/healthz`, `/metrics` and every plugin
//! route; the admin API and dashboard are on a listener of their own (`admin.listen`, default
//! `127.0.0.1:8081`), an origin no plugin answers on, so nothing a plugin serves (a script, a
//! service worker) can reach the dashboard's token. The main listener answers `/admin` with a
//! JSON 404 (plugins never see it). With `admin.listen: shared` the admin API is served on the
//! main listener instead, and the host refuses service worker scripts from plugins and strips
//! `Service-Worker-Allowed` from their responses.

use std::borrow::Cow;
use std::future::Future;
use std::sync::LazyLock;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use plugd_core::{Exchange, Host, Status};
use plugd_manifest::{Protected, ServerConfig};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{self, AdminToken, AppState, json_error};
use crate::listener::{Limits, serve_listener};

/// Largest admin request body.
pub(crate) const ADMIN_BODY_LIMIT: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "plugd admin API",
        description = "Operate a plugd host: list, inspect, reload, enable, disable, load and unload plugins, change their config, read the audit log. Every endpoint but the dashboard page and this document needs `Authorization: Bearer <token>` (admin.token, PLUGD_ADMIN_TOKEN or <data_dir>/admin-token). Errors are JSON: `{\"error\": \"<kind>\", \"message\": \"...\"}`."
    ),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = "plugins", description = "One plugin or all of them"),
        (name = "host", description = "The host itself"),
    )
)]
struct ApiDoc;

/// Adds the `bearer` security scheme every protected operation refers to.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token: admin.token, PLUGD_ADMIN_TOKEN or <data_dir>/admin-token",
                    ))
                    .build(),
            ),
        );
    }
}

/// The admin API: every route and its OpenAPI operation, from one list, with paths relative to
/// where it is mounted (`/plugins`, `/info`, `/` for the dashboard). The protected part needs the
/// token (the middleware is left out when only the document is wanted, `state` `None`); the
/// dashboard page and the document do not.
fn admin_operations(state: Option<&AppState>) -> OpenApiRouter<AppState> {
    let mut protected = OpenApiRouter::new()
        .routes(routes!(admin::list_plugins, admin::load))
        .routes(routes!(admin::get_plugin, admin::unload))
        .routes(routes!(admin::get_health))
        .routes(routes!(admin::get_metrics))
        .routes(routes!(admin::enable))
        .routes(routes!(admin::disable))
        .routes(routes!(admin::reload))
        .routes(routes!(admin::get_log_level, admin::put_log_level))
        .routes(routes!(admin::get_config, admin::put_config))
        .routes(routes!(admin::reload_config))
        .routes(routes!(admin::all_health))
        .routes(routes!(admin::audit))
        .routes(routes!(admin::info))
        .routes(routes!(crate::fleet::view))
        .routes(routes!(crate::fleet::rollouts, crate::fleet::start_rollout))
        .routes(routes!(crate::fleet::rollout))
        .layer(axum::extract::DefaultBodyLimit::max(ADMIN_BODY_LIMIT));
    if let Some(state) = state {
        protected = protected.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ));
    }
    let public = OpenApiRouter::new()
        .routes(routes!(admin::openapi_json))
        .routes(routes!(admin::dashboard));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(protected)
        .merge(public)
}

/// The admin API's OpenAPI 3.1 document, as served at `GET /admin/openapi.json` (the admin
/// listener, or the main one with `admin.listen: shared`). Mounted elsewhere with [`admin_api`],
/// the document served lists the paths under that prefix instead.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_at(ADMIN_PREFIX)
}

/// Where the standard servers mount the admin API.
const ADMIN_PREFIX: &str = "/admin";

/// The document with every path under `prefix` (`""` or a path without a trailing slash): the
/// dashboard at `<prefix>/`, the rest at `<prefix><path>`.
fn openapi_at(prefix: &str) -> utoipa::openapi::OpenApi {
    static RELATIVE: LazyLock<utoipa::openapi::OpenApi> =
        LazyLock::new(|| admin_operations(None).split_for_parts().1);
    let mut doc = RELATIVE.clone();
    doc.paths.paths = std::mem::take(&mut doc.paths.paths)
        .into_iter()
        .map(|(path, item)| {
            let path = match path.as_str() {
                "/" => format!("{prefix}/"),
                _ => format!("{prefix}{path}"),
            };
            (path, item)
        })
        .collect();
    doc
}

/// The document as JSON text for the admin API mounted at `prefix` (as [`NestedPath`] gives
/// it; empty when not nested). The standard `/admin` one is built once.
///
/// [`NestedPath`]: axum::extract::NestedPath
pub(crate) fn openapi_text(prefix: &str) -> Cow<'static, str> {
    static ADMIN: LazyLock<String> = LazyLock::new(|| {
        openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    });
    let prefix = prefix.trim_end_matches('/');
    if prefix == ADMIN_PREFIX {
        return Cow::Borrowed(ADMIN.as_str());
    }
    Cow::Owned(
        openapi_at(prefix)
            .to_pretty_json()
            .expect("the OpenAPI document serializes"),
    )
}

/// The admin routes (API, document, dashboard, JSON 404/405), relative to where they are
/// mounted.
fn admin_routes(state: &AppState) -> Router<AppState> {
    let (api, _) = admin_operations(Some(state)).split_for_parts();
    api.fallback(admin::unknown)
        .method_not_allowed_fallback(admin::wrong_method)
}

/// The admin routes at `/admin/` for either listener: `/admin` redirects to the dashboard at
/// `/admin/`, and any other `/admin/...` path is a JSON 404.
fn admin_routes_at_admin(state: &AppState) -> Router<AppState> {
    // Nested at `/admin/` (not `/admin`): the dashboard's route `/` becomes `/admin/`, and
    // `/admin` stays free for the redirect.
    Router::new()
        .route(ADMIN_PREFIX, get(admin::dashboard_redirect))
        .nest(&format!("{ADMIN_PREFIX}/"), admin_routes(state))
}

/// The admin API, its OpenAPI document and the dashboard, with routes relative to where the
/// application mounts it: the dashboard at `/`, the API at `/plugins`, `/plugins/{name}`,
/// `/info`, `/audit`, ..., the document at `/openapi.json` (listing the paths under the prefix
/// it is nested at), and a JSON 404 or 405 for anything else under it. Every endpoint but the
/// dashboard and the document needs `Authorization: Bearer <token>`.
///
/// Mount it with [`Router::nest_service`], which serves the dashboard at both `/ops/plugd` and
/// `/ops/plugd/`; [`Router::nest`] works too, but axum's `nest` never matches the prefix with a
/// trailing slash, so the dashboard is then at `/ops/plugd` only. The dashboard computes its
/// API's address from its own, so it also works behind a reverse proxy that strips or adds a
/// prefix.
///
/// `/healthz`, `/metrics` and plugin dispatch are not part of it. The admin listener
/// ([`admin_router`]) serves it at `/admin/`. Mounted in the same application as [`router`], the
/// dashboard shares its origin with plugin content: give that host `admin.listen: shared`, so
/// that [`router`] refuses plugins' service workers, or serve it on a listener of its own.
///
/// ```
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # rt.block_on(async {
/// # let dir = std::env::temp_dir().join(format!("plugd-admin-api-doc-{}", std::process::id()));
/// let host = plugd_core::Host::builder().data_dir(&dir).build().unwrap();
/// host.start().await.unwrap();
/// let token = plugd_server::AdminToken::new("s3cret").unwrap();
/// let app: axum::Router = axum::Router::new()
///     .route("/healthz", axum::routing::get(|| async { "my app is fine" }))
///     .nest_service("/ops/plugd", plugd_server::admin_api(host.clone(), token))
///     .fallback(|| async { "my app's own 404" });
/// # let _ = app;
/// # host.shutdown().await;
/// # });
/// ```
pub fn admin_api(host: Host, admin: AdminToken) -> Router {
    let state = state(host, admin);
    admin_routes(&state).with_state(state)
}

/// `/healthz`, `/readyz` and `/metrics`, each behind the token when `admin.protect` lists it.
fn host_routes(state: &AppState) -> Router<AppState> {
    let protect = |endpoint: Protected, route: MethodRouter<AppState>| {
        if state.host.config().admin.protects(endpoint) {
            route.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                admin::require_token,
            ))
        } else {
            route
        }
    };
    Router::new()
        .route("/healthz", protect(Protected::Healthz, get(healthz)))
        .route("/readyz", protect(Protected::Readyz, get(readyz)))
        .route("/metrics", protect(Protected::Metrics, get(metrics)))
}

/// The host's own routes on their own: `/healthz` (liveness and the plugins' health),
/// `/metrics` (Prometheus), each behind the admin token when `admin.protect` lists it. Merge it
/// into an application that has none of its own, or nest it (`app.nest("/plugd", …)`) when the
/// application has its own `/healthz` or `/metrics`.
///
/// ```
/// let host = plugd_core::Host::builder().build().unwrap();
/// let token = plugd_server::AdminToken::new("a-long-enough-admin-token-0123456789").unwrap();
/// let app: axum::Router = axum::Router::new()
///     .route("/healthz", axum::routing::get(|| async { "the application's own" }))
///     .nest("/plugd", plugd_server::health_router(host, token));
/// # let _ = app;
/// ```
pub fn health_router(host: Host, admin: AdminToken) -> Router {
    let state = state(host, admin);
    host_routes(&state).with_state(state)
}

fn state(host: Host, admin: AdminToken) -> AppState {
    let body_limit = usize::try_from(host.config().server.body_limit).unwrap_or(usize::MAX);
    let shared_origin = host.config().admin.is_shared();
    AppState {
        host,
        admin,
        body_limit,
        shared_origin,
        openapi: openapi_text,
    }
}

/// The main listener's application: `/healthz`, `/metrics`, and plugin dispatch for every other
/// path. `/admin` is a JSON 404 here (the admin API has a listener of its own, see
/// [`admin_router`]) unless the operator chose `admin.listen: shared`.
pub fn router(host: Host, admin: AdminToken) -> Router {
    let state = state(host, admin);
    let mut app = host_routes(&state);
    app = if state.shared_origin {
        app.merge(admin_routes_at_admin(&state))
    } else {
        // The admin API lives on its own listener: `/admin` is nobody's here, not a plugin's.
        // `/admin/` needs a route of its own: the catch-all does not match an empty rest.
        app.route("/admin", any(admin::elsewhere))
            .route("/admin/", any(admin::elsewhere))
            .route("/admin/{*rest}", any(admin::elsewhere))
    };
    app.fallback(dispatch).with_state(state)
}

/// The admin listener's application (`admin.listen`): the admin API, its document and the
/// dashboard under `/admin`, `/healthz` and `/metrics`; a JSON 404 for anything else.
pub fn admin_router(host: Host, admin: AdminToken) -> Router {
    let state = state(host, admin);
    host_routes(&state)
        .merge(admin_routes_at_admin(&state))
        .fallback(admin::unknown)
        .with_state(state)
}

/// Serve until `shutdown` resolves, then stop every plugin (reverse start order) and return.
/// Only the main listener: the admin API is not served (see [`serve_with_admin`]) unless the
/// config says `admin.listen: shared`, in which case it is on `listener` under `/admin`.
pub async fn serve(
    host: Host,
    admin: AdminToken,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_admin(host, admin, listener, None, shutdown).await
}

/// [`serve`], with the admin API and dashboard on `admin_listener` (bound to `admin.listen`).
/// Both stop when `shutdown` resolves; then every plugin is stopped. Both listeners apply the
/// timeouts and caps of the config's `server:` section (see [`serve_router`]). With
/// `server.tls`, `listener` serves HTTPS (a pair that cannot be used is an error of kind
/// `InvalidInput` before anything is served, and the host is stopped); the admin listener stays
/// plain HTTP, meant for loopback (a warning is logged when it is not).
pub async fn serve_with_admin(
    host: Host,
    admin: AdminToken,
    listener: tokio::net::TcpListener,
    admin_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = match tls_acceptor(&host.config().server) {
        Ok(tls) => tls,
        Err(e) => {
            host.shutdown().await;
            return Err(e);
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = Limits::new(&host.config().server);
    let app = router(host.clone(), admin.clone());
    let app = crate::access_log::when_configured(app, &host.config().server);
    let main = serve_listener(listener, app, limits.clone(), tls.clone(), stop_rx.clone());
    let trigger = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let result = match admin_listener {
        Some(admin_listener) => {
            let admin_app = admin_router(host.clone(), admin);
            // server.tls is the plugins' listener's: the admin listener stays plain HTTP, for
            // loopback (the `plugd` command's admin calls) or a proxy that ends TLS.
            if tls.is_some()
                && admin_listener
                    .local_addr()
                    .is_ok_and(|a| !a.ip().is_loopback())
            {
                tracing::warn!(
                    "the admin listener is not on loopback and serves plain HTTP (server.tls covers the main listener only): put it behind a proxy that ends TLS, or on 127.0.0.1"
                );
            }
            let admin_app = crate::access_log::when_configured(admin_app, &host.config().server);
            let second = serve_listener(admin_listener, admin_app, limits, None, stop_rx);
            let (a, b, ()) = tokio::join!(main, second, trigger);
            a.and(b)
        }
        None => {
            let (a, ()) = tokio::join!(main, trigger);
            a
        }
    };
    host.shutdown().await;
    result
}

/// Serve any axum application on `listener` with the timeouts and caps of `server` (the config's
/// `server:` section) until `shutdown` resolves, then let requests in progress finish and
/// return. For an embedding application that merges its own routes with [`router`]; unlike
/// [`serve`], it does not stop the host.
///
/// What it applies: `header_read_timeout` (a client slow to send its headers is disconnected),
/// `idle_timeout` (a connection with no request in progress is closed), `body_read_timeout`
/// (408), `max_headers` and `max_header_bytes` (431), and `max_connections` (over the cap a new
/// connection waits in the listen queue until one closes; open connections are served as
/// before). With `tls` set it serves HTTPS, the certificate read again when its files change;
/// a pair that cannot be used is an error of kind `InvalidInput` before anything is served.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = plugd_manifest::HostConfig::default();
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// plugd_server::serve_router(listener, app, &config.server, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    server: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    let limits = Limits::new(server);
    let tls = tls_acceptor(server);
    let app = crate::access_log::when_configured(app, server);
    async move {
        let tls = tls?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let trigger = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let served = serve_listener(listener, app, limits, tls, stop_rx);
        let (result, ()) = tokio::join!(served, trigger);
        result
    }
}

/// The TLS acceptor of `server.tls`, if set; a pair that cannot be used is `InvalidInput`.
fn tls_acceptor(server: &ServerConfig) -> std::io::Result<Option<tokio_rustls::TlsAcceptor>> {
    server
        .tls
        .as_ref()
        .map(crate::tls::acceptor)
        .transpose()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
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
    // On an origin shared with the dashboard a plugin must not install a service worker: it
    // would sit over /admin/ and read the token (browsers fetch worker scripts with this header).
    if state.shared_origin && request.headers().contains_key("service-worker") {
        tracing::warn!(path = %request.uri().path(), "refused a service worker script on the origin shared with the admin API (admin.listen: shared)");
        return json_error(
            StatusCode::FORBIDDEN,
            "service workers are refused on this origin: it serves the admin dashboard (admin.listen: shared)",
        );
    }
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
    ex.set_peer(
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0),
    );
    ex.extensions = parts.extensions;
    // Plugins never see admin credentials, even when a client sends them to a plugin route.
    if admin::bearer(&ex.headers).is_some_and(|t| state.admin.accepts(t)) {
        ex.headers.remove(axum::http::header::AUTHORIZATION);
    }
    ex.body = body;
    let mut r = state.host.dispatcher().handle(ex).await;
    if state.shared_origin {
        r.headers.remove("service-worker-allowed");
    }
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = r.status;
    *response.headers_mut() = r.headers;
    response
}

/// `GET /readyz`: 200 `{"status":"ready"}` once the host has started and every plugin the
/// operator did not disable runs; else 503 `{"status":"not_ready","reasons":[…]}` (also while
/// starting and shutting down). `/healthz` is liveness: 200 while the process serves.
async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.host.readiness();
    if readiness.ready {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        let body = serde_json::json!({ "status": "not_ready", "reasons": readiness.reasons });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
