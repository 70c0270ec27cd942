//! `wasi:http` for every plugin component: `wasi:http/outgoing-handler` (and the
//! `wasi:http/types` it needs), under the same gate as `outbound.fetch`.
//!
//! Every `handle` of a guest — a plugd-contract plugin whose library calls out through wasi:http,
//! componentize-js's `fetch()`, a standard proxy component — goes through
//! [`plugd_core::Outbound::send_once`]: the plugin needs `network`, the URL's host must be in its
//! `network.allow` (compared as `outbound.fetch` compares it: the host name after URL
//! normalisation, `http://0x7f.1/` is `127.0.0.1`; the port when the entry names one), and a
//! refusal is the same audit entry, error count and log line as `outbound.fetch`'s, with the
//! call named `wasi:http/outgoing-handler`. The guest gets `error-code::HTTP-request-denied`.
//!
//! The caps are `outbound.fetch`'s: the exchange ends by the guest call's deadline (and within
//! 30 s; the guest's connect and first-byte timeouts, when it sets them, shorten it to their
//! sum), the response body is read whole by the host and capped at 10 MiB
//! (`HTTP-response-body-size`). Redirects are not followed: the guest gets the 3xx, and the next
//! hop is a request of its own, through the gate again. Beyond `outbound.fetch`, which a guest
//! can only call one at a time: an instance has at most [`MAX_OUTGOING_PER_INSTANCE`] requests
//! in flight (`connection-limit-reached`, audited), and a request body is capped at
//! [`MAX_REQUEST_BODY_BYTES`] (`HTTP-request-body-size`).
//!
//! The `host` header comes from the request's authority, which is what the gate checked: a
//! guest cannot set it (wasmtime's forbidden headers), and the framing headers
//! (`content-length`, `transfer-encoding`, …) are the backend's to write. As for
//! `outbound.fetch`, the allowlist is checked against the host name, not against the addresses
//! it resolves to: allow only names whose DNS you trust.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use plugd_core::{Capabilities, HostError, HttpError, SendError, is_framing_header};
use tokio::sync::Semaphore;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

/// The most outgoing requests one instance may have in flight.
pub const MAX_OUTGOING_PER_INSTANCE: usize = 8;
/// The largest request body a guest may send through wasi:http (10 MiB).
pub const MAX_REQUEST_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The call's name in errors, audit entries and logs.
const CALL: &str = "wasi:http/outgoing-handler";

/// The wasi:http state of one instance.
pub(crate) struct HttpState {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl HttpState {
    /// The state of one instance of plugin `name`, whose requests pass `capabilities`' gate.
    pub(crate) fn new(name: &str, capabilities: Capabilities) -> HttpState {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                name: name.to_string(),
                capabilities,
                deadline: Instant::now(),
                in_flight: Arc::new(Semaphore::new(MAX_OUTGOING_PER_INSTANCE)),
            },
        }
    }
}

/// What `send_request` needs of the instance: its plugin, the current call's deadline, its
/// requests in flight.
struct Hooks {
    name: String,
    capabilities: Capabilities,
    deadline: Instant,
    in_flight: Arc<Semaphore>,
}

