//! The wasm runtime against components made here from WIT with `wit-component` (no guest
//! toolchain needed): the contract check, the compile cache, a guest that traps in `init`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use plugd_core::{InitContext, MemoryKv, Plugin, PluginError, PluginStore, Registrations};
use plugd_wasm::{PluginOptions, RuntimeOptions, WasmRuntime};
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{ManglingAndAbi, Resolve};

fn contract_wit() -> String {
    wit_file("plugin.wit")
}

/// A file of the repository's wit/ (`0.1.0/plugin.wit`: the frozen 0.1.0 contract).
fn wit_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../wit")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A component implementing `world` of `wit` whose every function traps (`unreachable`).
fn component(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let pkg = resolve.push_str("plugin.wit", wit).expect("wit parses");
    let world = resolve.select_world(&[pkg], Some(world)).expect("world");
    let mut module = dummy_module(&resolve, world, ManglingAndAbi::Standard32);
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8, false)
        .expect("embed");
    ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .expect("module")
        .encode()
        .expect("encode")
}

fn options(name: &str) -> PluginOptions {
    PluginOptions {
        name: name.into(),
        granted: BTreeSet::new(),
        config: Default::default(),
        store: PluginStore::new(name, std::sync::Arc::new(MemoryKv::default())),
        memory_mb: 16,
        timeout: Duration::from_secs(2),
        hook_timeouts: Default::default(),
        instances: 1,
        fuel: None,
        max_response_bytes: 1024 * 1024,
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
    }
}

fn runtime(dir: &Path) -> WasmRuntime {
    WasmRuntime::new(RuntimeOptions::new(dir.join("cache"))).expect("runtime")
}

/// Load a component; an error as its message (what the operator reads).
async fn load(dir: &Path, bytes: &[u8]) -> Result<plugd_wasm::WasmPlugin, String> {
    let path = dir.join("plugin.wasm");
    std::fs::write(&path, bytes).expect("write component");
    runtime(dir)
        .load_file(path, options("probe"))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_full_contract_links_and_is_cached_on_the_second_load() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = component(&contract_wit(), "plugin");
    let first = load(dir.path(), &bytes).await.expect("first load");
    assert!(!first.from_cache());
    let second = load(dir.path(), &bytes).await.expect("second load");
    assert!(
        second.from_cache(),
        "the second load deserializes the cached compilation"
    );
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("cache"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "only the host may write the cache");
    }
}

/// Imports added to the contract are additive: a component built against the contract before
/// `log.set-log-level` existed still links.
#[tokio::test]
async fn a_component_built_before_set_log_level_still_links() {
    let dir = tempfile::tempdir().unwrap();
    let current = contract_wit();
    let start = current
        .find("    /// Keep only the plugin's lines at `level` or above")
        .expect("set-log-level is documented");
    let end = current[start..]
        .find("set-log-level: func(level: log-level);\n")
        .map(|i| start + i + "set-log-level: func(level: log-level);\n".len())
        .expect("set-log-level is in the contract");
    let older = format!("{}{}", &current[..start], &current[end..]);
    assert!(!older.contains("set-log-level"));
    load(dir.path(), &component(&older, "plugin"))
        .await
        .expect("a component without set-log-level links");
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = component(&contract_wit(), "plugin");
    load(dir.path(), &bytes).await.expect("first load");
    for entry in std::fs::read_dir(dir.path().join("cache")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not a compiled component").unwrap();
    }
    let again = load(dir.path(), &bytes).await.expect("recompiled");
    assert!(!again.from_cache());
}

#[tokio::test]
async fn a_missing_method_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let wit = contract_wit().replace(
        "    on-tick: func(timer: string) -> result<_, string>;\n",
        "",
    );
    let err = load(dir.path(), &component(&wit, "plugin"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "plugin does not implement required interface: missing method on-tick"
    );
}

#[tokio::test]
async fn an_unknown_contract_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wit = contract_wit().replace("package plugd:plugin@0.2.0;", "package plugd:plugin@0.3.0;");
    let err = load(dir.path(), &component(&wit, "plugin"))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("plugin was built against contract plugd:plugin@0.3.0, but this plugd supports plugd:plugin@0.2.0 and plugd:plugin@0.1.0"),
        "{err}"
    );
    assert_eq!(
        plugd_wasm::SUPPORTED_CONTRACTS,
        ["plugd:plugin@0.2.0", "plugd:plugin@0.1.0"]
    );
}

