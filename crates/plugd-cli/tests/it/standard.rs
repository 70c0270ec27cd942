//! Standard components, unmodified: a wasi:http proxy written with wstd (`#[wstd::http_server]`,
//! tests/components/wstd-hello, built by scripts/build-examples.sh) served under its mount with
//! other plugins' hooks around it, and its outgoing requests (wasi:http/outgoing-handler) held to
//! `network.allow` exactly as `outbound.fetch` is: the attacks each get a case.

use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::support::{TestServer, example, repo_root};

/// A local upstream on a free loopback port: `/hello`, `/big` (11 MiB, over the 10 MiB cap),
/// `/slow` (answers after 30 s), `/wait` (after 300 ms).
async fn upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/hello", get(|| async { "hi from upstream" }))
        .route("/big", get(|| async { vec![b'x'; 11 * 1024 * 1024] }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/wait",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "waited"
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

fn config(port: u16, grants: &str) -> String {
    format!(
        r#"
data_dir: "{{data}}"
plugins:
  plugins:
    - name: gatekeeper
      path: "{gatekeeper}"
      permissions: {{ intercept: true }}
      config: {{ protected_prefix: /plugins/wstd-hello/fetch }}
    - name: wstd-hello
      path: "{wstd}"
      permissions: {grants}
      network:
        allow: ["127.0.0.1:{port}"]
      limits:
        timeout: 3s
"#,
        gatekeeper = example("gatekeeper").display(),
        wstd = repo_root().join("tests/components/wstd-hello").display(),
    )
}

async fn text(server: &TestServer, path: &str) -> (u16, String) {
    let r = server
        .client
        .get(format!("{}{path}", server.url))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wstd_proxy_component_is_a_plugin_whose_routes_are_its_handler() {
    let (port, _upstream) = upstream().await;
    let server = TestServer::start(&config(port, "{ router: true, network: true }")).await;
    let info = server.host.plugin_info("wstd-hello").unwrap();
    assert_eq!(info.status, plugd::Status::Running);

    // The path without the mount, the mount in x-forwarded-prefix (a client's own replaced),
    // the other plugin's pre_response hook around it.
    let r = server
        .client
        .get(format!("{}/plugins/wstd-hello/hello", server.url))
        .header("x-forwarded-prefix", "/spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plugd-gatekeeper"], "checked");
    assert_eq!(
        r.text().await.unwrap(),
        "Hello from wstd! path=/hello prefix=/plugins/wstd-hello\n"
    );
    // Its own 404, every method, and the other plugin's pre_request hook in front of it.
    assert_eq!(
        text(&server, "/plugins/wstd-hello/nothing/here").await,
        (404, "not found\n".to_string())
    );
    let r = server
        .client
        .post(format!("{}/plugins/wstd-hello/hello", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .get(&format!(
            "/plugins/wstd-hello/fetch?url=http://127.0.0.1:{port}/hello"
        ))
        .await;
    assert_eq!(r.status(), 401, "gatekeeper guards /fetch without the key");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_outgoing_requests_pass_the_network_allow_gate_of_outbound_fetch() {
    let (port, _upstream) = upstream().await;
    let server = TestServer::start(&config(port, "{ router: true, network: true }")).await;
    let fetch = |url: String| format!("/plugins/wstd-hello/fetch?url={url}");

    // The allowed upstream answers, through wstd's client.
    let r = server
        .client
        .get(format!(
            "{}{}",
            server.url,
            fetch(format!("http://127.0.0.1:{port}/hello"))
        ))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream-status"], "200");
    assert_eq!(r.text().await.unwrap(), "hi from upstream");
    // An IP literal in another spelling is the same host, normalised as outbound.fetch does.
    let (status, body) = text(&server, &fetch(format!("http://0x7f.1:{port}/hello"))).await;
    assert_eq!((status, body.as_str()), (200, "hi from upstream"));

    // Refused before any connection: another port of the allowed host, a name that resolves to
    // the allowed address, another host. Each is HTTP-request-denied for the guest, and audited.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let other = trap.local_addr().unwrap().port();
    for (url, target) in [
        (
            format!("http://127.0.0.1:{other}/"),
            format!("127.0.0.1:{other}"),
        ),
        (
            format!("http://localhost:{port}/hello"),
            format!("localhost:{port}"),
        ),
        ("http://example.com/".to_string(), "example.com".to_string()),
    ] {
        let (status, body) = text(&server, &fetch(url.clone())).await;
        assert_eq!(status, 502, "{url}: {body}");
        assert!(body.contains("HttpRequestDenied"), "{url}: {body}");
        let audit = server.host.audit_log(Some("wstd-hello"));
        let last = audit.last().expect("an audit entry");
        assert_eq!(last.capability, "network");
        assert_eq!(
            last.detail,
            format!(
                "wasi:http/outgoing-handler: network access denied: plugin 'wstd-hello' may not connect to '{target}' (not in network.allow)"
            )
        );
    }
    assert!(
        matches!(trap.accept(), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection was made to the port not allowed"
    );
    assert_eq!(
        server.host.plugin_info("wstd-hello").unwrap().error_count,
        3
    );

    // A host header other than the authority the gate checked: the guest cannot set it.
    let (status, body) = text(
        &server,
        &format!(
            "{}&host=example.com",
            fetch(format!("http://127.0.0.1:{port}/hello"))
        ),
    )
    .await;
    assert_eq!(status, 502, "{body}");

    // A response body over the 10 MiB cap, a response that takes longer than the plugin's
    // deadline: errors for the guest, not for the host.
    let (status, body) = text(&server, &fetch(format!("http://127.0.0.1:{port}/big"))).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpResponseBodySize"), "{body}");
    let (status, body) = text(&server, &fetch(format!("http://127.0.0.1:{port}/slow"))).await;
    assert!(status == 502 || status == 504, "{status}: {body}");
    if status == 502 {
        assert!(body.contains("HttpResponseTimeout"), "{body}");
    }

    // Many requests at once from one instance: at most 8 in flight, the rest refused and audited.
    let (status, body) = text(
        &server,
        &format!("/plugins/wstd-hello/fanout?n=12&url=http://127.0.0.1:{port}/wait"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok=8 refused=4\n"));
    let audit = server.host.audit_log(Some("wstd-hello"));
    assert!(
        audit.iter().any(|e| e.capability == "network"
            && e.detail
                .contains("already has 8 outgoing requests in flight")),
        "{audit:?}"
    );
    assert_eq!(
        server.host.plugin_info("wstd-hello").unwrap().status,
        plugd::Status::Running
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_network_its_requests_are_denied_and_without_router_it_has_no_routes() {
    let (port, _upstream) = upstream().await;
    let server = TestServer::start(&config(port, "{ router: true }")).await;
    let (status, body) = text(
        &server,
        &format!("/plugins/wstd-hello/fetch?url=http://127.0.0.1:{port}/hello"),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    let audit = server.host.audit_log(Some("wstd-hello"));
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].capability, "network");
    server.stop().await;

    let server = TestServer::start(&config(port, "{ network: true }")).await;
    let info = server.host.plugin_info("wstd-hello").unwrap();
    assert_ne!(info.status, plugd::Status::Running, "{info:?}");
    let r = server.get("/plugins/wstd-hello/hello").await;
    assert_ne!(r.status(), 200);
    server.stop().await;
}
