//! The access log (`server.access_log`, off by default): one line per request at `info` on the
//! tracing target `plugd::access`, written when the response's body has been sent (or dropped),
//! with its method, path (the query is left out: it can carry tokens), status, duration, body
//! bytes, the peer's address and the request id.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use plugd_manifest::ServerConfig;
use tower::{Layer, Service};

/// The tracing target of access log lines.
pub const ACCESS_LOG_TARGET: &str = "plugd::access";

/// A [`tower::Layer`] that logs one line per request on the target `plugd::access`; usable on
/// any axum [`Router`]. The peer's address comes from axum's [`ConnectInfo`] (plugd's listeners
/// set it; `into_make_service_with_connect_info` does for `axum::serve`), the request id from the
/// request's `x-request-id` header, else the response's.
///
/// ```
/// use axum::{Router, routing::get};
/// use plugd_server::AccessLogLayer;
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hi" }))
///     .layer(AccessLogLayer::new());
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl AccessLogLayer {
    /// The layer.
    pub fn new() -> AccessLogLayer {
        AccessLogLayer
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

/// The service [`AccessLogLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let request_id = request_id_of(request.headers());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let (parts, body) = response.into_parts();
            let mut line = Line {
                method,
                path,
                status: parts.status,
                peer,
                request_id: request_id.or_else(|| request_id_of(&parts.headers)),
                started,
                bytes: 0,
            };
            // The line is written when the body is done with: sent, or dropped with the
            // connection.
            let body = body.map_frame(move |frame| {
                // The whole line moves into the closure (not just its `bytes`).
                let line = &mut line;
                if let Some(data) = frame.data_ref() {
                    line.bytes += data.len() as u64;
                }
                frame
            });
            Ok(Response::from_parts(parts, Body::new(body)))
        })
    }
}

fn request_id_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect())
}

/// One request's line, written when it is dropped with the response's body.
struct Line {
    method: Method,
    path: String,
    status: StatusCode,
    peer: Option<SocketAddr>,
    request_id: Option<String>,
    started: Instant,
    bytes: u64,
}

impl Drop for Line {
    fn drop(&mut self) {
        let peer = self.peer.map_or_else(|| "-".to_string(), |p| p.to_string());
        let request_id = self.request_id.as_deref().unwrap_or("-");
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            duration_ms = format_args!("{duration_ms:.3}"),
            bytes = self.bytes,
            peer = %peer,
            request_id = %request_id,
            "{} {} {}",
            self.method,
            self.path,
            self.status.as_u16()
        );
    }
}

/// `app` with the access log when `server.access_log` is on.
pub(crate) fn when_configured(app: Router, server: &ServerConfig) -> Router {
    if server.access_log {
        app.layer(AccessLogLayer::new())
    } else {
        app
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt as _;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn app() -> Router {
        Router::new()
            .route("/hello", get(|| async { "hello, world" }))
            .route(
                "/tagged",
                get(|| async { ([("x-request-id", "from-the-app")], "x") }),
            )
    }

    async fn send(app: Router, uri: &str, request_id: Option<&str>) -> (StatusCode, usize) {
        let mut request = Request::builder().uri(uri);
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let mut request = request.body(Body::empty()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body.len())
    }

    #[tokio::test]
    async fn one_line_per_request_with_the_query_left_out() {
        let (logs, _guard) = capture();
        let app = app().layer(AccessLogLayer::new());
        assert_eq!(
            send(app.clone(), "/hello?token=s3cret", Some("req-1")).await,
            (StatusCode::OK, 12)
        );
        assert_eq!(send(app, "/missing", None).await.0, StatusCode::NOT_FOUND);
        let text = logs.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = lines[0];
        assert!(
            first.contains(" INFO plugd::access: GET /hello 200"),
            "{first}"
        );
        for field in [
            "method=GET",
            "path=/hello",
            "status=200",
            "bytes=12",
            "peer=192.0.2.7:40000",
            "request_id=req-1",
            "duration_ms=",
        ] {
            assert!(first.contains(field), "{field} in {first}");
        }
        assert!(
            !text.contains("s3cret"),
            "the query is never logged: {text}"
        );
        assert!(lines[1].contains("GET /missing 404"), "{}", lines[1]);
        assert!(lines[1].contains("request_id=-"), "{}", lines[1]);
    }

    #[tokio::test]
    async fn the_response_request_id_is_used_when_the_request_has_none() {
        let (logs, _guard) = capture();
        send(app().layer(AccessLogLayer::new()), "/tagged", None).await;
        assert!(
            logs.text().contains("request_id=from-the-app"),
            "{}",
            logs.text()
        );
    }

    #[tokio::test]
    async fn off_unless_configured() {
        let (logs, _guard) = capture();
        let off = ServerConfig::default();
        assert!(!off.access_log, "off by default");
        send(when_configured(app(), &off), "/hello", None).await;
        assert_eq!(logs.text(), "");
        let on = ServerConfig {
            access_log: true,
            ..ServerConfig::default()
        };
        send(when_configured(app(), &on), "/hello", None).await;
        assert_eq!(logs.text().lines().count(), 1, "{}", logs.text());
    }
}
