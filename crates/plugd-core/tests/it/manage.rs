//! Managing running plugins: health, live config, unload.

use std::sync::Arc;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{Exchange, Health, HookType, Host, Status};
use serde_json::json;

use crate::{Journal, Recorder, config, manifest};

async fn host(j: &Journal) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Recorder::new("db", j);
    db.route = Some("/x");
    db.hooks = vec![(HookType::PreRequest, 100)];
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(
            manifest(
                "db",
                "config:\n  mode:\n    type: string\n    default: normal\n",
            ),
            db,
        )
        .native(
            manifest("app", "dependencies:\n  - name: db\n"),
            Recorder::new("app", j),
        )
        .build()
        .unwrap();
    host.start().await.unwrap();
    (host, dir)
}

#[tokio::test]
async fn health_has_status_metrics_and_the_plugins_own_answer() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let (host, _dir) = host(&j).await;
    host.dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/db/x"))
        .await;
    let h = host.plugin_health("db").await.unwrap();
    assert_eq!(h.status, Status::Running);
    assert_eq!(h.hook_metrics[&HookType::PreRequest].execution_count, 1);
    assert_eq!(h.reported, Some(Health::Degraded("db is fine-ish".into())));
    let all = host.all_health().await;
    assert_eq!(all.keys().collect::<Vec<_>>(), ["app", "db"]);
    assert!(host.plugin_health("nope").await.is_none());
    host.shutdown().await;
}

#[tokio::test]
async fn config_changes_apply_only_when_valid_and_accepted() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let (host, _dir) = host(&j).await;
    assert_eq!(host.plugin_config("db").unwrap()["mode"], "normal");

    let new = json!({"mode": "fast"}).as_object().unwrap().clone();
    host.update_plugin_config("db", &new).await.unwrap();
    assert_eq!(host.plugin_config("db").unwrap()["mode"], "fast");

    let invalid = json!({"mode": 3}).as_object().unwrap().clone();
    let err = host.update_plugin_config("db", &invalid).await.unwrap_err();
    assert!(
        err.to_string().starts_with("config of plugin 'db':"),
        "{err}"
    );
    assert_eq!(host.plugin_config("db").unwrap()["mode"], "fast");

    let refused = json!({"mode": "refuse"}).as_object().unwrap().clone();
    let err = host.update_plugin_config("db", &refused).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin 'db' rejected the new config (the previous config stays in force): mode refuse is not acceptable"
    );
    assert_eq!(host.plugin_config("db").unwrap()["mode"], "fast");
    assert_eq!(
        j.lock().iter().filter(|e| *e == "db:config").count(),
        2,
        "invalid config never reaches the plugin"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn unload_refuses_while_dependents_run_and_removes_every_registration() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let (host, _dir) = host(&j).await;
    let err = host.unload_plugin("db", false).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin 'db' is in use: running plugins depend on it: app; unload them first or force"
    );
    assert_eq!(host.plugin_info("db").unwrap().status, Status::Running);

    host.unload_plugin("app", false).await.unwrap();
    host.unload_plugin("db", false).await.unwrap();
    assert!(host.plugin_info("db").is_none());
    assert!(!host.is_loaded("db"));
    assert_eq!(
        host.dispatcher().table().hook_count(HookType::PreRequest),
        0
    );
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/db/x"))
        .await;
    assert_eq!(r.status, 404);
    let log = j.lock().clone();
    assert!(
        log.ends_with(&[
            "app:stop".into(),
            "app:cleanup".into(),
            "db:stop".into(),
            "db:cleanup".into()
        ]),
        "{log:?}"
    );
    assert!(matches!(
        host.unload_plugin("db", false).await,
        Err(plugd_core::LoadError::UnknownPlugin(_))
    ));
}

#[tokio::test]
async fn forced_unload_leaves_dependents_in_place() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let (host, _dir) = host(&j).await;
    host.unload_plugin("db", true).await.unwrap();
    assert!(host.plugin_info("db").is_none());
    assert_eq!(host.plugin_info("app").unwrap().status, Status::Running);
    host.shutdown().await;
}

/// A typed service between native plugins.
#[derive(Debug)]
struct Clock;

impl Clock {
    fn now(&self) -> u64 {
        42
    }
}

struct ClockPlugin;

#[async_trait::async_trait]
impl plugd_core::Plugin for ClockPlugin {
    async fn init(
        &self,
        ctx: &mut plugd_core::InitContext<'_>,
    ) -> Result<(), plugd_core::PluginError> {
        ctx.export_typed("clock", Arc::new(Clock))
            .map_err(|e| plugd_core::PluginError::Failed(e.to_string()))
    }
}

#[tokio::test]
async fn native_plugins_share_typed_services() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("time", "exports:\n  - name: clock\n"), ClockPlugin)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let clock = host.services().import::<Clock>("time", "clock").unwrap();
    assert_eq!(clock.now(), 42);
    let err = host
        .services()
        .import::<Clock>("time", "calendar")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service not found: plugin 'time' does not export 'calendar'"
    );
    assert!(
        host.services().import::<String>("time", "clock").is_err(),
        "wrong type"
    );
    host.unload_plugin("time", false).await.unwrap();
    assert!(
        host.services().import::<Clock>("time", "clock").is_err(),
        "unload removes exports"
    );
}

#[tokio::test]
async fn exporting_an_undeclared_service_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("time", ""), ClockPlugin)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let err = host
        .plugin_info("time")
        .unwrap()
        .last_error
        .unwrap()
        .message;
    assert!(
        err.contains("attempted to export undeclared service 'clock'"),
        "{err}"
    );
}

/// A native plugin that uses the cache in init.
struct CacheUser;

#[async_trait::async_trait]
impl plugd_core::Plugin for CacheUser {
    async fn init(
        &self,
        ctx: &mut plugd_core::InitContext<'_>,
    ) -> Result<(), plugd_core::PluginError> {
        let cache = ctx
            .cache()
            .map_err(|e| plugd_core::PluginError::Failed(e.to_string()))?;
        cache
            .set("k", b"v", None)
            .await
            .map_err(|e| plugd_core::PluginError::Failed(e.to_string()))
    }
}

fn cache_manifest(name: &str) -> plugd_manifest::Manifest {
    plugd_manifest::Manifest::from_str(
        &format!("name: {name}\nversion: 1.0.0\ndescription: d\nauthor: a\npermissions: {{ cache: true }}\n"),
        plugd_manifest::Format::Yaml,
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn native_plugins_use_the_cache_only_with_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  plugins:\n    - name: without\n      permissions: { cache: false }\n",
        ))
        .native(cache_manifest("with"), CacheUser)
        .native(cache_manifest("without"), CacheUser)
        .build()
        .unwrap();
    host.start().await.unwrap();
    assert_eq!(host.plugin_info("with").unwrap().status, Status::Running);
    let without = host.plugin_info("without").unwrap();
    assert_eq!(without.status, Status::Error);
    assert!(
        without.last_error.unwrap().message.contains(
            "permission denied: plugin 'without' attempted cache access without permission"
        )
    );
    host.shutdown().await;
}
