//! Supervision: plugins that end in `error` are restarted with backoff, up to a limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::Method;
use parking_lot::Mutex;
use plugd_core::{
    AuditLog, Exchange, Host, HostError, InitContext, Loader, LoaderContext, Permission, Plugin,
    PluginError, PluginState, Response, RouteOptions, Status,
};

use crate::{Journal, Recorder, config, eventually, manifest};

const FAST: &str =
    "  supervision: { max_restarts: 5, backoff_initial: 20ms, backoff_max: 300ms }\n";

#[tokio::test]
async fn a_plugin_whose_start_fails_twice_is_restarted_and_its_dependent_follows() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut db = Recorder::new("db", &j);
    db.route = Some("/x");
    db.start_failures.store(2, Ordering::SeqCst);
    let host = Host::builder()
        .config(config(
            dir.path(),
            &format!("plugins:\n{FAST}  plugins: []\n"),
        ))
        .native(manifest("db", ""), db)
        .native(
            manifest("app", "dependencies:\n  - name: db\n"),
            Recorder::new("app", &j),
        )
        .build()
        .unwrap();
    host.start().await.unwrap();
    // Right after start: db failed its first start, app failed with it (or they already came
    // back; the backoff is short).
    eventually("db running", || {
        host.plugin_info("db").unwrap().status == Status::Running
    })
    .await;
    eventually("app running after its dependency", || {
        host.plugin_info("app").unwrap().status == Status::Running
    })
    .await;
    let info = host.plugin_info("db").unwrap();
    let s = &info.supervision;
    assert_eq!(s.restarts, 2, "the first restart failed, the second worked");
    assert!(s.last_restart.is_some() && s.next_attempt.is_none() && !s.gave_up);
    assert_eq!(info.error_count, 2);
    assert!(
        info.last_error
            .unwrap()
            .message
            .starts_with("restart 1: plugin start failed: db: start refused"),
    );
    // stop + cleanup of what failed, then init + start again, on the same plugin object.
    let db_steps: Vec<String> = j
        .lock()
        .iter()
        .filter(|e| e.starts_with("db:"))
        .cloned()
        .collect();
    assert_eq!(
        db_steps,
        [
            "db:init",
            "db:start",
            "db:stop",
            "db:cleanup",
            "db:init",
            "db:start",
            "db:stop",
            "db:cleanup",
            "db:init",
            "db:start"
        ]
    );
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/db/x"))
        .await;
    assert_eq!(r.status, 200, "routed again after the restart");
    // Running for backoff_max (300 ms) starts supervision over.
    eventually("attempts reset", || {
        host.plugin_info("db").unwrap().supervision.attempts == 0
    })
    .await;
    assert_eq!(host.plugin_info("db").unwrap().supervision.restarts, 2);
    assert!(
        host.render_metrics()
            .contains("plugd_plugin_restarts_total{plugin=\"db\"} 2\n")
    );
    host.shutdown().await;
}

#[tokio::test]
async fn supervision_gives_up_after_max_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut bad = Recorder::new("bad", &j);
    bad.fail_start = true;
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  supervision: { max_restarts: 2, backoff_initial: 10ms, backoff_max: 40ms }\n  plugins: []\n",
        ))
        .native(manifest("bad", ""), bad)
        .build()
        .unwrap();
    host.start().await.unwrap();
    eventually("gave up", || {
        host.plugin_info("bad").unwrap().supervision.gave_up
    })
    .await;
    let info = host.plugin_info("bad").unwrap();
    assert_eq!(info.status, Status::Error);
    assert_eq!(
        (info.supervision.restarts, info.supervision.attempts),
        (2, 2)
    );
    assert!(info.supervision.next_attempt.is_none());
    assert!(
        info.last_error
            .unwrap()
            .message
            .starts_with("restart 2: plugin start failed: bad: start refused")
    );
    let summary = host.health_summary();
    assert_eq!(summary.status, "degraded");
    assert!(summary.plugins["bad"].gave_up);
    // The operator can try again by hand.
    let err = host.enable_plugin("bad").await.unwrap_err();
    assert_eq!(err.to_string(), "plugin start failed: bad: start refused");
    host.shutdown().await;
}

#[tokio::test]
async fn supervision_can_be_turned_off_per_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let bad = Recorder::new("bad", &j);
    bad.start_failures.store(1, Ordering::SeqCst);
    let other = Recorder::new("other", &j);
    other.start_failures.store(1, Ordering::SeqCst);
    let host = Host::builder()
        .config(config(
            dir.path(),
            &format!(
                "plugins:\n{FAST}  plugins:\n    - name: bad\n      supervision: {{ enabled: false }}\n"
            ),
        ))
        .native(manifest("bad", ""), bad)
        .native(manifest("other", ""), other)
        .build()
        .unwrap();
    host.start().await.unwrap();
    eventually("other restarted", || {
        host.plugin_info("other").unwrap().status == Status::Running
    })
    .await;
    let info = host.plugin_info("bad").unwrap();
    assert_eq!(info.status, Status::Error);
    assert!(!info.supervision.enabled);
    assert_eq!(info.supervision.restarts, 0);
    host.shutdown().await;
}

