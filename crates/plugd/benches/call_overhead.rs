//! Plugin call overhead (BENCHMARKS.md "Call overhead"): one hook call that inspects a request
//! header and answers "continue", from the floor up.
//!
//! - `raw_wasmtime_sync` / `raw_wasmtime_async`: a typed call of the bare `floor` component
//!   (benches/plugins/floor: `check()` asks the host for the header through one import), no
//!   plugd; the async variant uses plugd's engine settings (fiber call, epoch deadline) and pays
//!   a `block_on` like the plugd calls below (`harness_block_on` is that cost alone).
//! - `plugd_wasm_hook`: `WasmPlugin::on_hook` of the `bench-hook` guest: an instance from the
//!   pool, the exchange as a resource, the deadline, the guest's `header` call, the reply.
//! - `plugd_native_hook`: the same hook as a native plugin.
//! - `dispatch/*`: a whole request through `Dispatcher::handle` (a native route) with no hook,
//!   the native hook, the wasm hook: the differences are what a hook adds on the request path.
//!
//! The Extism peer lives in benches/peers/extism-call (a workspace of its own: extism pulls
//! another wasmtime); scripts/bench.sh runs both, plus callgrind instruction counts
//! (examples/call_count.rs).
//!
//! cargo bench -p plugd --bench call_overhead   (builds benches/plugins first)

#[path = "support/calls.rs"]
mod calls;

use criterion::{Criterion, criterion_group, criterion_main};
use plugd::{Action, HookType, Plugin};

fn bench(c: &mut Criterion) {
    calls::build_guests();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("call_overhead");

    group.bench_function("harness_block_on", |b| b.iter(|| rt.block_on(async {})));
    let (mut store, floor) = calls::floor_sync();
    group.bench_function("raw_wasmtime_sync", |b| {
        b.iter(|| assert!(floor.call_check(&mut store).expect("check")))
    });
    let (mut store, floor) = rt.block_on(calls::floor_async());
    group.bench_function("raw_wasmtime_async", |b| {
        b.iter(|| assert!(rt.block_on(floor.call_check(&mut store)).expect("check")))
    });

    let plugin = rt.block_on(calls::wasm_hook(&dir.path().join("cache")));
    let mut ex = calls::hook_request();
    group.bench_function("plugd_wasm_hook", |b| {
        b.iter(|| {
            let action = rt
                .block_on(plugin.on_hook(HookType::PreRequest, &mut ex))
                .expect("hook");
            assert!(matches!(action, Action::Continue));
        })
    });
    let native = calls::NativeHook { hook: true };
    group.bench_function("plugd_native_hook", |b| {
        b.iter(|| {
            let action = rt
                .block_on(native.on_hook(HookType::PreRequest, &mut ex))
                .expect("hook");
            assert!(matches!(action, Action::Continue));
        })
    });

    for (name, native_hook, wasm_hook) in [
        ("dispatch/no_hook", false, false),
        ("dispatch/native_hook", true, false),
        ("dispatch/wasm_hook", false, true),
    ] {
        let data = dir.path().join(name.replace('/', "-"));
        let host = rt.block_on(calls::host(native_hook, wasm_hook, &data));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let r = host.dispatcher().handle(calls::request()).await;
                assert_eq!(r.status, 200);
            })
        });
        rt.block_on(host.shutdown());
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
