use std::sync::Arc;

use parking_lot::Mutex;
use plugd_core::{Host, Status};

use crate::{Journal, Recorder, config, manifest};

fn journal() -> Journal {
    Arc::new(Mutex::new(Vec::new()))
}

#[tokio::test]
async fn start_in_dependency_and_priority_order_stop_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        // app depends on db; audit has the highest priority; db the lowest.
        .native(
            manifest(
                "app",
                "priority: 200\ndependencies:\n  - name: db\n    version: '>=1.0.0,<2.0.0'\n",
            ),
            Recorder::new("app", &j),
        )
        .native(manifest("db", "priority: 100\n"), Recorder::new("db", &j))
        .native(
            manifest("audit", "priority: infrastructure\n"),
            Recorder::new("audit", &j),
        )
        .build()
        .unwrap();
    host.start().await.unwrap();
    let names: Vec<String> = host.list_plugins().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["audit", "db", "app"]);
    assert!(
        host.list_plugins()
            .iter()
            .all(|p| p.status == Status::Running)
    );
    host.shutdown().await;
    let got = j.lock().clone();
    assert_eq!(
        got,
        [
            "audit:init",
            "db:init",
            "app:init",
            "audit:start",
            "db:start",
            "app:start",
            "app:stop",
            "app:cleanup",
            "db:stop",
            "db:cleanup",
            "audit:stop",
            "audit:cleanup",
        ]
    );
    assert!(
        host.list_plugins()
            .iter()
            .all(|p| p.status == Status::Stopped)
    );
}

#[tokio::test]
async fn a_failed_plugin_takes_its_dependents_down_and_the_rest_runs() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal();
    let mut db = Recorder::new("db", &j);
    db.fail_start = true;
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("db", ""), db)
        .native(
            manifest("app", "dependencies:\n  - name: db\n"),
            Recorder::new("app", &j),
        )
        .native(manifest("other", ""), Recorder::new("other", &j))
        .build()
        .unwrap();
    host.start().await.unwrap();
    let info = |n: &str| host.plugin_info(n).unwrap();
    assert_eq!(info("db").status, Status::Error);
    assert!(
        info("db")
            .last_error
            .unwrap()
            .message
            .contains("plugin start failed: db: start refused")
    );
    assert_eq!(info("app").status, Status::Error);
    assert_eq!(
        info("app").last_error.unwrap().message,
        "dependency 'db' failed"
    );
    assert_eq!(info("other").status, Status::Running);
    host.shutdown().await;
}

#[tokio::test]
async fn on_failure_abort_returns_the_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal();
    let mut bad = Recorder::new("bad", &j);
    bad.fail_init = true;
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  on_failure: abort\n  plugins: []\n",
        ))
        .native(
            manifest("good", "priority: 300\n"),
            Recorder::new("good", &j),
        )
        .native(manifest("bad", ""), bad)
        .build()
        .unwrap();
    let err = host.start().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin initialization failed: bad: init refused"
    );
}

#[tokio::test]
async fn missing_dependency_and_cycle_use_the_contract_messages() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(
            manifest(
                "auth-plugin",
                "dependencies:\n  - name: cache-plugin\n    version: '>=2.0.0'\n",
            ),
            Recorder::new("auth", &j),
        )
        .native(
            manifest("a", "dependencies:\n  - name: b\n"),
            Recorder::new("a", &j),
        )
        .native(
            manifest("b", "dependencies:\n  - name: a\n"),
            Recorder::new("b", &j),
        )
        .native(manifest("fine", ""), Recorder::new("fine", &j))
        .build()
        .unwrap();
    host.start().await.unwrap();
    let err = |n: &str| host.plugin_info(n).unwrap().last_error.unwrap().message;
    assert_eq!(
        err("auth-plugin"),
        "missing dependency: plugin 'auth-plugin' requires 'cache-plugin' version '>=2.0.0'"
    );
    assert_eq!(err("a"), "circular dependency detected: a -> b -> a");
    assert_eq!(host.plugin_info("fine").unwrap().status, Status::Running);
    host.shutdown().await;
}

#[tokio::test]
async fn framework_requirement_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(
            manifest("future", "framework: { version: '>=2.0.0' }\n"),
            Recorder::new("future", &j),
        )
        .build()
        .unwrap();
    host.start().await.unwrap();
    let info = host.plugin_info("future").unwrap();
    assert_eq!(info.status, Status::Error);
    assert_eq!(
        info.last_error.unwrap().message,
        format!(
            "framework version mismatch: plugin requires >=2.0.0, found {}",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[tokio::test]
async fn a_plugin_disabled_in_the_config_is_listed_but_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  plugins:\n    - name: paused\n      enabled: false\n",
        ))
        .native(manifest("paused", ""), Recorder::new("paused", &j))
        .native(manifest("active", ""), Recorder::new("active", &j))
        .build()
        .unwrap();
    host.start().await.unwrap();
    let paused = host.plugin_info("paused").unwrap();
    assert_eq!(paused.status, Status::Disabled);
    assert!(!paused.enabled);
    assert!(!paused.loaded);
    assert_eq!(paused.version, "1.0.0");
    host.shutdown().await;
    assert_eq!(
        *j.lock(),
        [
            "active:init",
            "active:start",
            "active:stop",
            "active:cleanup"
        ]
    );
}

