use std::sync::Arc;
use std::time::Duration;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{Exchange, HookType, Host};

use crate::{Journal, Recorder, config, manifest};

async fn host_with(plugins: Vec<Recorder>) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Host::builder().config(config(dir.path(), "plugins:\n  plugins: []\n"));
    for p in plugins {
        b = b.native(manifest(p.name, ""), p);
    }
    let host = b.build().unwrap();
    host.start().await.unwrap();
    (host, dir)
}

#[tokio::test]
async fn hooks_run_by_priority_and_the_route_sees_their_changes() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut low = Recorder::new("low", &j);
    low.hooks = vec![(HookType::PreRequest, 50), (HookType::PreResponse, 50)];
    let mut high = Recorder::new("high", &j);
    high.hooks = vec![(HookType::PreRequest, 300), (HookType::PostRequest, 300)];
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    let (host, _dir) = host_with(vec![low, high, app]).await;
    j.lock().clear();
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/app/x"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-low"], "pre_response");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body["seen"],
        serde_json::json!(["x-seen-high", "x-seen-low"])
    );
    assert_eq!(
        *j.lock(),
        [
            "high:pre_request",
            "low:pre_request",
            "app:handle /x",
            "high:post_request",
            "low:pre_response"
        ]
    );
    host.shutdown().await;
}

#[tokio::test]
async fn an_early_answer_skips_later_hooks_and_the_handler_but_not_response_hooks() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut guard = Recorder::new("guard", &j);
    guard.hooks = vec![(HookType::PreRequest, 200)];
    guard.answer_early = true;
    let mut later = Recorder::new("later", &j);
    later.hooks = vec![
        (HookType::PreRequest, 100),
        (HookType::PostRequest, 100),
        (HookType::PreResponse, 100),
        (HookType::PostResponse, 100),
    ];
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    let (host, _dir) = host_with(vec![guard, later, app]).await;
    j.lock().clear();
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/app/x"))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["x-later"], "pre_response");
    // post_response runs after the answer, off the response path.
    for _ in 0..100 {
        if j.lock().iter().any(|e| e == "later:post_response") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *j.lock(),
        [
            "guard:pre_request",
            "later:post_request",
            "later:pre_response",
            "later:post_response"
        ]
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_failing_hook_is_counted_and_the_others_still_run() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut broken = Recorder::new("broken", &j);
    broken.hooks = vec![(HookType::PreRequest, 300)];
    broken.fail_hook = true;
    let mut fine = Recorder::new("fine", &j);
    fine.hooks = vec![(HookType::PreRequest, 100)];
    fine.route = Some("/x");
    let (host, _dir) = host_with(vec![broken, fine]).await;
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/fine/x"))
        .await;
    assert_eq!(r.status, 200);
    let info = host.plugin_info("broken").unwrap();
    assert_eq!(info.error_count, 1);
    assert_eq!(
        info.last_error.unwrap().message,
        "pre_request hook: hook refused"
    );
    let m = info.hook_metrics[&HookType::PreRequest];
    assert_eq!((m.execution_count, m.error_count), (1, 1));
    host.shutdown().await;
}

#[tokio::test]
async fn startup_and_shutdown_hooks_run_once() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut p = Recorder::new("p", &j);
    p.hooks = vec![(HookType::Startup, 100), (HookType::Shutdown, 100)];
    let (host, _dir) = host_with(vec![p]).await;
    host.shutdown().await;
    assert_eq!(
        *j.lock(),
        [
            "p:init",
            "p:start",
            "p:startup",
            "p:shutdown",
            "p:stop",
            "p:cleanup"
        ]
    );
}

#[tokio::test]
async fn a_slow_native_hook_gets_the_hook_execution_timeout_message() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut slow = Recorder::new("slow", &j);
    slow.hooks = vec![(HookType::PreRequest, 100)];
    slow.hook_sleep = Some(Duration::from_secs(5));
    slow.route = Some("/x");
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  limits:\n    hook_timeouts: { pre_request: 100ms }\n  plugins: []\n",
        ))
        .native(manifest("slow", ""), slow)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/slow/x"))
        .await;
    assert_eq!(r.status, 200, "fail-open: the request goes on");
    // The hook was stopped, not waited for: had it run its 5 s to the end, it would have set
    // x-seen-slow on the request and succeeded.
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["seen"], serde_json::json!([]), "{body}");
    let info = host.plugin_info("slow").unwrap();
    let m = info.hook_metrics[&HookType::PreRequest];
    assert_eq!((m.execution_count, m.error_count), (1, 1));
    assert_eq!(
        info.last_error.unwrap().message,
        "pre_request hook: hook execution timeout: pre_request hook exceeded 100ms timeout"
    );
    host.shutdown().await;
}

