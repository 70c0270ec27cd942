//! Plugin routes where the operator mounts them (`mount:` in a plugin's config entry): under a
//! prefix of the operator's choice or at top level; conflicts put only the later plugin in
//! `error`, every other plugin's routes stay served. And the `error` hooks run for every kind of
//! failure: a hook, a middleware, a handler.

use std::sync::Arc;

use parking_lot::Mutex;
use plugd_core::{HookType, Status};

use crate::{Journal, Recorder, get, manifest_with, start_natives as start};

fn routed(
    name: &'static str,
    route: &'static str,
    j: &Journal,
) -> (plugd_manifest::Manifest, Recorder) {
    let mut r = Recorder::new(name, j);
    r.route = Some(route);
    (manifest_with(name, "router", ""), r)
}

#[tokio::test]
async fn a_plugin_is_served_at_the_prefix_and_at_top_level_the_operator_chose() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let yaml = "plugins:\n  plugins:\n    - name: reports\n      permissions: [router]\n      mount: /api/v1/reports\n    - name: login\n      permissions: [router]\n      mount: /\n";
    let (host, _dir) = start(
        yaml,
        vec![
            routed("reports", "/daily", &j),
            routed("login", "/api/login", &j),
            routed("hello", "/greet", &j),
        ],
    )
    .await;
    let r = get(&host, "/api/v1/reports/daily").await;
    assert_eq!(
        r.status,
        200,
        "{:?} {:?}",
        String::from_utf8_lossy(&r.body),
        host.plugin_info("reports").unwrap().last_error
    );
    assert_eq!(
        get(&host, "/plugins/reports/daily").await.status,
        404,
        "not at the default mount any more"
    );
    assert_eq!(get(&host, "/api/login").await.status, 200);
    assert_eq!(get(&host, "/plugins/login/api/login").await.status, 404);
    assert_eq!(
        get(&host, "/plugins/hello/greet").await.status,
        200,
        "the default mount stays"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_route_conflict_puts_only_the_later_plugin_in_error() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    // Both at top level, both routing /status: the first in start order keeps it.
    let yaml = "plugins:\n  plugins:\n    - name: first\n      permissions: [router]\n      mount: /\n    - name: second\n      permissions: [router]\n      mount: /\n      after: [first]\n";
    let (host, _dir) = start(
        yaml,
        vec![
            routed("first", "/status", &j),
            routed("second", "/status", &j),
            routed("hello", "/greet", &j),
        ],
    )
    .await;
    let r = get(&host, "/status").await;
    assert_eq!(r.status, 200);
    assert!(
        j.lock().iter().any(|e| e == "first:handle /status"),
        "{:?}",
        j.lock()
    );
    assert!(!j.lock().iter().any(|e| e == "second:handle /status"));
    assert_eq!(
        get(&host, "/plugins/hello/greet").await.status,
        200,
        "others are served"
    );
    let second = host.plugin_info("second").unwrap();
    assert_eq!(second.status, Status::Error);
    let error = second.last_error.unwrap().message;
    assert!(
        error.contains("route /status conflicts with route /status of plugin 'first'"),
        "{error}"
    );
    assert_eq!(host.plugin_info("first").unwrap().status, Status::Running);
    host.shutdown().await;
}

#[tokio::test]
async fn two_plugins_at_one_prefix_and_a_route_over_a_host_path_are_refused_with_the_reason() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let yaml = "plugins:\n  plugins:\n    - name: a\n      permissions: [router]\n      mount: /shop\n    - name: b\n      permissions: [router]\n      mount: /shop\n      after: [a]\n    - name: c\n      permissions: [router]\n      mount: /\n";
    let (host, _dir) = start(
        yaml,
        vec![
            routed("a", "/cart", &j),
            routed("b", "/basket", &j),
            routed("c", "/metrics", &j),
        ],
    )
    .await;
    assert_eq!(get(&host, "/shop/cart").await.status, 200);
    assert_eq!(get(&host, "/shop/basket").await.status, 404);
    let b = host.plugin_info("b").unwrap();
    assert_eq!(b.status, Status::Error);
    assert!(
        b.last_error
            .unwrap()
            .message
            .contains("its mount /shop is plugin 'a''s already"),
    );
    let c = host.plugin_info("c").unwrap();
    assert_eq!(c.status, Status::Error);
    let why = c.last_error.unwrap().message;
    assert!(
        why.contains("route GET /metrics is under /metrics, which the host serves itself"),
        "{why}"
    );
    host.shutdown().await;
}

