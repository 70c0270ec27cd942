//! Proof that every language works: `plugd new` makes one plugin from each template (Rust,
//! JavaScript, Python, C), `plugd build` builds all four, one host loads them together, and each
//! one's route and hooks answer — directly and through the request path. Then each plugin's own
//! `tests.yaml` passes through the harness. The toolchains are installed by
//! scripts/author-toolchains.sh (called by scripts/test.sh); each build.sh would install its own
//! otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use plugd_test::{Action, HookType, SuiteOptions, TestHost, TestPlugin, TestRequest};

use crate::support::repo_root;

const LANGS: [&str; 4] = ["rust", "js", "python", "c"];

fn plugd(args: &[&str], cwd: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_plugd"))
        .args(args)
        .current_dir(cwd)
        // Rust plugins share the guests' target dir: the SDK and std are built once.
        .env("CARGO_TARGET_DIR", repo_root().join("target/guest"))
        .output()
        .expect("run plugd");
    assert!(
        out.status.success(),
        "plugd {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiled components are cached here across runs (a Python component takes seconds to
/// compile in a debug host; a cached one loads in milliseconds).
fn cache() -> PathBuf {
    repo_root().join("target/plugd-template-cache")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_builds_and_runs_in_one_host() {
    let work = tempfile::tempdir().unwrap();
    for lang in LANGS {
        let name = format!("demo-{lang}");
        plugd(
            &[
                "new",
                &name,
                "--lang",
                lang,
                "--hooks",
                "pre_request,pre_response",
                "--route",
            ],
            work.path(),
        );
        plugd(&["build", &name], work.path());
    }
    let mut builder = TestHost::builder().cache_dir(cache());
    for lang in LANGS {
        builder = builder.plugin(
            TestPlugin::new(work.path().join(format!("demo-{lang}")))
                .config(serde_json::json!({ "greeting": format!("Hi from {lang}") })),
        );
    }
    let t = builder
        .start()
        .await
        .expect("all four plugins start in one host");
    for lang in LANGS {
        let name = format!("demo-{lang}");
        assert_eq!(t.info(&name).unwrap().kind, "wasm");
        // The route, through the whole request path: every plugin's hooks run on it.
        let res = t.get(&format!("/plugins/{name}/hello?name=Ada")).await;
        res.assert_status(200);
        assert_eq!(
            res.json()["message"],
            format!("Hi from {lang}, Ada!"),
            "{lang}"
        );
        assert_eq!(res.json()["count"], 1, "{lang}");
        for other in LANGS {
            res.assert_header(&format!("x-demo-{other}"), "pre_response");
        }
        assert_eq!(t.stored(&name, "count").await.as_deref(), Some("1"));
        // Its pre_request hook, called directly.
        let out = t
            .hook(
                &name,
                HookType::PreRequest,
                TestRequest::get("/elsewhere").header(&format!("x-{name}-block"), "1"),
            )
            .await
            .unwrap();
        assert_eq!(out.response().map(|r| r.status), Some(403), "{lang}");
        let out = t
            .hook(&name, HookType::PreRequest, "/elsewhere")
            .await
            .unwrap();
        assert_eq!(out.action, Action::Continue);
        assert_eq!(
            out.exchange.header(&format!("x-{name}-seen")).as_deref(),
            Some("1")
        );
        // Its service, called by the test as another plugin would.
        let greeting = t
            .call_service(&name, "greeter", "greet", b"Bob")
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(greeting).unwrap(),
            format!("Hi from {lang}, Bob!")
        );
    }
    // One plugin's pre_request hook answers for the whole host.
    let res = t
        .request(TestRequest::get("/plugins/demo-rust/hello").header("x-demo-python-block", "1"))
        .await;
    res.assert_status(403);
    assert_eq!(res.json()["error"], "blocked by demo-python");
    t.shutdown().await;

    // Each plugin's own tests.yaml, through the harness.
    for lang in LANGS {
        let dir = work.path().join(format!("demo-{lang}"));
        let suite = plugd_test::Suite::from_path(&dir.join("tests.yaml")).unwrap();
        let options = SuiteOptions {
            cache_dir: Some(cache()),
        };
        let report = plugd_test::run_suite(&dir, &suite, &options).await.unwrap();
        assert_eq!(report.failed(), 0, "{lang}: {report:?}");
        assert!(report.passed() >= 6, "{lang}: {report:?}");
    }
}

/// The JavaScript template's `fetch()` (componentize-js with fetch on: build.sh no longer passes
/// `-d http`) goes out through wasi:http/outgoing-handler, held to the plugin's `network.allow`:
/// an allowed host's body reaches the script, on a fresh instance and again on the same one (with
/// componentize-js 0.19.3 the guest trapped in its post-return once a fetch read a body), and a
/// host not in it is refused (a TypeError for the script, the route answers) and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_template_fetch_is_held_to_network_allow() {
    let work = tempfile::tempdir().unwrap();
    plugd(&["new", "fetcher", "--lang", "js", "--route"], work.path());
    let dir = work.path().join("fetcher");
    let js = std::fs::read_to_string(dir.join("plugin.js")).unwrap();
    let register = "registerRoute('GET', '/hello', { requiredRoles: [] });";
    let handle = "  handleRequest(route, exchange) {\n";
    assert!(js.contains(register) && js.contains(handle), "{js}");
    let js = js
        .replace(
            register,
            &format!("{register}\n    registerRoute('GET', '/fetch', {{ requiredRoles: [] }});"),
        )
        .replace(
            handle,
            r#"  async handleRequest(route, exchange) {
    if (route === '/fetch') {
      const url = exchange.queryParam('url');
      try {
        const response = await fetch(url);
        return json(200, { status: response.status, body: await response.text() });
      } catch (e) {
        return json(502, { error: String(e) });
      }
    }
"#,
        );
    std::fs::write(dir.join("plugin.js"), js).unwrap();
    let manifest = std::fs::read_to_string(dir.join("plugin.yaml")).unwrap();
    let manifest = manifest.replace(
        "permissions:\n  router: true\n",
        "permissions:\n  router: true\n  network: true\n",
    );
    assert!(manifest.contains("network: true"), "{manifest}");
    std::fs::write(dir.join("plugin.yaml"), manifest).unwrap();
    plugd(&["build", "fetcher"], work.path());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(|| async { "hi from upstream" }),
    );
    let _upstream = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let server = crate::support::TestServer::start(&format!(
        r#"
data_dir: "{{data}}"
plugins:
  plugins:
    - name: fetcher
      path: "{dir}"
      permissions: {{ router: true, network: true }}
      network:
        allow: ["127.0.0.1:{port}"]
      limits:
        timeout: 10s
"#,
        dir = dir.display()
    ))
    .await;
    // An allowed host answers, first thing on a fresh instance, and the same instance fetches
    // again and again.
    for round in 0..3 {
        let r = server
            .get(&format!(
                "/plugins/fetcher/fetch?url=http://127.0.0.1:{port}/hello"
            ))
            .await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "fetch {round}: {text}");
        assert_eq!(
            text, r#"{"status":200,"body":"hi from upstream"}"#,
            "fetch {round}"
        );
    }
    // A host not in network.allow is refused.
    let r = server
        .get("/plugins/fetcher/fetch?url=http://example.com/")
        .await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 502, "{text}");
    assert_eq!(
        text,
        r#"{"error":"TypeError: NetworkError when attempting to fetch resource"}"#
    );
    let audit = server.host.audit_log(Some("fetcher"));
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].capability, "network");
    assert_eq!(
        audit[0].detail,
        "wasi:http/outgoing-handler: network access denied: plugin 'fetcher' may not connect to 'example.com' (not in network.allow)"
    );
    server.stop().await;
}