/// A plugin of a loader (sandboxed, its runtime interrupts it at the deadline) whose runtime
/// did not: it never answers its hook.
struct Unresponsive(Journal);

/// A recorder that calls itself sandboxed: the host leaves its deadline to its runtime.
struct Sandboxed(Recorder);

#[async_trait::async_trait]
impl plugd_core::Plugin for Sandboxed {
    async fn init(
        &self,
        ctx: &mut plugd_core::InitContext<'_>,
    ) -> Result<(), plugd_core::PluginError> {
        plugd_core::Plugin::init(&self.0, ctx).await
    }
    async fn on_hook(
        &self,
        hook: HookType,
        ex: &mut Exchange,
    ) -> Result<plugd_core::Action, plugd_core::PluginError> {
        plugd_core::Plugin::on_hook(&self.0, hook, ex).await
    }
    fn kind(&self) -> &'static str {
        "wasm"
    }
}

#[async_trait::async_trait]
impl plugd_core::Loader for Unresponsive {
    async fn load(
        &self,
        _ctx: plugd_core::LoaderContext<'_>,
    ) -> Result<Arc<dyn plugd_core::Plugin>, plugd_core::BoxError> {
        let mut p = Recorder::new("stuck", &self.0);
        p.hooks = vec![(HookType::PreRequest, 100)];
        p.hook_sleep = Some(Duration::from_secs(3600));
        Ok(Arc::new(Sandboxed(p)))
    }
}

#[tokio::test]
async fn the_hosts_backstop_names_itself_when_a_runtime_misses_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = dir.path().join("stuck");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    std::fs::write(
        plugin_dir.join("plugin.yaml"),
        "name: stuck\nversion: 1.0.0\ndescription: d\nauthor: a\npermissions: { router: true, intercept: true }\n",
    )
    .unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    let yaml = format!(
        "plugins:\n  limits:\n    hook_timeouts: {{ pre_request: 100ms }}\n  plugins:\n    - name: stuck\n      path: {}\n      permissions: {{ router: true, intercept: true }}\n",
        plugin_dir.display()
    );
    let host = Host::builder()
        .config(config(dir.path(), &yaml))
        .loader(Unresponsive(j.clone()))
        .native(manifest("app", ""), app)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/app/x"))
        .await;
    assert_eq!(r.status, 200, "fail-open: the request goes on");
    assert_eq!(
        host.plugin_info("stuck")
            .unwrap()
            .last_error
            .unwrap()
            .message,
        "pre_request hook: hook execution timeout: pre_request hook exceeded 100ms timeout and was not interrupted by its runtime: the host's backstop stopped waiting for it 1s later"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn middleware_wraps_matching_routes_in_priority_order() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut outer = Recorder::new("outer", &j);
    outer.middleware = Some((300, &[]));
    let mut inner = Recorder::new("inner", &j);
    inner.middleware = Some((100, &["/plugins/app/*"]));
    let mut other = Recorder::new("other", &j);
    other.middleware = Some((200, &["/plugins/elsewhere/*"]));
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    let (host, _dir) = host_with(vec![inner, outer, other, app]).await;
    assert_eq!(host.dispatcher().table().middleware_count(), 3);
    j.lock().clear();
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/app/x"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (&r.headers["x-mw-outer"], &r.headers["x-mw-inner"]),
        (&"1".parse().unwrap(), &"1".parse().unwrap())
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body["seen"],
        serde_json::json!(["x-seen-outer", "x-seen-inner"])
    );
    assert_eq!(
        *j.lock(),
        [
            "outer:mw request",
            "inner:mw request",
            "app:handle /x",
            "inner:mw response",
            "outer:mw response"
        ]
    );
    host.unload_plugin("outer", false).await.unwrap();
    assert_eq!(
        host.dispatcher().table().middleware_count(),
        2,
        "unload removes its middleware"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn middleware_may_answer_early_and_still_sees_the_response() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut guard = Recorder::new("guard", &j);
    guard.middleware = Some((100, &["/plugins/app/*"]));
    guard.answer_early = true;
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    let (host, _dir) = host_with(vec![guard, app]).await;
    j.lock().clear();
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/app/x"))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.headers["x-mw-guard"], "1");
    assert_eq!(*j.lock(), ["guard:mw request", "guard:mw response"]);
    host.shutdown().await;
}

#[tokio::test]
async fn middleware_needs_the_router_permission() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut mw = Recorder::new("mw", &j);
    mw.middleware = Some((100, &[]));
    let host = Host::builder()
        .config(crate::config(
            dir.path(),
            "plugins:\n  plugins:\n    - name: mw\n      permissions: { router: false }\n",
        ))
        .native(crate::manifest("mw", ""), mw)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let err = host.plugin_info("mw").unwrap().last_error.unwrap().message;
    assert!(
        err.contains("permission denied: plugin 'mw' attempted router access without permission"),
        "{err}"
    );
}
