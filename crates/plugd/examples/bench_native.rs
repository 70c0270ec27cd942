//! The benchmark's five-plugin stack and JSON route as native plugd plugins, served over HTTP by
//! plugd's own router (scripts/bench.sh starts it; BENCHMARKS.md "HTTP throughput"). The same
//! logic as the wasm guests in benches/plugins and the peers in benches/peers and benches/nginx.
//!
//!   cargo run --release -p plugd --example bench_native -- 127.0.0.1:18301
//!
//! The access log goes to stderr through tracing (target `plugin`, level info), like the wasm
//! plugins' `log` calls: run with PLUGD_LOG="warn,plugin=info" 2>/dev/null as the script does.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use plugd::manifest::{Format, HostConfig, Manifest};
use plugd::server::AdminToken;
use plugd::{
    Action, Exchange, HookType, Host, InitContext, Plugin, PluginCache, PluginError, Response,
    RouteOptions,
};
use sha1::Sha1;

fn failed(e: impl std::fmt::Display) -> PluginError {
    PluginError::Failed(e.to_string())
}

fn json_response(status: u16, body: String) -> Response {
    let mut r = Response::new(http::StatusCode::from_u16(status).expect("valid status"));
    r.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.body = body.into();
    r
}

/// Keeps the client's `x-request-id` or makes one (`<process prefix>-<counter>`).
struct ReqId {
    prefix: u32,
    counter: AtomicU64,
}

#[async_trait::async_trait]
impl Plugin for ReqId {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        ctx.register_hook(HookType::PreRequest, 500).map_err(failed)
    }
    async fn on_hook(&self, _hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        let id = match ex.header("x-request-id") {
            Some(id) => id,
            None => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
                let id = format!("{:08x}-{n:08x}", self.prefix);
                ex.set_header("x-request-id", &id).map_err(failed)?;
                id
            }
        };
        ex.locals.insert("request_id".into(), id);
        Ok(Action::Continue)
    }
}

/// `Authorization: Bearer <client>.<hex HMAC-SHA1(secret, client)>`; 401 otherwise.
struct Auth {
    secret: Vec<u8>,
}

fn unauthorized(reason: &str) -> Action {
    let mut r = json_response(
        401,
        format!(r#"{{"error":"unauthorized","message":"{reason}"}}"#),
    );
    r.headers.insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    Action::Respond(r)
}

#[async_trait::async_trait]
impl Plugin for Auth {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        ctx.register_hook(HookType::PreRequest, 400).map_err(failed)
    }
    async fn on_hook(&self, _hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        let Some(header) = ex.header("authorization") else {
            return Ok(unauthorized("missing bearer token"));
        };
        let Some((client, sig)) = header
            .strip_prefix("Bearer ")
            .and_then(|t| t.rsplit_once('.'))
        else {
            return Ok(unauthorized("malformed bearer token"));
        };
        let Ok(sig) = hex::decode(sig) else {
            return Ok(unauthorized("malformed signature"));
        };
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.secret).expect("any key length");
        mac.update(client.as_bytes());
        if mac.verify_slice(&sig).is_err() {
            return Ok(unauthorized("bad signature"));
        }
        ex.locals.insert("client".into(), client.to_string());
        Ok(Action::Continue)
    }
}

/// A token bucket per client in the host cache (`rl:<client>`: tokens f64, last refill ms u64).
struct RateLimit {
    cache: OnceLock<PluginCache>,
    rate: f64,
    burst: f64,
}

#[async_trait::async_trait]
impl Plugin for RateLimit {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        let _ = self.cache.set(ctx.cache().map_err(failed)?);
        ctx.register_hook(HookType::PreRequest, 300).map_err(failed)
    }
    async fn on_hook(&self, _hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        let cache = self.cache.get().ok_or_else(|| failed("not initialized"))?;
        let client = ex.locals.get("client").map_or("anonymous", String::as_str);
        let key = format!("rl:{client}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (tokens, last) = match cache.get(&key).await? {
            Some(v) if v.len() == 16 => (
                f64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(v[8..].try_into().expect("8 bytes")),
            ),
            _ => (self.burst, now),
        };
        let elapsed = now.saturating_sub(last) as f64 / 1000.0;
        let tokens = (tokens + elapsed * self.rate).min(self.burst);
        if tokens < 1.0 {
            let mut r = json_response(429, r#"{"error":"rate limited"}"#.into());
            r.headers.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            return Ok(Action::Respond(r));
        }
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&(tokens - 1.0).to_le_bytes());
        value[8..].copy_from_slice(&now.to_le_bytes());
        cache
            .set(&key, &value, Some(Duration::from_secs(60)))
            .await?;
        Ok(Action::Continue)
    }
}

