//! `admin_api` mounted under a prefix of an application that has its own fallback, `/healthz`
//! and `/metrics`: the dashboard, the API, its document and its JSON errors all answer under the
//! prefix, and the application's own routes are untouched.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::routing::get;
use plugd_manifest::{Format, HostConfig, Manifest};
use plugd_server::{AdminToken, ApiError};
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "mount-test-token";

struct Quiet;
impl plugd_core::Plugin for Quiet {}

async fn start_host() -> (plugd_core::Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::from_str(
        "name: quiet\nversion: 1.2.3\ndescription: d\nauthor: a\n",
        Format::Yaml,
        None,
    )
    .unwrap();
    let host = plugd_core::Host::builder()
        .config(HostConfig::default())
        .data_dir(dir.path())
        .native(manifest, Quiet)
        .build()
        .unwrap();
    host.start().await.unwrap();
    (host, dir)
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn error(&self) -> ApiError {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not a JSON error ({e}): {}", self.body))
    }
}

async fn call(app: &Router, method: Method, path: &str, token: bool) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if token {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    let r = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// An application of its own: `/healthz`, `/metrics`, a teapot fallback, and plugd's admin API
/// under `/ops/plugd` (`nest_service`) and `/ops/nested` (`nest`).
fn application(host: &plugd_core::Host) -> Router {
    let token = AdminToken::new(TOKEN).unwrap();
    Router::new()
        .route("/healthz", get(|| async { "the app's healthz" }))
        .route("/metrics", get(|| async { "the app's metrics" }))
        .nest_service(
            "/ops/plugd",
            plugd_server::admin_api(host.clone(), token.clone()),
        )
        .nest("/ops/nested", plugd_server::admin_api(host.clone(), token))
        .fallback(|| async { (StatusCode::IM_A_TEAPOT, "the app's fallback") })
}

/// The dashboard page: HTML, its script and style allowed by the hashes of its CSP, and no
/// address of its own but relative ones.
fn assert_dashboard(answer: &Answer, at: &str) {
    assert_eq!(answer.status, StatusCode::OK, "{at}: {}", answer.body);
    assert_eq!(
        answer.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8",
        "{at}"
    );
    assert!(
        answer.body.contains("<title>plugd dashboard</title>"),
        "{at}"
    );
    assert!(
        !answer.body.contains("\"/admin"),
        "{at}: the page names an absolute /admin address"
    );
    let csp = answer.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    for (open, close, directive) in [
        ("<script>", "</script>", "script-src"),
        ("<style>", "</style>", "style-src"),
    ] {
        let start = answer.body.find(open).unwrap() + open.len();
        let end = answer.body.find(close).unwrap();
        use base64::Engine;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&answer.body.as_bytes()[start..end]);
        let hash = format!(
            "{directive} 'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert!(csp.contains(&hash), "{at}: {hash} is not in {csp}");
    }
}

#[tokio::test]
async fn the_admin_api_nests_under_a_prefix_of_another_application() {
    let (host, _dir) = start_host().await;
    let app = application(&host);

    // The dashboard, with and without the trailing slash (nest_service serves both).
    for path in ["/ops/plugd/", "/ops/plugd"] {
        assert_dashboard(&call(&app, Method::GET, path, false).await, path);
    }

    // The API: the token is needed, and with it the plugins are listed.
    let listed = call(&app, Method::GET, "/ops/plugd/plugins", true).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.json()[0]["name"], "quiet");
    let refused = call(&app, Method::GET, "/ops/plugd/plugins", false).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error().error, "unauthorized");
    let one = call(&app, Method::GET, "/ops/plugd/plugins/quiet", true).await;
    assert_eq!(one.json()["version"], "1.2.3");
    let info = call(&app, Method::GET, "/ops/plugd/info", true).await;
    assert_eq!(info.json()["plugins"], 1);

    // Unknown paths under the prefix are the admin API's JSON 404, naming the path as sent;
    // a known path with another method its JSON 405, pointing at the document under the prefix.
    for path in ["/ops/plugd/nope", "/ops/plugd/plugins/quiet/nope"] {
        let missing = call(&app, Method::GET, path, true).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{path}");
        let e = missing.error();
        assert_eq!(e.error, "not_found");
        assert_eq!(e.message, format!("no admin endpoint GET {path}"));
    }
    let wrong = call(&app, Method::PATCH, "/ops/plugd/plugins", true).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        wrong.error().message,
        "PATCH is not allowed on /ops/plugd/plugins (see /ops/plugd/openapi.json)"
    );

    // The document lists the paths under the prefix, not under /admin.
    let doc = call(&app, Method::GET, "/ops/plugd/openapi.json", false).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for path in [
        "/ops/plugd/",
        "/ops/plugd/plugins",
        "/ops/plugd/plugins/{name}/reload",
    ] {
        assert!(paths.iter().any(|p| *p == path), "{path} not in {paths:?}");
    }
    assert!(
        paths.iter().all(|p| p.starts_with("/ops/plugd/")),
        "{paths:?}"
    );
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        plugd_server::openapi().paths.paths.len()
    );

    // The application's own routes and fallback are its own.
    let healthz = call(&app, Method::GET, "/healthz", false).await;
    assert_eq!(
        (healthz.status, healthz.body.as_str()),
        (StatusCode::OK, "the app's healthz")
    );
    let metrics = call(&app, Method::GET, "/metrics", false).await;
    assert_eq!(metrics.body, "the app's metrics");
    for path in ["/nope", "/admin/plugins", "/ops", "/ops/plugdx"] {
        let other = call(&app, Method::GET, path, true).await;
        assert_eq!(
            (other.status, other.body.as_str()),
            (StatusCode::IM_A_TEAPOT, "the app's fallback"),
            "{path}"
        );
    }
    host.shutdown().await;
}

