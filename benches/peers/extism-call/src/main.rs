//! A callgrind driver: loads the Extism hook plugin and calls `on_hook` N times.
//!
//!   valgrind --tool=callgrind target/release/extism-call PLUGIN.wasm N
//!
//! scripts/bench.sh runs it for two N and divides the difference of the instruction counts by
//! the difference of N: the instructions of one call, without the setup.
use extism::{Manifest, Plugin, Wasm};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: extism-call PLUGIN.wasm N");
    let n: u64 = args.next().and_then(|n| n.parse().ok()).expect("N");
    let manifest = Manifest::new([Wasm::file(path)]);
    let mut plugin = Plugin::new(&manifest, [], false).expect("plugin");
    let mut continued = 0u64;
    for _ in 0..n {
        let out: &str = plugin.call("on_hook", "secret-key").expect("call");
        continued += u64::from(out == "continue");
    }
    assert_eq!(continued, n);
    println!("{n} calls");
}