impl HttpState {
    /// What wasmtime-wasi-http works on, for a call that ends at `deadline`.
    pub(crate) fn view<'a>(
        &'a mut self,
        table: &'a mut ResourceTable,
        deadline: Instant,
    ) -> WasiHttpCtxView<'a> {
        self.hooks.deadline = deadline;
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.hooks,
        }
    }
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for Hooks {
    /// The gate checks the authority; `host` is written from it by the backend, never twice.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let timeout = guest_timeout(options).map_or(remaining, |t| t.min(remaining));
        let deadline = tokio::time::Instant::now() + timeout;
        let capabilities = &self.capabilities;
        let url = request.uri().to_string();
        let outbound = capabilities
            .outbound(CALL)
            .and_then(|o| o.gate(CALL, &url).map(|()| o));
        let outbound = match outbound {
            Ok(o) => o.with_timeout(timeout),
            Err(e) => return refuse(request, deadline, refused(&e)),
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let e = HostError::OverLimit {
                limit: "network",
                message: format!(
                    "plugin '{}' already has {MAX_OUTGOING_PER_INSTANCE} outgoing requests in flight on one instance (the most wasi:http allows)",
                    self.name
                ),
            };
            let _ = capabilities.auditor().check::<()>(Err(e), "network", CALL);
            return refuse(request, deadline, Error::ConnectionLimitReached);
        };
        Box::new(async move {
            let _permit = permit;
            let (parts, body) = request.into_parts();
            let body = tokio::time::timeout_at(deadline, read_capped(body))
                .await
                .map_err(|_| Error::ConnectionWriteTimeout)??;
            let mut headers = parts.headers;
            remove_framing(&mut headers);
            let sent = outbound
                .send_once(CALL, parts.method, url, headers, body, None)
                .await;
            match sent {
                Ok(r) => {
                    let length = r.body.len();
                    let mut response = http::Response::new(
                        Full::new(Bytes::from(r.body))
                            .map_err(|never| match never {})
                            .boxed_unsync(),
                    );
                    *response.status_mut() = r.status;
                    let mut headers = r.headers;
                    remove_framing(&mut headers);
                    headers.insert(
                        http::header::CONTENT_LENGTH,
                        http::HeaderValue::from(length),
                    );
                    *response.headers_mut() = headers;
                    let done: Box<dyn Future<Output = Result<(), Error>> + Send> =
                        Box::new(std::future::ready(Ok(())));
                    Ok((response, done))
                }
                Err(e) => Err(failed(e)),
            }
        })
    }
}

/// A request refused before it was sent (already audited): its body is read and dropped first,
/// so that the guest, which may be writing it while it waits for the answer, gets the refusal
/// and not a broken stream.
fn refuse(
    request: http::Request<WasiBody>,
    deadline: tokio::time::Instant,
    error: Error,
) -> Box<dyn Future<Output = Sent> + Send> {
    Box::new(async move {
        let _ = tokio::time::timeout_at(deadline, read_capped(request.into_body())).await;
        Err(error)
    })
}

/// The guest's own limit: its connect and first-byte timeouts together, when it sets either.
fn guest_timeout(options: Option<RequestOptions>) -> Option<Duration> {
    let o = options?;
    match (o.connect_timeout, o.first_byte_timeout) {
        (None, None) => None,
        (c, f) => Some(c.unwrap_or_default().saturating_add(f.unwrap_or_default())),
    }
}

/// The request body, whole, within [`MAX_REQUEST_BODY_BYTES`].
async fn read_capped(mut body: WasiBody) -> Result<Bytes, Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > MAX_REQUEST_BODY_BYTES {
                return Err(Error::HttpRequestBodySize(Some(
                    MAX_REQUEST_BODY_BYTES as u64,
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// A request refused before it was sent (already audited when it was a denial).
fn refused(e: &HostError) -> Error {
    match e {
        HostError::Denied(_) => Error::HttpRequestDenied,
        HostError::Invalid(_) => Error::HttpRequestUriInvalid,
        other => Error::InternalError(Some(other.to_string())),
    }
}

/// The guest's error code for a request that got no answer.
fn failed(e: SendError) -> Error {
    match e.http {
        None => refused(&e.error),
        Some(HttpError::TooLarge) => Error::HttpResponseBodySize(None),
        Some(HttpError::TimedOut) => Error::HttpResponseTimeout,
        Some(_) => Error::InternalError(Some(e.error.to_string())),
    }
}

/// Drop the framing headers (`content-length`, `transfer-encoding`, …): the body's framing is
/// the host's to set, on the way out and on the way back in.
fn remove_framing(headers: &mut http::HeaderMap) {
    let framing: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| is_framing_header(k.as_str()))
        .cloned()
        .collect();
    for name in framing {
        headers.remove(name);
    }
}
