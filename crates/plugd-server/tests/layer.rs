//! plugd as a tower layer around an application's own axum Router: the plugins' hooks run for
//! the application's routes, plugin routes are served at their mounts, bodies stream through
//! untouched unless a granted plugin reads them, the client's address and the application's
//! attributes reach only plugins granted `client`, and the admin token never reaches a plugin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use plugd_core::{Action, Exchange, HookType, Host, InitContext, Plugin, PluginError, Response};
use plugd_manifest::{Format, HostConfig, Manifest};
use plugd_server::{AdminToken, PlugdLayer};
use tower::ServiceExt;

/// What the probes saw, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A native plugin for these tests: `guard` refuses `/api/**` without `x-token: good`, tells
/// what it saw of the client, and marks responses; `reports` serves `/daily`; `rewriter`
/// redacts the application's response bodies.
struct Probe {
    name: &'static str,
    seen: Seen,
}

fn failed(e: impl std::fmt::Display) -> PluginError {
    PluginError::Failed(e.to_string())
}

#[async_trait::async_trait]
impl Plugin for Probe {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        match self.name {
            "guard" => {
                ctx.register_hook(HookType::PreRequest, 10)
                    .map_err(failed)?;
                ctx.register_hook(HookType::PreResponse, 10)
                    .map_err(failed)?;
            }
            "reports" => {
                ctx.register_route("GET", "/daily", Default::default())
                    .map_err(failed)?;
            }
            _ => ctx
                .register_hook(HookType::PostRequest, 10)
                .map_err(failed)?,
        }
        Ok(())
    }

    async fn on_hook(&self, hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        let mut seen = self.seen.lock();
        match (self.name, hook) {
            ("guard", HookType::PreRequest) => {
                seen.push(format!(
                    "{} peer={:?} user={:?} auth={:?} body={}",
                    ex.path,
                    ex.peer_addr().map(|a| a.ip().to_string()),
                    ex.attribute("user"),
                    ex.header("authorization"),
                    ex.body.len()
                ));
                if ex.path.starts_with("/api/") && ex.header("x-token").as_deref() != Some("good") {
                    return Ok(Action::Respond(Response::error(
                        StatusCode::UNAUTHORIZED,
                        "a token is needed",
                    )));
                }
                ex.set_header("x-guard", "passed").map_err(failed)?;
            }
            ("guard", HookType::PreResponse) => {
                ex.set_response_header("x-guarded", "1").map_err(failed)?;
            }
            ("rewriter", HookType::PostRequest) => {
                let body = ex
                    .response
                    .as_ref()
                    .map(|r| r.body.clone())
                    .unwrap_or_default();
                seen.push(format!("rewriter read {} bytes", body.len()));
                let text = String::from_utf8_lossy(&body).replace("secret", "[redacted]");
                if text.len() != body.len() || text.as_bytes() != &body[..] {
                    ex.set_response_body(text.into_bytes()).map_err(failed)?;
                }
            }
            _ => {}
        }
        Ok(Action::Continue)
    }

    async fn handle_request(
        &self,
        _route: &str,
        _ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        Ok(Response::json(
            StatusCode::OK,
            &serde_json::json!({"report": "daily"}),
        ))
    }
}

fn manifest(name: &str, permissions: &str) -> Manifest {
    Manifest::from_str(
        &format!("name: {name}\nversion: 1.0.0\ndescription: test\nauthor: plugd\npermissions: [{permissions}]\n"),
        Format::Yaml,
        None,
    )
    .unwrap()
}

#[derive(Clone)]
struct CurrentUser(String);

