//! plugd as a tower [`Layer`] in front of an application's own service.
//!
//! Every request goes through the host's dispatcher as on plugd's own server (the same
//! pre_request hooks, middleware, error hooks, post_request, pre_response and post_response,
//! with the same ordering, deadlines, failure policies and metrics). A request a plugin route
//! takes (at the plugin's mount) is answered by the plugin; every other request is handed to
//! the inner service inside the middleware chain, and its response goes through the response
//! hooks. A request no plugin sees at all is handed over as it came.
//!
//! Bodies stream through untouched unless a plugin asks for them: a plugin route's handler
//! reads the request body, and a plugin granted `intercept.request_body` /
//! `intercept.response_body` reads the bodies of the application's requests and responses
//! (buffered up to `server.body_limit`; a longer response streams through unread).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use plugd_core::{Exchange, Host, Response};
use tower::{Layer, Service, ServiceExt};

use crate::admin::{self, AdminToken, json_error};

/// Reads one attribute for plugins from a request's extensions.
type AttributeFn = dyn Fn(&http::Extensions, &mut Exchange) + Send + Sync;

/// plugd's plugins around an application's own service: see the [module docs](self).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, routing::get};
///
/// let host = plugd_core::Host::builder().build()?;
/// host.start().await?;
/// let app = Router::new()
///     .route("/api/orders", get(|| async { "orders" }))
///     .layer(plugd_server::PlugdLayer::new(host.clone()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PlugdLayer {
    shared: Arc<Shared>,
}

struct Shared {
    host: Host,
    admin: Option<AdminToken>,
    body_limit: usize,
    attributes: Vec<Box<AttributeFn>>,
}

impl std::fmt::Debug for PlugdLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlugdLayer")
            .field("body_limit", &self.shared.body_limit)
            .field("attributes", &self.shared.attributes.len())
            .finish()
    }
}

impl PlugdLayer {
    /// The plugins of `host` around the service this layer wraps. Bodies are read up to the
    /// host config's `server.body_limit`.
    pub fn new(host: Host) -> PlugdLayer {
        let body_limit = usize::try_from(host.config().server.body_limit).unwrap_or(usize::MAX);
        PlugdLayer {
            shared: Arc::new(Shared {
                host,
                admin: None,
                body_limit,
                attributes: Vec::new(),
            }),
        }
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.shared).expect("a PlugdLayer is configured before it is cloned")
    }

    /// Keep the admin token from plugins: a request that carries it (`Authorization: Bearer`)
    /// reaches plugins without it, and the application with it. Use it when the admin API is
    /// served by the same application ([`admin_api`](crate::admin_api)).
    ///
    /// ```
    /// let host = plugd_core::Host::builder().build().unwrap();
    /// let token = plugd_server::AdminToken::new("a-long-enough-admin-token-0123456789").unwrap();
    /// let layer = plugd_server::PlugdLayer::new(host).admin_token(token);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn admin_token(mut self, token: AdminToken) -> PlugdLayer {
        self.shared_mut().admin = Some(token);
        self
    }

    /// Show plugins granted `client` an attribute of the request read from an extension an
    /// outer layer set (an authenticated user, a tenant): `read` turns the extension of type
    /// `T` into the attribute's value. Requests without the extension have no such attribute.
    ///
    /// ```
    /// #[derive(Clone)]
    /// struct CurrentUser { id: String }
    ///
    /// let host = plugd_core::Host::builder().build().unwrap();
    /// let layer = plugd_server::PlugdLayer::new(host)
    ///     .attribute("user", |u: &CurrentUser| u.id.clone());
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn attribute<T: Send + Sync + 'static>(
        mut self,
        name: &'static str,
        read: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> PlugdLayer {
        self.shared_mut()
            .attributes
            .push(Box::new(move |extensions, ex| {
                if let Some(value) = extensions.get::<T>() {
                    ex.set_attribute(name, read(value));
                }
            }));
        self
    }

    /// Read request bodies for plugins up to `bytes` instead of `server.body_limit`.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> PlugdLayer {
        self.shared_mut().body_limit = bytes;
        self
    }
}

impl<S> Layer<S> for PlugdLayer {
    type Service = PlugdService<S>;

