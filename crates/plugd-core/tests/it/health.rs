//! Health polling: the plugins' own answers, stored and shown, never acted on.

use std::sync::Arc;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{Exchange, Health, Host, Status};

use crate::{Journal, Recorder, config, eventually, manifest};

#[tokio::test]
async fn polling_stores_an_unhealthy_report_without_stopping_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut sick = Recorder::new("sick", &j);
    sick.route = Some("/x");
    *sick.health.lock() = Some(Health::Unhealthy("database unreachable".into()));
    let health = sick.health.clone();
    let fine = Recorder::new("fine", &j);
    *fine.health.lock() = Some(Health::Healthy);
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  health_check_interval: 50ms\n  plugins: []\n",
        ))
        .native(manifest("sick", ""), sick)
        .native(manifest("fine", ""), fine)
        .build()
        .unwrap();
    host.start().await.unwrap();
    eventually("a stored report", || {
        host.plugin_info("sick").unwrap().health.is_some()
    })
    .await;
    let info = host.plugin_info("sick").unwrap();
    let report = info.health.unwrap();
    assert_eq!(
        report.health,
        Health::Unhealthy("database unreachable".into())
    );
    assert!(report.checked_at.ends_with('Z'));
    assert_eq!(info.status, Status::Running, "shown, not stopped");
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/sick/x"))
        .await;
    assert_eq!(r.status, 200, "an unhealthy plugin keeps serving");

    let all = host.all_health().await;
    assert_eq!(
        all["sick"].reported,
        Some(Health::Unhealthy("database unreachable".into()))
    );
    assert!(all["sick"].checked_at.is_some());
    eventually("fine polled", || {
        host.health_summary().plugins["fine"].health == Some("healthy")
    })
    .await;
    let summary = host.health_summary();
    assert_eq!(summary.status, "degraded");
    assert_eq!(summary.plugins["sick"].health, Some("unhealthy"));
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["plugins"]["sick"]["health"], "unhealthy");
    assert_eq!(json["plugins"]["sick"]["status"], "running");
    assert!(
        host.render_metrics()
            .contains("plugd_plugin_health{plugin=\"sick\",state=\"unhealthy\"} 1\n")
    );

    // It recovers; the next poll says so.
    *health.lock() = Some(Health::Healthy);
    eventually("healthy again", || host.health_summary().status == "ok").await;
    let json = serde_json::to_value(host.plugin_info("sick").unwrap()).unwrap();
    assert_eq!(json["health"]["state"], "healthy");
    assert!(json["health"]["checked_at"].is_string());
    host.shutdown().await;
}

#[tokio::test]
async fn health_json_has_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  limits: { max_cpu_percent: 40 }\n  plugins: []\n",
        ))
        .native(manifest("p", ""), Recorder::new("p", &j))
        .build()
        .unwrap();
    host.start().await.unwrap();
    let h = serde_json::to_value(host.plugin_health("p").await.unwrap()).unwrap();
    assert_eq!(h["status"], "running");
    assert_eq!(h["reported"]["state"], "degraded");
    assert_eq!(h["reported"]["message"], "p is fine-ish");
    for key in [
        "phase",
        "disabled_by",
        "error_count",
        "last_error",
        "hook_metrics",
        "route_metrics",
        "checked_at",
        "threshold",
        "supervision",
        "cpu",
    ] {
        assert!(h.get(key).is_some(), "missing {key} in {h}");
    }
    assert_eq!(h["threshold"]["enabled"], false);
    assert_eq!(h["threshold"]["time_window"], "5m");
    assert_eq!(h["supervision"]["enabled"], true);
    assert_eq!(h["supervision"]["max_restarts"], 5);
    assert_eq!(h["cpu"]["max_cpu_percent"], 40);
    assert_eq!(h["cpu"]["throttled"], false);
    let info = serde_json::to_value(host.plugin_info("p").unwrap()).unwrap();
    for key in ["health", "threshold", "supervision", "cpu", "disabled_by"] {
        assert!(info.get(key).is_some(), "missing {key} in {info}");
    }
    host.shutdown().await;
}
