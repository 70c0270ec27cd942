//! The harness against the example and test guests (built by scripts/build-examples.sh).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use plugd_manifest::{Format, Manifest, Permission};
use plugd_test::{
    Action, HookType, Suite, SuiteOptions, TestHost, TestPlugin, TestRequest, run_suite,
};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn guests() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/build-examples.sh"))
            .output()
            .expect("run scripts/build-examples.sh");
        assert!(
            out.status.success(),
            "scripts/build-examples.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn example(name: &str) -> PathBuf {
    guests();
    root().join("examples/plugins").join(name)
}

fn test_plugin(name: &str) -> PathBuf {
    guests();
    root().join("tests/plugins").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_storage_logs_and_metrics_of_hello() {
    let t = TestHost::builder()
        .plugin(TestPlugin::new(example("hello")).config(json!({ "greeting": "Hi" })))
        .start()
        .await
        .unwrap();
    let res = t.get("/plugins/hello/greet?name=Ada").await;
    res.assert_status(200)
        .assert_header("content-type", "application/json");
    assert_eq!(res.json()["message"], "Hi, Ada!");
    assert_eq!(res.json()["count"], 1);
    t.get("/plugins/hello/greet").await.assert_status(200);
    assert_eq!(t.stored("hello", "greetings").await.as_deref(), Some("2"));
    assert_eq!(
        t.metric("plugd_custom_greetings_total", &[("plugin", "hello")]),
        Some(2.0)
    );
    assert!(t.logs_captured(), "no other subscriber in this test binary");
    let ready = t.logs("hello");
    assert!(
        ready
            .iter()
            .any(|l| l.message == "hello ready" && l.fields.contains("greeting=Hi")),
        "{ready:?}"
    );
    // Unknown routes and methods go through the real dispatcher.
    t.get("/plugins/hello/nope").await.assert_status(404);
    t.request("POST /plugins/hello/greet")
        .await
        .assert_status(405);
    let info = t.info("hello").unwrap();
    assert_eq!(info.routes.len(), 2);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_the_tests_choice() {
    // Without `router`, hello's init fails registering its route: the load error names it.
    let err = TestHost::builder()
        .plugin(TestPlugin::new(example("hello")).grants([]))
        .start()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("plugin 'hello' is error after start"),
        "{text}"
    );
    assert!(text.contains("router"), "{text}");
    // Granting what the manifest does not declare is the host config's error.
    let err = TestHost::builder()
        .plugin(
            TestPlugin::new(example("hello")).grants([Permission::Router, Permission::Database]),
        )
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission mismatch"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_directly_and_through_the_request_path() {
    let t = TestHost::builder()
        .plugin(example("gatekeeper"))
        .plugin(example("hello"))
        .start()
        .await
        .unwrap();
    // One hook, called directly.
    let out = t
        .hook("gatekeeper", HookType::PreRequest, "/plugins/hello/secret")
        .await
        .unwrap();
    let early = out.response().expect("an early answer");
    assert_eq!(early.status, 401);
    assert_eq!(early.json()["message"], "missing x-api-key header");
    let out = t
        .hook(
            "gatekeeper",
            HookType::PreRequest,
            TestRequest::get("/plugins/hello/secret").header("x-api-key", "k"),
        )
        .await
        .unwrap();
    assert_eq!(out.action, Action::Continue);
    let out = t
        .hook(
            "gatekeeper",
            HookType::PreResponse,
            TestRequest::get("/plugins/hello/greet").with_response(200, "ok"),
        )
        .await
        .unwrap();
    assert_eq!(
        out.exchange
            .response_header("x-plugd-gatekeeper")
            .as_deref(),
        Some("checked")
    );
    // The same through the dispatcher, with hello behind it.
    t.get("/plugins/hello/secret").await.assert_status(401);
    let res = t
        .request(TestRequest::get("/plugins/hello/secret").header("x-api-key", "k"))
        .await;
    res.assert_status(200)
        .assert_header("x-plugd-gatekeeper", "checked");
    assert!(t.hook("nobody", HookType::PreRequest, "/").await.is_err());
    let metrics = t.metrics();
    assert!(
        metrics.contains(
            "plugd_plugin_hook_executions_total{plugin=\"gatekeeper\",hook=\"pre_request\"}"
        ),
        "{metrics}"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_services_and_commands() {
    let t = TestHost::builder()
        .plugin(test_plugin("trapper"))
        .plugin(test_plugin("spinner"))
        .start()
        .await
        .unwrap();
    // An event the test publishes reaches spinner's subscription (test.*).
    t.publish("test.hello", "from the test").unwrap();
    let deadline = std::time::Instant::now() + plugd_test::DEFAULT_WAIT;
    while !t
        .stored("spinner", "events")
        .await
        .is_some_and(|s| s.contains("test.hello from : from the test"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "spinner never stored the event"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // An event a plugin publishes is recorded.
    t.get("/plugins/trapper/publish").await.assert_status(200);
    t.wait_for("trapper's event", |t| !t.events_on("test.ping").is_empty())
        .await
        .unwrap();
    let ev = &t.events_on("test.ping")[0];
    assert_eq!(
        (ev.source.as_str(), &ev.payload[..]),
        ("trapper", &b"ping"[..])
    );
    // Services and commands.
    let out = t
        .call_service("trapper", "text", "upper", b"abc")
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "ABC (for plugd-test)");
    let err = t
        .call_service("trapper", "text", "lower", b"abc")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown method text.lower"),
        "{err}"
    );
    assert_eq!(
        t.run_command("trapper", "echo", &["a", "b"]).await.unwrap(),
        "a b"
    );
    // A trap is a 500 and an error counted on the plugin, never a panic of the test.
    let errors = t.info("trapper").unwrap().error_count;
    t.get("/plugins/trapper/trap").await.assert_status(500);
    assert_eq!(t.info("trapper").unwrap().error_count, errors + 1);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_plugins_beside_wasm_ones() {
    struct Echo;
    #[async_trait::async_trait]
    impl plugd_core::Plugin for Echo {
        async fn init(
            &self,
            ctx: &mut plugd_core::InitContext<'_>,
        ) -> Result<(), plugd_core::PluginError> {
            ctx.register_route("GET", "/echo", plugd_core::RouteOptions::default())
                .map_err(|e| plugd_core::PluginError::Failed(e.to_string()))
        }
        async fn handle_request(
            &self,
            _route: &str,
            ex: &mut plugd_core::Exchange,
        ) -> Result<plugd_core::Response, plugd_core::PluginError> {
            let mut r = plugd_core::Response::new(http::StatusCode::OK);
            r.body = ex.query.clone().into();
            Ok(r)
        }
    }
    let manifest = Manifest::from_str(
        "name: echo\nversion: 1.0.0\ndescription: Echoes the query.\nauthor: test\npermissions: { router: true }\n",
        Format::Yaml,
        None,
    )
    .unwrap();
    let t = TestHost::builder()
        .native(manifest, Echo)
        .plugin(example("hello"))
        .start()
        .await
        .unwrap();
    assert_eq!(t.get("/plugins/echo/echo?x=1").await.text(), "x=1");
    t.get("/plugins/hello/greet").await.assert_status(200);
    assert_eq!(t.plugins(), ["hello", "echo"]);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_suite_passes_and_fails_where_it_should() {
    let suite = Suite::from_yaml(
        r#"
config: { greeting: Howdy }
tests:
  - name: greets
    request: { path: /plugins/hello/greet?name=Ada }
    expect:
      status: 200
      headers: { content-type: application/json }
      json: { message: "Howdy, Ada!", count: 1 }
      storage: { greetings: "1" }
      metrics: { plugd_custom_greetings_total: 1 }
      logs: [hello ready]
  - name: a wrong expectation fails
    request: { path: /plugins/hello/greet }
    expect: { json: { message: "Hello, world!" } }
  - name: a missing route
    request: { method: DELETE, path: /plugins/hello/greet }
    expect: { status: 405 }
"#,
    )
    .unwrap();
    let report = run_suite(&example("hello"), &suite, &SuiteOptions::default())
        .await
        .unwrap();
    assert_eq!(report.plugin, "hello");
    assert_eq!((report.passed(), report.failed()), (2, 1), "{report:?}");
    let failure = report.cases[1].failure.as_deref().unwrap();
    assert_eq!(
        failure,
        "$.message: expected \"Hello, world!\", got \"Howdy, world!\""
    );
}
