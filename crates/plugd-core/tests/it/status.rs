//! The status records through the SQLite backend (`plugd-sqlite`, a dev-dependency): the tables
//! of `host.db`, written in batches, shaped as the contract's dashboard expects, and the
//! dashboard queries (docs/design.md#state) answer from them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{Exchange, HookType, Host, InitContext, Plugin, PluginError};
use plugd_sqlite::{DASHBOARD_QUERIES, StatusDb};

use crate::{Journal, Recorder, config, eventually, manifest};

/// Asks for the database without the grant (denied, counted and audited), then does nothing.
struct Nosy;

#[async_trait::async_trait]
impl Plugin for Nosy {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        assert!(ctx.database().is_err());
        Ok(())
    }
}

fn query(store: &StatusDb, name: &str, plugin: &str) -> Vec<BTreeMap<String, String>> {
    let sql = DASHBOARD_QUERIES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no query {name}"))
        .1;
    let named: &[(&str, &str)] = if sql.contains(":plugin") {
        &[(":plugin", plugin)]
    } else {
        &[]
    };
    store.query(sql, named).unwrap()
}

async fn get(host: &Host, path: &str) -> u16 {
    host.dispatcher()
        .handle(Exchange::new(Method::GET, path))
        .await
        .status
        .as_u16()
}

fn host(
    dir: &std::path::Path,
    status: &str,
) -> (Host, Arc<std::sync::atomic::AtomicBool>, Arc<StatusDb>) {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut auth = Recorder::new("auth", &j);
    auth.hooks = vec![(HookType::PreRequest, 300)];
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    let fail = app.fail_route.clone();
    let sqlite = plugd_sqlite::Backends::open(dir).unwrap();
    let host = Host::builder()
        .kv(sqlite.kv.clone())
        .status_sink(sqlite.status.clone())
        .config(config(
            dir,
            &format!("status: {status}\nplugins:\n  plugins:\n    - name: nosy\n      permissions: {{ database: false }}\n"),
        ))
        .native(manifest("auth", ""), auth)
        .native(manifest("app", ""), app)
        .native(manifest("nosy", ""), Nosy)
        .build()
        .unwrap();
    (host, fail, sqlite.status)
}

