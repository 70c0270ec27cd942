//! Standard wasi:http proxy components as plugins.
//!
//! A component that exports `wasi:http/incoming-handler@0.2.x` and not `plugd:plugin/guest`
//! (one built for `wasmtime serve`, Spin, `cargo component --proxy`, wstd's
//! `#[wstd::http_server]`, componentize-js's fetch-event) loads, with its plugd manifest beside
//! it, as a [`ProxyPlugin`]: its routes are its handler, every method of [`METHODS`] on every
//! path under its mount (`/plugins/<name>/…`), registered in `init` and so needing `router` like
//! any route. The component sees the path with the mount stripped (`/hello`, as under
//! `wasmtime serve`) and the mount in `x-forwarded-prefix` (a client's own is replaced).
//!
//! Each request runs in a fresh instance (as `wasmtime serve` does: nothing of one request
//! survives into the next), taken from the pooling allocator when the plugin fits a slot, at
//! most `limits.instances` at once; under the plugin's deadline (epochs in guest code, the
//! same deadline around the host calls it waits in), memory cap, fuel and response body cap.
//! Hooks and middleware of other plugins run around it as around any route, and the host
//! polices its response (framing headers, header caps) as any plugin's. It has no lifecycle of
//! its own: `start`, `stop` and the rest are no-ops; its health is the host's view of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use plugd_core::{Exchange, InitContext, Plugin, PluginError, Response, RouteOptions};
use serde_json::Value;
use tokio::sync::Semaphore;
use wasmtime::component::Component;
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::code::MappedCode;
use crate::disk::DiskQuota;
use crate::host::{InstanceState, Shared, StoreSpec};
use crate::limits::{Allocator, MAX_WASM_STACK_BYTES, mib, response_too_large};
use crate::plugin::PluginOptions;

/// The export that makes a component a proxy (any 0.2.x).
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";
/// The methods a proxy plugin's routes take.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
/// The header that tells the component where it is mounted.
const FORWARDED_PREFIX: &str = "x-forwarded-prefix";
/// The route parameter holding the path under the mount.
const REST: &str = "path";

/// Whether `component` is a wasi:http proxy: it exports `wasi:http/incoming-handler@0.2.x` and
/// not plugd's own `guest` interface (a component with both is a plugd-contract plugin).
pub(crate) fn is_proxy(engine: &Engine, component: &Component) -> bool {
    let mut handler = false;
    for (name, _) in component.component_type().exports(engine) {
        if name.starts_with("plugd:plugin/guest") {
            return false;
        }
        handler |= name
            .strip_prefix(INCOMING_HANDLER)
            .is_some_and(|v| v.starts_with('.'));
    }
    handler
}

/// A loaded wasi:http proxy component.
pub struct ProxyPlugin {
    engine: Engine,
    pre: ProxyPre<InstanceState>,
    shared: Arc<Shared>,
    options: PluginOptions,
    permits: Semaphore,
    allocator: Allocator,
    /// Whether the engine meters fuel.
    metered: bool,
    /// Bytes of memories and tables over its live instances (those serving a request).
    memory: Arc<AtomicUsize>,
    /// The quota of its `/data` (`filesystem` only).
    disk: Option<Arc<DiskQuota>>,
    /// Its compiled image when mapped from the cache file: released after loading (`code.rs`).
    pub(crate) code: Option<MappedCode>,
}

impl std::fmt::Debug for ProxyPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyPlugin")
            .field("name", &self.options.name)
            .field("instances", &self.options.instances)
            .field("allocator", &self.allocator)
            .finish()
    }
}

impl ProxyPlugin {
    pub(crate) fn new(
        engine: Engine,
        pre: ProxyPre<InstanceState>,
        options: PluginOptions,
        allocator: Allocator,
        metered: bool,
    ) -> ProxyPlugin {
        let shared = Arc::new(Shared::from_options(&options));
        let disk = shared
            .capabilities
            .files_dir()
            .map(|dir| DiskQuota::new(dir, options.files, shared.capabilities.auditor().clone()));
        ProxyPlugin {
            engine,
            pre,
            shared,
            permits: Semaphore::new(options.instances),
            options,
            allocator,
            metered,
            memory: Arc::new(AtomicUsize::new(0)),
            disk,
            code: None,
        }
    }