    fn layer(&self, inner: S) -> PlugdService<S> {
        PlugdService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`PlugdLayer`] makes around `S`.
#[derive(Clone)]
pub struct PlugdService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for PlugdService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlugdService").finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for PlugdService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let request = request.map(Body::new);
        if self.shared.host.dispatcher().bypasses(request.uri().path()) {
            // No plugin has anything to do with it: the ready service answers it as it came.
            return ResponseFuture::Bypass {
                future: self.inner.call(request),
            };
        }
        // The ready service serves this request; the clone waits for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        ResponseFuture::Dispatch {
            future: Box::pin(async move { shared.serve(request, inner).await }),
        }
    }
}

/// A boxed future of the dispatched path.
type Dispatching<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of [`PlugdService`]: the inner service's own future when no plugin sees the
    /// request (nothing allocated for it), or the plugins' request path around it.
    // pin-project-lite takes no doc comments on variant fields: the variants say what they hold.
    #[allow(missing_docs)]
    #[project = Projected]
    pub enum ResponseFuture<F, E> {
        /// Handed to the inner service as it came: its future.
        Bypass {
            #[pin]
            future: F,
        },
        /// Through the plugins: their request path around the inner service.
        Dispatch {
            future: Dispatching<E>,
        },
    }
}

impl<F, E, ResBody> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Bypass { future } => future
                .poll(cx)
                .map(|answer| answer.map(|response| response.map(Body::new))),
            Projected::Dispatch { future } => future.as_mut().poll(cx),
        }
    }
}

impl Shared {
    async fn serve<S, ResBody>(
        &self,
        request: http::Request<Body>,
        inner: S,
    ) -> Result<http::Response<Body>, S::Error>
    where
        S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Send,
        S::Future: Send,
        S::Error: Send,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<axum::BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        let mut ex = Exchange::new(parts.method.clone(), parts.uri.path());
        ex.query = parts.uri.query().unwrap_or("").to_string();
        ex.headers = std::mem::take(&mut parts.headers);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        ex.set_peer(peer);
        for attribute in &self.attributes {
            attribute(&parts.extensions, &mut ex);
        }
        ex.extensions = std::mem::take(&mut parts.extensions);
        // Plugins never see admin credentials; the application gets them back.
        let admin_credentials = self.take_admin_credentials(&mut ex.headers);

        let dispatcher = self.host.dispatcher();
        let entered = match dispatcher.enter(&ex).await {
            Ok(entered) => entered,
            Err(refused) => return Ok(into_http(refused, None)),
        };
        let routed = entered.routed(&ex.path);
        // A plugin route on the application's origin must not install a service worker: one
        // mounted at `/` could sit over the application's pages (and an admin API nested there).
        if routed && ex.headers.contains_key("service-worker") {
            return Ok(json_error(
                StatusCode::FORBIDDEN,
                "service workers are refused from plugin routes on this origin",
            ));
        }
        let mut body = Some(body);
        if entered.reads_request_body(&ex.path) {
            let read = body.take().expect("the body is read once");
            match axum::body::to_bytes(read, self.body_limit).await {
                Ok(bytes) => ex.body = bytes,
                Err(_) => {
                    return Ok(json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "request body is over the {}-byte limit (server.body_limit)",
                            self.body_limit
                        ),
                    ));
                }
            }
        }
        let read_response = entered.reads_response_body(&ex.path);
        let body_limit = self.body_limit;

        // What the inner service answered, outside the exchange: its body while it streams,
        // its framing headers, or its error.
        let mut streamed: Option<Body> = None;
        let mut framing = HeaderMap::new();
        let mut failed: Option<S::Error> = None;
        let response = dispatcher
            .run(entered, ex, async |ex: &mut Exchange| {
                let mut headers = ex.headers.clone();
                if let Some(value) = admin_credentials {
                    headers.insert(AUTHORIZATION, value);
                }
                parts.headers = headers;
                parts.extensions = std::mem::take(&mut ex.extensions);
                let body = body.take().unwrap_or_else(|| Body::from(ex.body.clone()));
                let answer = match inner.oneshot(http::Request::from_parts(parts, body)).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        failed = Some(e);
                        return Response::error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the application's service failed",
                        );
                    }
                };
                let (mut head, body) = answer.into_parts();
                for name in plugd_core::FRAMING_HEADERS {
                    for value in head.headers.get_all(name) {
                        framing.append(name, value.clone());
                    }
                    head.headers.remove(name);
                }
                let body = Body::new(body);
                let bytes = if read_response {
                    match read_up_to(body, body_limit).await {
                        Read::Whole(bytes) => bytes,
                        Read::Longer(rest) => {
                            streamed = Some(rest);
                            Bytes::new()
                        }
                        Read::Failed => {
                            return Response::error(
                                StatusCode::BAD_GATEWAY,
                                "the application's response body could not be read",
                            );
                        }
                    }
                } else {
                    streamed = Some(body);
                    Bytes::new()
                };
                Response::from_inner(head.status, head.headers, bytes)
            })
            .await;
        if let Some(e) = failed {
            return Err(e);
        }
        // The application's body goes on as it came when no plugin replaced the response or
        // gave it a body of its own.
        let passes_through = response.is_inner() && response.body.is_empty();
        let mut out = match (passes_through, streamed) {
            (true, Some(body)) => {
                let mut out = into_http(response, Some(body));
                for (name, value) in &framing {
                    out.headers_mut().append(name, value.clone());
                }
                out
            }
            _ => into_http(response, None),
        };
        if routed {
            out.headers_mut().remove("service-worker-allowed");
        }
        Ok(out)
    }

    /// Take `Authorization: Bearer <admin token>` out of the request headers.
    fn take_admin_credentials(&self, headers: &mut HeaderMap) -> Option<HeaderValue> {
        let admin = self.admin.as_ref()?;
        if admin::bearer(headers).is_some_and(|t| admin.accepts(t)) {
            headers.remove(AUTHORIZATION)
        } else {
            None
        }
    }
}

