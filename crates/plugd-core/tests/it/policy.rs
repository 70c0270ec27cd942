//! Failure policies: `fail_open` (the default) skips a failing plugin's hooks and middleware;
//! `fail_closed` answers 503 for whatever it handles.

use std::sync::Arc;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{Exchange, HookType, Host, Response, Status};
use plugd_manifest::FailurePolicy;

use crate::{Journal, Recorder, config, manifest};

async fn host(entry: &str, guard: Recorder, j: &Journal) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Recorder::new("app", j);
    app.route = Some("/x");
    let host = Host::builder()
        .config(config(
            dir.path(),
            &format!("plugins:\n  supervision: {{ enabled: false }}\n  plugins:\n{entry}"),
        ))
        .native(manifest("guard", ""), guard)
        .native(manifest("app", ""), app)
        .build()
        .unwrap();
    host.start().await.unwrap();
    (host, dir)
}

async fn get(host: &Host) -> Response {
    host.dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/app/x"))
        .await
}

fn message(r: &Response) -> String {
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    body["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn fail_open_is_the_default() {
    assert_eq!(FailurePolicy::default(), FailurePolicy::FailOpen);
    let c = config(
        std::path::Path::new("/tmp"),
        "plugins:\n  plugins:\n    - name: a\n",
    );
    assert_eq!(
        c.plugin("a").unwrap().failure_policy,
        FailurePolicy::FailOpen
    );
}

#[tokio::test]
async fn a_failing_hook_is_skipped_under_fail_open_and_answers_503_under_fail_closed() {
    for (policy, status) in [("fail_open", 200), ("fail_closed", 503)] {
        let j: Journal = Arc::new(Mutex::new(Vec::new()));
        let mut guard = Recorder::new("guard", &j);
        guard.hooks = vec![(HookType::PreRequest, 300)];
        guard.fail_hook = true;
        let (host, _dir) = host(
            &format!("    - name: guard\n      failure_policy: {policy}\n      permissions: {{ router: true, intercept: true }}\n"),
            guard,
            &j,
        )
        .await;
        let r = get(&host).await;
        assert_eq!(r.status, status, "{policy}");
        if status == 503 {
            // The client learns who failed and a request id, never the plugin's own text.
            assert!(
                message(&r).starts_with(
                    "plugin 'guard' failed (its pre_request hook could not check the request); request id "
                ),
                "{}",
                message(&r)
            );
            assert!(!message(&r).contains("hook refused"));
            assert!(!j.lock().iter().any(|e| e == "app:handle /x"));
        } else {
            assert!(j.lock().iter().any(|e| e == "app:handle /x"));
        }
        assert_eq!(host.plugin_info("guard").unwrap().error_count, 1);
        host.shutdown().await;
    }
}

#[tokio::test]
async fn a_failing_middleware_follows_the_policy_too() {
    for (policy, status) in [("fail_open", 200), ("fail_closed", 503)] {
        let j: Journal = Arc::new(Mutex::new(Vec::new()));
        let mut guard = Recorder::new("guard", &j);
        guard.middleware = Some((100, &[]));
        guard.fail_hook = true;
        let (host, _dir) = host(
            &format!("    - name: guard\n      failure_policy: {policy}\n      permissions: {{ router: true, intercept: true }}\n"),
            guard,
            &j,
        )
        .await;
        let r = get(&host).await;
        assert_eq!(r.status, status, "{policy}");
        if status == 503 {
            assert!(
                message(&r).starts_with(
                    "plugin 'guard' failed (its middleware could not check the request); request id "
                ),
                "{}",
                message(&r)
            );
        }
        assert!(
            !j.lock().iter().any(|e| e == "guard:mw response"),
            "a middleware that failed gets no on_response"
        );
        assert_eq!(host.plugin_info("guard").unwrap().error_count, 1);
        host.shutdown().await;
    }
}

#[tokio::test]
async fn a_plugin_in_error_is_skipped_under_fail_open_and_answers_503_under_fail_closed() {
    for (policy, status) in [("fail_open", 200), ("fail_closed", 503)] {
        let j: Journal = Arc::new(Mutex::new(Vec::new()));
        let mut guard = Recorder::new("guard", &j);
        guard.hooks = vec![(HookType::PreRequest, 300)];
        guard.fail_start = true;
        let (host, _dir) = host(
            &format!("    - name: guard\n      failure_policy: {policy}\n      permissions: {{ router: true, intercept: true }}\n"),
            guard,
            &j,
        )
        .await;
        assert_eq!(host.plugin_info("guard").unwrap().status, Status::Error);
        let r = get(&host).await;
        assert_eq!(r.status, status, "{policy}");
        if status == 503 {
            assert!(
                message(&r).starts_with("plugin 'guard' is not running (status: error)"),
                "{}",
                message(&r)
            );
        }
        assert!(
            !j.lock().iter().any(|e| e == "guard:pre_request"),
            "a failed plugin's hook never runs"
        );
        host.shutdown().await;
    }
}