#[test]
fn a_mount_is_checked_when_the_config_is_read() {
    for (mount, why) in [
        ("api", "does not start with '/'"),
        ("/api/", "ends with '/'"),
        ("/a//b", "empty"),
        ("/a/{id}", "holds '{'"),
        ("/admin/plugins", "which the host serves itself"),
    ] {
        let yaml = format!("plugins:\n  plugins:\n    - name: x\n      mount: '{mount}'\n");
        let e = plugd_manifest::HostConfig::from_str(&yaml, plugd_manifest::Format::Yaml, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plugins.plugins[0].mount") && e.contains(why),
            "{mount}: {e}"
        );
    }
}

fn error_hook(j: &Journal) -> (plugd_manifest::Manifest, Recorder) {
    let mut r = Recorder::new("errors", j);
    r.hooks = vec![(HookType::Error, 0)];
    (manifest_with("errors", "router, intercept", ""), r)
}

#[tokio::test]
async fn the_error_hook_runs_for_a_failing_hook_a_failing_middleware_and_a_failing_handler() {
    let yaml = "plugins:\n  plugins:\n    - name: errors\n      permissions: [router, intercept]\n    - name: flaky\n      permissions: [router, intercept]\n";
    for failing in ["hook", "middleware", "handler"] {
        let j: Journal = Arc::new(Mutex::new(Vec::new()));
        let mut flaky = Recorder::new("flaky", &j);
        flaky.route = Some("/x");
        match failing {
            "hook" => {
                flaky.hooks = vec![(HookType::PreRequest, 10)];
                flaky.fail_hook = true;
            }
            "middleware" => {
                flaky.middleware = Some((10, &["/plugins/flaky/*"]));
                flaky.fail_hook = true;
            }
            _ => flaky
                .fail_route
                .store(true, std::sync::atomic::Ordering::SeqCst),
        }
        let (host, _dir) = start(
            yaml,
            vec![
                error_hook(&j),
                (manifest_with("flaky", "router, intercept", ""), flaky),
            ],
        )
        .await;
        get(&host, "/plugins/flaky/x").await;
        let runs = j.lock().iter().filter(|e| *e == "errors:error").count();
        assert_eq!(runs, 1, "{failing}: {:?}", j.lock());
        if failing == "handler" {
            // A request where nothing fails runs no error hook.
            get(&host, "/plugins/errors/none").await;
            let after = j.lock().iter().filter(|e| *e == "errors:error").count();
            assert_eq!(after, 1, "{failing}: {:?}", j.lock());
        }
        host.shutdown().await;
    }
}

#[test]
fn plugd_check_reports_two_plugins_at_one_mount() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        let p = dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("plugin.yaml"),
            format!(
                "name: {name}\nversion: 1.0.0\ndescription: d\nauthor: a\npermissions: [router]\n"
            ),
        )
        .unwrap();
    }
    let yaml = format!(
        "plugins:\n  directory: {}\n  plugins:\n    - name: a\n      permissions: [router]\n      mount: /shop\n    - name: b\n      permissions: [router]\n      mount: /shop\n    - name: c\n      permissions: [router]\n      mount: /plugins/a\n",
        dir.path().display()
    );
    let config =
        plugd_manifest::HostConfig::from_str(&yaml, plugd_manifest::Format::Yaml, None).unwrap();
    let problems = plugd_core::check_config(&config, &plugd_core::NoAdmission)
        .unwrap_err()
        .problems;
    assert_eq!(
        problems,
        [
            "plugin 'b': its mount /shop is plugin 'a''s already (set mount: in one of their entries)"
        ]
    );
    // c at /plugins/a is not a's mount any more (a is at /shop): no problem.
    let mut fixed = config.clone();
    fixed.plugins.plugins[1].mount = Some("/basket".into());
    let report = plugd_core::check_config(&fixed, &plugd_core::NoAdmission).unwrap();
    assert_eq!(report.grants["b"].mount, "/basket");
    assert_eq!(report.grants["c"].requests, ["own routes (/plugins/a/…)"]);
}
