//! Operations: `/readyz` beside `/healthz`, `plugd health`'s exit status, config from the
//! environment.

use std::process::Command;

use serde_json::Value;

use crate::support::{TOKEN, TestServer, examples_config};

fn plugd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plugd"))
}

/// The examples, and a plugin whose folder does not exist: it goes to `error`, the rest run.
fn config_with_a_broken_plugin() -> String {
    format!(
        "{}    - name: broken\n      path: /nonexistent/plugd-broken\n",
        examples_config()
    )
}

/// `plugd health ARGS…` against `admin_url`: exit code, stdout, stderr (off the async workers).
async fn health(admin_url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = plugd();
    command
        .arg("health")
        .args(args)
        .args(["--server", admin_url, "--token", TOKEN]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ready_while_healthz_stays_alive_when_a_plugin_fails() {
    let server = TestServer::start(&examples_config()).await;
    let r = server.get("/readyz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
    server.stop().await;

    let server = TestServer::start(&config_with_a_broken_plugin()).await;
    let r = server.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["reasons"][0], "plugin 'broken' is error", "{body}");
    let r = server.get("/healthz").await;
    assert_eq!(r.status(), 200, "liveness: the process serves");
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "degraded");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_can_be_protected() {
    let config = format!("admin:\n  protect: [readyz]\n{}", examples_config());
    let server = TestServer::start(&config).await;
    assert_eq!(server.get("/readyz").await.status(), 401);
    assert_eq!(server.admin_get("/readyz").await.status(), 200);
    assert_eq!(server.get("/healthz").await.status(), 200, "still public");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugd_health_exits_0_healthy_1_degraded_2_without_an_answer() {
    let server = TestServer::start(&examples_config()).await;
    let (code, out, err) = health(&server.admin_url, &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("overall: ok\nready: yes\n"), "{out}");
    let (code, _, err) = health(&server.admin_url, &["hello"]).await;
    assert_eq!(code, Some(0), "{err}");
    server.stop().await;

    let server = TestServer::start(&config_with_a_broken_plugin()).await;
    let (code, out, err) = health(&server.admin_url, &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.starts_with("overall: degraded\nready: no\n"), "{out}");
    assert!(err.contains("the server is degraded"), "{err}");
    assert!(err.contains("not ready: plugin 'broken' is error"), "{err}");
    let (code, _, err) = health(&server.admin_url, &["broken"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("plugin 'broken' is error"), "{err}");
    let (code, _, _) = health(&server.admin_url, &["hello", "--json"]).await;
    assert_eq!(code, Some(0));
    let (code, _, err) = health(&server.admin_url, &["nobody"]).await;
    assert_eq!(code, Some(2), "an unknown plugin is no answer: {err}");
    server.stop().await;

    // Nothing listens on port 1.
    let (code, _, err) = health("http://127.0.0.1:1", &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is a plugd server running"), "{err}");
}

#[test]
fn the_help_of_health_gives_its_exit_status() {
    let out = plugd().args(["health", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit status: 0 when healthy"), "{help}");
    assert!(help.contains("2 when the server gives no answer"), "{help}");
}

#[test]
fn an_override_naming_no_key_is_an_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plugd.yaml");
    std::fs::write(&config, "admin:\n  token: ${PLUGD_TEST_TOKEN}\n").unwrap();
    let out = plugd()
        .args(["check", "--config"])
        .arg(&config)
        .env_remove("PLUGD_TEST_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "admin.token refers to environment variable 'PLUGD_TEST_TOKEN', which is not set"
        ),
        "{err}"
    );
    let out = plugd()
        .args(["check", "--config"])
        .arg(&config)
        .env("PLUGD_TEST_TOKEN", "t")
        .env("PLUGD_SERVER__LISTN", "0.0.0.0:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("environment variable PLUGD_SERVER__LISTN: unknown key 'listn' in server; did you mean 'listen'?"),
        "{err}"
    );
    let out = plugd()
        .args(["check", "--config"])
        .arg(&config)
        .env("PLUGD_TEST_TOKEN", "t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
