//! The engine, the linker and the loader.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use plugd_core::{Loader, LoaderContext, Plugin};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::Plugin as World;
use crate::cache::{Cache, Source};
use crate::host::InstanceState;
pub use crate::plugin::PluginOptions;
use crate::plugin::WasmPlugin;

/// How often the epoch advances: the granularity of deadlines and of yields to tokio.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled components are cached (created with mode 0700).
    pub cache_dir: PathBuf,
}

/// The wasm runtime: one engine, one linker, a compile cache. Cheap to clone.
#[derive(Clone)]
pub struct WasmRuntime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: Cache,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").finish_non_exhaustive()
    }
}

impl WasmRuntime {
    /// Make the engine (component model, epoch interruption, no component-model concurrency)
    /// and start its epoch ticker.
    pub fn new(options: RuntimeOptions) -> Result<WasmRuntime, String> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // The component-model async machinery costs ~3x per call and no feature needs it yet.
        config.concurrency_support(false);
        let engine = Engine::new(&config).map_err(|e| format!("wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("wasi: {e}"))?;
        World::add_to_linker::<InstanceState, HasSelf<InstanceState>>(&mut linker, |s| s)
            .map_err(|e| format!("plugd imports: {e}"))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("plugd-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| format!("epoch thread: {e}"))?;
        }
        let cache = Cache::new(&engine, options.cache_dir);
        Ok(WasmRuntime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                ticker_stop,
            }),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Compile (or fetch from the cache) and link a component file into a plugin.
    pub async fn load_file(
        &self,
        path: PathBuf,
        options: PluginOptions,
    ) -> Result<WasmPlugin, String> {
        let inner = self.inner.clone();
        let started = Instant::now();
        // Compilation is CPU-bound: keep it off the async workers.
        let (component, source) = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("cannot read component {}: {e}", path.display()))?;
            inner.cache.load(&inner.engine, &bytes)
        })
        .await
        .map_err(|e| format!("compile task: {e}"))??;
        crate::contract::check(&self.inner.engine, &component)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("cannot link component: {e:#}"))?;
        let pre = crate::bindings::PluginPre::new(pre)
            .map_err(|e| format!("cannot link component: {e:#}"))?;
        tracing::debug!(
            plugin = %options.name,
            cached = source == Source::Cached,
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "component ready"
        );
        let mut plugin = WasmPlugin::new(self.inner.engine.clone(), pre, options);
        plugin.from_cache = source == Source::Cached;
        Ok(plugin)
    }
}

#[async_trait]
impl Loader for WasmRuntime {
    async fn load(&self, ctx: LoaderContext<'_>) -> Result<Arc<dyn Plugin>, String> {
        let path = ctx.dir.join(&ctx.manifest.component);
        if !path.exists() {
            return Err(format!(
                "plugin file not found: {} (build the plugin first, for example with scripts/build-examples.sh)",
                path.display()
            ));
        }
        let limits = &ctx.host.plugins.limits;
        let overrides = ctx.entry.limits.as_ref();
        let options = PluginOptions {
            name: ctx.manifest.name.clone(),
            granted: ctx.granted.clone(),
            config: ctx.config.clone(),
            store: ctx.store.clone(),
            memory_mb: overrides
                .and_then(|o| o.memory_mb)
                .unwrap_or(limits.memory_mb),
            timeout: overrides.and_then(|o| o.timeout).unwrap_or(limits.timeout),
            hook_timeouts: {
                let mut h = limits.hook_timeouts.clone();
                if let Some(o) = overrides {
                    h.extend(o.hook_timeouts.iter().map(|(k, v)| (*k, *v)));
                }
                h
            },
            instances: overrides
                .and_then(|o| o.instances)
                .or(limits.instances)
                .map(|n| n.max(1) as usize)
                .unwrap_or_else(default_instances),
            publisher: Some(ctx.publisher.clone()),
            subscribes: ctx.manifest.events.subscribes.clone(),
            services: Some(ctx.services.clone()),
            exports: ctx
                .manifest
                .exports
                .iter()
                .map(|e| e.name.clone())
                .collect(),
            metrics: Some(ctx.metrics.clone()),
            cache: Some(ctx.cache.clone()),
            audit: Some(ctx.audit.clone()),
            capabilities: Some(ctx.capabilities.clone()),
        };
        let plugin = self.load_file(path, options).await?;
        Ok(Arc::new(plugin))
    }
}

/// The default pool size: the number of tokio workers (the machine's parallelism).
fn default_instances() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
