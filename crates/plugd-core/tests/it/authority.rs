//! Request authority (docs/design.md#trust-model): a plugin's hooks and middleware see only its own
//! routes unless the operator grants `intercept` (optionally scoped to path globs); registering
//! more than it was granted fails at load, naming the permission and the config key; a
//! `fail_closed` guard that never started still guards what it would have seen.

use std::sync::Arc;

use parking_lot::Mutex;
use plugd_core::{HookType, Host, Status};

use crate::{Journal, Recorder, config, get, manifest_with, start_natives as start};

/// The paths `name`'s pre_request hook ran for.
fn seen(j: &Journal, name: &str) -> usize {
    let prefix = format!("{name}:pre_request");
    j.lock().iter().filter(|e| **e == prefix).count()
}

fn watcher(j: &Journal) -> Recorder {
    let mut w = Recorder::new("watcher", j);
    w.hooks = vec![(HookType::PreRequest, 100)];
    w.route = Some("/mine");
    w
}

fn app(j: &Journal) -> Recorder {
    let mut a = Recorder::new("app", j);
    a.route = Some("/x");
    a
}

#[tokio::test]
async fn a_hook_without_intercept_sees_only_its_own_routes() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let yaml = "plugins:\n  plugins:\n    - name: watcher\n      permissions: [router]\n";
    let (host, _dir) = start(
        yaml,
        vec![
            (manifest_with("watcher", "router", ""), watcher(&j)),
            (manifest_with("app", "router", ""), app(&j)),
        ],
    )
    .await;
    assert_eq!(get(&host, "/plugins/app/x").await.status, 200);
    assert_eq!(get(&host, "/anywhere").await.status, 404);
    assert_eq!(seen(&j, "watcher"), 0, "{:?}", j.lock());
    assert_eq!(get(&host, "/plugins/watcher/mine").await.status, 200);
    assert_eq!(seen(&j, "watcher"), 1, "{:?}", j.lock());
    host.shutdown().await;
}

#[tokio::test]
async fn intercept_scoped_to_paths_sees_those_paths_and_its_own() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let yaml = "plugins:\n  plugins:\n    - name: watcher\n      permissions: [router, intercept]\n      intercept: { paths: ['/plugins/app/*'] }\n";
    let mut other = Recorder::new("other", &j);
    other.route = Some("/y");
    let (host, _dir) = start(
        yaml,
        vec![
            (
                manifest_with("watcher", "router, intercept", ""),
                watcher(&j),
            ),
            (manifest_with("app", "router", ""), app(&j)),
            (manifest_with("other", "router", ""), other),
        ],
    )
    .await;
    get(&host, "/plugins/app/x").await;
    assert_eq!(seen(&j, "watcher"), 1);
    get(&host, "/plugins/other/y").await;
    get(&host, "/plugins/appendix").await;
    assert_eq!(seen(&j, "watcher"), 1, "outside its scope: {:?}", j.lock());
    get(&host, "/plugins/watcher/mine").await;
    assert_eq!(seen(&j, "watcher"), 2);
    let info = host.plugin_info("watcher").unwrap();
    assert!(
        info.permissions
            .contains(&plugd_core::Permission::Intercept)
    );
    host.shutdown().await;
}

#[tokio::test]
async fn asking_to_intercept_without_the_grant_fails_at_load_naming_the_key() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    // The manifest asks for `intercept`; the operator grants only `router`.
    let yaml = "plugins:\n  plugins:\n    - name: app\n      permissions: [router]\n    - name: watcher\n      permissions: [router]\n";
    let (host, _dir) = start(
        yaml,
        vec![
            (manifest_with("app", "router", ""), app(&j)),
            (
                manifest_with("watcher", "router, intercept", ""),
                watcher(&j),
            ),
        ],
    )
    .await;
    let info = host.plugin_info("watcher").unwrap();
    assert_eq!(info.status, Status::Error);
    let message = info.last_error.unwrap().message;
    assert!(message.contains("pre_request"), "{message}");
    assert!(
        message.contains("needs the 'intercept' permission (a plugd addition)"),
        "{message}"
    );
    assert!(
        message.contains("plugins.plugins[1].permissions.intercept: true"),
        "{message}"
    );
    // The others run, and nothing intercepts them.
    let r = get(&host, "/plugins/app/x").await;
    assert_eq!(
        r.status,
        200,
        "{} {:?}",
        String::from_utf8_lossy(&r.body),
        host.plugin_info("app").unwrap().last_error
    );
    assert_eq!(seen(&j, "watcher"), 0);
    host.shutdown().await;
}

