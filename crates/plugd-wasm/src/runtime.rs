//! The engine, the linker and the loader.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use plugd_core::{BoxError, Loader, LoaderContext, Plugin};
use plugd_manifest::{HostConfig, PoolSettings};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{v0_1, v0_2};
use crate::cache::{Cache, CacheError, Loaded, Source};
use crate::code::MappedCode;
use crate::disk::FileLimits;
use crate::error::{UnknownProfiler, WasmError};
use crate::host::InstanceState;
use crate::limits::{Allocator, MAX_WASM_STACK_BYTES};
pub use crate::plugin::PluginOptions;
use crate::plugin::{Pre, WasmPlugin};
use crate::proxy::ProxyPlugin;

/// How often the epoch advances: the granularity of deadlines and of yields to tokio.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

const MIB: u64 = 1024 * 1024;

/// Unmapped bytes after each linear memory. Accesses whose static offset is below it need no
/// bounds check of their own beyond the index check; only address space.
const MEMORY_GUARD_BYTES: u64 = 2 * MIB;

/// How far an on-demand memory that outgrows its reservation is re-reserved at a time.
const MEMORY_GROWTH_RESERVATION_BYTES: u64 = 64 * MIB;
/// Bytes of a freed pooled table kept mapped for the slot's next instance.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 * 1024;

/// Settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled components are cached (created with mode 0700).
    pub cache_dir: PathBuf,
    /// The pooling allocator (and every memory's address-space reservation).
    pub pool: PoolOptions,
    /// Meter fuel: needed when any plugin has `limits.fuel`. Costs ~20% of guest speed for every
    /// plugin of the runtime, so it is off unless asked for.
    pub fuel: bool,
    /// Tell a native profiler about compiled guest code, so that `perf` names guest functions
    /// (default: none). [`Profiler::from_env`] reads `PLUGD_WASM_PROFILER`.
    pub profiler: Profiler,
}

/// A native profiler to describe compiled guest code to: with one, `perf report` names guest
/// frames by the component's function names (`sha1::compress::compress`,
/// `plugd:plugin/guest@0.2.0#on-hook`; `wasm[N]::function[M]` where it has none) instead of bare
/// addresses.
///
/// ```
/// use plugd_wasm::Profiler;
/// assert_eq!("perfmap".parse(), Ok(Profiler::PerfMap));
/// assert_eq!("".parse(), Ok(Profiler::None));
/// assert!("gprof".parse::<Profiler>().unwrap_err().to_string().contains("perfmap or jitdump"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profiler {
    /// Nothing is written.
    #[default]
    None,
    /// `/tmp/perf-<pid>.map`: symbol names for `perf record` / `perf report`.
    PerfMap,
    /// `./jit-<pid>.dump`: code and names for `perf inject --jit` (annotated guest code).
    JitDump,
}

impl Profiler {
    /// The environment variable [`Profiler::from_env`] reads.
    pub const ENV: &'static str = "PLUGD_WASM_PROFILER";

    /// The profiler `PLUGD_WASM_PROFILER` names (`perfmap`, `jitdump`; unset or empty: none).
    pub fn from_env() -> Result<Profiler, WasmError> {
        match std::env::var(Profiler::ENV) {
            Ok(v) => Ok(v.parse::<Profiler>()?),
            Err(std::env::VarError::NotPresent) => Ok(Profiler::None),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(UnknownProfiler(v.to_string_lossy().into_owned()).into())
            }
        }
    }

    fn strategy(self) -> wasmtime::ProfilingStrategy {
        match self {
            Profiler::None => wasmtime::ProfilingStrategy::None,
            Profiler::PerfMap => wasmtime::ProfilingStrategy::PerfMap,
            Profiler::JitDump => wasmtime::ProfilingStrategy::JitDump,
        }
    }
}

impl std::str::FromStr for Profiler {
    type Err = UnknownProfiler;

