//! The admin API needs the token; its answers describe every plugin.

use serde_json::Value;

use crate::support::{TOKEN, TestServer, examples_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_needs_the_token() {
    let server = TestServer::start(&examples_config()).await;
    let r = server.admin_raw("/admin/plugins").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = server
        .client
        .get(format!("{}/admin/plugins", server.admin_url))
        .bearer_auth(format!("{TOKEN}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = server.admin_get("/admin/nothing-here").await;
    assert_eq!(r.status(), 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_plugins_with_status() {
    let server = TestServer::start(&examples_config()).await;
    let r = server.admin_get("/admin/plugins").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-plugd-gatekeeper").is_none(),
        "admin bypasses plugins"
    );
    let list: Vec<Value> = r.json().await.unwrap();
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    // gatekeeper has the higher priority (security = 300): it starts first.
    assert_eq!(names, vec!["gatekeeper", "hello"]);
    let hello = &list[1];
    for key in [
        "name",
        "version",
        "description",
        "author",
        "loaded",
        "enabled",
        "status",
        "phase",
        "load_time",
        "last_error",
    ] {
        assert!(hello.get(key).is_some(), "missing {key} in {hello}");
    }
    assert_eq!(hello["version"], "1.0.0");
    assert_eq!(hello["status"], "running");
    assert_eq!(hello["loaded"], true);
    assert_eq!(hello["enabled"], true);
    assert_eq!(hello["kind"], "wasm");
    assert!(hello["phase"].is_null());
    assert!(hello["last_error"].is_null());
    assert!(hello["load_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(hello["permissions"], serde_json::json!(["router"]));
    let routes: Vec<&str> = hello["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(routes.contains(&"GET /plugins/hello/greet"), "{routes:?}");
    let gatekeeper = &list[0];
    assert_eq!(gatekeeper["hooks"][0]["hook"], "pre_request");
    assert_eq!(gatekeeper["hooks"][0]["priority"], 200);

    let one: Value = server
        .admin_get("/admin/plugins/hello")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["name"], "hello");
    assert_eq!(server.admin_get("/admin/plugins/nope").await.status(), 404);
    server.stop().await;
}

/// A native plugin that answers with the request headers it saw.
struct Echo;

#[async_trait::async_trait]
impl plugd::Plugin for Echo {
    async fn init(&self, ctx: &mut plugd::InitContext<'_>) -> Result<(), plugd::PluginError> {
        ctx.register_route("GET", "/headers", plugd::RouteOptions::default())
            .map_err(|e| plugd::PluginError::Failed(e.to_string()))
    }
    async fn handle_request(
        &self,
        _route: &str,
        ex: &mut plugd::Exchange,
    ) -> Result<plugd::Response, plugd::PluginError> {
        let seen: Vec<String> = ex.header_pairs().into_iter().map(|(k, _)| k).collect();
        Ok(plugd::Response::json(
            http::StatusCode::OK,
            &serde_json::json!({ "headers": seen }),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_never_see_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = plugd::manifest::Manifest::from_str(
        "name: echo\nversion: 1.0.0\ndescription: d\nauthor: a\npermissions: { router: true }\n",
        plugd::manifest::Format::Yaml,
        None,
    )
    .unwrap();
    let host = plugd::Host::builder()
        .data_dir(dir.path())
        .native(manifest, Echo)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/plugins/echo/headers",
        listener.local_addr().unwrap()
    );
    let admin = plugd::server::AdminToken::new(TOKEN).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(plugd::server::serve(host, admin, listener, async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let with_admin: Value = client
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !with_admin["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "authorization")
    );
    let with_other: Value = client
        .get(&url)
        .bearer_auth("user-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        with_other["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "authorization")
    );
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_plugins() {
    let server = TestServer::start(&examples_config()).await;
    let url = |p: &str| format!("{}{p}", server.admin_url);
    let c = &server.client;

    // Every endpoint needs the token.
    for (method, path) in [
        ("GET", "/admin/info"),
        ("GET", "/admin/health"),
        ("GET", "/admin/plugins/hello"),
        ("POST", "/admin/plugins/hello/reload"),
        ("POST", "/admin/plugins/hello/enable"),
        ("POST", "/admin/plugins/hello/disable"),
        ("POST", "/admin/config/reload"),
        ("GET", "/admin/audit"),
        ("GET", "/admin/plugins/hello/health"),
        ("GET", "/admin/plugins/hello/config"),
        ("PUT", "/admin/plugins/hello/config"),
        ("DELETE", "/admin/plugins/hello"),
        ("POST", "/admin/plugins"),
    ] {
        let r = c
            .request(method.parse().unwrap(), url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
    }

    let info: Value = server.admin_get("/admin/info").await.json().await.unwrap();
    assert_eq!(info["contract"], "plugd:plugin@0.2.0");
    assert_eq!(info["plugins"], 2);
    let health: Value = server
        .admin_get("/admin/plugins/hello/health")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "running");
    assert_eq!(health["reported"]["state"], "healthy");

    // Config: read, change live, refuse a bad body and an invalid config.
    let config: Value = server
        .admin_get("/admin/plugins/hello/config")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["greeting"], "Hello");
    let r = c
        .put(url("/admin/plugins/hello/config"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"greeting": "Hej"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = server
        .get("/plugins/hello/greet?name=Ada")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["message"], "Hej, Ada!");
    let r = c
        .put(url("/admin/plugins/hello/config"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].is_string());
    let r = c
        .put(url("/admin/plugins/hello/config"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"greeting": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "the schema is checked first");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "unprocessable_entity");
    assert!(e["message"].as_str().unwrap().contains("greeting"), "{e}");
    let r = c
        .put(url("/admin/plugins/hello/config"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not an object");
    let r = c
        .put(url("/admin/plugins/hello/config"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "no JSON content type");
    let r = c
        .put(url("/admin/plugins/hello/config"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!("x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "admin bodies are size-limited");

    // Unload and load back from its path.
    let r = c
        .delete(url("/admin/plugins/hello"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 404);
    let load = serde_json::json!({"name": "hello", "path": crate::support::example("hello"), "permissions": ["router"]});
    let r = c
        .post(url("/admin/plugins"))
        .bearer_auth(TOKEN)
        .json(&load)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["status"], "running");
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);
    let r = c
        .post(url("/admin/plugins"))
        .bearer_auth(TOKEN)
        .json(&load)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = c
        .post(url("/admin/plugins"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "missing path");
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("path"), "{e}");
    for bad in [
        "{",
        "[]",
        r#"{"name": "x", "path": "/p", "extra": 1}"#,
        r#"{"name": "../x", "path": "/p"}"#,
    ] {
        let r = c
            .post(url("/admin/plugins"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "bad_request", "{bad}");
    }
    let r = c
        .delete(url("/admin/plugins/hello?force=maybe"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "bad query");
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);
    let r = c
        .delete(url("/admin/plugins/nobody"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let audit: Vec<Value> = server.admin_get("/admin/audit").await.json().await.unwrap();
    assert!(audit.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reloads_disables_and_enables() {
    let server = TestServer::start(&examples_config()).await;
    let c = &server.client;
    let post = |path: &str| {
        c.post(format!("{}{path}", server.admin_url))
            .bearer_auth(TOKEN)
            .send()
    };
    let before: Value = server
        .admin_get("/admin/plugins/hello")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["depends_on"], serde_json::json!([]));
    assert_eq!(before["dependents"], serde_json::json!([]));
    assert!(before["load_duration_ms"].as_f64().unwrap() > 0.0);

    let r = post("/admin/plugins/hello/reload").await.unwrap();
    assert_eq!(r.status(), 200);
    let outcome: Value = r.json().await.unwrap();
    assert_eq!(outcome["plugin"], "hello");
    assert_eq!(outcome["to_version"], "1.0.0");
    let after: Value = server
        .admin_get("/admin/plugins/hello")
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(
        after["load_time"], before["load_time"],
        "a reload loads anew"
    );
    assert_eq!(after["status"], "running");

    let r = post("/admin/plugins/hello/disable").await.unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["status"], "disabled");
    assert_eq!(info["disabled_by"], "operator");
    assert_eq!(info["enabled"], false);
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 503);
    let r = post("/admin/plugins/hello/enable").await.unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["status"], "running");
    assert_eq!(info["enabled"], true);
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);

    // The contract's GetPluginMetrics over HTTP.
    let r = server.admin_get("/admin/plugins/hello/metrics").await;
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["plugin"], "hello");
    assert_eq!(m["load_success"], true);
    assert_eq!(m["routes"]["execution_count"], 1, "{m}");
    assert!(
        m["recorded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "greetings" && s["kind"] == "counter"),
        "{m}"
    );
    assert_eq!(
        server
            .admin_get("/admin/plugins/nope/metrics")
            .await
            .status(),
        404
    );

    for path in [
        "/admin/plugins/nope/reload",
        "/admin/plugins/nope/enable",
        "/admin/plugins/nope/disable",
    ] {
        let r = post(path).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "not_found");
    }
    // gatekeeper lacks the hot_reload capability.
    let r = post("/admin/plugins/gatekeeper/reload").await.unwrap();
    assert_eq!(r.status(), 409);

    let health: Value = server
        .admin_get("/admin/health")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["plugins"]["hello"]["status"], "running");
    // The test server's config file has no change: a clean config reload.
    let r = post("/admin/config/reload").await.unwrap();
    assert_eq!(r.status(), 200);
    // Unknown routes and wrong methods: JSON.
    let r = server.admin_get("/admin/plugins/hello/nothing").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    let r = c
        .patch(format!("{}/admin/plugins/hello", server.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_dashboard_need_no_token() {
    let server = TestServer::start(&examples_config()).await;
    let r = server.admin_raw("/admin/openapi.json").await;
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/admin/plugins/{name}/reload"]["post"].is_object());
    let r = server.admin_raw("/admin/").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("sessionStorage"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    // The page is public; the data it shows is not.
    assert_eq!(server.admin_raw("/admin/plugins").await.status(), 401);
    server.stop().await;
}

/// `admin.listen`: the admin API and dashboard on their own listener, not on the main one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_moves_the_admin_api() {
    crate::support::guests_built();
    let dir = tempfile::tempdir().unwrap();
    let yaml = examples_config().replace("{data}", &dir.path().join("data").display().to_string())
        + "admin:\n  listen: \"127.0.0.1:0\"\n";
    let config =
        plugd::manifest::HostConfig::from_str(&yaml, plugd::manifest::Format::Yaml, None).unwrap();
    let host = plugd::host_from_config(config).unwrap();
    host.start().await.unwrap();
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let main_url = format!("http://{}", main.local_addr().unwrap());
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(plugd::server::serve_with_admin(
        host,
        plugd::server::AdminToken::new(TOKEN).unwrap(),
        main,
        Some(admin),
        async {
            let _ = rx.await;
        },
    ));
    let c = reqwest::Client::new();
    let get = |url: String| c.get(url).bearer_auth(TOKEN).send();
    let r = get(format!("{main_url}/admin/plugins")).await.unwrap();
    assert_eq!(r.status(), 404, "not on the main listener");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    assert_eq!(
        get(format!("{main_url}/admin/")).await.unwrap().status(),
        404
    );
    assert_eq!(
        get(format!("{main_url}/plugins/hello/greet"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(format!("{main_url}/healthz")).await.unwrap().status(),
        200
    );
    let r = get(format!("{admin_url}/admin/plugins")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 2);
    assert_eq!(
        c.get(format!("{admin_url}/admin/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{admin_url}/admin/plugins"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get(format!("{admin_url}/metrics")).await.unwrap().status(),
        200
    );
    assert_eq!(
        get(format!("{admin_url}/plugins/hello/greet"))
            .await
            .unwrap()
            .status(),
        404,
        "no plugins on the admin listener"
    );
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