    /// Where its instances are allocated.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    fn memory_cap(&self) -> usize {
        usize::try_from(self.options.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    /// A store for one request, armed with the plugin's limits until `deadline`.
    fn store(&self, deadline: Instant) -> Result<Store<InstanceState>, PluginError> {
        let mut store = crate::host::new_store(
            &self.engine,
            &self.shared,
            StoreSpec {
                memory_cap: self.memory_cap(),
                read_only: self.disk.as_ref().is_some_and(|d| d.read_only()),
                max_handles: self.options.files.open_files as usize + 16 * 8,
                deadline,
            },
        )?;
        store.set_epoch_deadline(1);
        if self.metered {
            // Only fails when the engine does not meter fuel, which `metered` rules out.
            let _ = store.set_fuel(self.options.fuel.unwrap_or(u64::MAX));
        }
        Ok(store)
    }

    /// A call that wasmtime ended with an error, worded for what happened.
    fn failure(&self, e: wasmtime::Error, route: &str, refused: Option<usize>) -> PluginError {
        let name = &self.options.name;
        if e.is::<PoolConcurrencyLimitError>() {
            return PluginError::Unavailable(format!(
                "instance pool exhausted: plugin '{name}' could not get a wasm instance for route {route} (raise plugins.pool.slots or lower limits.instances)"
            ));
        }
        let trap = e.downcast_ref::<Trap>();
        if let Some(wanted) = refused
            && !matches!(trap, Some(Trap::Interrupt))
        {
            return PluginError::Exhausted(format!(
                "out of memory: plugin '{name}' exceeded its {} memory limit in route {route} (linear memory and tables would have grown to {}; limits.memory_mb)",
                mib(self.memory_cap()),
                mib(wanted)
            ));
        }
        match trap {
            Some(Trap::Interrupt) => self.timed_out(route),
            Some(Trap::StackOverflow) => PluginError::Exhausted(format!(
                "stack overflow: plugin '{name}' exhausted its {} KiB wasm stack in route {route} (runaway recursion?)",
                MAX_WASM_STACK_BYTES / 1024
            )),
            Some(Trap::OutOfFuel) => PluginError::Exhausted(format!(
                "fuel exhausted: plugin '{name}' used all {} units of its fuel in route {route} (limits.fuel)",
                self.options.fuel.unwrap_or(u64::MAX)
            )),
            Some(trap) => PluginError::Trap(format!("route {route}: {trap}")),
            None => PluginError::Trap(format!("route {route}: {}", e.root_cause())),
        }
    }

    fn timed_out(&self, route: &str) -> PluginError {
        PluginError::Timeout(format!(
            "route {route} exceeded {} timeout",
            humantime_like(self.options.timeout)
        ))
    }

    /// Serve one request in a fresh instance.
    async fn serve(&self, route: &str, ex: &Exchange) -> Result<Response, PluginError> {
        let timeout = self.options.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = crate::plugin::acquire_instance(
            &self.permits,
            deadline,
            timeout,
            &self.options,
            || format!("route {route}"),
        )
        .await?;
        let request = incoming_request(ex)?;
        let mut store = self.store(deadline.into_std())?;
        let proxy = match self.pre.instantiate_async(&mut store).await {
            Ok(p) => p,
            Err(e) => {
                let refused = store.data().limits.refused().map(|r| r.wanted);
                return Err(match self.failure(e, "instantiation", refused) {
                    PluginError::Trap(m) | PluginError::Exhausted(m) => {
                        PluginError::Failed(format!("instantiation failed: {m}"))
                    }
                    other => other,
                });
            }
        };
        let counted = Counted::new(&self.memory, store.data().limits.used());
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let handles = {
            let mut http = store.data_mut().http();
            http.new_incoming_request(Scheme::Http, request)
                .and_then(|req| Ok((req, http.new_response_outparam(sender)?)))
        };
        let (req, out) = match handles {
            Ok(h) => h,
            Err(e) => return Err(PluginError::Failed(format!("route {route}: {e}"))),
        };
        // The guest runs until its handler returns; then its store goes, and with it every
        // handle it kept (a response it never set, a body it never finished).
        let call = async move {
            let r = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await;
            let refused = store.data().limits.refused().map(|r| r.wanted);
            drop(store);
            drop(counted);
            (r, refused)
        };
        let max = self.options.max_response_bytes;
        let read = async move {
            let response = match receiver.await {
                Ok(Ok(r)) => r,
                Ok(Err(code)) => return Err(format!("the component answered {code:?}")),
                Err(_) => return Err("the component never set a response".to_string()),
            };
            let (parts, mut body) = response.into_parts();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("its response body failed: {e}"))?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > max {
                        return Err(response_too_large(
                            &self.options.name,
                            bytes.len() + data.len(),
                            max,
                            &format!("route {route}"),
                        ));
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok((parts, bytes))
        };
        let Ok(((called, refused), read)) =
            tokio::time::timeout_at(deadline, async { tokio::join!(call, read) }).await
        else {
            return Err(self.timed_out(route));
        };
        if let Some(disk) = &self.disk {
            disk.after_call();
        }
        called.map_err(|e| self.failure(e, route, refused))?;
        let (parts, body) = read.map_err(|m| {
            PluginError::Failed(plugd_core::clean_text(&m, plugd_core::MAX_ERROR_BYTES))
        })?;
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Response::from_parts(parts.status.as_u16(), headers, body).map_err(|why| {
            PluginError::Failed(format!("plugin answered an invalid response: {why}"))
        })
    }
}

/// An instance's bytes, counted into its plugin's total while it lives.
struct Counted {
    memory: Arc<AtomicUsize>,
    bytes: usize,
}

impl Counted {
    fn new(memory: &Arc<AtomicUsize>, bytes: usize) -> Counted {
        memory.fetch_add(bytes, Ordering::Relaxed);
        Counted {
            memory: memory.clone(),
            bytes,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.memory.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The request the component sees: the path under the mount, the query, the headers with
/// `x-forwarded-prefix` naming the mount, the body.
fn incoming_request(ex: &Exchange) -> Result<http::Request<Full<Bytes>>, PluginError> {
    let rest = ex.route_param(REST).unwrap_or_default();
    let path = format!("/{rest}");
    let prefix = ex.path.strip_suffix(path.as_str()).unwrap_or("");
    let target = if ex.query.is_empty() {
        path
    } else {
        format!("{path}?{}", ex.query)
    };
    let authority = ex
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(target)
        .build()
        .map_err(|e| PluginError::Failed(format!("cannot pass the request on: {e}")))?;
    let mut request = http::Request::new(Full::new(ex.body.clone()));
    *request.method_mut() = ex.method.clone();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    *headers = ex.headers.clone();
    // The body is whole here (a hook may have replaced it): its framing is the host's.
    let framing: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| plugd_core::is_framing_header(k.as_str()))
        .cloned()
        .collect();
    for name in framing {
        headers.remove(name);
    }
    if !ex.body.is_empty() {
        headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(ex.body.len()),
        );
    }
    let prefix = http::HeaderValue::from_str(prefix)
        .map_err(|e| PluginError::Failed(format!("cannot pass the mount on: {e}")))?;
    request.headers_mut().insert(FORWARDED_PREFIX, prefix);
    Ok(request)
}

fn humantime_like(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[async_trait]
impl Plugin for ProxyPlugin {
    /// Its routes: every method of [`METHODS`] on every path under its mount.
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        *self.shared.config_json.write() = Value::Object(ctx.config().clone()).to_string();
        for method in METHODS {
            for path in ["/".to_string(), format!("/{{*{REST}}}")] {
                ctx.register_route(method, &path, RouteOptions::default())
                    .map_err(|e| PluginError::Failed(e.to_string()))?;
            }
        }
        // Loading read most of its compiled image; requests fault back what they run.
        if let Some(code) = &self.code {
            code.release(&self.options.name);
        }
        Ok(())
    }

    async fn handle_request(
        &self,
        route: &str,
        ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        self.serve(route, ex).await
    }

    fn kind(&self) -> &'static str {
        "wasm"
    }

    fn resources(&self) -> Option<plugd_core::Resources> {
        let max = self.options.instances;
        Some(plugd_core::Resources {
            instances_max: max,
            instances_busy: max.saturating_sub(self.permits.available_permits()),
            instances_idle: 0,
            memory_bytes: self.memory.load(Ordering::Relaxed),
        })
    }

    fn allocator(&self) -> Option<&'static str> {
        Some(self.allocator.as_str())
    }
}