    fn from_str(s: &str) -> Result<Profiler, UnknownProfiler> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Profiler::None),
            "perfmap" => Ok(Profiler::PerfMap),
            "jitdump" => Ok(Profiler::JitDump),
            other => Err(UnknownProfiler(other.to_string())),
        }
    }
}

impl RuntimeOptions {
    /// The default pool, no fuel, compiled components cached in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> RuntimeOptions {
        RuntimeOptions {
            cache_dir: cache_dir.into(),
            pool: PoolOptions::default(),
            fuel: false,
            profiler: Profiler::None,
        }
    }

    /// The runtime a host config asks for: `plugins.pool`, fuel when `limits.fuel` is set
    /// globally or for any plugin, the cache under `<data_dir>/cache/components`.
    ///
    /// ```
    /// use plugd_manifest::{Format, HostConfig};
    /// let yaml = "plugins:\n  pool: { slots: 16 }\n  plugins:\n    - name: metered\n      limits: { fuel: 1000000 }\n";
    /// let config = HostConfig::from_str(yaml, Format::Yaml, None).unwrap();
    /// let options = plugd_wasm::RuntimeOptions::from_config(&config);
    /// assert_eq!(options.pool.slots, 16);
    /// assert_eq!(options.pool.memory_per_slot_mb, 64);
    /// assert_eq!(options.pool.keep_resident_bytes, 1024 * 1024);
    /// assert!(options.fuel, "one plugin's fuel turns metering on");
    /// ```
    pub fn from_config(config: &HostConfig) -> RuntimeOptions {
        let plugins = &config.plugins;
        let fuel = plugins.limits.fuel.is_some()
            || plugins
                .plugins
                .iter()
                .any(|p| p.limits.as_ref().is_some_and(|l| l.fuel.is_some()));
        RuntimeOptions {
            cache_dir: config.data_dir.join("cache").join("components"),
            pool: PoolOptions::from_settings(&plugins.pool),
            fuel,
            profiler: Profiler::None,
        }
    }
}

/// wasmtime's pooling allocator: `slots` instances of one linear memory of at most
/// `memory_per_slot_mb` each, allocated from address space reserved once at start.
///
/// Every slot reserves `memory_per_slot_mb` + 4 MiB of guards of address space (not RAM), so the
/// defaults (256 × 64 MiB) reserve about 17 GiB and can never commit more than 16 GiB of linear
/// memory. Linear memories of on-demand instances reserve the same `memory_per_slot_mb` (and grow
/// beyond it by moving): both engines compile identical code, so one cache entry serves both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Instances the pool holds at once across every pooled plugin; 0: no pool, every instance
    /// on demand.
    pub slots: u32,
    /// The largest linear memory of a pooled instance, MiB; also the address space each linear
    /// memory reserves.
    pub memory_per_slot_mb: u64,
    /// Core module instances one component may create (a Rust guest: 4).
    pub core_instances_per_component: u32,
    /// Linear memories one component may define (a Rust guest: 1).
    pub memories_per_component: u32,
    /// Tables one component may define (a Rust guest: 2).
    pub tables_per_component: u32,
    /// The largest table of a pooled instance, in elements (a Rust guest: ~100).
    pub table_elements: usize,
    /// Bytes of a freed slot's linear memory kept mapped, reset in place, for its next instance
    /// (`plugins.pool.keep_resident_kb`).
    pub keep_resident_bytes: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions::from_settings(&PoolSettings::default())
    }
}

impl PoolOptions {
    /// `plugins.pool` of the host config, with the per-component limits at their defaults.
    pub fn from_settings(settings: &PoolSettings) -> PoolOptions {
        PoolOptions {
            slots: settings.slots,
            memory_per_slot_mb: settings.memory_per_slot_mb,
            core_instances_per_component: 8,
            memories_per_component: 2,
            tables_per_component: 4,
            table_elements: 20_000,
            keep_resident_bytes: usize::try_from(settings.keep_resident_kb.saturating_mul(1024))
                .unwrap_or(usize::MAX),
        }
    }

