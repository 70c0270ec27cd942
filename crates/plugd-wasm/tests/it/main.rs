//! The wasm runtime against components made here from WIT with `wit-component` (no guest
//! toolchain needed): the contract check, the compile cache, a guest that traps in `init`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use plugd_core::{InitContext, Plugin, PluginError, Registrations, Store};
use plugd_wasm::{PluginOptions, RuntimeOptions, WasmRuntime};
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{ManglingAndAbi, Resolve};

fn contract_wit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/plugin.wit");
    std::fs::read_to_string(path).expect("wit/plugin.wit")
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
        store: Store::in_memory().expect("store").plugin(name),
        memory_mb: 16,
        timeout: Duration::from_secs(2),
        hook_timeouts: Default::default(),
        instances: 1,
        publisher: None,
        subscribes: Vec::new(),
        services: None,
        exports: Vec::new(),
        metrics: None,
        cache: None,
        audit: None,
        capabilities: None,
    }
}

fn runtime(dir: &Path) -> WasmRuntime {
    WasmRuntime::new(RuntimeOptions {
        cache_dir: dir.join("cache"),
    })
    .expect("runtime")
}

async fn load(dir: &Path, bytes: &[u8]) -> Result<plugd_wasm::WasmPlugin, String> {
    let path = dir.join("plugin.wasm");
    std::fs::write(&path, bytes).expect("write component");
    runtime(dir).load_file(path, options("probe")).await
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
    let wit = contract_wit().replace("package plugd:plugin@0.1.0;", "package plugd:plugin@0.2.0;");
    let err = load(dir.path(), &component(&wit, "plugin"))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("plugin was built against contract plugd:plugin@0.2.0, but this plugd supports plugd:plugin@0.1.0"),
        "{err}"
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
            "plugin does not implement required interface: missing export plugd:plugin/guest@0.1.0"
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
    let store = Store::in_memory().unwrap().plugin("probe");
    let config = Default::default();
    let granted = BTreeSet::new();
    let mut regs = Registrations::default();
    let mut ctx = InitContext::new("probe", &config, &granted, &store, &mut regs);
    let err = plugin.init(&mut ctx).await.unwrap_err();
    assert!(matches!(err, PluginError::Trap(_)), "{err:?}");
    assert!(err.to_string().contains("init"), "{err}");
}
