//! Hot reload of a wasm plugin under load: queueing (`block`), refusing (`reject`), rollback when
//! the new version fails to initialize, to start, or crashes within the grace period; the file
//! watcher; live config changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TOKEN, TestServer, test_plugin};

/// A copy of the `reloader` test plugin in a folder of its own, so that a test can write new
/// versions into it.
struct PluginDir {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

impl PluginDir {
    fn new() -> PluginDir {
        crate::support::guests_built();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("reloader");
        std::fs::create_dir(&path).unwrap();
        let src = test_plugin("reloader");
        std::fs::copy(src.join("plugin.wasm"), path.join("plugin.wasm")).unwrap();
        let dir = PluginDir { _tmp: tmp, path };
        dir.write_version("1.0.0", "v1", "ok", true);
        dir
    }

    /// Write a manifest for a version, through a rename (as editors and installers do).
    fn write_version(&self, version: &str, label: &str, mode: &str, hot_reload: bool) {
        let capabilities = if hot_reload {
            "capabilities: [hot_reload]"
        } else {
            ""
        };
        let manifest = format!(
            r#"name: reloader
version: {version}
description: reload test plugin
author: plugd
permissions: {{ router: true }}
{capabilities}
config:
  label: {{ type: string, default: "{label}" }}
  mode: {{ type: string, default: "{mode}" }}
"#
        );
        let tmp = self.path.join(".plugin.yaml.tmp");
        std::fs::write(&tmp, manifest).unwrap();
        std::fs::rename(&tmp, self.path.join("plugin.yaml")).unwrap();
    }
}

fn config(dir: &Path, reload: &str, extra: &str) -> String {
    format!(
        r#"
data_dir: "{{data}}"
plugins:
{extra}
  reload: {reload}
  error_threshold: {{ max_errors: 3, time_window: 1m }}
  plugins:
    - name: reloader
      path: "{path}"
      permissions: {{ router: true }}
"#,
        path = dir.display()
    )
}

async fn version(server: &TestServer) -> (u16, Value) {
    let r = server.get("/plugins/reloader/version").await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn admin_post(server: &TestServer, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = server
        .client
        .post(format!("{}{path}", server.admin_url))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Poll until `f` is true, for up to 20 s.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A counter the reloader guest keeps in its storage: `served` (every request, counted as it
/// starts) or `slow_entered` (the `/slow` requests that entered the guest, counted before they
/// sleep).
async fn counter(server: &TestServer, key: &str) -> u64 {
    server
        .host
        .storage("reloader")
        .get(key)
        .await
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or(0)
}

/// Wait until the counter `key` reaches `n`.
async fn counted(server: &TestServer, key: &str, n: u64) {
    eventually(&format!("{key} reaches {n}"), || async move {
        counter(server, key).await >= n
    })
    .await;
}

/// Clients that request `/version` in a loop until stopped; each keeps what it saw, in order.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<(u16, Value)>>>,
}

impl Load {
    fn start(server: &TestServer, n: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..n)
            .map(|_| {
                let (client, url, stop) = (
                    server.client.clone(),
                    format!("{}/plugins/reloader/version", server.url),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let r = client.get(&url).send().await.expect("request");
                        let status = r.status().as_u16();
                        seen.push((status, r.json().await.unwrap_or(Value::Null)));
                    }
                    seen
                })
            })
            .collect();
        Load { stop, clients }
    }

