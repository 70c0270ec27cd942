//! Error thresholds (docs/design.md#failure-handling): the 95% warning, the exceeded line, and the
//! actions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{DisabledBy, ERROR_THRESHOLD_TOPIC, Exchange, HookType, Host, Status};
use plugd_manifest::{ErrorThreshold, ThresholdAction};

use crate::{Journal, Logs, Recorder, config, eventually, manifest};

/// A host with a plugin "flaky" (route /x, fails while told to) under `threshold`, and a plugin
/// "app" with a route of its own.
async fn host(j: &Journal, threshold: &str, flaky: Recorder) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Recorder::new("app", j);
    app.route = Some("/x");
    let host = Host::builder()
        .config(config(
            dir.path(),
            &format!(
                "plugins:\n  error_threshold: {threshold}\n  supervision: {{ backoff_initial: 10ms, backoff_max: 50ms }}\n  plugins: []\n"
            ),
        ))
        .native(manifest("flaky", ""), flaky)
        .native(manifest("app", ""), app)
        .build()
        .unwrap();
    host.start().await.unwrap();
    (host, dir)
}

fn flaky(j: &Journal) -> Recorder {
    let mut f = Recorder::new("flaky", j);
    f.route = Some("/x");
    f.fail_route.store(true, Ordering::SeqCst);
    f
}

async fn get(host: &Host, path: &str) -> plugd_core::Response {
    host.dispatcher()
        .handle(Exchange::new(Method::GET, path))
        .await
}