    fn memory_per_slot(&self) -> u64 {
        self.memory_per_slot_mb.saturating_mul(MIB)
    }
}

/// The wasm runtime: a pooled and an on-demand engine, their linkers, a compile cache. Cheap to
/// clone.
#[derive(Clone)]
pub struct WasmRuntime {
    inner: Arc<RuntimeInner>,
}

/// One engine with its linker and its view of the compile cache.
struct Backend {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: Cache,
}

struct RuntimeInner {
    /// `None` when `slots` is 0 or the pool's address space could not be reserved.
    pooled: Option<Backend>,
    on_demand: Backend,
    options: RuntimeOptions,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("pooled", &self.inner.pooled.is_some())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// The settings both engines share. Everything that shapes compiled code is here, so that the
/// two engines' compatibility hashes are equal and a component compiled once runs on either.
fn engine_config(options: &RuntimeOptions) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // The component-model async machinery costs ~3x per call and no feature needs it yet.
    config.concurrency_support(false);
    config.consume_fuel(options.fuel);
    config.max_wasm_stack(MAX_WASM_STACK_BYTES);
    config.profiler(options.profiler.strategy());
    // Reserve a slot's worth of address space per linear memory, not wasmtime's default 4 GiB
    // (which lets compiled code skip bounds checks, at 4 GiB of address space per instance: with
    // hundreds of slots that is terabytes). The cost is an explicit bounds check per access.
    config.memory_reservation(options.pool.memory_per_slot());
    config.memory_guard_size(MEMORY_GUARD_BYTES);
    config.memory_reservation_for_growth(MEMORY_GROWTH_RESERVATION_BYTES);
    config
}

fn pooling_config(pool: &PoolOptions) -> PoolingAllocationConfig {
    let slots = pool.slots;
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(slots)
        .total_memories(slots)
        .total_stacks(slots)
        .total_tables(slots.saturating_mul(pool.tables_per_component))
        .total_core_instances(slots.saturating_mul(pool.core_instances_per_component))
        .total_gc_heaps(slots)
        .max_core_instances_per_component(pool.core_instances_per_component)
        .max_memories_per_component(pool.memories_per_component)
        .max_tables_per_component(pool.tables_per_component)
        .table_elements(pool.table_elements)
        .max_memory_size(usize::try_from(pool.memory_per_slot()).unwrap_or(usize::MAX))
        // Reset reused slots with the cheapest method the kernel offers (Linux 6.7+).
        .pagemap_scan(Enabled::Auto)
        // A slot handed back keeps its first pages mapped, reset with memset, instead of
        // decommitting them: the next instance in the slot takes no page fault there, and a
        // page fault in a multi-threaded process costs a TLB shoot-down on every core (the
        // most of a proxy component's per-request instance; BENCHMARKS.md, "wasmtime serve").
        .linear_memory_keep_resident(pool.keep_resident_bytes)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);
    p
}

fn backend(
    config: &Config,
    cache_dir: &std::path::Path,
    profiler: Profiler,
) -> Result<Backend, WasmError> {
    let engine = Engine::new(config).map_err(WasmError::Engine)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|source| WasmError::Imports {
        what: "wasi",
        source,
    })?;
    // wasi:http/outgoing-handler and wasi:http/types, gated like outbound.fetch (wasi_http.rs).
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|source| {
        WasmError::Imports {
            what: "wasi:http",
            source,
        }
    })?;
    // Every contract version this plugd loads: 0.2 natively, 0.1 through its shim.
    v0_2::Plugin::add_to_linker::<InstanceState, HasSelf<InstanceState>>(&mut linker, |s| s)
        .and_then(|()| {
            v0_1::Plugin::add_to_linker::<InstanceState, HasSelf<InstanceState>>(&mut linker, |s| s)
        })
        .map_err(|source| WasmError::Imports {
            what: "plugd",
            source,
        })?;
    // wasi:keyvalue, wasi:config, wasi:logging: served from the plugin's own store, config, log.
    crate::wasi_std::add_to_linker(&mut linker).map_err(|source| WasmError::Imports {
        what: "wasi:keyvalue, wasi:config, wasi:logging",
        source,
    })?;
    let cache = Cache::new(&engine, cache_dir.to_path_buf(), profiler != Profiler::None);
    Ok(Backend {
        engine,
        linker,
        cache,
    })
}

