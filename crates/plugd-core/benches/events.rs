//! Event bus throughput: publish N events to 1 and to 10 native subscribers and wait until every
//! subscriber has handled every event.
//!
//! cargo bench -p plugd-core --bench events

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use plugd_core::{Deliver, Event, EventBus, Publisher};

const EVENTS: usize = 512;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("event_bus");
    for subscribers in [1usize, 10] {
        group.throughput(Throughput::Elements((EVENTS * subscribers) as u64));
        group.bench_with_input(
            BenchmarkId::new("native_subscribers", subscribers),
            &subscribers,
            |b, &n| {
                let bus = Arc::new(EventBus::default());
                let handled = Arc::new(AtomicUsize::new(0));
                rt.block_on(async {
                    for i in 0..n {
                        let h = handled.clone();
                        let deliver: Deliver = Arc::new(move |_e: Event| {
                            h.fetch_add(1, Ordering::Relaxed);
                            Box::pin(async { Ok(()) })
                        });
                        bus.subscribe(&format!("s{i}"), "orders.*", deliver);
                    }
                });
                let publisher = Publisher::host(bus.clone());
                b.to_async(&rt).iter(|| {
                    let publisher = publisher.clone();
                    let handled = handled.clone();
                    async move {
                        let target = handled.load(Ordering::Relaxed) + EVENTS * n;
                        for i in 0..EVENTS {
                            publisher.publish("orders.created", "{}").expect("publish");
                            if i % 256 == 255 {
                                tokio::task::yield_now().await;
                            }
                        }
                        while handled.load(Ordering::Relaxed) < target {
                            tokio::task::yield_now().await;
                        }
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
