//! Exhaustion: what a hostile plugin granted only `router` (and `filesystem` for its files) can
//! make the host hold, run with a real guest component (`tests/plugins/exhauster`) beside the
//! example `hello`. Each attack is refused as designed (a cap, a quota, a rate, an answer the
//! host builds itself), never with the host's memory, disk or log, and `hello` keeps answering
//! while it runs.
//!
//! | attack | before | now |
//! |---|---|---|
//! | 2,000 `log` calls of 256 KiB | 500 MiB in the server's log | the plugin's log rate; drops counted in `/metrics` |
//! | writes to the guest's stdout/stderr | passed raw to the server's stderr | lines of the plugin's log stream, same rate |
//! | 2,048 `set-local` of 1 MiB | 1.5 GiB of host memory | the request-locals cap |
//! | 2,048 `storage.set` of 1 MiB | 2 GiB on disk | `limits.storage_bytes` |
//! | a response of 200,000 headers | the worker panicked | the plugin's error, a 500 |
//! | events of 2 MiB to a slow self-subscription | queued without bound in bytes | payload cap, queue bytes cap |
//! | a metric label of 1 MiB, 2,000 series | rendered on every scrape | label and series caps |
//! | 5,000 files held open | the process's descriptors | `limits.open_files` |
//! | writing past the disk quota | the host's disk | `/data` read-only, audited |
//! | 20,000 denied calls | pushed every other plugin's audit entries out, 20,000 log lines | its own share of the audit log; its audit lines under its log rate |
//! | 256 cache entries of 1 MiB | (capped at 64 MiB before) | `limits.cache_bytes`, audited |
//! | `SELECT zeroblob(999999999)` × 4 | gigabytes allocated before the result cap | refused by SQLite before it allocates |

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

use crate::support::{TestServer, example, guests_built, repo_root, test_plugin};

fn config(exhauster_lines: &str) -> String {
    format!(
        "data_dir: \"{{data}}\"\nplugins:\n  limits:\n    timeout: 20s\n  plugins:\n    - name: hello\n      path: \"{hello}\"\n      permissions: {{ router: true }}\n    - name: exhauster\n      path: \"{exhauster}\"\n      permissions: {{ router: true, filesystem: true, cache: true, database: true }}\n{exhauster_lines}",
        hello = example("hello").display(),
        exhauster = test_plugin("exhauster").display(),
    )
}

