//! The reload paths a code reload can take besides success, with a loader that builds a native
//! plugin from the manifest it is given (so the "new version" is whatever the folder holds):
//! a new version that fails to load, one the running dependents would not accept, and one that
//! fails to initialize — rolled back, with the four log lines of the contract, while requests
//! wait at the gate.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{
    BoxError, Exchange, Host, InitContext, LoadError, Loader, LoaderContext, Plugin, PluginError,
    Response, RouteOptions,
};
use tokio::sync::Notify;

use crate::config;

/// What a test sees of a version whose `init` waits: that it entered `init`, and when to let
/// it fail.
#[derive(Default)]
struct Probe {
    entered: Notify,
    release: Notify,
}

/// Builds a [`Versioned`] from the manifest and config of the folder; `mode: compile_error` fails
/// to load, as a component that does not compile would.
struct Versions(Arc<Probe>);

#[async_trait::async_trait]
impl Loader for Versions {
    async fn load(&self, ctx: LoaderContext<'_>) -> Result<Arc<dyn Plugin>, BoxError> {
        let mode = ctx
            .config
            .get("mode")
            .and_then(|v| v.as_str())
            .unwrap_or("ok")
            .to_string();
        if mode == "compile_error" {
            return Err(format!(
                "failed to compile {}: unexpected end of the component",
                ctx.dir.join("plugin.wasm").display()
            )
            .into());
        }
        Ok(Arc::new(Versioned {
            version: ctx.manifest.version.to_string(),
            mode,
            probe: self.0.clone(),
        }))
    }
}

/// Answers `GET /v` with its version; `mode: fail_init` makes its `init` wait for the probe and
/// fail.
struct Versioned {
    version: String,
    mode: String,
    probe: Arc<Probe>,
}

#[async_trait::async_trait]
impl Plugin for Versioned {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        if ctx.granted().contains(&plugd_core::Permission::Router) {
            ctx.register_route("GET", "/v", RouteOptions::default())?;
        }
        if self.mode == "fail_init" {
            self.probe.entered.notify_one();
            self.probe.release.notified().await;
            return Err(PluginError::Failed("missing secret".into()));
        }
        Ok(())
    }

    async fn handle_request(
        &self,
        _route: &str,
        _ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        let mut r = Response::new(http::StatusCode::OK);
        r.body = self.version.clone().into();
        Ok(r)
    }
}

/// Write a version of plugin `name` into `root/name`.
fn write_version(root: &Path, name: &str, version: &str, mode: &str, extra: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("plugin.yaml"),
        format!(
            "name: {name}\nversion: {version}\ndescription: d\nauthor: a\npermissions: [router]\ncapabilities: [hot_reload]\nconfig:\n  mode: {{ type: string, default: {mode} }}\n{extra}"
        ),
    )
    .unwrap();
    dir
}

/// A host with `auth-plugin` 1.2.0 and, when `with_app`, `app` 1.0.0 requiring `auth-plugin ^1`.
async fn start(root: &Path, with_app: bool) -> (Host, Arc<Probe>) {
    write_version(root, "auth-plugin", "1.2.0", "ok", "");
    let mut yaml = format!(
        "plugins:\n  plugins:\n    - {{ name: auth-plugin, path: '{}', permissions: {{ router: true }} }}\n",
        root.join("auth-plugin").display()
    );
    if with_app {
        write_version(
            root,
            "app",
            "1.0.0",
            "ok",
            "dependencies:\n  - name: auth-plugin\n    version: ^1\n",
        );
        writeln!(
            yaml,
            "    - {{ name: app, path: '{}', permissions: {{ router: true }} }}",
            root.join("app").display()
        )
        .unwrap();
    }
    let probe = Arc::new(Probe::default());
    let host = Host::builder()
        .config(config(root, &yaml))
        .loader(Versions(probe.clone()))
        .build()
        .unwrap();
    host.start().await.unwrap();
    (host, probe)
}

async fn served_version(host: &Host) -> String {
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/auth-plugin/v"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_new_version_that_fails_to_load_leaves_the_running_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _probe) = start(dir.path(), false).await;
    assert_eq!(served_version(&host).await, "1.2.0");

    // Its code does not compile.
    write_version(dir.path(), "auth-plugin", "1.3.0", "compile_error", "");
    let e = host.reload_plugin("auth-plugin").await.unwrap_err();
    assert!(
        matches!(e, LoadError::Reload { restored: true, .. }),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.starts_with("plugin reload failed: auth-plugin"),
        "{message}"
    );
    assert!(
        message.contains("unexpected end of the component"),
        "{message}"
    );
    assert!(
        message.ends_with("the previous version serves again"),
        "{message}"
    );
    assert_eq!(served_version(&host).await, "1.2.0");

    // Its manifest is broken.
    std::fs::write(
        dir.path().join("auth-plugin/plugin.yaml"),
        "version: 1.3.0\ndescription: d\nauthor: a\n",
    )
    .unwrap();
    let e = host.reload_plugin("auth-plugin").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("failed to parse manifest: missing required field: name"),
        "{e}"
    );
    assert_eq!(served_version(&host).await, "1.2.0");
    assert_eq!(host.reload_stats()["auth-plugin"].failed, 2);
    assert_eq!(host.reload_stats()["auth-plugin"].rolled_back, 0);
    host.shutdown().await;
}