impl WasmRuntime {
    /// Make the engines (component model, epoch interruption, no component-model concurrency;
    /// one with the pooling allocator unless `slots` is 0, one allocating on demand) and start
    /// their epoch ticker.
    pub fn new(options: RuntimeOptions) -> Result<WasmRuntime, WasmError> {
        let config = engine_config(&options);
        let on_demand = backend(&config, &options.cache_dir, options.profiler)?;
        let pooled = if options.pool.slots == 0 {
            tracing::info!(
                "pooling allocator off (plugins.pool.slots: 0): every wasm instance is allocated on demand"
            );
            None
        } else {
            let mut pooled_config = config.clone();
            pooled_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
                &options.pool,
            )));
            match backend(&pooled_config, &options.cache_dir, options.profiler) {
                Ok(b) => Some(b),
                Err(e) => {
                    // Typically an address-space limit (ulimit -v): run, allocating on demand.
                    tracing::warn!(error = %e, slots = options.pool.slots, memory_per_slot_mb = options.pool.memory_per_slot_mb,
                        "pooling allocator unavailable; every wasm instance is allocated on demand (lower plugins.pool.slots or memory_per_slot_mb)");
                    None
                }
            }
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engines: Vec<Engine> = std::iter::once(on_demand.engine.clone())
                .chain(pooled.as_ref().map(|b| b.engine.clone()))
                .collect();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("plugd-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &engines {
                            engine.increment_epoch();
                        }
                    }
                })
                .map_err(WasmError::EpochThread)?;
        }
        Ok(WasmRuntime {
            inner: Arc::new(RuntimeInner {
                pooled,
                on_demand,
                options,
                ticker_stop,
            }),
        })
    }

    /// The engine of on-demand instances.
    pub fn engine(&self) -> &Engine {
        &self.inner.on_demand.engine
    }

    /// The engine of pooled instances, if the pool is on.
    pub fn pooled_engine(&self) -> Option<&Engine> {
        self.inner.pooled.as_ref().map(|b| &b.engine)
    }

    /// The options the runtime was made with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.options
    }

    /// Compile (or fetch from the cache) and link a component file into a plugin (see
    /// [`WasmRuntime::load_bytes`]).
    pub async fn load_file(
        &self,
        path: PathBuf,
        options: PluginOptions,
    ) -> Result<WasmPlugin, WasmError> {
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|source| WasmError::Read {
                path: path.clone(),
                source,
            })?;
        self.load_bytes(Arc::from(bytes), options).await
    }

    /// Compile (or fetch from the cache) and link a component into a plugin.
    ///
    /// The plugin's instances come from the pool when the pool is on, its memory cap fits a
    /// slot and its component fits a slot's limits; otherwise they are allocated on demand. The
    /// choice is logged and shown as the plugin's `allocator`.
    pub async fn load_bytes(
        &self,
        bytes: Arc<[u8]>,
        options: PluginOptions,
    ) -> Result<WasmPlugin, WasmError> {
        let compiled = self.compiled(bytes, &options).await?;
        self.contract_plugin(compiled, options)
    }

    /// Compile (or fetch from the cache) and link any plugin component: a plugd-contract plugin
    /// (a [`WasmPlugin`]), or a standard wasi:http proxy component, one that exports
    /// `wasi:http/incoming-handler@0.2.x` and not `plugd:plugin/guest` (a [`ProxyPlugin`]).
    pub async fn load_component(
        &self,
        bytes: Arc<[u8]>,
        options: PluginOptions,
    ) -> Result<Arc<dyn Plugin>, WasmError> {
        let compiled = self.compiled(bytes, &options).await?;
        let engine = &self.backend(compiled.allocator).engine;
        if crate::proxy::is_proxy(engine, &compiled.component) {
            return Ok(Arc::new(self.proxy_plugin(compiled, options)?));
        }
        Ok(Arc::new(self.contract_plugin(compiled, options)?))
    }

    /// Compile for the engine the plugin's instances will come from (see [`WasmRuntime::load_bytes`]).
    async fn compiled(
        &self,
        bytes: Arc<[u8]>,
        options: &PluginOptions,
    ) -> Result<Compiled, WasmError> {
        if options.fuel.is_some() && !self.inner.options.fuel {
            return Err(WasmError::FuelOff {
                plugin: options.name.clone(),
            });
        }
        let started = Instant::now();
        let slot_mb = self.inner.options.pool.memory_per_slot_mb;
        let mut choice = match &self.inner.pooled {
            None => (
                Allocator::OnDemand,
                "the pooling allocator is off".to_string(),
            ),
            Some(_) if options.memory_mb > slot_mb => (
                Allocator::OnDemand,
                format!(
                    "its memory cap of {} MiB exceeds a pool slot of {slot_mb} MiB (plugins.pool.memory_per_slot_mb)",
                    options.memory_mb
                ),
            ),
            Some(_) => (Allocator::Pooling, String::new()),
        };
        let loaded = match choice.0 {
            Allocator::Pooling => match self.compile(Allocator::Pooling, bytes.clone()).await? {
                Ok(c) => Ok(c),
                Err(CacheError::DoesNotFit(why)) => {
                    choice = (
                        Allocator::OnDemand,
                        format!("its component does not fit a pool slot: {why}"),
                    );
                    self.compile(Allocator::OnDemand, bytes).await?
                }
                Err(e) => Err(e),
            },
            Allocator::OnDemand => self.compile(Allocator::OnDemand, bytes).await?,
        };
        let Loaded {
            component,
            source,
            code,
        } = loaded.map_err(|e| WasmError::Compile(e.to_string()))?;
        let (allocator, reason) = choice;
        Ok(Compiled {
            component,
            source,
            code,
            allocator,
            reason,
            started,
        })
    }

    /// A plugd-contract plugin from a compiled component.
    fn contract_plugin(
        &self,
        compiled: Compiled,
        options: PluginOptions,
    ) -> Result<WasmPlugin, WasmError> {
        let backend = self.backend(compiled.allocator);
        let version = crate::contract::check(&backend.engine, &compiled.component)
            .map_err(WasmError::Contract)?;
        let pre = backend
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(WasmError::Link)?;
        let pre = Pre::new(version, pre).map_err(WasmError::Link)?;
        compiled.log_ready(&options.name);
        let mut plugin = WasmPlugin::new(backend.engine.clone(), pre, options, compiled.allocator);
        plugin.from_cache = compiled.source == Source::Cached;
        plugin.code = compiled.code;
        plugin.metered = self.inner.options.fuel;
        Ok(plugin)
    }

    /// A wasi:http proxy plugin from a compiled component.
    fn proxy_plugin(
        &self,
        compiled: Compiled,
        options: PluginOptions,
    ) -> Result<ProxyPlugin, WasmError> {
        let backend = self.backend(compiled.allocator);
        let pre = backend
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(WasmError::Link)?;
        let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(WasmError::Link)?;
        compiled.log_ready(&options.name);
        let mut plugin = ProxyPlugin::new(
            backend.engine.clone(),
            pre,
            options,
            compiled.allocator,
            self.inner.options.fuel,
        );
        plugin.code = compiled.code;
        Ok(plugin)
    }

    fn backend(&self, allocator: Allocator) -> &Backend {
        match (allocator, &self.inner.pooled) {
            (Allocator::Pooling, Some(b)) => b,
            _ => &self.inner.on_demand,
        }
    }

    /// Compile for one engine, off the async workers (compilation is CPU-bound).
    async fn compile(
        &self,
        allocator: Allocator,
        bytes: Arc<[u8]>,
    ) -> Result<Result<Loaded, CacheError>, WasmError> {
        let runtime = self.clone();
        tokio::task::spawn_blocking(move || {
            let backend = runtime.backend(allocator);
            backend.cache.load(&backend.engine, &bytes)
        })
        .await
        .map_err(WasmError::Task)
    }
}

