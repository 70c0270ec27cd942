//! Crash drills, small: a real `plugd serve` with the `ledger` test plugin is killed with SIGKILL
//! while writers store keys and run database transactions and the status writer flushes every
//! 50 ms, then restarted on the same data dir, three times. After each kill, with the server
//! down: every write that was answered 200 is there, every transaction is all-or-nothing,
//! `PRAGMA integrity_check` is ok on every database, and the server starts again; a last kill
//! lands while it starts. The long run is `scripts/crash-drill.sh` (RELIABILITY.md, "Crash
//! drills").

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use crate::support::{guests_built, test_plugin};

const ROUNDS: usize = 3;
const WRITERS: usize = 4;
/// The sum of the two balances (tests/plugins/ledger/migrations/0001_ledger.sql).
const TOTAL: i64 = 1_000_000;

/// What the writers were told: answered 200 means acknowledged.
#[derive(Default)]
struct Acknowledged {
    keys: BTreeMap<String, String>,
    transactions: BTreeSet<i64>,
    attempted: BTreeSet<i64>,
}

/// A started `plugd serve` and the address it listens on.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill is SIGKILL: the crash itself, or the clean-up of a failed test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `plugd serve --config config`, its log to `stderr`.
fn spawn(config: &Path, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_plugd"))
        .args(["serve", "--config"])
        .arg(config)
        .env("PLUGD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn plugd serve")
}

/// Start plugd on `config`; the address comes from its `plugd listening` line, and it is ready
/// once /healthz and the plugin's route answer 200. Panics past the bound.
async fn start(config: &Path, client: &reqwest::Client) -> (Server, Duration) {
    let started = Instant::now();
    let mut child = spawn(config, Stdio::piped());
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let bound = Duration::from_secs(120);
    let mut lines = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(bound.saturating_sub(started.elapsed()))
            .unwrap_or_else(|_| panic!("plugd did not start:\n{}", lines.join("\n")));
        if line.contains("plugd listening") {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .unwrap_or_else(|| panic!("no addr in {line:?}"))
                .to_string();
            break addr;
        }
        lines.push(line);
    };
    // Keep draining its log, so that plugd never blocks on a full pipe.
    std::thread::spawn(move || rx.iter().for_each(drop));
    let server = Server {
        child,
        url: format!("http://{addr}"),
    };
    loop {
        let ok = |path: &str| {
            let url = format!("{}{path}", server.url);
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        };
        if ok("/healthz").await && ok("/plugins/ledger/totals").await {
            return (server, started.elapsed());
        }
        assert!(started.elapsed() < bound, "plugd did not answer /healthz");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One writer: storage keys and transactions until `stop`, numbering them from `next`.
async fn write(
    client: reqwest::Client,
    url: String,
    next: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acknowledged>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let ok = |path: String| {
            let client = client.clone();
            async move {
                client
                    .post(path)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        };
        if i % 2 == 0 {
            let (key, value) = (format!("k{i}"), format!("v{}", i * 7919));
            if ok(format!("{url}/plugins/ledger/put?k={key}&v={value}")).await {
                acked.lock().unwrap().keys.insert(key, value);
            }
        } else {
            acked.lock().unwrap().attempted.insert(i);
            if ok(format!("{url}/plugins/ledger/tx?id={i}")).await {
                acked.lock().unwrap().transactions.insert(i);
            }
        }
    }
}

/// Every SQLite database under `dir` (host.db, the plugin's kv.sqlite and db.sqlite).
fn databases(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            databases(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("db" | "sqlite")
        ) {
            out.push(path);
        }
    }
}

/// A copy of `db` and its -wal in `scratch` (not the -shm, which SQLite rebuilds), so that
/// checking it leaves the recovery of the original to plugd.
fn copy(db: &Path, scratch: &Path) -> PathBuf {
    let name = db.to_string_lossy().replace('/', "_");
    let to = scratch.join(name);
    std::fs::copy(db, &to).unwrap();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display())).unwrap();
    }
    to
}