/// Greet `hello` over and over while `attack` runs; every greeting must answer 200. Returns the
/// attack's answer and how many greetings finished before it did.
async fn while_hello_answers(
    server: &TestServer,
    attack: &str,
) -> (reqwest::StatusCode, String, usize) {
    let attack_url = format!("{}{attack}", server.url);
    let client = server.client.clone();
    let attack = tokio::spawn(async move {
        let r = client.get(attack_url).send().await.expect("attack request");
        let status = r.status();
        (status, r.text().await.unwrap_or_default())
    });
    let mut greetings = JoinSet::new();
    let mut during = 0;
    while !attack.is_finished() {
        let client = server.client.clone();
        let url = format!("{}/plugins/hello/greet?name=Ada", server.url);
        greetings.spawn(async move { client.get(url).send().await.map(|r| r.status()) });
        if greetings.len() >= 4 {
            let status = greetings.join_next().await.unwrap().unwrap().unwrap();
            assert_eq!(status, 200, "hello failed during the attack");
            if !attack.is_finished() {
                during += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Some(r) = greetings.join_next().await {
        assert_eq!(r.unwrap().unwrap(), 200, "hello failed during the attack");
    }
    let (status, body) = attack.await.unwrap();
    (status, body, during)
}

async fn json(server: &TestServer, path: &str) -> Value {
    let r = server.get(path).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

fn audited(server: &TestServer, capability: &str) -> usize {
    server
        .host
        .audit_log(Some("exhauster"))
        .iter()
        .filter(|e| e.capability == capability)
        .count()
}

/// This process's resident memory, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_locals_are_capped_not_held_by_the_host() {
    let server = TestServer::start(&config("")).await;
    let before = rss();
    let (status, body, _) =
        while_hello_answers(&server, "/plugins/exhauster/locals?n=2048&kib=1024").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kept"], 0, "no 1 MiB local fits the 256 KiB cap: {v}");
    // The host did not hold 2 GiB of locals (1.5 GiB of RSS before the cap).
    let grown = rss().saturating_sub(before);
    assert!(grown < 256 << 20, "RSS grew by {grown} bytes");
    // Small ones are kept up to the count cap.
    let v = json(&server, "/plugins/exhauster/locals?n=1000&kib=1").await;
    assert_eq!(v["kept"], plugd::MAX_LOCALS as u64, "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_has_a_quota_that_refuses_and_audits() {
    let server = TestServer::start(&config(
        "      limits: { storage_bytes: 16MiB, storage_keys: 1000 }\n",
    ))
    .await;
    let (status, body, _) =
        while_hello_answers(&server, "/plugins/exhauster/store?n=2048&kib=1024").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["stored"], 15,
        "16 MiB holds 15 values of 1 MiB and their keys: {v}"
    );
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("storage quota exceeded: plugin 'exhauster'"),
        "{error}"
    );
    assert!(error.contains("limits.storage_bytes"), "{error}");
    assert_eq!(audited(&server, "limits.storage_bytes"), 1);
    let on_disk = dir_bytes(&server.data_dir());
    assert!(
        on_disk < 40 << 20,
        "{on_disk} bytes on disk (2 GiB before the quota)"
    );
    // hello's own storage still works (its counter).
    assert_eq!(
        server.get("/plugins/hello/greet?name=Ada").await.status(),
        200
    );
    // What it holds is in /metrics.
    let scrape = server.get("/metrics").await.text().await.unwrap();
    let held: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("plugd_plugin_storage_bytes{plugin=\"exhauster\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no storage gauge for exhauster:\n{scrape}"));
    assert!(
        (15.0 * 1048576.0..16.0 * 1048576.0).contains(&held),
        "{held}"
    );
    // The key quota holds too.
    let v = json(&server, "/plugins/exhauster/store?n=2000&kib=0").await;
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("storage quota exceeded"),
        "{v}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_of_200000_headers_is_the_plugins_error_not_a_panic() {
    let server = TestServer::start(&config("")).await;
    let (status, _, _) = while_hello_answers(&server, "/plugins/exhauster/bomb?n=200000").await;
    assert_eq!(status, 500);
    let state = server.host.plugin_state("exhauster").unwrap();
    let last = state.last_error().unwrap().message;
    assert!(last.contains("headers"), "{last}");
    assert!(last.len() <= plugd::MAX_ERROR_BYTES + 64, "{}", last.len());
    // The same connection pool keeps working, and the plugin too.
    assert_eq!(server.get("/plugins/exhauster/ok").await.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_are_capped_in_payload_and_queued_bytes() {
    let server = TestServer::start(&config("      limits: { event_queue_bytes: 4MiB }\n")).await;
    let v = json(&server, "/plugins/exhauster/publish?n=4&kib=2048").await;
    assert_eq!(v["published"], 0, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("over the 1048576-byte limit"),
        "{v}"
    );
    assert_eq!(audited(&server, "events.max_payload_bytes"), 4);
    let (status, body, _) =
        while_hello_answers(&server, "/plugins/exhauster/publish?n=200&kib=512").await;
    assert_eq!(status, 200, "{body}");
    let subscription = server
        .host
        .subscriptions()
        .into_iter()
        .find(|s| s.plugin == "exhauster")
        .unwrap();
    assert!(subscription.queued_bytes <= 4 << 20, "{subscription:?}");
    assert!(subscription.dropped >= 150, "{subscription:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metric_labels_and_series_are_capped() {
    let server = TestServer::start(&config("")).await;
    let v = json(&server, "/plugins/exhauster/label?kib=1024").await;
    assert!(
        v["label_error"].as_str().unwrap().contains("at most 256"),
        "{v}"
    );
    assert_eq!(v["series"], plugd::MAX_SERIES_PER_PLUGIN as u64, "{v}");
    assert!(
        v["series_error"].as_str().unwrap().contains("at most 1000"),
        "{v}"
    );
    assert_eq!(audited(&server, "metrics.max_label_value_bytes"), 1);
    let scrape = server.get("/metrics").await.text().await.unwrap();
    assert!(scrape.len() < 1 << 20, "a scrape of {} bytes", scrape.len());
    assert!(!scrape.contains(&"x".repeat(300)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_files_and_disk_have_quotas() {
    let server = TestServer::start(&config(
        "      limits: { open_files: 64, disk_bytes: 8MiB, disk_files: 1000 }\n",
    ))
    .await;
    // Past the handles an instance may hold, the call traps: the plugin's 500, and the instance
    // is thrown away with every handle it held.
    let (status, body, _) = while_hello_answers(&server, "/plugins/exhauster/files?n=5000").await;
    assert_eq!(status, 500, "{body}");
    let last = server
        .host
        .plugin_state("exhauster")
        .unwrap()
        .last_error()
        .unwrap()
        .message;
    assert!(last.contains("resource table has no free keys"), "{last}");
    let v = json(&server, "/plugins/exhauster/files?n=10").await;
    assert_eq!(
        v["open"], 10,
        "a fresh instance holds none of the old handles: {v}"
    );

    // The first write over the quota lands (the count runs after calls); then /data is
    // read-only, audited, and stays bounded.
    let v = json(&server, "/plugins/exhauster/disk?mib=12").await;
    assert_eq!(v["written_mib"], 12, "{v}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let v = json(&server, "/plugins/exhauster/disk?mib=4").await;
        if let Some(e) = v["error"].as_str() {
            break e.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "/data never turned read-only: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // WASI's answer to a write through a read-only preopen.
    assert!(refused.contains("Operation not permitted"), "{refused}");
    assert_eq!(audited(&server, "limits.disk_bytes"), 1);
    let held = dir_bytes(&server.data_dir().join("plugins/exhauster/files"));
    assert!(held < 40 << 20, "{held} bytes under /data");
    assert_eq!(
        server.get("/plugins/hello/greet?name=Ada").await.status(),
        200
    );
    server.stop().await;
}

/// A `plugd serve` process of its own, its stdout and stderr in files: what an operator's log
/// would hold.
struct Served {
    child: Child,
    url: String,
    out: tempfile::NamedTempFile,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Served {
    async fn start() -> Served {
        guests_built();
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let yaml = config("").replace("{data}", &dir.path().join("data").display().to_string());
        let yaml = format!(
            "server:\n  listen: \"127.0.0.1:{port}\"\nadmin:\n  listen: \"127.0.0.1:{admin}\"\n{yaml}"
        );
        let path = dir.path().join("plugd.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_plugd"))
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(repo_root())
            .env("PLUGD_ADMIN_TOKEN", crate::support::TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.reopen().unwrap())
            .stderr(out.reopen().unwrap())
            .spawn()
            .unwrap();
        let served = Served {
            child,
            url: format!("http://127.0.0.1:{port}"),
            out,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", served.url)).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "plugd serve did not answer: {}",
                std::fs::read_to_string(served.out.path()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        served
    }

    fn log_bytes(&self) -> u64 {
        std::fs::metadata(self.out.path()).unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_and_stdio_cannot_flood_or_forge_the_servers_log() {
    let served = Served::start().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let get = |path: &str| client.get(format!("{}{path}", served.url)).send();
    let before = served.log_bytes();

    // 2,000 log calls of 256 KiB: 500 MiB before the rate.
    let r = get("/plugins/exhauster/log?n=2000&kib=256").await.unwrap();
    assert_eq!(r.status(), 200);
    // 64 MiB to each of stderr and stdout (raw on the server's stderr before).
    let r = get("/plugins/exhauster/stdio?mib=64").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        get("/plugins/hello/greet?name=Ada").await.unwrap().status(),
        200
    );

    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("plugd_plugin_log_dropped_lines_total{plugin=\"exhauster\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no dropped-lines counter for exhauster:\n{metrics}"));
    assert!(dropped > 1000.0, "{dropped}");

    let grown = served.log_bytes() - before;
    // The default rate: 64 KiB/s with a 5 s burst, and the seconds the requests took.
    assert!(grown < 8 << 20, "the server's log grew by {grown} bytes");
    let log = std::fs::read_to_string(served.out.path()).unwrap();
    // Every line that holds the guest's text is marked as the plugin's; none is a forged host
    // line (one call is one line: newlines are escaped).
    for line in log.lines() {
        if line.contains("FORGED") || line.contains("forged") {
            assert!(
                line.contains("exhauster"),
                "a line not marked as the plugin's: {line}"
            );
        }
        assert!(
            !line.starts_with("{\"level\":\"WARN\",\"target\":\"plugd::audit\""),
            "{line}"
        );
        assert!(!line.starts_with("INFO plugd: forged"), "{line}");
    }
    assert!(
        log.contains("FORGED"),
        "stderr lines reach the plugin's log stream"
    );
    assert!(
        log.contains("stream=stderr"),
        "{}",
        &log[log.len().saturating_sub(2000)..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denials_keep_to_the_plugins_own_share_of_the_audit_log() {
    let gossip = format!(
        "    - name: gossip\n      path: \"{}\"\n      permissions: {{ router: true }}\n",
        test_plugin("gossip").display()
    );
    let server = TestServer::start(&config(&gossip)).await;
    let r = server
        .get("/plugins/gossip/publish?topic=admin.secret")
        .await;
    assert_eq!(r.status(), 403);
    let (status, body, _) = while_hello_answers(&server, "/plugins/exhauster/deny?n=20000").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["denied"], 20_000, "{v}");
    assert_eq!(
        server.host.audit_log(Some("exhauster")).len(),
        plugd::AUDIT_CAPACITY,
        "its own share"
    );
    assert_eq!(
        server.host.audit_log(Some("gossip")).len(),
        1,
        "another plugin's entry stays"
    );
    // 20,000 audit lines were not all written to the host's log: its rate dropped most.
    let log = server.host.plugin_state("exhauster").unwrap();
    assert!(log.log().dropped() > 15_000, "{}", log.log().dropped());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_refuses_past_its_budget_and_audits() {
    let server = TestServer::start(&config("      limits: { cache_bytes: 8MiB }\n")).await;
    let (status, body, _) =
        while_hello_answers(&server, "/plugins/exhauster/cache?n=256&kib=1024").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cached"], 8, "its limits.cache_bytes: {v}");
    let error = v["error"].as_str().unwrap();
    assert_eq!(error, "cache is full: at most 8388608 bytes per plugin");
    assert_eq!(audited(&server, "cache.max_bytes"), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_cannot_make_sqlite_allocate_gigabytes() {
    let server = TestServer::start(&config("")).await;
    let before = rss();
    let (status, body, _) = while_hello_answers(&server, "/plugins/exhauster/sql").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let error = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the query ran: {v}"));
    assert!(
        error.contains("too big") || error.contains("larger than"),
        "{error}"
    );
    let grown = rss().saturating_sub(before);
    assert!(grown < 256 << 20, "RSS grew by {grown} bytes");
    server.stop().await;
}