/// Every supported version loads: a component of the frozen 0.1.0 contract links against the
/// shim and is called through it (its `init` traps here: the call reached the guest).
#[tokio::test]
async fn a_component_of_contract_0_1_0_links_through_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let old = wit_file("0.1.0/plugin.wit");
    assert!(old.contains("package plugd:plugin@0.1.0;"));
    let plugin = load(dir.path(), &component(&old, "plugin"))
        .await
        .expect("a 0.1.0 component loads");
    let store = PluginStore::new("probe", std::sync::Arc::new(MemoryKv::default()));
    let config = Default::default();
    let granted = BTreeSet::new();
    let mut regs = Registrations::default();
    let mut ctx = InitContext::new("probe", &config, &granted, &store, &mut regs);
    let err = plugin.init(&mut ctx).await.unwrap_err();
    assert!(matches!(err, PluginError::Trap(_)), "{err:?}");
    // A 0.1.0 component missing a method is named the same way.
    let wit = old.replace(
        "    on-tick: func(timer: string) -> result<_, string>;\n",
        "",
    );
    let err = load(dir.path(), &component(&wit, "plugin"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "plugin does not implement required interface: missing method on-tick"
    );
}

#[tokio::test]
async fn not_a_plugin_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wit =
        "package other:thing@1.0.0;\ninterface api { run: func(); }\nworld w { export api; }\n";
    let err = load(dir.path(), &component(wit, "w")).await.unwrap_err();
    assert!(
        err.starts_with(
            "plugin does not implement required interface: missing export plugd:plugin/guest@0.2.0"
        ),
        "{err}"
    );
    let err = load(dir.path(), b"\0asm garbage").await.unwrap_err();
    assert!(err.starts_with("invalid component"), "{err}");
}

#[tokio::test]
async fn a_guest_that_traps_in_init_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = load(dir.path(), &component(&contract_wit(), "plugin"))
        .await
        .expect("load");
    let store = PluginStore::new("probe", std::sync::Arc::new(MemoryKv::default()));
    let config = Default::default();
    let granted = BTreeSet::new();
    let mut regs = Registrations::default();
    let mut ctx = InitContext::new("probe", &config, &granted, &store, &mut regs);
    let err = plugin.init(&mut ctx).await.unwrap_err();
    assert!(matches!(err, PluginError::Trap(_)), "{err:?}");
    assert!(err.to_string().contains("init"), "{err}");
}

fn runtime_with(dir: &Path, pool: plugd_wasm::PoolOptions, fuel: bool) -> WasmRuntime {
    let mut options = RuntimeOptions::new(dir.join("cache"));
    options.pool = pool;
    options.fuel = fuel;
    WasmRuntime::new(options).expect("runtime")
}

fn small_pool() -> plugd_wasm::PoolOptions {
    plugd_wasm::PoolOptions {
        slots: 4,
        memory_per_slot_mb: 16,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_plugin_whose_cap_fits_a_slot_is_pooled_and_a_bigger_one_runs_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, component(&contract_wit(), "plugin")).unwrap();
    let runtime = runtime_with(dir.path(), small_pool(), false);
    assert!(runtime.pooled_engine().is_some());

    let pooled = runtime
        .load_file(path.clone(), options("probe"))
        .await
        .expect("load");
    assert_eq!(pooled.allocator(), plugd_wasm::Allocator::Pooling);
    assert!(!pooled.from_cache());

    let mut big = options("probe");
    big.memory_mb = 32;
    let on_demand = runtime.load_file(path, big).await.expect("load");
    assert_eq!(on_demand.allocator(), plugd_wasm::Allocator::OnDemand);
    assert!(
        on_demand.from_cache(),
        "both engines compile identical code: the pooled engine's compilation is reused"
    );
    assert_eq!(plugd_core::Plugin::allocator(&on_demand), Some("on-demand"));
}

#[tokio::test]
async fn a_component_that_does_not_fit_a_slot_runs_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, component(&contract_wit(), "plugin")).unwrap();
    // The contract's component instantiates several core modules (the dummy module and its
    // shims): a pool that allows one per component cannot hold it.
    let pool = plugd_wasm::PoolOptions {
        core_instances_per_component: 1,
        ..small_pool()
    };
    let runtime = runtime_with(dir.path(), pool, false);
    let plugin = runtime
        .load_file(path, options("probe"))
        .await
        .expect("load");
    assert_eq!(plugin.allocator(), plugd_wasm::Allocator::OnDemand);
}

#[tokio::test]
async fn without_slots_there_is_no_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, component(&contract_wit(), "plugin")).unwrap();
    let pool = plugd_wasm::PoolOptions {
        slots: 0,
        ..small_pool()
    };
    let runtime = runtime_with(dir.path(), pool, false);
    assert!(runtime.pooled_engine().is_none());
    let plugin = runtime
        .load_file(path, options("probe"))
        .await
        .expect("load");
    assert_eq!(plugin.allocator(), plugd_wasm::Allocator::OnDemand);
}

#[tokio::test]
async fn fuel_needs_a_metering_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, component(&contract_wit(), "plugin")).unwrap();
    let mut fueled = options("probe");
    fueled.fuel = Some(1000);
    let err = runtime_with(dir.path(), small_pool(), false)
        .load_file(path.clone(), fueled.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, plugd_wasm::WasmError::FuelOff { .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(
            "limits.fuel is set for plugin 'probe' but this runtime does not meter fuel"
        ),
        "{err}"
    );
    runtime_with(dir.path(), small_pool(), true)
        .load_file(path, fueled)
        .await
        .expect("a metering runtime loads it");
}

