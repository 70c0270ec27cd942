//! Event bus throughput with wasm subscribers (the native ones are in plugd-core's `events`
//! bench): the host publishes 512 events on `orders.created` to 1 or 10 copies of the
//! `bench-sub` guest (benches/plugins/sub, subscribed to `orders.*`) and waits until every
//! subscriber has taken every event (each subscriber: its own queue, task and instance).
//!
//! cargo bench -p plugd --bench event_bus   (builds benches/plugins first)

#[allow(dead_code)]
#[path = "support/calls.rs"]
mod calls;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use plugd::Host;
use plugd::manifest::{Format, HostConfig};

const EVENTS: usize = 512;

/// A host with `n` copies of bench-sub (each its own plugin directory and name).
fn host(rt: &tokio::runtime::Runtime, n: usize, dir: &std::path::Path) -> Host {
    let src = calls::root().join("benches/plugins/sub");
    let manifest = std::fs::read_to_string(src.join("plugin.yaml")).expect("manifest");
    let mut yaml = format!(
        "data_dir: '{}'\nplugins:\n  plugins:\n",
        dir.join("data").display()
    );
    for i in 0..n {
        let name = format!("sub{i}");
        let d = dir.join(&name);
        std::fs::create_dir_all(&d).expect("plugin dir");
        std::fs::copy(src.join("plugin.wasm"), d.join("plugin.wasm")).expect("copy component");
        std::fs::write(
            d.join("plugin.yaml"),
            manifest.replacen("name: bench-sub", &format!("name: {name}"), 1),
        )
        .expect("write manifest");
        yaml.push_str(&format!(
            "    - name: {name}\n      path: '{}'\n",
            d.display()
        ));
    }
    let config = HostConfig::from_str(&yaml, Format::Yaml, None).expect("config");
    let host = plugd::host_from_config(config).expect("host");
    rt.block_on(host.start()).expect("start");
    host
}

/// Events taken by every subscriber so far (delivered, dropped or failed).
fn taken(host: &Host) -> (u64, u64) {
    host.subscriptions().iter().fold((0, 0), |(t, d), s| {
        (
            t + s.delivered + s.dropped + s.failed,
            d + s.dropped + s.failed,
        )
    })
}

fn bench(c: &mut Criterion) {
    calls::build_guests();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("event_bus");
    for n in [1usize, 10] {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host(&rt, n, dir.path());
        group.throughput(Throughput::Elements((EVENTS * n) as u64));
        group.bench_with_input(BenchmarkId::new("wasm_subscribers", n), &n, |b, &n| {
            let publisher = host.events();
            b.to_async(&rt).iter(|| {
                let publisher = publisher.clone();
                let host = host.clone();
                async move {
                    let target = taken(&host).0 + (EVENTS * n) as u64;
                    for i in 0..EVENTS {
                        publisher
                            .publish("orders.created", &b"{\"id\":1}"[..])
                            .expect("publish");
                        if i % 256 == 255 {
                            tokio::task::yield_now().await;
                        }
                    }
                    while taken(&host).0 < target
                        || host.subscriptions().iter().any(|s| s.queued > 0)
                    {
                        tokio::task::yield_now().await;
                    }
                }
            });
        });
        let (_, lost) = taken(&host);
        assert_eq!(lost, 0, "events dropped or failed");
        rt.block_on(host.shutdown());
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