/// One JSON line per request to the log (target `plugin`, info), after the response is written.
struct AccessLog;

#[async_trait::async_trait]
impl Plugin for AccessLog {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        ctx.register_hook(HookType::PostResponse, 100)
            .map_err(failed)
    }
    async fn on_hook(&self, _hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let local = |k: &str| ex.locals.get(k).map_or("", String::as_str);
        let line = format!(
            r#"{{"ts":{ts},"method":"{}","path":"{}","status":{},"request_id":"{}","client":"{}"}}"#,
            ex.method,
            ex.path,
            ex.status().unwrap_or(0),
            local("request_id"),
            local("client"),
        );
        tracing::info!(target: "plugin", plugin = "bench-accesslog", "{line}");
        Ok(Action::Continue)
    }
}

/// `x-request-id` and `x-powered-by` on every response.
struct Headers;

#[async_trait::async_trait]
impl Plugin for Headers {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        ctx.register_hook(HookType::PreResponse, 100)
            .map_err(failed)
    }
    async fn on_hook(&self, _hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        if let Some(id) = ex.locals.get("request_id").cloned() {
            ex.set_response_header("x-request-id", &id)
                .map_err(failed)?;
        }
        ex.set_response_header("x-powered-by", "plugd-bench")
            .map_err(failed)?;
        Ok(Action::Continue)
    }
}

/// `GET /plugins/api/hello`: a small JSON body.
struct Api;

#[async_trait::async_trait]
impl Plugin for Api {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        ctx.register_route("GET", "/hello", RouteOptions::default())
            .map_err(failed)
    }
    async fn handle_request(
        &self,
        _route: &str,
        ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        let body = serde_json::json!({
            "message": "hello",
            "client": ex.locals.get("client"),
            "request_id": ex.locals.get("request_id"),
        });
        Ok(Response::json(http::StatusCode::OK, &body))
    }
}

fn manifest(name: &str, permissions: &str) -> Manifest {
    let yaml = format!(
        "name: {name}\nversion: 1.0.0\ndescription: benchmark stack\nauthor: plugd\npermissions: {{ {permissions} }}\n"
    );
    Manifest::from_str(&yaml, Format::Yaml, None).expect("manifest")
}

fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18301".into());
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLUGD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,plugin=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let data = tempfile::tempdir()?;
    let config = HostConfig::from_str(
        &format!("data_dir: '{}'\n", data.path().display()),
        Format::Yaml,
        None,
    )?;
    let prefix = std::collections::hash_map::RandomState::new();
    let host = Host::builder()
        .config(config)
        .native(
            manifest("bench-reqid", "intercept: true"),
            ReqId {
                prefix: std::hash::BuildHasher::hash_one(&prefix, 0u8) as u32,
                counter: AtomicU64::new(0),
            },
        )
        .native(
            manifest("bench-auth", "intercept: true"),
            Auth {
                secret: b"bench-secret".to_vec(),
            },
        )
        .native(
            manifest("bench-ratelimit", "cache: true, intercept: true"),
            RateLimit {
                cache: OnceLock::new(),
                rate: 1e9,
                burst: 1e9,
            },
        )
        .native(manifest("bench-accesslog", "intercept: true"), AccessLog)
        .native(manifest("bench-headers", "intercept: true"), Headers)
        .native(manifest("api", "router: true"), Api)
        .build()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        host.start().await?;
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        let admin = AdminToken::new("bench-admin-token-0123456789abcdef")?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        plugd::server::serve(host, admin, listener, shutdown).await?;
        anyhow::Ok(())
    })
}
