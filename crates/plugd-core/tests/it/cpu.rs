//! CPU budgets (`limits.max_cpu_percent`): a plugin over its budget in one window is throttled
//! for the next, per its failure policy, then recovers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use parking_lot::Mutex;
use plugd_core::{Exchange, HookType, Host, Response};

use crate::{Journal, Recorder, config, manifest};

async fn get(host: &Host, path: &str) -> Response {
    host.dispatcher()
        .handle(Exchange::new(Method::GET, path))
        .await
}

/// Make `arm` spend the plugin's budget, then call `probe` until it returns `Some`; re-arm every
/// 3 s in case a stalled machine let the throttled window pass unseen. Gives up after 30 s.
async fn observe<T>(mut arm: impl AsyncFnMut(), mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        arm().await;
        let rearm = Instant::now() + Duration::from_secs(3);
        while Instant::now() < rearm {
            if let Some(t) = probe().await {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    panic!("never observed");
}

#[tokio::test]
async fn routes_of_a_plugin_over_its_budget_answer_503_then_recover() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut hog = Recorder::new("hog", &j);
    hog.route = Some("/x");
    let busy = hog.busy.clone();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  plugins:\n    - name: hog\n      permissions: { router: true }\n      limits: { max_cpu_percent: 50 }\n",
        ))
        .native(manifest("hog", ""), hog)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let message = observe(
        async || {
            // 600 ms inside one call: 60% of a 1 s window.
            *busy.lock() = Some(Duration::from_millis(600));
            get(&host, "/plugins/hog/x").await;
        },
        async || {
            let r = get(&host, "/plugins/hog/x").await;
            (r.status == 503).then(|| {
                assert_eq!(
                    r.headers.get("retry-after").map(|v| v.as_bytes()),
                    Some(&b"1"[..]),
                    "{r:?}"
                );
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                body["message"].as_str().unwrap().to_string()
            })
        },
    )
    .await;
    let used: u64 = message
        .strip_prefix("plugin 'hog' is throttled: used ")
        .and_then(|m| m.strip_suffix("% CPU, budget 50%"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    assert!(used > 50, "{message}");
    let info = host.plugin_info("hog").unwrap();
    assert!(info.cpu.throttled_windows >= 1);
    assert_eq!(info.cpu.max_cpu_percent, Some(50));
    assert_eq!(
        host.health_summary().plugins["hog"].status,
        plugd_core::Status::Running,
        "throttling is not a status"
    );
    let metrics = host.render_metrics();
    assert!(
        metrics.contains("plugd_plugin_cpu_throttled_seconds_total{plugin=\"hog\"} "),
        "{metrics}"
    );
    // The next window is idle: it serves again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if get(&host, "/plugins/hog/x").await.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!host.plugin_info("hog").unwrap().cpu.throttled);
    host.shutdown().await;
}

/// A hook plugin "guard" with a budget of 50% and `policy`, in front of a route of "app".
async fn guarded(
    policy: &str,
) -> (
    Host,
    Journal,
    Arc<Mutex<Option<Duration>>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut guard = Recorder::new("guard", &j);
    guard.hooks = vec![(HookType::PreRequest, 300)];
    let busy = guard.busy.clone();
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    let host = Host::builder()
        .config(config(
            dir.path(),
            &format!(
                "plugins:\n  plugins:\n    - name: guard\n      failure_policy: {policy}\n      permissions: [intercept]\n      limits: {{ max_cpu_percent: 50 }}\n"
            ),
        ))
        .native(manifest("guard", ""), guard)
        .native(manifest("app", ""), app)
        .build()
        .unwrap();
    host.start().await.unwrap();
    (host, j, busy, dir)
}

#[tokio::test]
async fn a_throttled_fail_open_hook_is_skipped() {
    let (host, j, busy, _dir) = guarded("fail_open").await;
    let calls = || {
        j.lock()
            .iter()
            .filter(|e| *e == "guard:pre_request")
            .count()
    };
    observe(
        async || {
            *busy.lock() = Some(Duration::from_millis(600));
            get(&host, "/plugins/app/x").await;
        },
        async || {
            let before = calls();
            let r = get(&host, "/plugins/app/x").await;
            assert_eq!(r.status, 200, "fail_open: the request goes on");
            (calls() == before).then_some(())
        },
    )
    .await;
    assert!(host.plugin_info("guard").unwrap().cpu.throttled_windows >= 1);
    host.shutdown().await;
}

#[tokio::test]
async fn a_throttled_fail_closed_hook_answers_503() {
    let (host, _j, busy, _dir) = guarded("fail_closed").await;
    let message = observe(
        async || {
            *busy.lock() = Some(Duration::from_millis(600));
            get(&host, "/plugins/app/x").await;
        },
        async || {
            let r = get(&host, "/plugins/app/x").await;
            (r.status == 503).then(|| {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                body["message"].as_str().unwrap().to_string()
            })
        },
    )
    .await;
    assert!(
        message.starts_with("plugin 'guard' is throttled: used ")
            && message.ends_with("% CPU, budget 50%"),
        "{message}"
    );
    host.shutdown().await;
}
