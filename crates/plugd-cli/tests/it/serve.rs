//! The end-to-end path of the README: example plugins answering real HTTP requests.

use serde_json::Value;

use crate::support::{TestServer, examples_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_greets_from_wasm() {
    let server = TestServer::start(&examples_config()).await;
    let r = server.get("/plugins/hello/greet?name=Ada").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plugd-gatekeeper"], "checked");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Hello, Ada!");
    assert_eq!(body["plugin"], "hello");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_count_lives_in_plugin_storage() {
    let server = TestServer::start(&examples_config()).await;
    let mut last = 0;
    for _ in 0..3 {
        let body: Value = server
            .get("/plugins/hello/greet")
            .await
            .json()
            .await
            .unwrap();
        let count = body["count"].as_u64().expect("count");
        assert!(count > last, "count {count} after {last}");
        last = count;
    }
    let stored = server.host.storage("hello").get("greetings").await.unwrap();
    assert!(
        stored.is_some(),
        "the hello plugin keeps its count in its own storage"
    );
    assert_eq!(
        server
            .host
            .storage("gatekeeper")
            .get("greetings")
            .await
            .unwrap(),
        None
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatekeeper_rejects_secret_without_header() {
    let server = TestServer::start(&examples_config()).await;
    let r = server.get("/plugins/hello/secret").await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        r.headers()["x-plugd-gatekeeper"],
        "checked",
        "pre_response runs on early answers too"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    let r = server
        .client
        .get(format!("{}/plugins/hello/secret", server.url))
        .header("x-api-key", "anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["secret"].is_string());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let server = TestServer::start(&examples_config()).await;
    let r = server.get("/plugins/hello/nope").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    let r = server
        .client
        .post(format!("{}/plugins/hello/greet", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_public_and_reports_plugins() {
    let server = TestServer::start(&examples_config()).await;
    let r = server.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-plugd-gatekeeper").is_none(),
        "/healthz bypasses plugin hooks"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["plugins"]["running"], 2);
    assert_eq!(body["plugins"]["error"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_over_the_limit_is_refused() {
    let yaml = examples_config().replace("data_dir:", "server:\n  body_limit: 1024\ndata_dir:");
    let server = TestServer::start(&yaml).await;
    let r = server
        .client
        .post(format!("{}/plugins/hello/greet", server.url))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_plugin_does_not_stop_the_others() {
    let yaml = format!(
        "{}    - name: ghost\n      path: /nonexistent/ghost\n",
        examples_config()
    );
    let server = TestServer::start(&yaml).await;
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);
    let info = server.host.plugin_info("ghost").expect("ghost is listed");
    assert_eq!(info.status, plugd::Status::Error);
    let message = info.last_error.expect("last error").message;
    assert!(
        message.contains("failed to load plugin: plugin file not found: /nonexistent/ghost"),
        "{message}"
    );
    let body: Value = server.get("/healthz").await.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    let r = server.get("/plugins/ghost/anything").await;
    assert_eq!(r.status(), 503);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_misnamed_plugins_are_listed_not_run() {
    let yaml = examples_config().replace(
        "      priority: security\n",
        "      priority: security\n      enabled: false\n",
    ) + &format!(
        "    - name: greeter\n      path: \"{}\"\n",
        crate::support::example("hello").display()
    );
    let server = TestServer::start(&yaml).await;
    let gatekeeper = server.host.plugin_info("gatekeeper").expect("listed");
    assert_eq!(gatekeeper.status, plugd::Status::Disabled);
    assert!(!gatekeeper.enabled && !gatekeeper.loaded);
    assert_eq!(gatekeeper.version, "1.0.0");
    // Without the gatekeeper's hook the secret is open, and nothing stamps responses.
    let r = server.get("/plugins/hello/secret").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-plugd-gatekeeper").is_none());
    assert_eq!(server.get("/plugins/gatekeeper/x").await.status(), 503);

    let greeter = server.host.plugin_info("greeter").expect("listed");
    assert_eq!(greeter.status, plugd::Status::Error);
    let message = greeter.last_error.unwrap().message;
    assert!(
        message.starts_with("plugin name mismatch: config entry 'greeter'")
            && message.contains("named 'hello'"),
        "{message}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_plugin_takes_a_new_config_live() {
    let server = TestServer::start(&examples_config()).await;
    let new = serde_json::json!({"greeting": "Hi"})
        .as_object()
        .unwrap()
        .clone();
    server
        .host
        .update_plugin_config("hello", &new)
        .await
        .unwrap();
    // Every instance of the pool got it.
    for _ in 0..4 {
        let body: Value = server
            .get("/plugins/hello/greet?name=Ada")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["message"], "Hi, Ada!");
    }
    let bad = serde_json::json!({"greting": "Yo"})
        .as_object()
        .unwrap()
        .clone();
    let err = server
        .host
        .update_plugin_config("hello", &bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("greting"), "{err}");
    let body: Value = server
        .get("/plugins/hello/greet?name=Ada")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["message"], "Hi, Ada!");
    let health = server.host.plugin_health("hello").await.unwrap();
    assert_eq!(health.reported, Some(plugd::Health::Healthy));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_assets_are_served_and_cannot_escape() {
    // A copy of the trapper plugin, with a symlink out of its assets folder.
    let tree = tempfile::tempdir().unwrap();
    let dir = tree.path().join("trapper");
    std::fs::create_dir_all(dir.join("assets/css")).unwrap();
    let src = crate::support::test_plugin("trapper");
    for f in [
        "plugin.yaml",
        "plugin.wasm",
        "assets/hello.txt",
        "assets/index.html",
        "assets/css/site.css",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(tree.path().join("secret.txt"), "top secret").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(tree.path().join("secret.txt"), dir.join("assets/leak.txt"))
        .unwrap();
    let yaml = format!(
        "data_dir: \"{{data}}\"\nplugins:\n  plugins:\n    - name: trapper\n      path: \"{}\"\n      permissions: {{ router: true }}\n",
        dir.display()
    );
    let server = TestServer::start(&yaml).await;

    let r = server.get("/plugins/trapper/static/hello.txt").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.text().await.unwrap(), "hello from trapper\n");
    let r = server.get("/plugins/trapper/static/css/site.css").await;
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    let r = server.get("/plugins/trapper/static/").await;
    assert!(r.text().await.unwrap().contains("trapper assets"));
    for bad in ["leak.txt", "nope.txt"] {
        let r = server.get(&format!("/plugins/trapper/static/{bad}")).await;
        assert_eq!(r.status(), 404, "{bad}");
    }
    // Escapes in another spelling are refused before anything looks for a file (400), or
    // normalized away by the client into a path nobody answers (404).
    for bad in ["%2e%2e/plugin.yaml", "..%2fplugin.yaml"] {
        let r = server.get(&format!("/plugins/trapper/static/{bad}")).await;
        assert!(
            matches!(r.status().as_u16(), 400 | 404),
            "{bad}: {}",
            r.status()
        );
        assert!(!r.text().await.unwrap().contains("name: trapper"), "{bad}");
    }
    // The plugin's routes are untouched.
    assert_eq!(server.get("/plugins/trapper/ok").await.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoload_loads_unlisted_plugins_with_no_grants() {
    let yaml = format!(
        "data_dir: \"{{data}}\"\nplugins:\n  autoload: true\n  directory: \"{}\"\n  plugins:\n    - name: hello\n      permissions: {{ router: true }}\n",
        crate::support::repo_root()
            .join("examples/plugins")
            .display()
    );
    let server = TestServer::start(&yaml).await;
    // gatekeeper and auth are found and loaded with no grants: gatekeeper's hooks are for
    // other plugins' requests, which needs `intercept`, so it fails, saying how to grant it;
    // auth's routes need `router`.
    let gatekeeper = server.host.plugin_info("gatekeeper").expect("autoloaded");
    assert_eq!(gatekeeper.status, plugd::Status::Error);
    assert!(gatekeeper.permissions.is_empty(), "no grants");
    let message = gatekeeper.last_error.unwrap().message;
    assert!(
        message.contains("needs the 'intercept' permission")
            && message.contains("plugins.plugins[<new entry for 'gatekeeper'>]"),
        "{message}"
    );
    let auth = server.host.plugin_info("auth").expect("autoloaded");
    assert_eq!(auth.status, plugd::Status::Error);
    assert!(auth.permissions.is_empty(), "no grants");
    // hello is listed (path from plugins.directory) and serves; an ungranted guard guards
    // nothing beyond its own routes.
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);
    assert_eq!(server.get("/plugins/gatekeeper/x").await.status(), 503);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_use_the_contract_metric_names_after_real_traffic() {
    let server = TestServer::start(&examples_config()).await;
    for _ in 0..3 {
        assert_eq!(
            server.get("/plugins/hello/greet?name=Ada").await.status(),
            200
        );
    }
    let r = server.get("/metrics").await;
    assert_eq!(r.status(), 200, "public by default");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(
        r.headers().get("x-plugd-gatekeeper").is_none(),
        "/metrics bypasses plugins"
    );
    let text = r.text().await.unwrap();
    for line in [
        "plugd_plugin_load_success{plugin=\"hello\"} 1",
        "plugd_plugin_status{plugin=\"hello\",status=\"running\"} 1",
        "plugd_plugin_status{plugin=\"hello\",status=\"error\"} 0",
        "plugd_plugin_hook_executions_total{plugin=\"gatekeeper\",hook=\"pre_request\"} 3",
        "plugd_plugin_hook_errors_total{plugin=\"gatekeeper\",hook=\"pre_request\"} 0",
        "plugd_plugin_hook_duration_seconds_count{plugin=\"gatekeeper\",hook=\"pre_request\"} 3",
        "plugd_plugin_hook_duration_seconds_bucket{plugin=\"gatekeeper\",hook=\"pre_request\",le=\"+Inf\"} 3",
        "plugd_plugin_errors_total{plugin=\"hello\"} 0",
        "plugd_plugin_route_requests_total{plugin=\"hello\"} 3",
        "# TYPE plugd_plugin_hook_duration_seconds histogram",
        // What the plugin records about itself, namespaced under it.
        "plugd_custom_greetings_total{plugin=\"hello\"} 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("plugd_plugin_load_duration_seconds{plugin=\"hello\"} "));
    // Instances and memory per wasm plugin, and the engine's pool.
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("missing {prefix:?} in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(value("plugd_plugin_memory_bytes{plugin=\"hello\"} ") > 0.0);
    let max = value("plugd_plugin_instances_max{plugin=\"hello\"} ");
    let idle = value("plugd_plugin_instances{plugin=\"hello\",state=\"idle\"} ");
    let busy = value("plugd_plugin_instances{plugin=\"hello\",state=\"busy\"} ");
    assert!(
        max >= 1.0 && idle >= 1.0 && idle + busy <= max,
        "{idle} + {busy} <= {max}"
    );
    assert!(value("plugd_wasm_pool_slots ") > 0.0);
    assert!(
        value("plugd_wasm_pool_component_instances ") >= idle,
        "hello's instances take pool slots"
    );
    server.stop().await;
}
