//! An axum [`Router`](axum::Router) or any tower service as a native plugin's routes.
//!
//! The plugin answers every method on `/` and `/{*rest}` under its mount (`/plugins/<name>/…`).
//! Each request is handed to the service as an `http::Request<axum::body::Body>` with the path
//! relative to the mount, the query, the headers and the body; the service's middleware (tower,
//! tower-http) runs as it would in the application. Its response comes back as the plugin's
//! answer, the body read up to a cap. What the plugin's requests went through on the way in —
//! hooks, middleware, roles — is plugd's, as for any plugin route.

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use plugd_core::{BoxError, Exchange, Identity, NativePlugin, PluginError, Response};
use plugd_manifest::Manifest;
use tower::Service;

/// The methods the plugin answers (each on `/` and `/{*rest}`).
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// A native plugin whose routes are `router`'s: a request to `/plugins/<name>/users/7` reaches
/// the router as `/users/7`. Its manifest must declare the `router` permission. The response body
/// is read up to [`plugd_manifest::DEFAULT_MAX_RESPONSE_BYTES`]; a longer one fails the call (see
/// [`service_plugin`] to set another cap). The result is a [`NativePlugin`]: hooks, events and
/// services can be added to it.
///
/// The request carries its full path as axum's [`OriginalUri`](axum::extract::OriginalUri)
/// extension, and the [`Identity`] an authentication hook attached, if any, as an extension.
///
/// ```
/// use axum::routing::get;
/// use plugd_manifest::{Manifest, Permission};
///
/// let manifest = Manifest::builder("users", "1.0.0").description("The users API").author("you")
///     .permission(Permission::Router)
///     .build()?;
/// let api = axum::Router::new().route("/users/{id}", get(|| async { "a user" }));
/// let host = plugd_core::Host::builder().plugin(plugd_server::router_plugin(manifest, api));
/// # let _ = host;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn router_plugin(manifest: Manifest, router: axum::Router) -> NativePlugin {
    let cap = usize::try_from(plugd_manifest::DEFAULT_MAX_RESPONSE_BYTES).unwrap_or(usize::MAX);
    service_plugin(manifest, router, cap)
}

/// A native plugin whose routes are the tower `service`'s (see [`router_plugin`]), its response
/// bodies read up to `max_response_bytes`.
///
/// ```
/// use plugd_manifest::{Manifest, Permission};
/// use tower::service_fn;
///
/// let manifest = Manifest::builder("echo", "1.0.0").description("Echoes").author("you")
///     .permission(Permission::Router)
///     .build()?;
/// let echo = service_fn(|request: http::Request<axum::body::Body>| async move {
///     Ok::<_, std::convert::Infallible>(http::Response::new(request.into_body()))
/// });
/// let plugin = plugd_server::service_plugin(manifest, echo, 64 * 1024);
/// # let _ = plugin;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn service_plugin<S, B>(
    manifest: Manifest,
    service: S,
    max_response_bytes: usize,
) -> NativePlugin
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut plugin = NativePlugin::new(manifest);
    for method in METHODS {
        for path in ["/", "/{*rest}"] {
            let service = service.clone();
            plugin = plugin.route(method.clone(), path, move |_ctx, ex| {
                call(service.clone(), ex, max_response_bytes)
            });
        }
    }
    plugin
}

/// Send one exchange through `service` and read its answer.
async fn call<S, B>(mut service: S, ex: Exchange, cap: usize) -> Result<Response, PluginError>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let request = request(&ex)?;
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(|e| failed("was not ready", e))?;
    let response = service
        .call(request)
        .await
        .map_err(|e| failed("failed", e))?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, cap)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                PluginError::Failed(format!(
                    "the service's response body is over the {cap}-byte cap"
                ))
            } else {
                PluginError::Failed(format!("the service's response body failed: {e}"))
            }
        })?
        .to_bytes();
    let mut answer = Response::new(parts.status);
    answer.headers = parts.headers;
    answer.body = body;
    // The host frames the answer (content-length, transfer-encoding, …), never the service.
    answer.drop_framing_headers();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(PluginError::Failed(
            "the service answered 101 Switching Protocols: plugin routes cannot upgrade connections"
                .into(),
        ));
    }
    Ok(answer)
}

fn failed(what: &str, e: impl Into<BoxError>) -> PluginError {
    PluginError::Failed(format!("the service {what}: {}", e.into()))
}

/// The request the service sees: the path relative to the plugin's mount.
fn request(ex: &Exchange) -> Result<http::Request<Body>, PluginError> {
    let rest = ex.route_param("rest").unwrap_or_default();
    let mut target = format!("/{rest}");
    if !ex.query.is_empty() {
        target.push('?');
        target.push_str(&ex.query);
    }
    let original = match ex.query.is_empty() {
        true => ex.path.clone(),
        false => format!("{}?{}", ex.path, ex.query),
    };
    let invalid = |e: http::Error| {
        PluginError::Failed(format!("the request {target:?} cannot be passed on: {e}"))
    };
    let mut request = http::Request::builder()
        .method(ex.method.clone())
        .uri(&target)
        .body(Body::from(ex.body.clone()))
        .map_err(invalid)?;
    *request.headers_mut() = ex.headers.clone();
    if let Ok(uri) = original.parse::<http::Uri>() {
        request
            .extensions_mut()
            .insert(axum::extract::OriginalUri(uri));
    }
    if let Some(identity) = ex.identity() {
        request
            .extensions_mut()
            .insert::<Identity>(identity.clone());
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_sees_the_path_under_the_mount_and_the_query() {
        let mut ex = Exchange::new(Method::POST, "/plugins/api/users/7?x=1");
        ex.route_params = vec![("rest".into(), "users/7".into())];
        ex.headers.insert("x-a", "1".parse().unwrap());
        ex.body = Bytes::from_static(b"hi");
        let passed = request(&ex).unwrap();
        assert_eq!(passed.method(), Method::POST);
        assert_eq!(passed.uri(), "/users/7?x=1");
        assert_eq!(passed.headers()["x-a"], "1");
        let original = passed
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .unwrap();
        assert_eq!(original.0, "/plugins/api/users/7?x=1");

        // The root of the mount has no `rest`; an encoded path is passed on as it came.
        let root = Exchange::new(Method::GET, "/plugins/api/");
        assert_eq!(request(&root).unwrap().uri(), "/");
        let mut encoded = Exchange::new(Method::GET, "/plugins/api/a%20b");
        encoded.route_params = vec![("rest".into(), "a%20b".into())];
        assert_eq!(request(&encoded).unwrap().uri(), "/a%20b");
    }
}