fn check(data: &Path, acked: &Acknowledged, round: usize) {
    let scratch = tempfile::tempdir().unwrap();
    let mut found = Vec::new();
    databases(data, &mut found);
    let names: BTreeSet<String> = found
        .iter()
        .map(|p| p.strip_prefix(data).unwrap().display().to_string())
        .collect();
    for needed in [
        "host.db",
        "plugins/ledger/kv.sqlite",
        "plugins/ledger/db.sqlite",
    ] {
        assert!(
            names.contains(needed),
            "round {round}: no {needed} in {names:?}"
        );
    }
    for db in &found {
        let conn = Connection::open(copy(db, scratch.path())).unwrap();
        let result: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            result,
            "ok",
            "round {round}: integrity_check of {}",
            db.display()
        );
    }

    let kv =
        Connection::open(copy(&data.join("plugins/ledger/kv.sqlite"), scratch.path())).unwrap();
    let mut get = kv.prepare("SELECT value FROM kv WHERE key = ?1").unwrap();
    for (key, value) in &acked.keys {
        let stored: Option<Vec<u8>> = get.query_row([key], |r| r.get(0)).ok();
        assert_eq!(
            stored.as_deref(),
            Some(value.as_bytes()),
            "round {round}: the acknowledged write of {key} is lost"
        );
    }

    let db =
        Connection::open(copy(&data.join("plugins/ledger/db.sqlite"), scratch.path())).unwrap();
    let ids = |table: &str| -> BTreeSet<i64> {
        db.prepare(&format!("SELECT id FROM {table}"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let (entries, receipts) = (ids("entries"), ids("receipts"));
    let lost: Vec<_> = acked.transactions.difference(&entries).collect();
    assert!(
        lost.is_empty(),
        "round {round}: acknowledged transactions lost: {lost:?}"
    );
    assert_eq!(entries, receipts, "round {round}: a partial transaction");
    assert!(
        entries.is_subset(&acked.attempted),
        "round {round}: ids nobody sent"
    );
    let (sum, moved): (i64, i64) = db
        .query_row(
            "SELECT sum(balance), (SELECT balance FROM accounts WHERE id = 2) FROM accounts",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(sum, TOTAL, "round {round}: the balances do not sum up");
    assert_eq!(
        moved,
        entries.len() as i64,
        "round {round}: a partial transfer"
    );
}

fn jitter(max_ms: u64) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(u64::from(nanos) % max_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_the_server_restarts() {
    guests_built();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("plugd.yaml");
    std::fs::write(
        &config,
        format!(
            r#"server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0", token: crash-test }}
data_dir: "{data}"
status: {{ enabled: true, interval: 50ms }}
plugins:
  plugins:
    - name: ledger
      path: "{ledger}"
      permissions: {{ router: true, database: true }}
"#,
            data = data.display(),
            ledger = test_plugin("ledger").display(),
        ),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let next = Arc::new(AtomicI64::new(0));

    for round in 1..=ROUNDS {
        let (mut server, _) = start(&config, &client).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                tokio::spawn(write(
                    client.clone(),
                    server.url.clone(),
                    next.clone(),
                    stop.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300) + jitter(700)).await;
        server.child.kill().expect("SIGKILL plugd");
        server.child.wait().expect("plugd exits");
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        let acked = acked.lock().unwrap();
        assert!(
            !acked.keys.is_empty() && !acked.transactions.is_empty(),
            "round {round}: nothing was acknowledged before the kill"
        );
        check(&data, &acked, round);
    }

    // A kill while it starts (opening the databases, loading the plugin, the first status
    // write) leaves nothing a start cannot recover from.
    let mut starting = spawn(&config, Stdio::null());
    tokio::time::sleep(Duration::from_millis(20) + jitter(200)).await;
    starting.kill().expect("SIGKILL plugd");
    starting.wait().expect("plugd exits");
    check(&data, &acked.lock().unwrap(), ROUNDS + 1);

    // It starts once more and serves what was acknowledged before the last kill.
    let (server, _) = start(&config, &client).await;
    let (key, value) = {
        let acked = acked.lock().unwrap();
        let (k, v) = acked.keys.iter().next_back().unwrap();
        (k.clone(), v.clone())
    };
    let stored = client
        .get(format!("{}/plugins/ledger/get?k={key}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.text().await.unwrap(), value);
    drop(server);
}