#[tokio::test]
async fn step_by_step_calls_initialize_all_stops_at_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal();
    let mut bad = Recorder::new("bad", &j);
    bad.fail_init = true;
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(
            manifest("first", "priority: 300\n"),
            Recorder::new("first", &j),
        )
        .native(manifest("bad", "priority: 200\n"), bad)
        .native(
            manifest("last", "priority: 100\n"),
            Recorder::new("last", &j),
        )
        .build()
        .unwrap();
    host.load_all().await.unwrap();
    assert!(
        host.list_plugins()
            .iter()
            .all(|p| p.status == Status::Loading)
    );
    let err = host.initialize_all().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin initialization failed: bad: init refused"
    );
    let status = |n: &str| host.plugin_info(n).unwrap().status;
    assert_eq!(
        status("first"),
        Status::Initialized,
        "already initialized plugins stay"
    );
    assert_eq!(status("bad"), Status::Error);
    assert_eq!(
        status("last"),
        Status::Loading,
        "the pass stopped at the failure"
    );
    host.start_all().await.unwrap();
    assert_eq!(status("first"), Status::Running);
    host.stop_all().await;
    assert_eq!(
        *j.lock(),
        [
            "first:init",
            "bad:init",
            "first:start",
            "first:stop",
            "first:cleanup"
        ]
    );
}

#[tokio::test]
async fn load_plugin_at_run_time_checks_dependencies() {
    let root = tempfile::tempdir().unwrap();
    // Plugins from disk without a loader cannot run, so give the host a loader of natives.
    struct Natives(Journal);
    #[async_trait::async_trait]
    impl plugd_core::Loader for Natives {
        async fn load(
            &self,
            ctx: plugd_core::LoaderContext<'_>,
        ) -> Result<Arc<dyn plugd_core::Plugin>, plugd_core::BoxError> {
            let name: &'static str = Box::leak(ctx.manifest.name.clone().into_boxed_str());
            Ok(Arc::new(Recorder::new(name, &self.0)))
        }
    }
    let j = journal();
    for (name, extra) in [
        ("db", ""),
        (
            "app",
            "dependencies:\n  - name: db\n    version: '>=2.0.0'\n",
        ),
    ] {
        let d = root.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("plugin.yaml"),
            format!("name: {name}\nversion: 1.0.0\ndescription: d\nauthor: a\n{extra}"),
        )
        .unwrap();
    }
    let host = Host::builder()
        .config(config(root.path(), "plugins:\n  plugins: []\n"))
        .loader(Natives(j.clone()))
        .build()
        .unwrap();
    host.start().await.unwrap();
    let app = plugd_manifest::PluginEntry::new("app", root.path().join("app"));
    let err = host.load_plugin(&app).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing dependency: plugin 'app' requires 'db' version '>=2.0.0'"
    );
    assert!(
        host.plugin_info("app").is_none(),
        "a plugin that fails is not added"
    );
    host.load_plugin(&plugd_manifest::PluginEntry::new(
        "db",
        root.path().join("db"),
    ))
    .await
    .unwrap();
    assert_eq!(host.plugin_info("db").unwrap().status, Status::Running);
    let err = host.load_plugin(&app).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "version mismatch: plugin 'app' requires 'db' >=2.0.0, found 1.0.0"
    );
    let again = host
        .load_plugin(&plugd_manifest::PluginEntry::new(
            "db",
            root.path().join("db"),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        again.to_string(),
        "duplicate plugin: 'db' is already loaded"
    );
    host.shutdown().await;
    assert_eq!(*j.lock(), ["db:init", "db:start", "db:stop", "db:cleanup"]);
}

