//! Events between wasm plugins: trapper publishes `test.ping`, spinner subscribes to `test.*`.

use std::time::Duration;

use crate::support::{TestServer, test_plugin};

fn config() -> String {
    format!(
        r#"
data_dir: "{{data}}"
plugins:
  plugins:
    - name: trapper
      path: "{trapper}"
      permissions: {{ router: true }}
    - name: spinner
      path: "{spinner}"
      permissions: {{ router: true, intercept: true }}
"#,
        trapper = test_plugin("trapper").display(),
        spinner = test_plugin("spinner").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_plugin_publishes_and_another_receives() {
    let server = TestServer::start(&config()).await;
    assert_eq!(
        server.host.plugin_info("spinner").unwrap().subscriptions,
        ["test.*"],
        "subscriptions come from the manifest"
    );
    let r = server.get("/plugins/trapper/publish").await;
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    for _ in 0..200 {
        seen = server
            .get("/plugins/spinner/events")
            .await
            .text()
            .await
            .unwrap();
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, "test.ping from trapper: ping\n");
    let subs = server.host.subscriptions();
    assert_eq!((subs[0].plugin.as_str(), subs[0].delivered), ("spinner", 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_an_undeclared_event_is_denied() {
    let server = TestServer::start(&config()).await;
    let r = server.get("/plugins/trapper/publish-undeclared").await;
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("plugin 'trapper' attempted to publish undeclared event 'test.secret'"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        server
            .get("/plugins/spinner/events")
            .await
            .text()
            .await
            .unwrap(),
        ""
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_timer_ticks_until_the_plugin_is_unloaded() {
    let server = TestServer::start(&config()).await;
    let ticks = |s: String| s.parse::<u64>().unwrap();
    let mut seen = 0;
    for _ in 0..100 {
        seen = ticks(
            server
                .get("/plugins/spinner/ticks")
                .await
                .text()
                .await
                .unwrap(),
        );
        if seen >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen >= 3, "the beat timer ticked {seen} times");
    server.host.unload_plugin("spinner", false).await.unwrap();
    let store = server.host.storage("spinner");
    let read = async || {
        serde_json::from_slice::<u64>(&store.get("ticks").await.unwrap().unwrap()).unwrap()
    };
    let after_unload = read().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(read().await, after_unload, "no tick after unload");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_plugin_calls_another_plugins_service() {
    let server = TestServer::start(&config()).await;
    assert_eq!(
        server.host.plugin_info("trapper").unwrap().exports,
        ["text"]
    );
    let r = server.get("/plugins/spinner/call").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "HI (for spinner)");
    let r = server.get("/plugins/spinner/call?service=nope").await;
    assert_eq!(r.status(), 502);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("service not found: plugin 'trapper' does not export 'nope'")
    );
    // The host (or a native plugin) reaches the same service.
    let bytes = server
        .host
        .services()
        .call("host", "trapper", "text", "upper", b"ok")
        .await
        .unwrap();
    assert_eq!(bytes, b"OK (for host)");
    assert_eq!(
        server.host.services().exported(),
        [("trapper".to_string(), "text".to_string())]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_middleware_wraps_another_plugins_routes() {
    let server = TestServer::start(&config()).await;
    let r = server.get("/plugins/trapper/ok").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-spinner-mw"], "seen");
    let r = server.get("/plugins/spinner/ok").await;
    assert!(
        r.headers().get("x-spinner-mw").is_none(),
        "globs limit it to trapper's routes"
    );
    let r = server
        .client
        .get(format!("{}/plugins/trapper/ok", server.url))
        .header("x-block", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers()["x-spinner-mw"], "seen");
    server.host.unload_plugin("spinner", false).await.unwrap();
    let r = server.get("/plugins/trapper/ok").await;
    assert!(
        r.headers().get("x-spinner-mw").is_none(),
        "unload removes the middleware"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_needs_its_grant_and_a_denial_is_audited() {
    // trapper declares cache; this config does not grant it.
    let server = TestServer::start(&config()).await;
    let r = server.get("/plugins/trapper/cache").await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().await.unwrap(),
        "permission denied: plugin 'trapper' attempted cache access without permission"
    );
    let audit = server.host.audit_log(Some("trapper"));
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].capability.as_str(), audit[0].detail.as_str()),
        ("cache", "cache.set")
    );
    server.stop().await;

    let granted = config().replace(
        "      permissions: { router: true }\n    - name: spinner",
        "      permissions: { router: true, cache: true }\n    - name: spinner",
    );
    let server = TestServer::start(&granted).await;
    let r = server.get("/plugins/trapper/cache").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "cached");
    assert!(server.host.audit_log(None).is_empty());
    server.stop().await;
}