/// A component compiled for one engine, and how it got there.
struct Compiled {
    component: Component,
    source: Source,
    /// Its image, when mapped from the cache file (released while the plugin is idle).
    code: Option<MappedCode>,
    allocator: Allocator,
    /// Why the instances are allocated on demand (empty when pooled).
    reason: String,
    started: Instant,
}

impl Compiled {
    fn log_ready(&self, plugin: &str) {
        let took_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let cached = self.source == Source::Cached;
        match self.allocator {
            Allocator::Pooling => tracing::info!(
                plugin,
                allocator = self.allocator.as_str(),
                cached,
                took_ms,
                "component ready"
            ),
            Allocator::OnDemand => tracing::info!(
                plugin,
                allocator = self.allocator.as_str(),
                reason = %self.reason,
                cached,
                took_ms,
                "component ready"
            ),
        }
    }
}

#[async_trait]
impl Loader for WasmRuntime {
    /// The pooling allocator's use: `plugd_wasm_pool_slots` (configured; 0 when off) and what is
    /// taken now — component instances (one per live pooled plugin instance), core instances,
    /// memories and tables.
    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let slots = if self.inner.pooled.is_some() {
            self.inner.options.pool.slots
        } else {
            0
        };
        let metrics = self
            .pooled_engine()
            .and_then(|e| e.pooling_allocator_metrics());
        let taken =
            |f: fn(&wasmtime::PoolingAllocatorMetrics) -> u64| metrics.as_ref().map_or(0, f);
        let families: [(&str, &str, u64); 5] = [
            (
                "plugd_wasm_pool_slots",
                "Component instance slots of the pooling allocator (0: pool off).",
                u64::from(slots),
            ),
            (
                "plugd_wasm_pool_component_instances",
                "Pool slots taken by live component instances.",
                taken(|m| m.component_instances()),
            ),
            (
                "plugd_wasm_pool_core_instances",
                "Core module instances allocated from the pool.",
                taken(|m| m.core_instances()),
            ),
            (
                "plugd_wasm_pool_memories",
                "Linear memories allocated from the pool.",
                taken(|m| m.memories() as u64),
            ),
            (
                "plugd_wasm_pool_tables",
                "Tables allocated from the pool.",
                taken(|m| m.tables() as u64),
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
    }

    async fn load(&self, ctx: LoaderContext<'_>) -> Result<Arc<dyn Plugin>, BoxError> {
        let path = ctx.dir.join(&ctx.manifest.component);
        if ctx.component.is_none() && !path.exists() {
            return Err(WasmError::NotFound(path).into());
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
            fuel: overrides.and_then(|o| o.fuel).or(limits.fuel),
            max_response_bytes: usize::try_from(
                overrides
                    .and_then(|o| o.max_response_bytes)
                    .unwrap_or(limits.max_response_bytes),
            )
            .unwrap_or(usize::MAX),
            state: Some(ctx.state.clone()),
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
            files: {
                let l = match overrides {
                    Some(o) => limits.with_override(o),
                    None => limits.clone(),
                };
                FileLimits {
                    disk_bytes: l.disk_bytes,
                    disk_files: l.disk_files,
                    open_files: l.open_files,
                }
            },
        };
        // A folder installed from a package: compile the bytes the package check hashed, not
        // the file again (it may have changed since; security review L7).
        let bytes = match ctx.component {
            Some(bytes) => bytes,
            None => Arc::from(
                tokio::fs::read(&path)
                    .await
                    .map_err(|source| WasmError::Read { path, source })?,
            ),
        };
        Ok(self.load_component(bytes, options).await?)
    }
}

/// The default pool size: the number of tokio workers (the machine's parallelism).
fn default_instances() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
