//! What a fresh instance costs, pooled and on demand: instantiate the `hello` example from its
//! `InstancePre`, run its `init`, drop the instance (`WasmPlugin::init` + `cleanup` of a plugin
//! with one instance). This is the price of replacing an instance after a trap or a timeout;
//! requests never pay it (instances are long-lived).
//!
//! cargo bench -p plugd --bench instantiate
//! (builds the guest plugins first through scripts/build-examples.sh)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use plugd::wasm::{Allocator, PluginOptions, RuntimeOptions, WasmRuntime};
use plugd::{InitContext, MemoryKv, Plugin, PluginStore, Registrations};

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn options(memory_mb: u64) -> PluginOptions {
    PluginOptions {
        name: "hello".into(),
        granted: [plugd::Permission::Router].into(),
        config: Default::default(),
        store: PluginStore::new("hello", std::sync::Arc::new(MemoryKv::default())),
        memory_mb,
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
    }
}

fn bench(c: &mut Criterion) {
    let status = Command::new("bash")
        .arg(root().join("scripts/build-examples.sh"))
        .status()
        .expect("build-examples");
    assert!(status.success(), "scripts/build-examples.sh failed");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = WasmRuntime::new(RuntimeOptions::new(dir.path().join("cache"))).expect("runtime");
    let component = root().join("examples/plugins/hello/plugin.wasm");
    let mut group = c.benchmark_group("instantiate");
    // A cap within a slot is pooled; a cap above it (64 MiB by default) runs on demand.
    for (memory_mb, allocator) in [(64, Allocator::Pooling), (128, Allocator::OnDemand)] {
        let plugin = rt
            .block_on(runtime.load_file(component.clone(), options(memory_mb)))
            .expect("load hello");
        assert_eq!(plugin.allocator(), allocator);
        let store = PluginStore::new("hello", std::sync::Arc::new(MemoryKv::default()));
        let config = Default::default();
        let granted: BTreeSet<_> = [plugd::Permission::Router].into();
        group.bench_function(format!("{}+init+drop", allocator.as_str()), |b| {
            b.to_async(&rt).iter(|| async {
                let mut regs = Registrations::default();
                let mut ctx = InitContext::new("hello", &config, &granted, &store, &mut regs);
                plugin.init(&mut ctx).await.expect("init");
                plugin.cleanup().await.expect("cleanup");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
