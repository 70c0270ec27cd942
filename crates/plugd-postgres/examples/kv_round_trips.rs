//! Key/value round trips per second, PostgreSQL against SQLite, in one process: a loop of
//! `set` then `get` on the backends themselves (no quota accounting), one caller, then 8 at
//! once. A figure for the docs, not a benchmark suite:
//!
//! ```text
//! cargo run --release -p plugd-postgres --example kv_round_trips [-- postgres://postgres@127.0.0.1/test]
//! ```
//!
//! The PostgreSQL side uses a host schema of its own (`plugd_bench_<pid>`), dropped at the end.

use std::sync::Arc;
use std::time::Instant;

use plugd_core::KvBackend;
use plugd_postgres::{Postgres, PostgresOptions};

const ROUNDS: usize = 2_000;
const CALLERS: usize = 8;

/// `ROUNDS` set+get pairs (or gets alone) by each of `callers` tasks; per second.
async fn measure(backend: Arc<dyn KvBackend>, callers: usize, writes: bool) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let backend = backend.clone();
            tokio::spawn(async move {
                let plugin = format!("bench-{c}");
                for i in 0..ROUNDS {
                    let key = format!("k{}", i % 100);
                    if writes || i < 100 {
                        backend
                            .set(&plugin, &key, i.to_le_bytes().to_vec())
                            .await
                            .expect("set");
                    }
                    backend.get(&plugin, &key).await.expect("get");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a caller");
    }
    (ROUNDS * callers) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PLUGD_TEST_POSTGRES").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut options = PostgresOptions::new(url);
    options.schema = format!("plugd_bench_{}", std::process::id());
    options.pool_size = CALLERS;
    let pg = Postgres::connect(&options).await?;
    let dir = tempfile::tempdir()?;
    let backends: [(&str, Arc<dyn KvBackend>); 2] = [
        ("postgres", Arc::new(pg.kv())),
        ("sqlite", Arc::new(plugd_sqlite::SqliteKv::new(dir.path()))),
    ];
    println!("backend   callers  set+get pairs/s  gets/s");
    for (name, backend) in backends {
        // Warm up: connections, files, statement caches.
        measure(backend.clone(), 1, true).await;
        for callers in [1, CALLERS] {
            let pairs = measure(backend.clone(), callers, true).await;
            let gets = measure(backend.clone(), callers, false).await;
            println!("{name:<9} {callers:>7}  {pairs:>15.0}  {gets:>6.0}");
        }
    }
    let admin = tokio_postgres::connect(&pg.options().url, tokio_postgres::NoTls).await;
    if let Ok((client, connection)) = admin {
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", options.schema))
            .await?;
    }
    Ok(())
}
