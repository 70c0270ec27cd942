//! Load cost and per-call overhead of one built plugin folder, through the harness:
//!
//!     cargo run -p plugd-test --example lang_bench -- DIR [CALLS]
//!
//! Prints the component size, the load time (compile + instantiate + init + start) with an empty
//! compile cache and with a warm one, and the median and mean time of a route call through the
//! dispatcher (GET /plugins/<name>/hello) and of a direct pre_request hook call. Used by
//! scripts/bench-languages.sh for BENCHMARKS.md ("Plugin languages").

use std::time::{Duration, Instant};

use plugd_test::{HookType, TestHost, TestPlugin};

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let median = samples[samples.len() / 2].as_secs_f64() * 1e6;
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e6;
    (median, mean)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: lang_bench DIR [CALLS]"));
    let calls: usize = args.next().map_or(2000, |n| n.parse().expect("CALLS"));
    let manifest = plugd_manifest::Manifest::from_path(&dir).expect("manifest");
    let name = manifest.name.clone();
    let size = std::fs::metadata(manifest.component_path())
        .expect("plugin.wasm")
        .len();
    let cache = tempfile::tempdir().unwrap();

    let started = Instant::now();
    let t = TestHost::builder()
        .plugin(TestPlugin::new(&dir))
        .cache_dir(cache.path())
        .start()
        .await
        .unwrap();
    let cold = started.elapsed();
    t.shutdown().await;
    let started = Instant::now();
    let t = TestHost::builder()
        .plugin(TestPlugin::new(&dir))
        .cache_dir(cache.path())
        .start()
        .await
        .unwrap();
    let warm = started.elapsed();

    let target = format!("/plugins/{name}/hello?name=Ada");
    t.get(&target).await.assert_status(200);
    let mut route = Vec::with_capacity(calls);
    for _ in 0..calls {
        let s = Instant::now();
        let r = t.get(&target).await;
        route.push(s.elapsed());
        assert_eq!(r.status, 200);
    }
    let mut hook = Vec::with_capacity(calls);
    for _ in 0..calls {
        let s = Instant::now();
        t.hook(&name, HookType::PreRequest, "/x").await.unwrap();
        hook.push(s.elapsed());
    }
    let (rm, ra) = stats(route);
    let (hm, ha) = stats(hook);
    println!(
        "{name}: size {:.1} KiB, load cold {:.0} ms, warm {:.1} ms, route call median {rm:.1} µs (mean {ra:.1}), hook call median {hm:.1} µs (mean {ha:.1}), {calls} calls each",
        size as f64 / 1024.0,
        cold.as_secs_f64() * 1000.0,
        warm.as_secs_f64() * 1000.0,
    );
    t.shutdown().await;
}