/// A host with `plugins` (name, declared permissions) and the config entries `entries`.
async fn host(
    entries: &str,
    plugins: &[(&'static str, &str)],
    seen: &Seen,
) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = HostConfig::from_str(
        &format!("plugins:\n  plugins:\n{entries}"),
        Format::Yaml,
        None,
    )
    .unwrap();
    config.data_dir = dir.path().to_path_buf();
    let mut builder = Host::builder().config(config);
    for (name, permissions) in plugins {
        builder = builder.native(
            manifest(name, permissions),
            Probe {
                name,
                seen: seen.clone(),
            },
        );
    }
    let host = builder.build().unwrap();
    host.start().await.unwrap();
    (host, dir)
}

const GUARD: &str = "    - name: guard\n      permissions: [intercept, client]\n";

/// The application: its own routes, its own fallback, its own `/healthz`.
fn application() -> Router {
    Router::new()
        .route(
            "/api/orders",
            get(|headers: http::HeaderMap| async move {
                format!("orders; guard said {:?}", headers.get("x-guard"))
            }),
        )
        .route("/api/echo", post(|body: String| async move { body }))
        .route(
            "/api/whoami",
            get(|headers: http::HeaderMap| async move {
                format!("{:?}", headers.get("authorization"))
            }),
        )
        .route("/healthz", get(|| async { "the application's own health" }))
        .route("/page", get(|| async { "a secret page" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "the application's own 404") })
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn request(path: &str) -> http::request::Builder {
    Request::builder().uri(path)
}

#[tokio::test]
async fn a_plugin_hook_guards_the_applications_own_routes() {
    let seen = Seen::default();
    let (host, _dir) = host(GUARD, &[("guard", "intercept, client")], &seen).await;
    let app = application().layer(PlugdLayer::new(host.clone()));

    let (status, _, body) = send(&app, request("/api/orders").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("a token is needed"));

    let (status, headers, body) = send(
        &app,
        request("/api/orders")
            .header("x-token", "good")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body, r#"orders; guard said Some("passed")"#,
        "the hook's header reached the handler"
    );
    assert_eq!(
        headers["x-guarded"], "1",
        "the response hook ran on the application's response"
    );

    // The application's own /healthz and fallback stay the application's.
    let (_, _, body) = send(&app, request("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(body, "the application's own health");
    let (status, headers, body) =
        send(&app, request("/nowhere").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "the application's own 404")
    );
    assert_eq!(headers["x-guarded"], "1");
    host.shutdown().await;
}

#[tokio::test]
async fn a_plugin_route_is_served_at_the_operators_mount_through_the_layer() {
    let seen = Seen::default();
    let entries =
        "    - name: reports\n      permissions: [router]\n      mount: /api/v1/reports\n";
    let (host, _dir) = host(entries, &[("reports", "router")], &seen).await;
    let app = application().layer(PlugdLayer::new(host.clone()));
    let (status, _, body) = send(
        &app,
        request("/api/v1/reports/daily")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"report":"daily"}"#)
    );
    // Under the mount, a path the plugin does not route is the application's.
    let (status, _, body) = send(
        &app,
        request("/api/v1/reports/weekly")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "the application's own 404")
    );
    host.shutdown().await;
}

#[tokio::test]
async fn the_applications_bodies_stream_through_while_plugins_run() {
    let seen = Seen::default();
    let (host, _dir) = host(GUARD, &[("guard", "intercept, client")], &seen).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                let rx = rx.lock().take().unwrap();
                async move { Body::new(Channel(rx)) }
            }),
        )
        .route("/api/echo", post(|body: String| async move { body }))
        .layer(PlugdLayer::new(host.clone()));
    // The response arrives before the body is written: nothing waits for the end of it.
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        app.clone()
            .oneshot(request("/stream").body(Body::empty()).unwrap()),
    )
    .await
    .expect("the head arrives while the body is still being written")
    .unwrap();
    assert_eq!(response.headers()["x-guarded"], "1");
    for chunk in ["one ", "two ", "three"] {
        tx.send(Ok(bytes::Bytes::from(chunk))).await.unwrap();
    }
    drop(tx);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"one two three");

    // A request body the guard is not granted reaches the application whole, unread.
    let (status, _, body) = send(
        &app,
        request("/api/echo")
            .method("POST")
            .header("x-token", "good")
            .body(Body::from("a request body"))
            .unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a request body"));
    assert!(
        seen.lock()
            .iter()
            .any(|s| s.starts_with("/api/echo") && s.ends_with("body=0")),
        "{:?}",
        seen.lock()
    );
    host.shutdown().await;
}

