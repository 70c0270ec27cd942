//! Extism 1.30 calling the hook plugin (extism-guest): the peer of plugd's wasm hook call in
//! crates/plugd/benches/call_overhead.rs. The plugin path comes from EXTISM_HOOK_WASM
//! (scripts/bench.sh sets it).
use criterion::{Criterion, criterion_group, criterion_main};
use extism::{Manifest, Plugin, Wasm};

fn bench(c: &mut Criterion) {
    let path = std::env::var("EXTISM_HOOK_WASM")
        .expect("EXTISM_HOOK_WASM=path of the extism-guest plugin (scripts/bench.sh builds it)");
    let manifest = Manifest::new([Wasm::file(path)]);
    let mut plugin = Plugin::new(&manifest, [], false).expect("plugin");
    c.bench_function("call_overhead/extism_call", |b| {
        b.iter(|| {
            let out: &str = plugin.call("on_hook", "secret-key").expect("call");
            assert_eq!(out, "continue");
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
