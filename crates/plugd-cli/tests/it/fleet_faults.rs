//! The fleet's engines going away under a serving host: PostgreSQL, Redis and NATS are each
//! reached through a proxy the test cuts (every open connection closed, new ones refused) and
//! restores, while the real servers keep running for the other tests. A plugin that needs the
//! engine gets a clear `failed` error naming it; a plugin that does not keeps answering; nothing
//! acknowledged is lost; and the host recovers by itself when the link is back.

use std::time::{Duration, Instant};

use plugd::manifest::{Format, HostConfig};
use plugd::server::AdminToken;
use plugd_core::testing::CutProxy;

use crate::support::{TOKEN, guests_built, test_plugin};

struct Served {
    url: String,
    client: reqwest::Client,
    host: plugd::Host,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn get(&self, path: &str) -> (u16, String) {
        match self.client.get(format!("{}{path}", self.url)).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// Poll `path` until `check` holds (at most 30 s); the last answer.
    async fn until(&self, path: &str, check: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(path).await;
            if check(status, &body) {
                return (status, body);
            }
            assert!(
                Instant::now() < deadline,
                "GET {path}: still {status} {body} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.host.shutdown().await;
    }
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// A host on the three engines, each through its proxy, with `fleetwise` (storage, cache,
/// events) and `trapper` (needs none of them).
async fn serve(pg: &CutProxy, redis: &CutProxy, nats: &CutProxy, id: &str) -> Served {
    guests_built();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
data_dir: "{data}"
backends:
  storage: postgres
  cache: redis
  events: nats
  postgres: {{ url: "postgres://postgres@{pg}/test", schema: "{id}", pool_size: 4, connect_timeout: 1s, timeout: 2s }}
  redis: {{ url: "redis://{redis}", prefix: "{id}", connect_timeout: 1s, timeout: 1s }}
  nats: {{ url: "nats://{nats}", stream: "{id}", subject_prefix: "{id}.events", connect_timeout: 2s, timeout: 2s }}
fleet: {{ instance: faults }}
plugins:
  plugins:
    - name: fleetwise
      path: "{fleetwise}"
      permissions: {{ router: true, cache: true }}
      # /seen answers from the wasm instance's memory: one instance, so every event is in it.
      limits: {{ instances: 1 }}
    - name: trapper
      path: "{trapper}"
      permissions: {{ router: true }}
"#,
        data = dir.path().join("data").display(),
        pg = pg.addr(),
        redis = redis.addr(),
        nats = nats.addr(),
        fleetwise = test_plugin("fleetwise").display(),
        trapper = test_plugin("trapper").display(),
    );
    serve_yaml(dir, &yaml).await
}

/// A host from `yaml` (its `data_dir` in `dir`), with the engines `backends:` names, serving on
/// a free port.
async fn serve_yaml(dir: tempfile::TempDir, yaml: &str) -> Served {
    let path = dir.path().join("plugd.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = HostConfig::from_str(yaml, Format::Yaml, Some(&path)).expect("config");
    let (host, _connected) = plugd::connect_host(config).await.expect("connected host");
    host.start().await.expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(plugd::server::serve_with_admin(
        host.clone(),
        AdminToken::new(TOKEN).unwrap(),
        listener,
        None,
        async {
            let _ = rx.await;
        },
    ));
    Served {
        url,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        host,
        stop: Some(tx),
        task: Some(task),
        _dir: dir,
    }
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("f{}x{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_redis_and_nats_going_away_fail_only_their_calls_and_come_back_by_themselves() {
    let pg = CutProxy::start(&env_or("PLUGD_TEST_POSTGRES", "127.0.0.1:5432"))
        .await
        .unwrap();
    let redis = CutProxy::start(&env_or("PLUGD_TEST_REDIS", "127.0.0.1:6379"))
        .await
        .unwrap();
    let nats = CutProxy::start(&env_or("PLUGD_TEST_NATS", "127.0.0.1:4222"))
        .await
        .unwrap();
    let s = serve(&pg, &redis, &nats, &unique()).await;
    assert_eq!(
        s.get("/plugins/fleetwise/kv?key=kept&value=before").await.0,
        200
    );
    assert_eq!(s.get("/plugins/fleetwise/cache?key=c&value=1").await.0, 200);

    // PostgreSQL away: storage fails, clearly; the rest serves.
    pg.cut();
    let (status, body) = s.get("/plugins/fleetwise/kv?key=kept").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_lowercase().contains("postgres"),
        "the error names PostgreSQL: {body}"
    );
    assert_eq!(s.get("/plugins/trapper/ok").await, (200, "ok".to_string()));
    assert_eq!(
        s.get("/plugins/fleetwise/cache?key=c").await,
        (200, "1".to_string())
    );
    let (health, _) = s.get("/healthz").await;
    assert_eq!(health, 200, "the host still answers its health");
    pg.restore();
    // Back by itself, with the write acknowledged before the cut.
    s.until("/plugins/fleetwise/kv?key=kept", |st, b| {
        st == 200 && b == "before"
    })
    .await;
    assert_eq!(
        s.get("/plugins/fleetwise/kv?key=after&value=1").await.0,
        200
    );

    // Redis away: the cache fails, clearly; storage and the other plugin serve.
    redis.cut();
    let (status, body) = s.get("/plugins/fleetwise/cache?key=c").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_lowercase().contains("redis"),
        "the error names Redis: {body}"
    );
    assert_eq!(s.get("/plugins/trapper/ok").await.0, 200);
    assert_eq!(
        s.get("/plugins/fleetwise/kv?key=kept").await,
        (200, "before".to_string())
    );
    redis.restore();
    s.until("/plugins/fleetwise/cache?key=c&value=2", |st, _| st == 200)
        .await;
    assert_eq!(
        s.get("/plugins/fleetwise/cache?key=c").await,
        (200, "2".to_string())
    );

    // NATS away: publishing is accepted (buffered), the rest serves; the event arrives once the
    // link is back.
    nats.cut();
    let (status, body) = s
        .get("/plugins/fleetwise/publish?topic=fleet.note&payload=during-the-cut")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.get("/plugins/trapper/ok").await.0, 200);
    assert_eq!(s.get("/plugins/fleetwise/kv?key=kept").await.0, 200);
    nats.restore();
    s.until("/plugins/fleetwise/seen", |st, b| {
        st == 200 && b.contains("fleet.note:during-the-cut")
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugins_database_on_postgres_runs_its_migrations_and_a_sqlite_only_plugin_is_refused() {
    guests_built();
    let dir = tempfile::tempdir().unwrap();
    let id = unique();
    // A database of its own: the plugins' schemas are per database (docs/fleet.md).
    let pg = env_or("PLUGD_TEST_POSTGRES", "127.0.0.1:5432");
    psql(&pg, &format!("CREATE DATABASE {id}"));
    let yaml = format!(
        r#"
data_dir: "{data}"
backends:
  database: postgres
  postgres: {{ url: "postgres://postgres@{pg}/{id}", pool_size: 2 }}
plugins:
  plugins:
    - name: ledger
      path: "{ledger}"
      permissions: {{ router: true, database: true }}
    - name: capable
      path: "{capable}"
      permissions: {{ router: true, database: true }}
    - name: trapper
      path: "{trapper}"
      permissions: {{ router: true }}
"#,
        data = dir.path().join("data").display(),
        ledger = test_plugin("ledger").display(),
        capable = test_plugin("capable").display(),
        trapper = test_plugin("trapper").display(),
    );
    let s = serve_yaml(dir, &yaml).await;
    // ledger declares [sqlite, postgres] and ships migrations/postgres/: its transactions run in
    // its own schema, as its own role.
    for i in 1..=3 {
        let r = s
            .client
            .post(format!("{}/plugins/ledger/tx?id={i}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let (status, body) = s.get("/plugins/ledger/totals").await;
    assert_eq!(status, 200, "{body}");
    let totals: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(totals["entries"], 3);
    assert_eq!(totals["receipts"], 3);
    assert_eq!(totals["sum"], 1_000_000);
    assert_eq!(totals["moved"], 3);
    // capable declares no dialect (SQLite only): refused at load, with the fix; the others run.
    let info = s.host.plugin_info("capable").expect("capable is listed");
    assert_eq!(info.status.as_str(), "error");
    let why = info.last_error.map(|e| e.message).unwrap_or_default();
    assert!(
        why.contains(
            "supports the SQL dialects [sqlite]; this host's database backend is postgres"
        ),
        "{why}"
    );
    assert_eq!(s.get("/plugins/trapper/ok").await.0, 200);
    s.stop().await;
    psql(&pg, &format!("DROP DATABASE {id} WITH (FORCE)"));
}

/// Run one statement with psql (PostgreSQL's client, installed with the server by
/// scripts/services.sh) as `postgres` on database `test`.
fn psql(server: &str, sql: &str) {
    let (host, port) = server.rsplit_once(':').unwrap_or((server, "5432"));
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ])
        .output()
        .expect("psql (scripts/services.sh installs it)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
