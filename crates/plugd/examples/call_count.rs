//! A callgrind driver for the call-overhead figures: does N calls of one kind.
//!
//!   valgrind --tool=callgrind target/release/examples/call_count KIND N [DIR]
//!
//! DIR (optional) keeps the compile cache and data between runs, so that a second run under
//! valgrind does not compile the guest again.
//!
//! KIND: raw-sync | raw-async | wasm-hook | native-hook | dispatch-none | dispatch-native |
//! dispatch-wasm (see benches/call_overhead.rs). scripts/bench.sh runs two N and divides the
//! difference of the instruction counts by the difference of N: one call, without the setup.
//! Expects the bench guests built (`scripts/build-examples.sh benches/plugins`).

// Shares the bench's setup; it does not need the guest builder.
#[allow(dead_code)]
#[path = "../benches/support/calls.rs"]
mod calls;

use plugd::{Action, HookType, Plugin};

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let n: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: call_count KIND N");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    match kind.as_str() {
        "raw-sync" => {
            let (mut store, floor) = calls::floor_sync();
            for _ in 0..n {
                assert!(floor.call_check(&mut store).expect("check"));
            }
        }
        "raw-async" => {
            let (mut store, floor) = rt.block_on(calls::floor_async());
            for _ in 0..n {
                assert!(rt.block_on(floor.call_check(&mut store)).expect("check"));
            }
        }
        "wasm-hook" | "native-hook" => {
            let wasm =
                (kind == "wasm-hook").then(|| rt.block_on(calls::wasm_hook(&dir.join("cache"))));
            let native = calls::NativeHook { hook: true };
            let plugin: &dyn Plugin = match &wasm {
                Some(w) => w,
                None => &native,
            };
            let mut ex = calls::hook_request();
            for _ in 0..n {
                let action = rt
                    .block_on(plugin.on_hook(HookType::PreRequest, &mut ex))
                    .expect("hook");
                assert!(matches!(action, Action::Continue));
            }
        }
        "dispatch-none" | "dispatch-native" | "dispatch-wasm" => {
            let host = rt.block_on(calls::host(
                kind == "dispatch-native",
                kind == "dispatch-wasm",
                &dir.join("data"),
            ));
            rt.block_on(async {
                for _ in 0..n {
                    let r = host.dispatcher().handle(calls::request()).await;
                    assert_eq!(r.status, 200);
                }
            });
            rt.block_on(host.shutdown());
        }
        other => panic!("unknown kind {other:?}"),
    }
    println!("{kind}: {n} calls");
}