#[tokio::test]
async fn batches_fill_the_status_tables_and_the_dashboard_queries_answer() {
    let dir = tempfile::tempdir().unwrap();
    // A long interval: only the explicit writes below (and the last one at shutdown) run.
    let (host, fail, store) = host(dir.path(), "{ interval: 1h }");
    host.start().await.unwrap();
    for _ in 0..3 {
        assert_eq!(get(&host, "/plugins/app/x").await, 200);
    }
    fail.store(true, Ordering::Relaxed);
    for _ in 0..2 {
        assert_eq!(get(&host, "/plugins/app/x").await, 500);
    }

    // The contract's GetPluginMetrics, as a value.
    let metrics = host.plugin_metrics("app").unwrap();
    assert_eq!(metrics.routes.execution_count, 5);
    assert_eq!(metrics.routes.error_count, 2);
    assert_eq!(metrics.error_count, 2);
    assert!(metrics.load_success);
    assert_eq!(
        host.plugin_metrics("auth").unwrap().hooks[&HookType::PreRequest].execution_count,
        5
    );
    assert!(host.plugin_metrics("nobody").is_none());

    // Nothing is written per request: the tables are empty until a batch.
    assert!(
        store
            .query("SELECT * FROM plugins", &[])
            .unwrap()
            .is_empty()
    );
    let batch = host.write_status().await.unwrap();
    assert_eq!(batch.plugins, 3);
    assert_eq!(batch.audit_entries, 1);
    let store = &*store;

    let rows = store
        .query("SELECT * FROM plugins WHERE name = 'app'", &[])
        .unwrap();
    assert_eq!(rows[0]["status"], "running");
    assert_eq!(rows[0]["version"], "1.0.0");
    assert_eq!(rows[0]["kind"], "native");
    assert_eq!(rows[0]["error_count"], "2");
    assert!(rows[0]["last_error"].contains("route refused"), "{rows:?}");
    assert_ne!(rows[0]["loaded_at"], "NULL");

    let hooks = query(store, "one plugin's hooks", "auth");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["hook_type"], "pre_request");
    assert_eq!(hooks[0]["execution_count"], "5");
    let routes = query(store, "one plugin's hooks", "app");
    assert_eq!(routes[0]["hook_type"], "route");
    assert_eq!(routes[0]["execution_count"], "5");
    assert_eq!(routes[0]["error_count"], "2");

    let perf = query(store, "hook performance", "");
    assert_eq!(perf.len(), 2, "{perf:?}");
    assert!(
        perf.iter()
            .all(|r| r["avg_duration_ms"].parse::<f64>().unwrap() >= 0.0)
    );

    let trends = query(store, "error trends", "");
    let by_plugin: BTreeMap<&str, &str> = trends
        .iter()
        .map(|r| (r["plugin_name"].as_str(), r["error_count"].as_str()))
        .collect();
    // nosy's denied database access counts as an error too.
    assert_eq!(by_plugin, BTreeMap::from([("app", "2"), ("nosy", "1")]));

    // Running plugins are not in "plugin status"; a disabled one is.
    assert!(query(store, "plugin status", "").is_empty());
    host.disable_plugin("nosy").await.unwrap();

    // A second batch adds only what happened since the first.
    assert_eq!(get(&host, "/plugins/app/x").await, 500);
    let batch = host.write_status().await.unwrap();
    assert_eq!(batch.audit_entries, 0);
    let errors = query(store, "one plugin's recent errors", "app");
    let values: Vec<&str> = errors.iter().map(|r| r["metric_value"].as_str()).collect();
    assert_eq!(values.len(), 2, "{errors:?}");
    assert!(values.contains(&"1") && values.contains(&"2"), "{values:?}");
    let status = query(store, "plugin status", "");
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0]["name"], "nosy");
    assert_eq!(status[0]["status"], "disabled");

    let audit = store
        .query("SELECT plugin_name, capability FROM plugin_audit", &[])
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["capability"], "database");

    // Only reads are allowed through StatusDb::query.
    assert!(store.query("DELETE FROM plugins", &[]).is_err());

    host.shutdown().await;
    // The last batch at shutdown, kept on disk.
    let reopened = StatusDb::open(dir.path()).unwrap();
    let rows = reopened
        .query("SELECT name, status FROM plugins ORDER BY name", &[])
        .unwrap();
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["name"].as_str(), r["status"].as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("app", "stopped"),
            ("auth", "stopped"),
            ("nosy", "disabled")
        ]
    );
}

#[tokio::test]
async fn the_background_writer_runs_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _, store) = host(dir.path(), "{ interval: 50ms }");
    host.start().await.unwrap();
    assert_eq!(get(&host, "/plugins/app/x").await, 200);
    eventually("a batch records the request", || {
        store
            .query(
                "SELECT execution_count FROM plugin_hooks WHERE plugin_name = 'app'",
                &[],
            )
            .unwrap()
            .first()
            .is_some_and(|r| r["execution_count"] == "1")
    })
    .await;
    let requests = store
        .query(
            "SELECT SUM(metric_value) AS n FROM plugin_metrics WHERE metric_name = 'requests'",
            &[],
        )
        .unwrap();
    assert_eq!(requests[0]["n"], "1");
    host.shutdown().await;
}

#[tokio::test]
async fn status_tables_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _, _) = host(dir.path(), "{ enabled: false, interval: 10ms }");
    host.start().await.unwrap();
    assert_eq!(get(&host, "/plugins/app/x").await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    host.shutdown().await;
    let rows = StatusDb::open(dir.path())
        .unwrap()
        .query("SELECT * FROM plugins", &[])
        .unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}
