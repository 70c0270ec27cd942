//! An axum Router, with a tower-http layer, as a native plugin's routes.

use axum::Router;
use axum::routing::{get, post};
use http::{HeaderValue, Method, StatusCode};
use plugd_core::{Exchange, Host};
use plugd_manifest::{Manifest, Permission};
use tower_http::set_header::SetResponseHeaderLayer;

fn manifest(name: &str) -> Manifest {
    Manifest::builder(name, "1.0.0")
        .description("An axum router")
        .author("test")
        .permission(Permission::Router)
        .build()
        .unwrap()
}

fn api() -> Router {
    Router::new()
        .route("/", get(|| async { "root" }))
        .route(
            "/users/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    format!("user {id}")
                },
            ),
        )
        .route(
            "/echo",
            post(
                |axum::extract::RawQuery(query): axum::extract::RawQuery, body: String| async move {
                    format!("{}|{body}", query.unwrap_or_default())
                },
            ),
        )
        .route("/big", get(|| async { "x".repeat(100) }))
        .layer(SetResponseHeaderLayer::overriding(
            http::header::HeaderName::from_static("x-layer"),
            HeaderValue::from_static("tower-http"),
        ))
}

async fn host(plugins: Vec<plugd_core::NativePlugin>) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Host::builder().data_dir(dir.path());
    for p in plugins {
        builder = builder.plugin(p);
    }
    let host = builder.build().unwrap();
    host.start().await.unwrap();
    (host, dir)
}

async fn send(host: &Host, ex: Exchange) -> (StatusCode, http::HeaderMap, String) {
    let r = host.dispatcher().handle(ex).await;
    (
        r.status,
        r.headers,
        String::from_utf8_lossy(&r.body).into_owned(),
    )
}

#[tokio::test]
async fn a_router_serves_under_the_plugins_mount_through_its_tower_layers() {
    let (host, _dir) = host(vec![plugd_server::router_plugin(manifest("api"), api())]).await;

    let (status, headers, body) =
        send(&host, Exchange::new(Method::GET, "/plugins/api/users/7")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "user 7"));
    assert_eq!(headers["x-layer"], "tower-http");

    let (status, _, body) = send(&host, Exchange::new(Method::GET, "/plugins/api/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "root"));

    let mut echo = Exchange::new(Method::POST, "/plugins/api/echo?a=1");
    echo.body = bytes::Bytes::from_static(b"hello");
    let (status, headers, body) = send(&host, echo).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a=1|hello"));
    assert_eq!(headers["x-layer"], "tower-http");

    // The router's own answers pass through: its 404 and its 405.
    let (status, headers, _) = send(&host, Exchange::new(Method::GET, "/plugins/api/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-layer"], "tower-http");
    let (status, _, _) = send(&host, Exchange::new(Method::DELETE, "/plugins/api/echo")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(host.plugin_info("api").unwrap().error_count, 0);
    host.shutdown().await;
}

#[tokio::test]
async fn a_response_over_the_cap_is_the_plugins_error() {
    let plugin = plugd_server::service_plugin(manifest("small"), api(), 10);
    let (host, _dir) = host(vec![plugin]).await;
    let (status, _, _) = send(&host, Exchange::new(Method::GET, "/plugins/small/big")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let info = host.plugin_info("small").unwrap();
    assert_eq!(info.error_count, 1);
    assert_eq!(
        info.last_error.unwrap().message,
        "route GET /{*rest}: the service's response body is over the 10-byte cap"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn the_router_plugin_needs_the_router_permission() {
    let manifest = Manifest::builder("api", "1.0.0")
        .description("d")
        .author("a")
        .build()
        .unwrap();
    let (host, _dir) = {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::builder()
            .data_dir(dir.path())
            .plugin(plugd_server::router_plugin(manifest, api()))
            .build()
            .unwrap();
        let _ = host.start().await;
        (host, dir)
    };
    let (status, _, _) = send(&host, Exchange::new(Method::GET, "/plugins/api/users/7")).await;
    assert_ne!(status, StatusCode::OK);
    let message = host.plugin_info("api").unwrap().last_error.unwrap().message;
    assert!(
        message.contains("attempted router access without permission"),
        "{message}"
    );
    host.shutdown().await;
}