/// With axum's `nest` (rather than `nest_service`) everything works the same, except that
/// `nest` never matches the prefix with a trailing slash: the dashboard is at `/ops/nested`.
#[tokio::test]
async fn nest_serves_the_dashboard_at_the_prefix_itself() {
    let (host, _dir) = start_host().await;
    let app = application(&host);
    assert_dashboard(
        &call(&app, Method::GET, "/ops/nested", false).await,
        "/ops/nested",
    );
    let listed = call(&app, Method::GET, "/ops/nested/plugins", true).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.json()[0]["name"], "quiet");
    assert_eq!(
        call(&app, Method::GET, "/ops/nested/plugins", false)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let missing = call(&app, Method::GET, "/ops/nested/nope", true).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.error().message,
        "no admin endpoint GET /ops/nested/nope"
    );
    let doc = call(&app, Method::GET, "/ops/nested/openapi.json", false).await;
    assert!(
        doc.json()["paths"]
            .as_object()
            .unwrap()
            .contains_key("/ops/nested/plugins")
    );
    host.shutdown().await;
}

/// The admin listener keeps today's addresses: `/admin` redirects to the dashboard at
/// `/admin/`, the API is under `/admin/`, other `/admin/...` paths are a JSON 404.
#[tokio::test]
async fn the_admin_listener_still_serves_it_at_admin() {
    let (host, _dir) = start_host().await;
    let app = plugd_server::admin_router(host.clone(), AdminToken::new(TOKEN).unwrap());
    let redirect = call(&app, Method::GET, "/admin", false).await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers[header::LOCATION], "/admin/");
    assert_dashboard(&call(&app, Method::GET, "/admin/", false).await, "/admin/");
    let listed = call(&app, Method::GET, "/admin/plugins", true).await;
    assert_eq!(listed.json()[0]["name"], "quiet");
    let missing = call(&app, Method::GET, "/admin/nope", true).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error().message, "no admin endpoint GET /admin/nope");
    let wrong = call(&app, Method::PATCH, "/admin/plugins", true).await;
    assert_eq!(
        wrong.error().message,
        "PATCH is not allowed on /admin/plugins (see /admin/openapi.json)"
    );
    // The document served is the one of `openapi()`, with its /admin paths.
    let doc = call(&app, Method::GET, "/admin/openapi.json", false)
        .await
        .json();
    assert_eq!(doc, serde_json::to_value(plugd_server::openapi()).unwrap());
    assert!(doc["paths"].as_object().unwrap().contains_key("/admin/"));
    host.shutdown().await;
}
