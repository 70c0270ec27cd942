//! Failure handling with wasm plugins over HTTP: error thresholds, supervision, CPU budgets,
//! and how `/healthz` and the admin API show them.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TOKEN, TestServer, example, test_plugin};

fn config(trapper: &str, spinner: &str) -> String {
    format!(
        r#"
data_dir: "{{data}}"
plugins:
  limits:
    timeout: 1s
  plugins:
    - name: hello
      path: "{hello}"
      permissions: {{ router: true }}
    - name: trapper
      path: "{trapper_path}"
      permissions: {{ router: true }}
{trapper}
    - name: spinner
      path: "{spinner_path}"
      permissions: {{ router: true, intercept: true }}
{spinner}
"#,
        hello = example("hello").display(),
        trapper_path = test_plugin("trapper").display(),
        spinner_path = test_plugin("spinner").display(),
    )
}

async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(server: &TestServer, path: &str) -> reqwest::Response {
    server
        .client
        .post(format!("{}{path}", server.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_past_the_threshold_disable_a_wasm_plugin_until_the_operator_enables_it() {
    let server = TestServer::start(&config(
        "      limits: { instances: 1 }\n      error_threshold: { enabled: true, max_errors: 3, time_window: 1m, action: disable }",
        "",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(server.get("/plugins/trapper/trap").await.status(), 500);
    }
    until("trapper disabled", async || {
        server.host.plugin_info("trapper").unwrap().status == plugd::Status::Disabled
    })
    .await;
    let r = server.get("/plugins/trapper/ok").await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("plugin 'trapper' is not running (status: disabled)"),
        "{body}"
    );
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);

    let health: Value = server.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["plugins"]["disabled"], 1);
    assert_eq!(health["checks"]["trapper"]["status"], "disabled");
    assert_eq!(
        health["checks"]["trapper"]["disabled_by"],
        "error_threshold"
    );
    assert_eq!(health["checks"]["trapper"]["errors_in_window"], 3);
    assert_eq!(health["checks"]["hello"]["status"], "running");

    let all: Value = server
        .admin_get("/admin/health")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["status"], "degraded");
    let t = &all["plugins"]["trapper"];
    assert_eq!(t["status"], "disabled");
    assert_eq!(t["threshold"]["trips"], 1);
    assert_eq!(t["threshold"]["max_errors"], 3);
    assert_eq!(t["supervision"]["restarts"], 0, "not restarted");
    assert!(
        t["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("trap")
    );
    let info: Value = server
        .admin_get("/admin/plugins/trapper")
        .await
        .json()
        .await
        .unwrap();
    for key in ["threshold", "supervision", "cpu", "health", "disabled_by"] {
        assert!(info.get(key).is_some(), "missing {key} in {info}");
    }
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("plugd_plugin_error_threshold_trips_total{plugin=\"trapper\"} 1\n"),
        "{metrics}"
    );

    let r = post(&server, "/admin/plugins/trapper/enable").await;
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["status"], "running");
    assert_eq!(info["threshold"]["errors_in_window"], 0);
    assert_eq!(server.get("/plugins/trapper/ok").await.status(), 200);

    assert_eq!(
        post(&server, "/admin/plugins/hello/enable").await.status(),
        409
    );
    assert_eq!(
        post(&server, "/admin/plugins/nobody/enable").await.status(),
        404
    );
    let r = post(&server, "/admin/plugins/hello/disable").await;
    assert_eq!(r.status(), 200);
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 503);
    let r = server
        .client
        .post(format!("{}/admin/plugins/hello/enable", server.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "enable needs the token");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervision_brings_a_wasm_plugin_back_once_its_config_is_fixed() {
    let server = TestServer::start(
        &config(
            "      limits: { instances: 1 }\n      config: { fail_start: true }\n      supervision: { max_restarts: 20, backoff_initial: 100ms, backoff_max: 400ms }",
            "",
        ),
    )
    .await;
    until("a failed restart", async || {
        server
            .host
            .plugin_info("trapper")
            .unwrap()
            .supervision
            .restarts
            >= 1
    })
    .await;
    let info = server.host.plugin_info("trapper").unwrap();
    assert_ne!(info.status, plugd::Status::Running);
    assert!(
        info.last_error
            .unwrap()
            .message
            .contains("start failed on purpose")
    );
    assert_eq!(server.get("/plugins/trapper/ok").await.status(), 503);
    // The operator fixes the config; the next restart starts it.
    let r = server
        .client
        .put(format!("{}/admin/plugins/trapper/config", server.admin_url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"fail_start": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until("trapper running", async || {
        server.host.plugin_info("trapper").unwrap().status == plugd::Status::Running
    })
    .await;
    assert_eq!(server.get("/plugins/trapper/ok").await.status(), 200);
    let info: Value = server
        .admin_get("/admin/plugins/trapper")
        .await
        .json()
        .await
        .unwrap();
    assert!(info["supervision"]["restarts"].as_u64().unwrap() >= 1);
    assert!(info["supervision"]["last_restart"].is_string());
    assert_eq!(info["supervision"]["gave_up"], false);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_plugin_over_its_cpu_budget_is_throttled_then_recovers() {
    let server = TestServer::start(&config(
        "      limits: { instances: 1 }",
        "      limits: { max_cpu_percent: 50 }",
    ))
    .await;
    let url = format!("{}/plugins/hello/greet", server.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let message = 'seen: loop {
        assert!(Instant::now() < deadline, "never throttled");
        // The spinner's hook spins until its 1 s deadline: more than half of a window.
        let r = server
            .client
            .get(&url)
            .header("x-spin", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "fail_open: the spin is cut and skipped");
        let rearm = Instant::now() + Duration::from_secs(3);
        while Instant::now() < rearm {
            let r = server.get("/plugins/spinner/ok").await;
            if r.status() == 503 {
                let body: Value = r.json().await.unwrap();
                break 'seen body["message"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    assert!(
        message.starts_with("plugin 'spinner' is throttled: used ")
            && message.ends_with("% CPU, budget 50%"),
        "{message}"
    );
    // The others serve meanwhile, and the spinner comes back in an idle window.
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);
    until("spinner serves again", async || {
        server.get("/plugins/spinner/ok").await.status() == 200
    })
    .await;
    let info = server.host.plugin_info("spinner").unwrap();
    assert!(info.cpu.throttled_windows >= 1);
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("plugd_plugin_cpu_throttled_seconds_total{plugin=\"spinner\"} "),
        "{metrics}"
    );
    server.stop().await;
}
