//! A plugin that traps or spins is contained: the host and the other plugins keep serving.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TestServer, example, test_plugin};

fn config(extra_limits: &str) -> String {
    format!(
        r#"
data_dir: "{{data}}"
plugins:
  limits:
    timeout: 1s
{extra_limits}
  plugins:
    - name: hello
      path: "{hello}"
      permissions: {{ router: true }}
    - name: trapper
      path: "{trapper}"
      permissions: {{ router: true }}
      limits: {{ instances: 1 }}
    - name: spinner
      path: "{spinner}"
      permissions: {{ router: true, intercept: true }}
"#,
        hello = example("hello").display(),
        trapper = test_plugin("trapper").display(),
        spinner = test_plugin("spinner").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_a_500_and_the_instance_is_replaced() {
    let server = TestServer::start(&config("")).await;
    assert_eq!(
        server
            .get("/plugins/trapper/count")
            .await
            .text()
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(
        server
            .get("/plugins/trapper/count")
            .await
            .text()
            .await
            .unwrap(),
        "2"
    );

    let r = server.get("/plugins/trapper/trap").await;
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("plugin 'trapper' failed"), "{message}");

    let info = server.host.plugin_info("trapper").unwrap();
    assert_eq!(
        info.status,
        plugd::Status::Running,
        "one trap does not stop the plugin"
    );
    assert_eq!(info.error_count, 1);
    let last = info.last_error.expect("last error recorded");
    assert!(last.message.contains("trap"), "{}", last.message);

    // The trapped instance was thrown away: a fresh one starts counting from 1 again.
    assert_eq!(
        server
            .get("/plugins/trapper/count")
            .await
            .text()
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(server.get("/plugins/trapper/ok").await.status(), 200);
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_loops_forever_is_interrupted_while_others_answer() {
    let server = TestServer::start(&config("")).await;
    let url = format!("{}/plugins/spinner/ok", server.url);
    let client = server.client.clone();
    let spin = tokio::spawn(async move {
        let started = Instant::now();
        let r = client.get(url).header("x-spin", "1").send().await.unwrap();
        (r.status(), started.elapsed())
    });
    // While the spinner burns its instance, the other plugins keep answering promptly.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let r = server.get("/plugins/hello/greet").await;
        assert_eq!(r.status(), 200);
    }
    let (status, took) = spin.await.unwrap();
    // The spinner's hook is fail-open: it is interrupted and the request goes on to the route.
    assert_eq!(status, 200);
    assert!(
        took >= Duration::from_millis(900),
        "interrupted at its deadline, not before: {took:?}"
    );
    let info = server.host.plugin_info("spinner").unwrap();
    let last = info.last_error.expect("timeout recorded").message;
    // The wasm runtime's own deadline, not the host's backstop a second later.
    assert_eq!(
        last,
        "pre_request hook: hook execution timeout: pre_request hook exceeded 1s timeout"
    );
    assert_eq!(info.status, plugd::Status::Running);
    // And it still works without the spin header.
    assert_eq!(server.get("/plugins/spinner/ok").await.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_turns_a_spinning_hook_into_503() {
    // The answer carries the plugin's error text (expose_errors), so that the test reads which
    // deadline stopped the hook.
    let yaml = config("")
        .replace(
            "    - name: spinner\n",
            "    - name: spinner\n      failure_policy: fail_closed\n",
        )
        .replace("data_dir:", "server: { expose_errors: true }\ndata_dir:");
    let server = TestServer::start(&yaml).await;
    let r = server
        .client
        .get(format!("{}/plugins/hello/greet", server.url))
        .header("x-spin", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["message"],
        "plugin 'spinner' failed: hook execution timeout: pre_request hook exceeded 1s timeout",
        "the wasm runtime's deadline stopped the hook, not the host's backstop: {body}"
    );
    let info = server.host.plugin_info("spinner").unwrap();
    assert_eq!(info.error_count, 1);
    assert_eq!(
        info.last_error.expect("timeout recorded").message,
        "pre_request hook: hook execution timeout: pre_request hook exceeded 1s timeout"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_failure_puts_the_plugin_in_error_and_the_rest_runs() {
    let yaml = config("").replace(
        "      limits: { instances: 1 }\n",
        "      limits: { instances: 1 }\n      config: { fail_init: true }\n",
    );
    let server = TestServer::start(&yaml).await;
    let info = server.host.plugin_info("trapper").unwrap();
    assert_eq!(info.status, plugd::Status::Error);
    let message = info.last_error.unwrap().message;
    assert!(
        message.contains("plugin initialization failed: trapper"),
        "{message}"
    );
    assert!(message.contains("init failed on purpose"), "{message}");
    assert_eq!(server.get("/plugins/trapper/ok").await.status(), 503);
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);
    server.stop().await;
}