#[tokio::test]
async fn a_full_pool_is_a_clear_error_not_a_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, component(&contract_wit(), "plugin")).unwrap();
    let pool = plugd_wasm::PoolOptions {
        slots: 1,
        ..small_pool()
    };
    let runtime = runtime_with(dir.path(), pool, false);
    let plugin = runtime
        .load_file(path, options("probe"))
        .await
        .expect("load");
    assert_eq!(plugin.allocator(), plugd_wasm::Allocator::Pooling);
    // Something else holds the only slot.
    let engine = runtime.pooled_engine().unwrap().clone();
    let empty = wasmtime::component::Component::new(&engine, "(component)").unwrap();
    let mut holder = wasmtime::Store::new(&engine, ());
    let _held = wasmtime::component::Linker::<()>::new(&engine)
        .instantiate(&mut holder, &empty)
        .unwrap();

    let store = PluginStore::new("probe", std::sync::Arc::new(MemoryKv::default()));
    let config = Default::default();
    let granted = BTreeSet::new();
    let mut regs = Registrations::default();
    let mut ctx = InitContext::new("probe", &config, &granted, &store, &mut regs);
    let err = plugin.init(&mut ctx).await.unwrap_err();
    assert!(matches!(err, PluginError::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string().starts_with(
            "instance pool exhausted: plugin 'probe' could not get a wasm instance for instantiation: maximum concurrent limit of 1 for component instances reached"
        ),
        "{err}"
    );
}

/// Whether a file under `dir`'s compile cache is mapped into this process.
fn cache_file_is_mapped(dir: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.contains(&*dir.join("cache").to_string_lossy())
}

/// Lines of this process's perf map (`/tmp/perf-<pid>.map`), 0 when there is none.
fn perf_map_lines() -> usize {
    std::fs::read_to_string(format!("/tmp/perf-{}.map", std::process::id()))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// Security review L6: compiled code is deserialized without checks, so a cache others can
/// write is not used: the component is compiled from its bytes (and the cache made private
/// again when it can be).
#[cfg(unix)]
#[tokio::test]
async fn a_cache_others_can_write_is_not_deserialized() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let bytes = component(&contract_wit(), "plugin");
    assert!(!load(dir.path(), &bytes).await.expect("load").from_cache());
    assert!(load(dir.path(), &bytes).await.expect("load").from_cache());
    let cache = dir.path().join("cache");
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a cache entry");
    assert_eq!(
        std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The directory open to everyone: compiled afresh; the store made it private again.
    chmod(&cache, 0o777);
    assert!(!load(dir.path(), &bytes).await.expect("load").from_cache());
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(load(dir.path(), &bytes).await.expect("load").from_cache());

    // The entry writable by others: compiled afresh, and replaced by a private one.
    chmod(&entry, 0o666);
    assert!(!load(dir.path(), &bytes).await.expect("load").from_cache());
    assert_eq!(
        std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(load(dir.path(), &bytes).await.expect("load").from_cache());
}

#[tokio::test]
async fn the_perfmap_profiler_names_guest_code_compiled_or_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, component(&contract_wit(), "plugin")).unwrap();
    let with_perfmap = || {
        let mut options = RuntimeOptions::new(dir.path().join("cache"));
        options.profiler = plugd_wasm::Profiler::PerfMap;
        WasmRuntime::new(options).expect("runtime")
    };
    let before = perf_map_lines();
    let compiled = with_perfmap()
        .load_file(path.clone(), options("probe"))
        .await
        .expect("load");
    assert!(!compiled.from_cache());
    let after_compile = perf_map_lines();
    assert!(after_compile > before, "{before} -> {after_compile} lines");
    let cached = with_perfmap()
        .load_file(path, options("probe"))
        .await
        .expect("load");
    assert!(cached.from_cache());
    let after_cache = perf_map_lines();
    assert!(
        after_cache > after_compile,
        "code deserialized from the cache is described too ({after_compile} -> {after_cache} lines)"
    );
    // perf reads the map only for code in anonymous memory: with a profiler the cached code is
    // read, not mapped from its file (whose names perf would look for in the file instead).
    assert!(!cache_file_is_mapped(dir.path()), "a cache file is mapped");
    drop(cached);
}

#[tokio::test]
async fn without_a_profiler_cached_code_is_mapped_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, component(&contract_wit(), "plugin")).unwrap();
    let first = runtime(dir.path())
        .load_file(path.clone(), options("probe"))
        .await;
    assert!(!first.expect("load").from_cache());
    let cached = runtime(dir.path())
        .load_file(path, options("probe"))
        .await
        .expect("load");
    assert!(cached.from_cache());
    assert!(
        cache_file_is_mapped(dir.path()),
        "the cached component is mapped, not copied"
    );
    drop(cached);
}