#[tokio::test]
async fn threshold_lines_at_95_percent_and_at_the_maximum_and_log_keeps_it_running() {
    let (logs, _guard) = Logs::capture();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let (host, _dir) = host(
        &j,
        "{ enabled: true, max_errors: 20, time_window: 5m, action: log }",
        flaky(&j),
    )
    .await;
    for i in 1..=25 {
        let r = get(&host, "/plugins/flaky/x").await;
        assert_eq!(r.status, 500, "request {i} reaches the failing handler");
    }
    assert_eq!(
        logs.count(
            "WARN",
            "Plugin flaky approaching error threshold: 19/20 errors in 5m"
        ),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(
        logs.count(
            "ERROR",
            "Plugin flaky exceeded error threshold: 20/20 errors in 5m"
        ),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(logs.count("WARN", "approaching error threshold"), 1);
    assert_eq!(logs.count("ERROR", "exceeded error threshold"), 1);
    let info = host.plugin_info("flaky").unwrap();
    assert_eq!(info.status, Status::Running, "action log only logs");
    assert_eq!(info.error_count, 25);
    let t = info.threshold;
    assert_eq!((t.errors_in_window, t.max_errors, t.trips), (25, 20, 1));
    assert!(t.warning && t.exceeded);
    assert_eq!(t.action, ThresholdAction::Log);
    assert!(t.last_trip.is_some());
    assert!(
        host.render_metrics()
            .contains("plugd_plugin_errors_in_window{plugin=\"flaky\"} 25\n")
    );
    assert_eq!(logs.count("INFO", "automatically disabled"), 0);
    host.shutdown().await;
}

#[tokio::test]
async fn disable_unroutes_the_plugin_stops_its_work_and_supervision_leaves_it_alone() {
    let (logs, _guard) = Logs::capture();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut f = flaky(&j);
    f.hooks = vec![(HookType::PreRequest, 100)];
    f.timer = Some(Duration::from_millis(10));
    f.background = true;
    let fail_route = f.fail_route.clone();
    let (host, _dir) = host(
        &j,
        "{ enabled: true, max_errors: 3, time_window: 1m, action: disable }",
        f,
    )
    .await;
    for _ in 0..3 {
        get(&host, "/plugins/flaky/x").await;
    }
    eventually("flaky disabled", || {
        host.plugin_info("flaky").unwrap().status == Status::Disabled
    })
    .await;
    eventually("the disabled line", || {
        logs.count(
            "INFO",
            "Plugin flaky automatically disabled due to error threshold",
        ) == 1
    })
    .await;
    assert_eq!(
        logs.count(
            "ERROR",
            "Plugin flaky exceeded error threshold: 3/3 errors in 1m"
        ),
        1
    );
    let info = host.plugin_info("flaky").unwrap();
    assert_eq!(info.disabled_by, Some(DisabledBy::ErrorThreshold));
    // Stopped and cleaned up; its timer and background task are gone.
    assert!(j.lock().iter().any(|e| e == "flaky:stop"));
    assert!(j.lock().iter().any(|e| e == "flaky:cleanup"));
    let work = || {
        j.lock()
            .iter()
            .filter(|e| *e == "flaky:bg" || *e == "flaky:tick beat")
            .count()
    };
    let before = work();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(work(), before, "no tick or background work after disable");

    // Routes answer 503; its hook is skipped (fail_open); the others serve.
    let r = get(&host, "/plugins/flaky/x").await;
    assert_eq!(r.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("plugin 'flaky' is not running (status: disabled)"),
        "{message}"
    );
    let hooks_before = j
        .lock()
        .iter()
        .filter(|e| *e == "flaky:pre_request")
        .count();
    assert_eq!(get(&host, "/plugins/app/x").await.status, 200);
    let hooks_after = j
        .lock()
        .iter()
        .filter(|e| *e == "flaky:pre_request")
        .count();
    assert_eq!(
        hooks_before, hooks_after,
        "a disabled plugin's hooks are skipped"
    );

    // Supervision (10 ms backoff) does not restart a plugin its threshold disabled.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = host.plugin_info("flaky").unwrap();
    assert_eq!(info.status, Status::Disabled);
    assert_eq!(info.supervision.restarts, 0);
    let summary = host.health_summary();
    assert_eq!(summary.status, "degraded");

    // The operator enables it again: a new window, and it serves.
    fail_route.store(false, Ordering::SeqCst);
    host.enable_plugin("flaky").await.unwrap();
    let info = host.plugin_info("flaky").unwrap();
    assert_eq!(info.status, Status::Running);
    assert_eq!(info.disabled_by, None);
    assert_eq!(info.threshold.errors_in_window, 0);
    assert_eq!(get(&host, "/plugins/flaky/x").await.status, 200);
    host.shutdown().await;
}

#[tokio::test]
async fn alert_publishes_an_event_and_keeps_the_plugin_running() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut watcher = Recorder::new("watcher", &j);
    watcher.subscribe = Some(ERROR_THRESHOLD_TOPIC);
    let events = watcher.events.clone();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  plugins:\n    - name: flaky\n      permissions: { router: true }\n      error_threshold: { enabled: true, max_errors: 4, time_window: 2m, action: alert }\n",
        ))
        .native(manifest("flaky", ""), flaky(&j))
        .native(
            manifest(
                "watcher",
                &format!("events:\n  subscribes: ['{ERROR_THRESHOLD_TOPIC}']\n"),
            ),
            watcher,
        )
        .build()
        .unwrap();
    host.start().await.unwrap();
    for _ in 0..4 {
        get(&host, "/plugins/flaky/x").await;
    }
    eventually("the alert event", || events.lock().len() == 1).await;
    let event = events.lock()[0].clone();
    assert_eq!(event.topic, ERROR_THRESHOLD_TOPIC);
    assert_eq!(event.source, "", "published by the host");
    let payload: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(payload["plugin"], "flaky");
    assert_eq!(payload["errors"], 4);
    assert_eq!(payload["max"], 4);
    assert_eq!(payload["window"], "2m");
    assert_eq!(
        logs.count(
            "ERROR",
            "Plugin flaky exceeded error threshold: 4/4 errors in 2m"
        ),
        1
    );
    assert_eq!(
        logs.count(
            "WARN",
            "Plugin flaky error threshold alert published on plugd.plugin.error_threshold"
        ),
        1
    );
    assert_eq!(host.plugin_info("flaky").unwrap().status, Status::Running);
    // The global threshold (disabled) applies to the plugin without a block of its own.
    assert!(!host.plugin_info("watcher").unwrap().threshold.enabled);
    host.shutdown().await;
}

