//! Events per second through NATS JetStream between two instances: one bus publishes N events
//! (`instance` delivery, then `fleet` delivery), the other's subscriber handles them.
//!
//! ```text
//! cargo run --release -p plugd-nats --example throughput -- [events] [payload bytes]
//! ```
//!
//! `PLUGD_TEST_NATS` names the server (default `nats://127.0.0.1:4222`). The example uses a
//! stream and subject prefix of its own and deletes the stream at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use plugd_core::{Deliver, Delivery, Event, EventBus, QUEUE_BYTES};
use plugd_nats::{NatsOptions, NatsTransport};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let size: usize = args.next().map_or(Ok(256), |a| a.parse())?;
    let id: u32 = rand::random();
    let options = NatsOptions {
        url: std::env::var("PLUGD_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        stream: format!("PLUGD_BENCH_{id:08x}"),
        subject_prefix: format!("plugdbench.{id:08x}"),
        max_pending: n as usize + 1,
        ..NatsOptions::default()
    };
    let connect = |instance: &str| {
        let options = NatsOptions {
            instance: instance.into(),
            ..options.clone()
        };
        async move { NatsTransport::connect(&options).await.map(Arc::new) }
    };
    let publishing = connect("bench-a").await?;
    let receiving = connect("bench-b").await?;
    let a = Arc::new(EventBus::with_transport(publishing.clone()));
    let b = Arc::new(EventBus::with_transport(receiving.clone()));
    a.start_transport().await?;
    b.start_transport().await?;
    println!("{n} events of {size} bytes, from instance a to a subscriber on instance b");
    for (round, delivery) in [Delivery::Instance, Delivery::Fleet]
        .into_iter()
        .enumerate()
    {
        let handled = Arc::new(AtomicU64::new(0));
        let h = handled.clone();
        let deliver: Deliver = Arc::new(move |_e: Event| {
            h.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { Ok(()) })
        });
        let topic = format!("bench{round}.e");
        b.subscribe_with(
            "bench",
            &format!("bench{round}.*"),
            delivery,
            QUEUE_BYTES,
            deliver,
        );
        let payload = bytes::Bytes::from(vec![b'x'; size]);
        let started = Instant::now();
        for i in 0..n {
            a.publish(Event {
                topic: topic.clone(),
                payload: payload.clone(),
                source: "bench".into(),
                at: SystemTime::now(),
            });
            if i % 512 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let queued = started.elapsed();
        if !publishing.flush(Duration::from_secs(120)).await {
            return Err("events still unpublished after 120 s".into());
        }
        let published = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(120);
        while handled.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delivered = started.elapsed();
        let got = handled.load(Ordering::Relaxed);
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "delivery {delivery:<8}  publish() {:>9.0}/s   in JetStream {:>7.0}/s   handled on b {:>7.0}/s ({got}/{n} in {delivered:.2?})",
            rate(queued),
            rate(published),
            rate(delivered),
        );
        b.unsubscribe_all("bench");
    }
    let _ = publishing.jetstream().delete_stream(&options.stream).await;
    Ok(())
}
