//! The benchmark's five behaviours as tower middleware on bare axum: the ceiling for plugd's
//! stacks (BENCHMARKS.md "HTTP throughput"). Same logic as crates/plugd/examples/bench_native.rs,
//! benches/plugins/* and benches/nginx/*.lua.
//!
//!   cargo run --release -p axum-stack -- 127.0.0.1:18303
//!   cargo run --release -p axum-stack -- 127.0.0.1:18306 route   # the JSON route alone
//!
//! With `route` it serves only `GET /plugins/api/hello` (no middleware, no access log) with the
//! body the `api` bench plugin answers when no plugin set its locals
//! (`{"message":"hello","client":null,"request_id":null}`): the peer of one wasm route alone
//! (BENCHMARKS.md "One wasm route alone").
//!
//! The access log is one tracing event per request (target `access`, info) to stderr: run with
//! RUST_LOG="warn,access=info" 2>/dev/null as scripts/bench.sh does.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha1::Sha1;

/// What the plugins keep per request (plugd's `locals`).
#[derive(Clone, Default)]
struct Locals {
    request_id: String,
    client: String,
}

/// The authenticated client, on the response: the access log wraps auth, so it reads the client
/// from there (its own copy of `Locals` was taken before auth ran).
#[derive(Clone)]
struct Client(String);

struct ReqIds {
    prefix: u32,
    counter: AtomicU64,
}

/// The shared in-memory cache the rate limiter uses (plugd's host cache is a mutex-guarded map).
#[derive(Default)]
struct Buckets {
    map: Mutex<HashMap<String, (Vec<u8>, u64)>>,
}

const RATE: f64 = 1e9;
const BURST: f64 = 1e9;
const SECRET: &[u8] = b"bench-secret";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn request_id(State(ids): State<Arc<ReqIds>>, mut req: Request, next: Next) -> Response {
    let id = match req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => id.to_string(),
        None => {
            let n = ids.counter.fetch_add(1, Ordering::Relaxed) + 1;
            let id = format!("{:08x}-{n:08x}", ids.prefix);
            req.headers_mut()
                .insert("x-request-id", HeaderValue::from_str(&id).expect("hex"));
            id
        }
    };
    req.extensions_mut().insert(Locals {
        request_id: id,
        client: String::new(),
    });
    next.run(req).await
}

fn unauthorized(reason: &str) -> Response {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        format!(r#"{{"error":"unauthorized","message":"{reason}"}}"#),
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn auth(mut req: Request, next: Next) -> Response {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return unauthorized("missing bearer token");
    };
    let Some((client, sig)) = value
        .strip_prefix("Bearer ")
        .and_then(|t| t.rsplit_once('.'))
    else {
        return unauthorized("malformed bearer token");
    };
    let Ok(sig) = hex::decode(sig) else {
        return unauthorized("malformed signature");
    };
    let mut mac = Hmac::<Sha1>::new_from_slice(SECRET).expect("any key length");
    mac.update(client.as_bytes());
    if mac.verify_slice(&sig).is_err() {
        return unauthorized("bad signature");
    }
    let client = client.to_string();
    if let Some(locals) = req.extensions_mut().get_mut::<Locals>() {
        locals.client = client.clone();
    }
    let mut response = next.run(req).await;
    response.extensions_mut().insert(Client(client));
    response
}

async fn rate_limit(State(buckets): State<Arc<Buckets>>, req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<Locals>()
        .map(|l| l.client.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "anonymous".into());
    let key = format!("rl:{client}");
    let now = now_ms();
    let stored = buckets.map.lock().get(&key).map(|(v, _)| v.clone());
    let (tokens, last) = match stored {
        Some(v) if v.len() == 16 => (
            f64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(v[8..].try_into().expect("8 bytes")),
        ),
        _ => (BURST, now),
    };
    let elapsed = now.saturating_sub(last) as f64 / 1000.0;
    let tokens = (tokens + elapsed * RATE).min(BURST);
    if tokens < 1.0 {
        let mut r = json(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":"rate limited"}"#.into(),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let mut value = vec![0u8; 16];
    value[..8].copy_from_slice(&(tokens - 1.0).to_le_bytes());
    value[8..].copy_from_slice(&now.to_le_bytes());
    buckets.map.lock().insert(key, (value, now + 60_000));
    next.run(req).await
}

async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let locals = req
        .extensions()
        .get::<Locals>()
        .cloned()
        .unwrap_or_default();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let client = response
        .extensions()
        .get::<Client>()
        .map_or(locals.client, |c| c.0.clone());
    // After the response is produced, off its path (plugd's post_response runs in a task too).
    tokio::spawn(async move {
        let ts = now_ms();
        let line = format!(
            r#"{{"ts":{ts},"method":"{method}","path":"{path}","status":{status},"request_id":"{}","client":"{}"}}"#,
            locals.request_id, client,
        );
        tracing::info!(target: "access", "{line}");
    });
    response
}

async fn response_headers(req: Request, next: Next) -> Response {
    let id = req
        .extensions()
        .get::<Locals>()
        .map(|l| l.request_id.clone());
    let mut response = next.run(req).await;
    if let Some(id) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
        .headers_mut()
        .insert("x-powered-by", HeaderValue::from_static("plugd-bench"));
    response
}

async fn hello(req: Request<Body>) -> Response {
    let locals = req
        .extensions()
        .get::<Locals>()
        .cloned()
        .unwrap_or_default();
    let body = serde_json::json!({
        "message": "hello",
        "client": locals.client,
        "request_id": locals.request_id,
    });
    json(StatusCode::OK, body.to_string())
}

/// The route alone: what `api` answers without the stack's locals, serialized the same way.
async fn hello_alone() -> Response {
    let body = serde_json::json!({
        "message": "hello",
        "client": serde_json::Value::Null,
        "request_id": serde_json::Value::Null,
    });
    json(StatusCode::OK, body.to_string())
}

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18303".into());
    let route_only = std::env::args().nth(2).as_deref() == Some("route");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,access=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let ids = Arc::new(ReqIds {
        prefix: std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            0u8,
        ) as u32,
        counter: AtomicU64::new(0),
    });
    let buckets = Arc::new(Buckets::default());
    let app = if route_only {
        Router::new()
            .route("/plugins/api/hello", get(hello_alone))
            .route("/healthz", get(|| async { "ok" }))
    } else {
        stack(ids, buckets)
    };
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    // Ctrl-C (SIGINT) ends it cleanly: the profile section of bench.sh stops it that way and
    // needs the process to exit for callgrind to write its counts.
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serve");
}

/// The five behaviours around the JSON route.
fn stack(ids: Arc<ReqIds>, buckets: Arc<Buckets>) -> Router {
    // Layers run outside-in in the reverse order of `.layer` calls: request id first.
    Router::new()
        .route("/plugins/api/hello", get(hello))
        .layer(from_fn_with_state(buckets, rate_limit))
        .layer(from_fn(auth))
        .layer(from_fn(response_headers))
        .layer(from_fn(access_log))
        .layer(from_fn_with_state(ids, request_id))
        .route("/healthz", get(|| async { "ok" }))
}