    async fn finish(self) -> Vec<Vec<(u16, Value)>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for c in self.clients {
            out.push(c.await.unwrap());
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_strategy_serves_every_request_and_switches_versions_at_one_point() {
    let dir = PluginDir::new();
    let server = TestServer::start(&config(
        &dir.path,
        "{ queue_strategy: block, queue_timeout: 30s }",
        "",
    ))
    .await;
    assert_eq!(version(&server).await.1["label"], "v1");

    let load = Load::start(&server, 4);
    // Every client has made a few requests to v1 (`served` counts them as they start).
    counted(&server, "served", 1 + 16).await;
    // A request in flight when the reload starts is finished by the old version, not dropped.
    let slow = {
        let (client, url) = (
            server.client.clone(),
            format!("{}/plugins/reloader/slow?ms=1000", server.url),
        );
        tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    // It is in v1's guest (the guest counts it before it sleeps).
    counted(&server, "slow_entered", 1).await;
    dir.write_version("2.0.0", "v2", "ok", true);
    let (status, body) = admin_post(&server, "/admin/plugins/reloader/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["from_version"], "1.0.0");
    assert_eq!(body["to_version"], "2.0.0");
    // Every client has made a few requests to v2.
    let swapped = counter(&server, "served").await;
    counted(&server, "served", swapped + 16).await;
    let seen = load.finish().await;

    let (slow_status, slow_body) = slow.await.unwrap();
    assert_eq!(slow_status, 200);
    assert_eq!(slow_body["label"], "v1");

    let mut last_served_v1 = 0;
    let mut first_served_v2 = u64::MAX;
    for client in &seen {
        assert!(client.len() > 2, "each client made requests");
        assert!(
            client.iter().all(|(s, _)| *s == 200),
            "every request succeeded: {:?}",
            client.iter().filter(|(s, _)| *s != 200).collect::<Vec<_>>()
        );
        let labels: Vec<&str> = client
            .iter()
            .map(|(_, b)| b["label"].as_str().unwrap())
            .collect();
        let switch = labels.iter().position(|l| *l == "v2").expect("saw v2");
        assert!(
            labels[..switch].iter().all(|l| *l == "v1")
                && labels[switch..].iter().all(|l| *l == "v2"),
            "one switch from v1 to v2: {labels:?}"
        );
        for (_, b) in client {
            let served = b["served"].as_u64().unwrap();
            match b["label"].as_str().unwrap() {
                "v1" => last_served_v1 = last_served_v1.max(served),
                _ => first_served_v2 = first_served_v2.min(served),
            }
        }
    }
    // Storage carried over: v2 went on counting where v1 stopped. The bound is loose on
    // purpose: `served` is a read-then-write from several instances at once, so a write can
    // land over a later one and the count step back by a few; without the carry-over v2 would
    // start again from 1.
    assert!(
        first_served_v2 > last_served_v1 / 2,
        "storage carries over a reload ({last_served_v1} then {first_served_v2})"
    );
    let info: Value = server
        .admin_get("/admin/plugins/reloader")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["version"], "2.0.0", "{info}");
    assert_eq!(info["status"], "running");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_strategy_answers_503_only_while_the_swap_runs() {
    let dir = PluginDir::new();
    let server = TestServer::start(&config(&dir.path, "{ queue_strategy: reject }", "")).await;
    // Hold the gate closed for a while: the reload waits for this request to finish.
    let slow = {
        let (client, url) = (
            server.client.clone(),
            format!("{}/plugins/reloader/slow?ms=1000", server.url),
        );
        tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() })
    };
    // It is in the guest (the guest counts it before it sleeps): the reload must wait for it.
    counted(&server, "slow_entered", 1).await;
    dir.write_version("2.0.0", "v2", "ok", true);
    let reload = {
        let (client, url) = (
            server.client.clone(),
            format!("{}/admin/plugins/reloader/reload", server.admin_url),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let mut during = Vec::new();
    while !reload.is_finished() {
        let (status, body) = version(&server).await;
        during.push((status, body));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(reload.await.unwrap(), 200);
    assert_eq!(
        slow.await.unwrap(),
        200,
        "the request in flight was finished"
    );
    let refused: Vec<&Value> = during
        .iter()
        .filter(|(s, _)| *s == 503)
        .map(|(_, b)| b)
        .collect();
    assert!(!refused.is_empty(), "requests during the swap were refused");
    for b in &refused {
        assert!(
            b["message"].as_str().unwrap().contains("is reloading"),
            "{b}"
        );
    }
    assert!(
        during.iter().all(|(s, _)| *s == 200 || *s == 503),
        "only 200 or 503"
    );
    for _ in 0..5 {
        let (status, body) = version(&server).await;
        assert_eq!(status, 200, "after the swap every request is served");
        assert_eq!(body["label"], "v2");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_fails_to_init_or_start_is_rolled_back() {
    let dir = PluginDir::new();
    let server = TestServer::start(&config(&dir.path, "{}", "")).await;
    for (n, mode) in ["fail_init", "fail_start"].into_iter().enumerate() {
        let v = format!("2.0.{n}");
        dir.write_version(&v, "v2", mode, true);
        let (status, body) = admin_post(&server, "/admin/plugins/reloader/reload", None).await;
        assert_eq!(status, 422, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("plugin reload failed"), "{message}");
        assert!(
            message.contains(mode.trim_start_matches("fail_")),
            "{message}"
        );
        assert!(
            message.contains("previous version serves again"),
            "{message}"
        );
        let (status, body) = version(&server).await;
        assert_eq!(status, 200);
        assert_eq!(body["label"], "v1", "version 1 serves again after {mode}");
    }
    let info: Value = server
        .admin_get("/admin/plugins/reloader")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["version"], "1.0.0");
    assert_eq!(info["status"], "running");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_crashes_within_the_grace_period_is_rolled_back() {
    let dir = PluginDir::new();
    let server = TestServer::start(&config(
        &dir.path,
        "{ grace_period: 30s, rollback_on_crashes: 3 }",
        "",
    ))
    .await;
    dir.write_version("2.0.0", "v2", "trap", true);
    let (status, body) = admin_post(&server, "/admin/plugins/reloader/reload", None).await;
    assert_eq!(status, 200, "v2 comes up: {body}");
    // It traps on requests: after 3 crashes the previous version comes back.
    eventually("version 1 serves again", || async {
        matches!(version(&server).await, (200, b) if b["label"] == "v1")
    })
    .await;
    let info: Value = server
        .admin_get("/admin/plugins/reloader")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["version"], "1.0.0");
    server.stop().await;
}

/// A security fix that refuses the exploit it fixes answers errors to every attempt: those are
/// not crashes, and 100 of them must not roll the host back to the vulnerable version. Nor does
/// a crashing version roll back unless the operator turned `rollback_on_crashes` on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_a_client_provokes_never_roll_a_new_version_back() {
    let dir = PluginDir::new();
    let server = TestServer::start(&config(
        &dir.path,
        "{ grace_period: 30s, rollback_on_crashes: 3 }",
        "",
    ))
    .await;
    dir.write_version("2.0.0", "v2", "refuse", true);
    let (status, body) = admin_post(&server, "/admin/plugins/reloader/reload", None).await;
    assert_eq!(status, 200, "v2 comes up: {body}");
    for _ in 0..100 {
        assert_eq!(version(&server).await.0, 500);
    }
    // The watch polls every 100 ms: give it several looks.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let info: Value = server
        .admin_get("/admin/plugins/reloader")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["version"], "2.0.0", "{info}");
    assert!(info["error_count"].as_u64().unwrap() >= 100, "{info}");
    server.stop().await;

    let dir = PluginDir::new();
    let server = TestServer::start(&config(&dir.path, "{ grace_period: 30s }", "")).await;
    dir.write_version("2.0.0", "v2", "trap", true);
    let (status, body) = admin_post(&server, "/admin/plugins/reloader/reload", None).await;
    assert_eq!(status, 200, "v2 comes up: {body}");
    for _ in 0..10 {
        assert_eq!(version(&server).await.0, 500);
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let info: Value = server
        .admin_get("/admin/plugins/reloader")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["version"], "2.0.0", "no rollback unless asked: {info}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_the_hot_reload_capability_is_refused_a_code_reload() {
    let dir = PluginDir::new();
    dir.write_version("1.0.0", "v1", "ok", false);
    let server = TestServer::start(&config(&dir.path, "{}", "")).await;
    let (status, body) = admin_post(&server, "/admin/plugins/reloader/reload", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("hot_reload"),
        "{body}"
    );
    // Its config can still change live.
    let r = server
        .client
        .put(format!(
            "{}/admin/plugins/reloader/config",
            server.admin_url
        ))
        .bearer_auth(TOKEN)
        .json(&json!({ "label": "renamed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(version(&server).await.1["label"], "renamed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_watcher_reloads_a_changed_plugin() {
    let dir = PluginDir::new();
    let server = TestServer::start(&config(
        &dir.path,
        "{}",
        "  hot_reload: true\n  reload_delay: 200ms",
    ))
    .await;
    assert_eq!(version(&server).await.1["label"], "v1");
    dir.write_version("2.0.0", "v2", "ok", true);
    eventually("the watcher reloaded version 2", || async {
        matches!(version(&server).await, (200, b) if b["label"] == "v2")
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_change_is_applied_live_and_a_bad_one_is_rejected() {
    let dir = PluginDir::new();
    let base = config(&dir.path, "{}", "");
    let server = TestServer::start(&base).await;
    let with_label = |label: &str| {
        format!("{base}      config: {{ label: \"{label}\" }}\n")
            .replace("{data}", &server.data_dir().display().to_string())
    };

    std::fs::write(server.config_path(), with_label("from-file")).unwrap();
    let (status, body) = admin_post(&server, "/admin/config/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(version(&server).await.1["label"], "from-file");

    // The plugin refuses an empty label: the old config stays in force, the answer says why.
    std::fs::write(server.config_path(), with_label("")).unwrap();
    let (status, body) = admin_post(&server, "/admin/config/reload", None).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("label must not be empty"),
        "{body}"
    );
    assert_eq!(version(&server).await.1["label"], "from-file");

    // Disabling it in the file takes it out of the request path.
    let disabled = with_label("from-file").replace(
        "    - name: reloader\n",
        "    - name: reloader\n      enabled: false\n",
    );
    std::fs::write(server.config_path(), disabled).unwrap();
    let (status, body) = admin_post(&server, "/admin/config/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(version(&server).await.0, 503);
    server.stop().await;
}

/// Run `plugd` with arguments (off the async workers) and return its exit status and stdout.
async fn plugd_cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plugd"))
            .args(&args)
            .output()
            .expect("run plugd");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugd_reload_talks_to_the_running_server() {
    let dir = PluginDir::new();
    let base = config(&dir.path, "{}", "");
    let server = TestServer::start(&base).await;
    let remote = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["reload".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([
            "--server".into(),
            server.admin_url.clone(),
            "--token".into(),
            TOKEN.into(),
        ]);
        args
    };

    dir.write_version("2.0.0", "v2", "ok", true);
    let (ok, stdout, stderr) = plugd_cli(remote(&["reloader"])).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("reloaded reloader: 1.0.0 -> 2.0.0"),
        "{stdout}"
    );
    assert_eq!(version(&server).await.1["label"], "v2");

    // A failed reload exits non-zero with the server's reason; version 2 keeps serving.
    dir.write_version("3.0.0", "v3", "fail_start", true);
    let (ok, stdout, stderr) = plugd_cli(remote(&["reloader"])).await;
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("422") && stderr.contains("refuses to start"),
        "{stderr}"
    );
    assert_eq!(version(&server).await.1["label"], "v2");

    // `plugd reload --config FILE` applies the file's changes.
    let changed = format!("{base}      config: {{ label: \"cli\" }}\n")
        .replace("{data}", &server.data_dir().display().to_string());
    std::fs::write(server.config_path(), changed).unwrap();
    let config_path = server.config_path().display().to_string();
    let (ok, stdout, stderr) = plugd_cli(remote(&["--config", &config_path])).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("reconfigured: reloader"), "{stdout}");
    assert_eq!(version(&server).await.1["label"], "cli");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_in_the_metrics() {
    let dir = PluginDir::new();
    let server = TestServer::start(&config(&dir.path, "{}", "")).await;
    dir.write_version("2.0.0", "v2", "ok", true);
    assert_eq!(
        admin_post(&server, "/admin/plugins/reloader/reload", None)
            .await
            .0,
        200
    );
    dir.write_version("3.0.0", "v3", "fail_init", true);
    assert_eq!(
        admin_post(&server, "/admin/plugins/reloader/reload", None)
            .await
            .0,
        422
    );
    let metrics = server.get("/metrics").await.text().await.unwrap();
    for line in [
        "plugd_plugin_reloads_total{plugin=\"reloader\",result=\"succeeded\"} 1",
        "plugd_plugin_reloads_total{plugin=\"reloader\",result=\"failed\"} 1",
        "plugd_plugin_reloads_total{plugin=\"reloader\",result=\"rolled_back\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains("plugd_plugin_reload_duration_seconds{plugin=\"reloader\"}"));
    server.stop().await;
}
