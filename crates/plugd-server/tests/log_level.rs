//! `GET`/`PUT /admin/plugins/{name}/log-level`: the operator reads and sets the least level of a
//! plugin's own log lines the host keeps.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use plugd_manifest::{Format, HostConfig, LogLevel, Manifest};
use plugd_server::{AdminToken, ApiError};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "log-level-test-token";

struct Quiet;
impl plugd_core::Plugin for Quiet {}

async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"));
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let r = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, bytes.to_vec())
}

#[tokio::test]
async fn the_operator_reads_and_sets_a_plugins_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig::from_str(
        "plugins:\n  plugins:\n    - { name: quiet, log_level: info }\n",
        Format::Yaml,
        None,
    )
    .unwrap();
    let manifest = Manifest::from_str(
        "name: quiet\nversion: 1.0.0\ndescription: d\nauthor: a\n",
        Format::Yaml,
        None,
    )
    .unwrap();
    let host = plugd_core::Host::builder()
        .config(config)
        .data_dir(dir.path())
        .native(manifest, Quiet)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let app = plugd_server::admin_router(host.clone(), AdminToken::new(TOKEN).unwrap());
    let path = "/admin/plugins/quiet/log-level";

    // From the config entry.
    let (status, body) = call(&app, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"level": "info"})
    );

    let (status, body) = call(&app, Method::PUT, path, Some(json!({"level": "error"}))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"level": "error"})
    );
    assert_eq!(host.log_level("quiet"), Some(LogLevel::Error));
    let log = host.plugin_state("quiet").unwrap().log().clone();
    assert!(!log.write(LogLevel::Warn, "under the level", &[]));
    assert!(log.write(LogLevel::Error, "kept", &[]));

    // An unknown level changes nothing; an unknown plugin is a 404.
    let (status, body) = call(&app, Method::PUT, path, Some(json!({"level": "loud"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e: ApiError = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        e.message,
        "request body: unknown log level 'loud': use trace, debug, info, warn or error"
    );
    assert_eq!(host.log_level("quiet"), Some(LogLevel::Error));
    let (status, _) = call(
        &app,
        Method::PUT,
        "/admin/plugins/nope/log-level",
        Some(json!({"level": "debug"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.shutdown().await;
}