/// A plugd response as an HTTP one, with `body` instead of its own when given.
fn into_http(r: Response, body: Option<Body>) -> http::Response<Body> {
    let mut out = http::Response::new(body.unwrap_or_else(|| Body::from(r.body)));
    *out.status_mut() = r.status;
    *out.headers_mut() = r.headers;
    out
}

enum Read {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Longer than the limit: the body from its start, to stream on unread.
    Longer(Body),
    /// The body failed before its end.
    Failed,
}

/// Read `body` when it ends within `limit` bytes; otherwise give it back whole, the part read
/// first.
async fn read_up_to(mut body: Body, limit: usize) -> Read {
    let mut read: VecDeque<Bytes> = VecDeque::new();
    let mut len = 0usize;
    loop {
        match body.frame().await {
            None => {
                let mut whole = Vec::with_capacity(len);
                for chunk in read {
                    whole.extend_from_slice(&chunk);
                }
                return Read::Whole(Bytes::from(whole));
            }
            Some(Err(_)) => return Read::Failed,
            Some(Ok(frame)) => {
                // Trailers end the body: what is read so far is all of it.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                len += data.len();
                read.push_back(data);
                if len > limit {
                    return Read::Longer(Body::new(Prefixed { read, rest: body }));
                }
            }
        }
    }
}

/// A body whose first chunks were read already.
struct Prefixed {
    read: VecDeque<Bytes>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Some(chunk) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// The inner service of [`dispatch_service`]: a JSON 404 for a path no plugin route takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRoute;

impl Service<http::Request<Body>> for NoRoute {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        std::future::ready(Ok(json_error(
            StatusCode::NOT_FOUND,
            format!("no route for {}", request.uri().path()),
        )))
    }
}

/// Plugin dispatch alone: every request through the plugins' hooks and middleware to their
/// routes, a JSON 404 for a path no plugin route takes. No host routes (`/healthz`,
/// `/metrics`, the admin API), no fallback of the application's taken: use it as an axum
/// `fallback_service`, or `route_service` for the paths plugins are mounted at.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let host = plugd_core::Host::builder().build()?;
/// host.start().await?;
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "the application" }))
///     .route_service("/plugins/{*rest}", plugd_server::dispatch_service(host.clone()));
/// # let _ = app;
/// # Ok(()) }
/// ```
pub fn dispatch_service(host: Host) -> PlugdService<NoRoute> {
    PlugdLayer::new(host).layer(NoRoute)
}