#[tokio::test]
async fn middleware_beyond_its_own_routes_needs_intercept() {
    for (globs, ok) in [
        (&["/plugins/mw/*"][..], true),
        (&[][..], false),
        (&["/plugins/*"][..], false),
        (&["/plugins/mwx/*"][..], false),
    ] {
        let j: Journal = Arc::new(Mutex::new(Vec::new()));
        let mut mw = Recorder::new("mw", &j);
        mw.middleware = Some((100, globs));
        let yaml = "plugins:\n  plugins:\n    - name: mw\n      permissions: [router]\n";
        let (host, _dir) = start(
            yaml,
            vec![(manifest_with("mw", "router, intercept", ""), mw)],
        )
        .await;
        let info = host.plugin_info("mw").unwrap();
        assert_eq!(info.status == Status::Running, ok, "{globs:?}: {info:?}");
        if !ok {
            let message = info.last_error.unwrap().message;
            assert!(message.contains("middleware 'mw'"), "{message}");
            assert!(message.contains("'intercept' permission"), "{message}");
        }
        host.shutdown().await;
    }
}

#[tokio::test]
async fn a_fail_closed_guard_that_never_initialized_still_answers_503_on_its_scope() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut guard = Recorder::new("guard", &j);
    guard.fail_init = true;
    let yaml = "plugins:\n  plugins:\n    - name: guard\n      permissions: [intercept]\n      intercept: { paths: ['/plugins/app/*'] }\n      failure_policy: closed\n";
    let (host, _dir) = start(
        yaml,
        vec![
            // Its hook is declared in its manifest; init fails before it could register more.
            (
                manifest_with(
                    "guard",
                    "intercept",
                    "hooks:\n  - { type: pre_request, priority: 300 }\n",
                ),
                guard,
            ),
            (manifest_with("app", "router", ""), app(&j)),
        ],
    )
    .await;
    assert_eq!(host.plugin_info("guard").unwrap().status, Status::Error);
    let r = get(&host, "/plugins/app/x").await;
    assert_eq!(r.status, 503);
    assert!(
        !j.lock().iter().any(|e| e == "app:handle /x"),
        "{:?}",
        j.lock()
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_manifest_can_ask_to_fail_closed_and_the_config_cannot_loosen_it() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut guard = Recorder::new("guard", &j);
    guard.hooks = vec![(HookType::PreRequest, 300)];
    guard.fail_hook = true;
    let yaml = "plugins:\n  plugins:\n    - name: guard\n      permissions: [intercept]\n      failure_policy: fail_open\n";
    let (host, _dir) = start(
        yaml,
        vec![
            (
                manifest_with("guard", "intercept", "failure_policy: closed\n"),
                guard,
            ),
            (manifest_with("app", "router", ""), app(&j)),
        ],
    )
    .await;
    let r = get(&host, "/plugins/app/x").await;
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("x-request-id"));
    host.shutdown().await;
}

/// Registers two routes the router cannot tell apart.
struct Conflicted;

#[async_trait::async_trait]
impl plugd_core::Plugin for Conflicted {
    async fn init(
        &self,
        ctx: &mut plugd_core::InitContext<'_>,
    ) -> Result<(), plugd_core::PluginError> {
        let f = |e: plugd_core::HostError| plugd_core::PluginError::Failed(e.to_string());
        ctx.register_route("GET", "/{a}", Default::default())
            .map_err(f)?;
        ctx.register_route("POST", "/{b}", Default::default())
            .map_err(f)
    }
}

/// One plugin's conflicting routes used to keep the whole dispatch table from being built (no
/// plugin routed at all); now that plugin alone fails to load.
#[tokio::test]
async fn conflicting_routes_fail_their_plugin_only() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest_with("app", "router", ""), app(&j))
        .native(manifest_with("conflicted", "router", ""), Conflicted)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let info = host.plugin_info("conflicted").unwrap();
    assert_eq!(info.status, Status::Error);
    let message = info.last_error.unwrap().message;
    assert!(message.contains("cannot be routed"), "{message}");
    assert_eq!(get(&host, "/plugins/app/x").await.status, 200);
    host.shutdown().await;
}
