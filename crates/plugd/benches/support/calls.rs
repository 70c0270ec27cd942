//! Shared by the call-overhead bench (benches/call_overhead.rs) and its callgrind driver
//! (examples/call_count.rs): the floor component's host, the native hook, and the hosts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plugd::manifest::{Format, HostConfig, Manifest};
use plugd::wasm::{PluginOptions, RuntimeOptions, WasmPlugin, WasmRuntime};
use plugd::{
    Action, Exchange, HookType, Host, InitContext, MemoryKv, Plugin, PluginError, PluginStore,
    Registrations, Response, RouteOptions, Stage,
};
use wasmtime::component::{Component, HasSelf, Linker};

pub mod floor_sync {
    wasmtime::component::bindgen!({ path: "../../benches/plugins/floor/wit", world: "floor" });
}
pub mod floor_async {
    wasmtime::component::bindgen!({
        path: "../../benches/plugins/floor/wit",
        world: "floor",
        exports: { default: async },
    });
}

/// The floor's one import: the header the hook inspects.
pub struct FloorHost;
impl floor_sync::FloorImports for FloorHost {
    fn header(&mut self, name: String) -> Option<String> {
        (name == "x-api-key").then(|| "secret-key".to_string())
    }
}
impl floor_async::FloorImports for FloorHost {
    fn header(&mut self, name: String) -> Option<String> {
        (name == "x-api-key").then(|| "secret-key".to_string())
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds benches/plugins (the bench guests) through the repository's guest script.
pub fn build_guests() {
    let status = std::process::Command::new("bash")
        .arg(root().join("scripts/build-examples.sh"))
        .arg("benches/plugins")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("build-examples");
    assert!(
        status.success(),
        "scripts/build-examples.sh benches/plugins failed"
    );
}

fn floor_path() -> PathBuf {
    root().join("target/guest/wasm32-wasip2/release/plugd_bench_floor.wasm")
}

/// The floor: a synchronous typed call, on an engine without the component-model-async
/// bookkeeping (plugd's engines switch it off too: `concurrency_support(false)`).
pub fn floor_sync() -> (wasmtime::Store<FloorHost>, floor_sync::Floor) {
    let mut config = wasmtime::Config::new();
    config.concurrency_support(false);
    let engine = wasmtime::Engine::new(&config).expect("engine");
    let component = Component::from_file(&engine, floor_path()).expect("floor component");
    let mut linker = Linker::new(&engine);
    floor_sync::Floor::add_to_linker::<_, HasSelf<_>>(&mut linker, |h: &mut FloorHost| h)
        .expect("link");
    linker
        .define_unknown_imports_as_traps(&component)
        .expect("wasi stubs");
    let mut store = wasmtime::Store::new(&engine, FloorHost);
    let floor = floor_sync::Floor::instantiate(&mut store, &component, &linker).expect("instance");
    (store, floor)
}

/// The floor with plugd's engine settings: an async (fiber) call with an epoch deadline, the
/// pooling allocator (fiber stacks are reused), no component-model-async bookkeeping.
pub async fn floor_async() -> (wasmtime::Store<FloorHost>, floor_async::Floor) {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(2)
        .total_core_instances(16)
        .total_memories(4)
        .total_tables(16)
        .total_stacks(2);
    let mut config = wasmtime::Config::new();
    config
        .epoch_interruption(true)
        .concurrency_support(false)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine = wasmtime::Engine::new(&config).expect("engine");
    let component = Component::from_file(&engine, floor_path()).expect("floor component");
    let mut linker = Linker::new(&engine);
    floor_async::Floor::add_to_linker::<_, HasSelf<_>>(&mut linker, |h: &mut FloorHost| h)
        .expect("link");
    linker
        .define_unknown_imports_as_traps(&component)
        .expect("wasi stubs");
    let mut store = wasmtime::Store::new(&engine, FloorHost);
    store.set_epoch_deadline(u64::MAX / 2);
    let floor = floor_async::Floor::instantiate_async(&mut store, &component, &linker)
        .await
        .expect("instance");
    (store, floor)
}

/// The `bench-hook` guest loaded and initialized as plugd loads it (one pooled instance).
pub async fn wasm_hook(cache_dir: &Path) -> WasmPlugin {
    let runtime = WasmRuntime::new(RuntimeOptions::new(cache_dir)).expect("runtime");
    let store = PluginStore::new("bench-hook", std::sync::Arc::new(MemoryKv::default()));
    let options = PluginOptions {
        name: "bench-hook".into(),
        granted: BTreeSet::new(),
        config: Default::default(),
        store: store.clone(),
        memory_mb: 64,
        timeout: Duration::from_secs(5),
        hook_timeouts: Default::default(),
        instances: 1,
        fuel: None,
        max_response_bytes: 1 << 20,
        state: None,
        publisher: None,
        subscribes: Vec::new(),
        services: None,
        exports: Vec::new(),
        metrics: None,
        cache: None,
        audit: None,
        capabilities: None,
        files: Default::default(),
    };
    let plugin = runtime
        .load_file(root().join("benches/plugins/hook/plugin.wasm"), options)
        .await
        .expect("load bench-hook");
    let config = Default::default();
    let granted = BTreeSet::new();
    let mut regs = Registrations::default();
    let mut ctx = InitContext::new("bench-hook", &config, &granted, &store, &mut regs);
    plugin.init(&mut ctx).await.expect("init bench-hook");
    plugin
}

/// bench-hook's logic as a native plugin, with a native route to dispatch to.
pub struct NativeHook {
    pub hook: bool,
}

#[async_trait::async_trait]
impl Plugin for NativeHook {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        if self.hook {
            ctx.register_hook(HookType::PreRequest, 100)
                .map_err(|e| PluginError::Failed(e.to_string()))?;
        }
        ctx.register_route("GET", "/ping", RouteOptions::default())
            .map_err(|e| PluginError::Failed(e.to_string()))
    }
    async fn on_hook(&self, _hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        std::hint::black_box(ex.header("x-api-key").is_some_and(|v| !v.is_empty()));
        Ok(Action::Continue)
    }
    async fn handle_request(
        &self,
        _route: &str,
        _ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        Ok(Response::new(http::StatusCode::OK))
    }
}

/// `GET /plugins/native/ping` with the header the hooks read.
pub fn request() -> Exchange {
    let mut ex = Exchange::new(http::Method::GET, "/plugins/native/ping");
    ex.headers
        .insert("x-api-key", http::HeaderValue::from_static("secret-key"));
    ex
}

/// The same request at the pre_request stage, for calling a hook directly.
pub fn hook_request() -> Exchange {
    let mut ex = request();
    ex.stage = Stage::Hook(HookType::PreRequest);
    ex
}

/// A started host with the native route, plus the native hook or the wasm `bench-hook` plugin.
pub async fn host(native_hook: bool, wasm_hook: bool, data: &Path) -> Host {
    let mut yaml = format!("data_dir: '{}'\nplugins:\n  plugins:\n", data.display());
    if wasm_hook {
        yaml.push_str(&format!(
            "    - name: bench-hook\n      path: '{}'\n      permissions: [intercept]\n",
            root().join("benches/plugins/hook").display()
        ));
    } else {
        yaml.push_str("    []\n");
    }
    let config = HostConfig::from_str(&yaml, Format::Yaml, None).expect("config");
    let manifest = Manifest::from_str(
        "name: native\nversion: 1.0.0\ndescription: bench\nauthor: plugd\npermissions: { router: true }\n",
        Format::Yaml,
        None,
    )
    .expect("manifest");
    let runtime = WasmRuntime::new(RuntimeOptions::from_config(&config)).expect("runtime");
    let host = Host::builder()
        .config(config)
        .loader(runtime)
        .native(manifest, NativeHook { hook: native_hook })
        .build()
        .expect("host");
    host.start().await.expect("start");
    host
}