/// Security review L7: a loader gets the component bytes the package check hashed, even when
/// the file is swapped on disk between the check and the load.
#[tokio::test]
async fn the_loader_gets_the_component_bytes_the_package_check_verified() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let installed = plugd_pkg::PluginsDir::new(&plugins);
    for (name, priority) in [("first", 300), ("second", 100)] {
        let src = root.path().join(format!("src-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("plugin.yaml"),
            format!(
                "name: {name}\nversion: 1.0.0\ndescription: d\nauthor: a\npriority: {priority}\n"
            ),
        )
        .unwrap();
        std::fs::write(src.join("plugin.wasm"), format!("\0asm original {name}")).unwrap();
        let package = plugd_pkg::Package::from_dir(&src).unwrap();
        let source = plugd_pkg::InstallSource {
            package_sha256: "0".repeat(64),
            source: "test".into(),
            signature_state: plugd_pkg::SignatureState::Unsigned,
        };
        installed.install(&package, &source).unwrap();
    }
    type Seen = Arc<Mutex<Vec<(String, Option<Vec<u8>>)>>>;
    struct Swapping {
        plugins: std::path::PathBuf,
        seen: Seen,
        journal: Journal,
    }
    #[async_trait::async_trait]
    impl plugd_core::Loader for Swapping {
        async fn load(
            &self,
            ctx: plugd_core::LoaderContext<'_>,
        ) -> Result<Arc<dyn plugd_core::Plugin>, plugd_core::BoxError> {
            let name = ctx.manifest.name.clone();
            self.seen
                .lock()
                .push((name.clone(), ctx.component.as_deref().map(<[u8]>::to_vec)));
            // Loaded first, so after both checks: swap the second plugin's component.
            if name == "first" {
                std::fs::write(self.plugins.join("second/plugin.wasm"), "\0asm swapped").unwrap();
            }
            let name: &'static str = Box::leak(name.into_boxed_str());
            Ok(Arc::new(Recorder::new(name, &self.journal)))
        }
    }
    let seen = Seen::default();
    let yaml = format!(
        "plugins:\n  plugins:\n    - {{ name: first, path: '{0}/first' }}\n    - {{ name: second, path: '{0}/second' }}\n",
        plugins.display()
    );
    let host = Host::builder()
        .config(config(root.path(), &yaml))
        .loader(Swapping {
            plugins: plugins.clone(),
            seen: seen.clone(),
            journal: journal(),
        })
        .build()
        .unwrap();
    host.start().await.unwrap();
    assert_eq!(
        *seen.lock(),
        [
            ("first".to_string(), Some(b"\0asm original first".to_vec())),
            (
                "second".to_string(),
                Some(b"\0asm original second".to_vec())
            ),
        ]
    );
    assert_eq!(host.plugin_info("second").unwrap().status, Status::Running);
    // The swapped file is what the next check sees, and refuses.
    let entry = plugd_manifest::PluginEntry::new("second", plugins.join("second"));
    let manifest = plugd_manifest::Manifest::from_path(&entry.path).unwrap();
    let err = plugd_pkg::check_installed(&entry.path, &manifest, &host.config().plugins)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plugin.wasm was changed after install"),
        "{err}"
    );
    host.stop_all().await;
}

/// A native plugin whose lifecycle step never returns: `init`, `start` or `on_config_change`
/// hangs, or `stop` does at shutdown.
struct Hung {
    step: &'static str,
}

#[async_trait::async_trait]
impl plugd_core::Plugin for Hung {
    async fn init(
        &self,
        _: &mut plugd_core::InitContext<'_>,
    ) -> Result<(), plugd_core::PluginError> {
        self.hang("init").await
    }
    async fn start(&self) -> Result<(), plugd_core::PluginError> {
        self.hang("start").await
    }
    async fn stop(&self) -> Result<(), plugd_core::PluginError> {
        self.hang("stop").await
    }
    async fn on_config_change(
        &self,
        _: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), plugd_core::PluginError> {
        self.hang("config").await
    }
}

impl Hung {
    async fn hang(&self, step: &str) -> Result<(), plugd_core::PluginError> {
        if self.step == step {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Every call into a plugin has a deadline, native ones included: a hung `init` or `start` is
/// the plugin's error at its deadline (the lifecycle does not wait forever), a hung
/// `on_config_change` is refused, and a hung `stop` does not hold the shutdown.
#[tokio::test]
async fn a_hung_native_lifecycle_step_times_out_like_a_wasm_one() {
    for step in ["init", "start"] {
        let dir = tempfile::tempdir().unwrap();
        let j = journal();
        let host = Host::builder()
            .config(config(
                dir.path(),
                "plugins:\n  limits: { timeout: 200ms }\n  supervision: { enabled: false }\n  plugins: []\n",
            ))
            .native(manifest("hung", ""), Hung { step })
            .native(manifest("ok", ""), Recorder::new("ok", &j))
            .build()
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), host.start())
            .await
            .expect("the start does not wait for the hung plugin")
            .unwrap();
        let info = host.plugin_info("hung").unwrap();
        assert_eq!(info.status, Status::Error, "{step}");
        let message = info.last_error.unwrap().message;
        assert!(
            message.contains(&format!("{step} exceeded 200ms timeout")),
            "{message}"
        );
        assert_eq!(host.plugin_info("ok").unwrap().status, Status::Running);
        host.shutdown().await;
    }

    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  limits: { timeout: 200ms }\n  plugins: []\n",
        ))
        .native(manifest("hung", ""), Hung { step: "config" })
        .build()
        .unwrap();
    host.start().await.unwrap();
    let err = host
        .update_plugin_config("hung", &serde_json::Map::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("on_config_change exceeded 200ms timeout"),
        "{err}"
    );
    host.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  limits: { timeout: 200ms }\n  plugins: []\n",
        ))
        .native(manifest("hung", ""), Hung { step: "stop" })
        .build()
        .unwrap();
    host.start().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), host.shutdown())
        .await
        .expect("a hung stop does not hold the shutdown");
    let message = host
        .plugin_info("hung")
        .unwrap()
        .last_error
        .unwrap()
        .message;
    assert!(
        message.contains("stop: stop exceeded 200ms timeout"),
        "{message}"
    );
}
