//! Three hosts joined by NATS, each running the same native plugin whose manifest declares one
//! subscription of each delivery: the manifest's `delivery` reaches the transport through the
//! host (`PLUGD_TEST_NATS`, default `nats://127.0.0.1:4222`; `scripts/services.sh` starts it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use plugd_core::{Event, Host, Plugin, PluginError};
use plugd_manifest::{Format, HostConfig, Manifest};
use plugd_nats::{NatsOptions, NatsTransport};

/// (host, topic, payload) -> times handled.
type Seen = Arc<Mutex<BTreeMap<(String, String, String), usize>>>;

struct Worker {
    host: String,
    seen: Seen,
}

#[async_trait::async_trait]
impl Plugin for Worker {
    async fn on_event(&self, event: &Event) -> Result<(), PluginError> {
        let key = (
            self.host.clone(),
            event.topic.clone(),
            String::from_utf8_lossy(&event.payload).into_owned(),
        );
        *self.seen.lock().entry(key).or_default() += 1;
        Ok(())
    }
}

const MANIFEST: &str = "name: worker\nversion: 1.0.0\ndescription: test\nauthor: plugd\n\
    events:\n  subscribes:\n    - { topic: 'jobs.*', delivery: fleet }\n    - cache.flush\n";

#[tokio::test]
async fn the_manifest_delivery_reaches_the_transport_through_the_host() {
    let id: u32 = rand::random();
    let options = NatsOptions {
        url: std::env::var("PLUGD_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        stream: format!("PLUGD_TEST_{id:08x}"),
        subject_prefix: format!("plugdtest.{id:08x}"),
        retry_delay: Duration::from_millis(100),
        ..NatsOptions::default()
    };
    let seen: Seen = Arc::default();
    let mut hosts = Vec::new();
    let mut dirs = Vec::new();
    for name in ["h1", "h2", "h3"] {
        let transport = NatsTransport::connect(&NatsOptions {
            instance: name.into(),
            ..options.clone()
        })
        .await
        .unwrap_or_else(|e| panic!("NATS with JetStream must run (scripts/services.sh): {e}"));
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            HostConfig::from_str("plugins:\n  plugins: []\n", Format::Yaml, None).unwrap();
        config.data_dir = dir.path().to_path_buf();
        let host = Host::builder()
            .config(config)
            .events(Arc::new(transport))
            .native(
                Manifest::from_str(MANIFEST, Format::Yaml, None).unwrap(),
                Worker {
                    host: name.into(),
                    seen: seen.clone(),
                },
            )
            .build()
            .unwrap();
        host.start().await.unwrap();
        hosts.push(host);
        dirs.push(dir);
    }
    for i in 0..30 {
        hosts[i % 3]
            .events()
            .publish("jobs.run", i.to_string())
            .unwrap();
    }
    hosts[0].events().publish("cache.flush", "all").unwrap();
    let settled = |seen: &BTreeMap<(String, String, String), usize>| {
        let jobs = seen.keys().filter(|(_, t, _)| t == "jobs.run").count();
        let flushes = seen.keys().filter(|(_, t, _)| t == "cache.flush").count();
        jobs >= 30 && flushes >= 3
    };
    let wait = async {
        while !settled(&seen.lock()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("events handled within 20 s: {:?}", seen.lock()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().clone();
    let mut jobs = BTreeMap::<String, usize>::new();
    for ((_, topic, payload), n) in &seen {
        assert_eq!(*n, 1, "{topic} {payload} handled twice on one host");
        if topic == "jobs.run" {
            *jobs.entry(payload.clone()).or_default() += 1;
        }
    }
    assert_eq!(jobs.len(), 30);
    assert!(
        jobs.values().all(|n| *n == 1),
        "fleet: one host per job: {jobs:?}"
    );
    for host in ["h1", "h2", "h3"] {
        assert!(
            seen.contains_key(&(host.into(), "cache.flush".into(), "all".into())),
            "instance: every host flushes its cache"
        );
    }
    for host in &hosts {
        host.shutdown().await;
    }
    let client = async_nats::connect(options.url.as_str()).await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(&options.stream)
        .await;
}
