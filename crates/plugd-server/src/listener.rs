//! One listener under abuse: the accept loop and each connection, with the timeouts and caps of
//! the `server:` section.
//!
//! - At most `max_connections` connections are served at once. The accept loop takes a slot
//!   before it accepts: over the cap, a new connection waits in the kernel's listen queue (or
//!   the client's connect times out) and the open connections are served as before.
//! - A connection with no request in progress is closed `idle_timeout` after its last request
//!   (or after it opened); one that has started a request line is closed if the line and headers
//!   are not all there `header_read_timeout` after its first byte (a slowloris).
//! - Request headers are capped in count (`max_headers`) and bytes (`max_header_bytes`): over
//!   either, hyper answers 431 and closes the connection.
//! - A request body must be read whole within `body_read_timeout` of the headers: the handler's
//!   read fails and the client gets 408 with `Connection: close`.
//! - Graceful shutdown: when `stop` turns true the loop stops accepting, requests in progress
//!   finish, idle connections close, and [`serve_listener`] returns once every connection is
//!   gone.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use plugd_manifest::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::Service;

use crate::admin::json_error;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The timeouts and caps one listener applies, from the `server:` section.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    body_read_timeout: Duration,
    max_connections: usize,
    max_headers: usize,
    max_header_bytes: usize,
}

impl Limits {
    pub(crate) fn new(server: &ServerConfig) -> Self {
        Limits {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            body_read_timeout: server.body_read_timeout,
            max_connections: server.max_connections.max(1),
            max_headers: server.max_headers.max(1),
            max_header_bytes: usize::try_from(server.max_header_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// Serve `app` on `listener` until `stop` turns true, then drain (see the module doc).
pub(crate) async fn serve_listener(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut full = false;
    loop {
        // A slot first: over the cap, new connections wait in the listen queue, unaccepted.
        if slots.available_permits() == 0 && !full {
            full = true;
            tracing::warn!(
                max_connections = limits.max_connections,
                "the connection cap is reached (server.max_connections): new connections wait until one closes"
            );
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        if slots.available_permits() > 0 {
            full = false;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(
                    stream,
                    peer,
                    app.clone(),
                    limits.clone(),
                    stop.clone(),
                    slot,
                ));
            }
            Err(e) => accept_failed(&e).await,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// An accept error: a client that went away is nobody's concern; anything else (out of file
/// descriptors) is logged and the loop pauses a moment rather than spin.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection, from accept to close; `_slot` is its place under the cap.
async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        let limits = limits.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            // The peer's address, for handlers and the access log (axum's `ConnectInfo`).
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            answer(
                app.clone(),
                request,
                activity.begin(),
                limits.body_read_timeout,
            )
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // A backstop only: the watch below closes idle and slow connections first.
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // Checked on a complete head; one still arriving is bounded by hyper's read buffer
        // (about 400KiB, then 431) and by the header read timeout.
        .max_header_size(limits.max_header_bytes);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closed a connection: idle, or its request headers too slow (server.idle_timeout, server.header_read_timeout)");
                    return;
                }
            }
            () = stopped(&mut stop), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// One request: its body on the `body_read_timeout` clock, then the application.
async fn answer(
    mut app: Router,
    request: Request<Incoming>,
    _in_progress: InProgress,
    body_read_timeout: Duration,
) -> Result<Response, Infallible> {
    let timed_out = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(body_read_timeout)),
            timed_out: timed_out.clone(),
        })
    });
    let response = app.call(request).await?;
    if timed_out.load(Ordering::Relaxed) {
        let mut response = json_error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} (server.body_read_timeout)",
                humantime::format_duration(body_read_timeout)
            ),
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(response);
    }
    Ok(response)
}

/// A request body that fails once its deadline has passed, and says so in `timed_out`.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time (server.body_read_timeout)")]
struct BodyTimedOut;

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

/// What a connection is doing, for its idle and header deadlines: written by its reads, its
/// writes and its requests; read by the task that serves it. Atomics, no lock.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Requests whose response is not yet produced.
    in_progress: AtomicUsize,
    /// Milliseconds from `opened` to the last write or the end of the last request.
    last: AtomicU64,
    /// Milliseconds from `opened` to the first byte of a request not yet parsed, plus one; 0
    /// when none has begun.
    head_started: AtomicU64,
    /// Woken when a deadline may have moved earlier.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_progress: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the connection is closed if nothing changes: none while a request is in progress.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at =
            |ms: u64, timeout: Duration| Some(self.opened + Duration::from_millis(ms) + timeout);
        match self.head_started.load(Ordering::Acquire) {
            0 => at(self.last.load(Ordering::Acquire), limits.idle_timeout),
            started => at(started - 1, limits.header_read_timeout),
        }
    }

    /// Bytes came in: with no request in progress, they begin the next one's head.
    fn read(&self) {
        if self.in_progress.load(Ordering::Acquire) == 0
            && self
                .head_started
                .compare_exchange(0, self.now() + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last.store(self.now(), Ordering::Release);
    }

    /// A request's head is parsed: no deadline until its response is produced.
    fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        InProgress(self.clone())
    }
}

/// A request in progress on a connection; its drop (answered, or abandoned) restarts the idle
/// clock.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.last.store(self.0.now(), Ordering::Release);
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// The socket, reporting its reads and writes to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(&ServerConfig {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        })
    }

    #[test]
    fn deadlines_follow_the_connection() {
        let limits = limits();
        let a = Arc::new(Activity::new());
        assert_eq!(a.deadline(&limits), Some(a.opened + limits.idle_timeout));
        a.read();
        // The first byte of a request: its head has the header read timeout from then.
        let head = a.deadline(&limits).unwrap();
        assert!(head >= a.opened + limits.header_read_timeout, "{head:?}");
        assert!(
            head <= Instant::now() + limits.header_read_timeout,
            "{head:?}"
        );
        a.read();
        assert_eq!(
            a.deadline(&limits),
            Some(head),
            "later bytes do not move it"
        );
        let request = a.begin();
        assert_eq!(
            a.deadline(&limits),
            None,
            "a request in progress is never cut"
        );
        a.read();
        assert_eq!(a.deadline(&limits), None, "body bytes do not start a head");
        drop(request);
        // Answered: idle again, on the idle timeout from the answer.
        let idle = a.deadline(&limits).unwrap();
        assert!(idle >= a.opened + limits.idle_timeout, "{idle:?}");
        assert!(idle <= Instant::now() + limits.idle_timeout, "{idle:?}");
    }

    #[test]
    fn limits_come_from_the_config() {
        let l = Limits::new(&ServerConfig::default());
        assert_eq!(l.max_connections, 10_000);
        assert_eq!(l.max_headers, 100);
        assert_eq!(l.max_header_bytes, 64 * 1024);
        assert_eq!(l.body_read_timeout, Duration::from_secs(30));
    }
}