#[tokio::test]
async fn reset_on_success_resets_the_count_and_without_it_errors_add_up() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let f = flaky(&j);
    let fail = f.fail_route.clone();
    let (host, _dir) = host(
        &j,
        "{ enabled: true, max_errors: 3, time_window: 10m, action: log, reset_on_success: true }",
        f,
    )
    .await;
    for _ in 0..5 {
        fail.store(true, Ordering::SeqCst);
        get(&host, "/plugins/flaky/x").await;
        get(&host, "/plugins/flaky/x").await;
        assert_eq!(
            host.plugin_info("flaky")
                .unwrap()
                .threshold
                .errors_in_window,
            2
        );
        fail.store(false, Ordering::SeqCst);
        assert_eq!(get(&host, "/plugins/flaky/x").await.status, 200);
        assert_eq!(
            host.plugin_info("flaky")
                .unwrap()
                .threshold
                .errors_in_window,
            0,
            "a success resets"
        );
    }
    let info = host.plugin_info("flaky").unwrap();
    assert_eq!((info.error_count, info.threshold.trips), (10, 0));

    // The same calls without reset_on_success trip the threshold.
    host.set_error_threshold(
        "flaky",
        ErrorThreshold {
            enabled: true,
            max_errors: 3,
            time_window: Duration::from_secs(600),
            action: ThresholdAction::Log,
            reset_on_success: false,
        },
    )
    .unwrap();
    for _ in 0..2 {
        fail.store(true, Ordering::SeqCst);
        get(&host, "/plugins/flaky/x").await;
        get(&host, "/plugins/flaky/x").await;
        fail.store(false, Ordering::SeqCst);
        get(&host, "/plugins/flaky/x").await;
    }
    let t = host.plugin_info("flaky").unwrap().threshold;
    assert_eq!((t.errors_in_window, t.trips), (4, 1));
    let err = host
        .set_error_threshold(
            "flaky",
            ErrorThreshold {
                max_errors: 0,
                ..ErrorThreshold::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "error threshold of plugin 'flaky': max_errors must be at least 1"
    );
    assert!(
        host.set_error_threshold("nope", ErrorThreshold::default())
            .is_err()
    );
    host.shutdown().await;
}

#[tokio::test]
async fn errors_leave_the_window() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let (host, _dir) = host(
        &j,
        "{ enabled: true, max_errors: 3, time_window: 300ms, action: disable }",
        flaky(&j),
    )
    .await;
    get(&host, "/plugins/flaky/x").await;
    get(&host, "/plugins/flaky/x").await;
    eventually("the window empties", || {
        host.plugin_info("flaky")
            .unwrap()
            .threshold
            .errors_in_window
            == 0
    })
    .await;
    // Two more: four errors in all, but never three in one window.
    get(&host, "/plugins/flaky/x").await;
    get(&host, "/plugins/flaky/x").await;
    let info = host.plugin_info("flaky").unwrap();
    assert_eq!(info.error_count, 4);
    assert_eq!(info.threshold.trips, 0);
    assert_eq!(info.status, Status::Running);
    host.shutdown().await;
}

#[tokio::test]
async fn hook_errors_count_against_the_threshold() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut f = Recorder::new("flaky", &j);
    f.hooks = vec![(HookType::PreRequest, 100)];
    f.fail_hook = true;
    let (host, _dir) = host(
        &j,
        "{ enabled: true, max_errors: 100, time_window: 10m }",
        f,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(&host, "/plugins/app/x").await.status, 200);
    }
    let t = host.plugin_info("flaky").unwrap().threshold;
    assert_eq!(t.errors_in_window, 3, "hook errors count");
    host.shutdown().await;
}
