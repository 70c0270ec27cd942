//! The example application with plugd added in, served on a real port with the real wasm
//! plugins of examples/plugins (built by scripts/build-examples.sh): the gatekeeper plugin
//! guards the application's own `/api/orders`, the ratelimit plugin answers 429, the hello
//! plugin is served at `/api/v1/hello`, and the application's own `/healthz` and fallback stay
//! its own.

use std::path::Path;

const TOKEN: &str = "axum-app-test-admin-token-0123456789";

fn plugin_built(name: &str) {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/{name}/plugin.wasm"));
    assert!(
        wasm.exists(),
        "{} is missing: run scripts/build-examples.sh first",
        wasm.display()
    );
}

/// The application on 127.0.0.1:<free port> with `limit` requests per minute per key.
async fn serve(limit: u32) -> (String, plugd::Host, tempfile::TempDir) {
    for name in ["gatekeeper", "ratelimit", "hello"] {
        plugin_built(name);
    }
    let dir = tempfile::tempdir().unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = plugd::manifest::HostConfig::from_path(&here.join("plugd.yaml")).unwrap();
    config.data_dir = dir.path().to_path_buf();
    config.admin.token = Some(TOKEN.into());
    let ratelimit = config
        .plugins
        .plugins
        .iter_mut()
        .find(|p| p.name == "ratelimit")
        .unwrap();
    ratelimit.config.insert("limit".into(), limit.into());
    let server = config.server.clone();
    let (app, host) = axum_app::with_plugd(config).await.unwrap();
    for p in host.list_plugins() {
        assert_eq!(
            p.status,
            plugd::Status::Running,
            "{}: {:?}",
            p.name,
            p.last_error
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(plugd::server::serve_router(
        listener,
        app,
        &server,
        std::future::pending(),
    ));
    (base, host, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gatekeeper_plugin_guards_the_applications_own_route() {
    let (base, host, _dir) = serve(100).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}/api/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "without a key: {:?}", r.text().await);
    let r = client
        .get(format!("{base}/api/orders"))
        .header("x-api-key", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["orders"][0]["item"], "tea",
        "the application's own handler answered"
    );

    // The application's own /healthz and fallback, untouched by the plugins.
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "the application is fine");
    let r = client
        .get(format!("{base}/no/such/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "the application has no such page");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ratelimit_plugin_answers_429_past_the_limit() {
    let (base, host, _dir) = serve(3).await;
    let client = reqwest::Client::new();
    let get = |key: &'static str| {
        client
            .get(format!("{base}/api/orders"))
            .header("x-api-key", key)
            .send()
    };
    for i in 0..3 {
        assert_eq!(get("k1").await.unwrap().status(), 200, "request {i}");
    }
    let r = get("k1").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        get("k2").await.unwrap().status(),
        200,
        "another key has its own budget"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_route_is_served_at_the_mount_the_operator_chose() {
    let (base, host, _dir) = serve(100).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}/api/v1/hello/greet?name=Ada"))
        .header("x-api-key", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Hello, Ada!");
    // Not at the default mount any more: that path is the application's 404.
    let r = client
        .get(format!("{base}/plugins/hello/greet"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "the application has no such page");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_nested_under_ops_plugd() {
    let (base, host, _dir) = serve(100).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}/ops/plugd/plugins"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("{base}/ops/plugd/plugins"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let plugins: serde_json::Value = r.json().await.unwrap();
    assert_eq!(plugins.as_array().unwrap().len(), 3);
    let page = client
        .get(format!("{base}/ops/plugd/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    host.shutdown().await;
}