#[tokio::test]
async fn a_new_version_its_running_dependents_do_not_accept_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _probe) = start(dir.path(), true).await;
    assert_eq!(host.resolve_dependencies().unwrap(), ["auth-plugin", "app"]);

    write_version(dir.path(), "auth-plugin", "2.0.0", "ok", "");
    let e = host.reload_plugin("auth-plugin").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("version mismatch: plugin 'app' requires 'auth-plugin' ^1, found 2.0.0"),
        "{e}"
    );
    // The running version serves on, and the dependent was neither reloaded nor stopped.
    assert_eq!(served_version(&host).await, "1.2.0");
    let app = host.plugin_info("app").unwrap();
    assert_eq!(app.status, plugd_core::Status::Running);
    assert!(!host.reload_stats().contains_key("app"));

    // A compatible version goes through; the dependent still is not reloaded.
    write_version(dir.path(), "auth-plugin", "1.4.0", "ok", "");
    let outcome = host.reload_plugin("auth-plugin").await.unwrap();
    assert_eq!(
        (outcome.from_version.as_str(), outcome.to_version.as_str()),
        ("1.2.0", "1.4.0")
    );
    assert_eq!(served_version(&host).await, "1.4.0");
    assert!(!host.reload_stats().contains_key("app"));
    host.shutdown().await;
}

/// `[LEVEL] message` of every event at `INFO` and above on this thread (the test's runtime is
/// single-threaded, so the host's tasks log here too).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

struct Bracketed(Lines);

impl<S> tracing_subscriber::Layer<S> for Bracketed
where
    S: tracing::Subscriber,
{
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let level = *event.metadata().level();
        if level <= tracing::Level::INFO {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.0.lock().push(format!("[{level}] {}", m.0));
        }
    }
}

#[tokio::test]
async fn a_new_version_that_fails_to_initialize_is_rolled_back_with_the_four_log_lines() {
    use tracing_subscriber::layer::SubscriberExt;
    let lines = Lines::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(Bracketed(lines.clone())),
    );
    let dir = tempfile::tempdir().unwrap();
    let (host, probe) = start(dir.path(), false).await;
    assert_eq!(served_version(&host).await, "1.2.0");

    write_version(dir.path(), "auth-plugin", "1.3.0", "fail_init", "");
    let reload = tokio::spawn({
        let host = host.clone();
        async move { host.reload_plugin("auth-plugin").await }
    });
    // The gate is closed once the new version's init runs: 47 requests wait at it.
    probe.entered.notified().await;
    let waiting: Vec<_> = (0..47)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                host.dispatcher()
                    .handle(Exchange::new(Method::GET, "/plugins/auth-plugin/v"))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    probe.release.notify_one();

    let e = reload.await.unwrap().unwrap_err();
    assert!(
        matches!(e, LoadError::Reload { restored: true, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("plugin reload failed: auth-plugin v1.3.0: plugin initialization failed: auth-plugin: missing secret"),
        "{e}"
    );
    // Every waiting request was served by the version restored.
    for w in waiting {
        let r = w.await.unwrap();
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"1.2.0"[..]));
    }
    assert_eq!(served_version(&host).await, "1.2.0");

    let lines = lines.0.lock().clone();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{}", lines.join("\n")))
    };
    let failed = at("[ERROR] Plugin reload failed: auth-plugin v1.3.0: initialization error");
    assert_eq!(
        lines[failed],
        "[ERROR] Plugin reload failed: auth-plugin v1.3.0: initialization error: missing secret"
    );
    let rolling = at("[INFO] Rolling back to previous version: auth-plugin v1.2.0");
    let restored = at("[INFO] Previous version restored successfully");
    let processing = at("[INFO] Processing 47 queued requests");
    assert_eq!(
        lines[rolling],
        "[INFO] Rolling back to previous version: auth-plugin v1.2.0"
    );
    assert_eq!(
        lines[restored],
        "[INFO] Previous version restored successfully"
    );
    assert_eq!(lines[processing], "[INFO] Processing 47 queued requests");
    assert!(
        failed < rolling && rolling < restored && restored < processing,
        "{lines:#?}"
    );
    host.shutdown().await;
}