/// A loader for plugins from disk that fails its first `failures` loads, then gives a plugin
/// with a route `/x` that makes a denied capability call on every request (recorded in the audit
/// log and counted against the plugin, as the wasm runtime's host calls do).
struct FlakyLoader {
    failures: Arc<AtomicU32>,
}

struct Denied {
    audit: Arc<AuditLog>,
    state: Arc<PluginState>,
}

#[async_trait::async_trait]
impl Plugin for Denied {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        ctx.register_route("GET", "/x", RouteOptions::default())
            .map_err(|e| PluginError::Failed(e.to_string()))
    }
    async fn handle_request(
        &self,
        _route: &str,
        _ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        let e = HostError::permission_denied("disk", Permission::Database);
        self.audit.record("disk", "database", "database.query");
        self.state.record_error(format!("database.query: {e}"));
        Ok(Response::json(
            http::StatusCode::OK,
            &serde_json::json!({"ok": true}),
        ))
    }
}

#[async_trait::async_trait]
impl Loader for FlakyLoader {
    async fn load(&self, ctx: LoaderContext<'_>) -> Result<Arc<dyn Plugin>, plugd_core::BoxError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(format!("compile error ({left} more)").into());
        }
        Ok(Arc::new(Denied {
            audit: ctx.audit.clone(),
            state: ctx.state.clone(),
        }))
    }
}

#[tokio::test]
async fn a_plugin_that_never_loaded_is_loaded_fresh_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = dir.path().join("disk");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    std::fs::write(
        plugin_dir.join("plugin.yaml"),
        "name: disk\nversion: 1.0.0\ndescription: d\nauthor: a\npermissions: { router: true, database: true }\n",
    )
    .unwrap();
    let yaml = format!(
        "plugins:\n{FAST}  error_threshold: {{ enabled: true, max_errors: 50, time_window: 1m }}\n  plugins:\n    - name: disk\n      path: {}\n      permissions: {{ router: true }}\n",
        plugin_dir.display()
    );
    let failures = Arc::new(AtomicU32::new(2));
    let host = Host::builder()
        .config(config(dir.path(), &yaml))
        .loader(FlakyLoader {
            failures: failures.clone(),
        })
        .build()
        .unwrap();
    host.start().await.unwrap();
    eventually("disk loaded and running", || {
        host.plugin_info("disk").unwrap().status == Status::Running
    })
    .await;
    let info = host.plugin_info("disk").unwrap();
    assert_eq!(info.supervision.restarts, 2);
    assert_eq!(info.routes, ["GET /plugins/disk/x"]);
    assert!(
        info.last_error
            .unwrap()
            .message
            .contains("compile error (1 more)")
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0);

    // A denied host call counts against the plugin and its threshold.
    for _ in 0..3 {
        let r = host
            .dispatcher()
            .handle(Exchange::new(Method::GET, "/plugins/disk/x"))
            .await;
        assert_eq!(r.status, 200);
    }
    let info = host.plugin_info("disk").unwrap();
    assert_eq!(info.threshold.errors_in_window, 2 + 3);
    assert!(
        info.last_error
            .unwrap()
            .message
            .starts_with("database.query: permission denied: plugin 'disk' attempted database")
    );
    assert_eq!(host.audit_log(Some("disk")).len(), 3);
    host.shutdown().await;
}

#[tokio::test]
async fn an_operator_disabled_plugin_is_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let host = Host::builder()
        .config(config(
            dir.path(),
            &format!("plugins:\n{FAST}  plugins:\n    - name: idle\n      enabled: false\n"),
        ))
        .native(manifest("idle", ""), Recorder::new("idle", &j))
        .native(manifest("active", ""), Recorder::new("active", &j))
        .build()
        .unwrap();
    host.start().await.unwrap();
    host.disable_plugin("active").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    for name in ["idle", "active"] {
        let info = host.plugin_info(name).unwrap();
        assert_eq!(info.status, Status::Disabled, "{name}");
        assert_eq!(info.disabled_by, Some(plugd_core::DisabledBy::Operator));
        assert_eq!(info.supervision.restarts, 0, "{name}");
    }
    assert_eq!(
        *j.lock(),
        [
            "active:init",
            "active:start",
            "active:stop",
            "active:cleanup"
        ],
        "'idle' never ran; 'active' stopped once"
    );
    host.enable_plugin("idle").await.unwrap();
    assert_eq!(host.plugin_info("idle").unwrap().status, Status::Running);
    host.shutdown().await;
}
