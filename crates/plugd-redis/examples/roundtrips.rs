//! Cache set+get round trips per second through `PluginCache`, RedisCache against MemoryCache.
//!
//! `cargo run --release -p plugd-redis --example roundtrips [-- SECONDS]`, with Redis at
//! `PLUGD_TEST_REDIS` (default `127.0.0.1:6379`). Each row runs for SECONDS (default 2) with 1
//! and with 32 concurrent tasks, each a loop of `set` then `get` of its own key (64-byte values).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plugd_core::{CacheBackend, MemoryCache, PluginCache};
use plugd_redis::{AclMode, RedisCache, RedisOptions};

async fn measure(backend: Arc<dyn CacheBackend>, tasks: usize, run_for: Duration) -> f64 {
    let cache = PluginCache::new("bench", backend);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (cache, done) = (cache.clone(), done.clone());
        set.spawn(async move {
            let key = format!("key-{t}");
            let value = [7u8; 64];
            while start.elapsed() < run_for {
                cache.set(&key, &value, None).await.expect("set");
                let got = cache.get(&key).await.expect("get");
                assert_eq!(got.as_deref(), Some(&value[..]));
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while set.join_next().await.is_some() {}
    let per_second = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    cache.clear().await.expect("clear");
    per_second
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2);
    let run_for = Duration::from_secs(seconds);
    let server = std::env::var("PLUGD_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let prefix = format!("bench_{}", std::process::id());
    let redis = |acl| RedisOptions {
        url: format!("redis://{}", server.trim_start_matches("redis://")),
        prefix: prefix.clone(),
        acl,
        ..RedisOptions::default()
    };
    let backends: [(&str, Arc<dyn CacheBackend>); 3] = [
        ("memory", Arc::new(MemoryCache::default())),
        (
            "redis (acl users)",
            Arc::new(RedisCache::connect(&redis(AclMode::On)).await?),
        ),
        (
            "redis (shared, acl off)",
            Arc::new(RedisCache::connect(&redis(AclMode::Off)).await?),
        ),
    ];
    println!("| backend | 1 task | 32 tasks |");
    println!("| --- | ---: | ---: |");
    for (name, backend) in backends {
        let one = measure(backend.clone(), 1, run_for).await;
        let many = measure(backend, 32, run_for).await;
        println!("| {name} | {one:.0}/s | {many:.0}/s |");
    }
    Ok(())
}