/// A body of what the channel receives, chunk by chunk, as the sender writes it.
struct Channel(tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>);

impl http_body::Body for Channel {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(http_body::Frame::data)))
    }
}

#[tokio::test]
async fn a_plugin_granted_bodies_reads_the_request_and_rewrites_the_response() {
    let seen = Seen::default();
    let entries = "    - name: guard\n      permissions: [intercept]\n      intercept: { request_body: true }\n    - name: rewriter\n      permissions: [intercept]\n      intercept: { response_body: true }\n";
    let (host, _dir) = host(
        entries,
        &[("guard", "intercept"), ("rewriter", "intercept")],
        &seen,
    )
    .await;
    let app = application().layer(PlugdLayer::new(host.clone()));
    let (status, _, body) = send(
        &app,
        request("/api/echo")
            .method("POST")
            .header("x-token", "good")
            .body(Body::from("twelve bytes"))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "twelve bytes"),
        "the application still gets the body"
    );
    assert!(
        seen.lock()
            .iter()
            .any(|s| s.starts_with("/api/echo") && s.ends_with("body=12")),
        "{:?}",
        seen.lock()
    );
    let (_, headers, body) = send(&app, request("/page").body(Body::empty()).unwrap()).await;
    assert_eq!(body, "a [redacted] page");
    // A rewritten body is framed anew: the application's length (13) is not kept.
    assert!(
        headers.get("content-length").is_none_or(|l| l == "17"),
        "{headers:?}"
    );
    assert!(seen.lock().iter().any(|s| s == "rewriter read 13 bytes"));
    host.shutdown().await;
}

#[tokio::test]
async fn the_client_address_and_attributes_reach_only_plugins_granted_client() {
    let peer: SocketAddr = "192.0.2.7:50000".parse().unwrap();
    for (grant, expect) in [
        (
            "intercept, client",
            r#"peer=Some("192.0.2.7") user=Some("ada")"#,
        ),
        ("intercept", "peer=None user=None"),
    ] {
        let seen = Seen::default();
        let entries = format!("    - name: guard\n      permissions: [{grant}]\n");
        let (host, _dir) = host(&entries, &[("guard", "intercept, client")], &seen).await;
        let app = application()
            .layer(PlugdLayer::new(host.clone()).attribute("user", |u: &CurrentUser| u.0.clone()));
        let mut req = request("/healthz").body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(CurrentUser("ada".into()));
        send(&app, req).await;
        let line = seen.lock()[0].clone();
        assert!(line.contains(expect), "{grant}: {line}");
        host.shutdown().await;
    }
}

#[tokio::test]
async fn the_admin_token_reaches_the_application_but_never_a_plugin() {
    let seen = Seen::default();
    let (host, _dir) = host(GUARD, &[("guard", "intercept, client")], &seen).await;
    let token = "an-admin-token-long-enough-for-the-check-0123";
    let app = application()
        .layer(PlugdLayer::new(host.clone()).admin_token(AdminToken::new(token).unwrap()));
    let (_, _, body) = send(
        &app,
        request("/api/whoami")
            .header("x-token", "good")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(
        body.contains(token),
        "the application gets its header back: {body}"
    );
    let line = seen.lock()[0].clone();
    assert!(line.contains("auth=None"), "{line}");
    assert!(!line.contains(token));
    host.shutdown().await;
}

#[tokio::test]
async fn without_plugins_the_application_answers_as_it_would_alone() {
    let seen = Seen::default();
    let (host, _dir) = host("    []\n", &[], &seen).await;
    let app = application().layer(PlugdLayer::new(host.clone()));
    let bare = application();
    for path in ["/api/orders", "/healthz", "/nowhere", "/a//b"] {
        let a = send(&app, request(path).body(Body::empty()).unwrap()).await;
        let b = send(&bare, request(path).body(Body::empty()).unwrap()).await;
        assert_eq!((a.0, &a.2), (b.0, &b.2), "{path}");
    }
    host.shutdown().await;
}
