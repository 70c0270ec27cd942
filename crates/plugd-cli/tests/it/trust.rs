//! The trust boundary (docs/design.md#trust-model): each attack of a plugin the operator granted
//! only what it asked for, run through a real server with real guest components
//! (`tests/plugins/<name>`), beside the example plugins.
//!
//! - a manifest cannot read the host's environment (`envthief`);
//! - a plugin sees no other plugin's traffic or credentials without `intercept`, and never the
//!   headers the operator hides from it (`sniffer`, `bigbody`);
//! - only a plugin granted `identity` is believed by required roles (`impostor`);
//! - the host owns HTTP framing: framing headers, header floods and header bombs (`framer`),
//!   checked on the wire over a keep-alive connection;
//! - secrets stay with the host: the admin API redacts them and never expands `${VAR}`;
//! - error texts stay with the operator (a request id reaches the client).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TOKEN, TestServer, example, test_plugin};

fn entry(name: &str, path: std::path::PathBuf, lines: &str) -> String {
    format!(
        "    - name: {name}\n      path: \"{}\"\n{lines}",
        path.display()
    )
}

fn config(extra_top: &str, entries: &[String]) -> String {
    format!(
        "data_dir: \"{{data}}\"\n{extra_top}plugins:\n  limits:\n    timeout: 5s\n  plugins:\n{}",
        entries.concat()
    )
}

fn hello() -> String {
    entry(
        "hello",
        example("hello"),
        "      permissions: { router: true }\n",
    )
}

fn auth() -> String {
    entry(
        "auth",
        example("auth"),
        "      permissions: { router: true, intercept: true, identity: true }\n      config:\n        tokens:\n          tok-ada: { subject: ada, roles: [user, admin] }\n",
    )
}

/// The last error of a plugin, from the admin API.
async fn last_error(server: &TestServer, name: &str) -> String {
    let info: Value = server
        .admin_get(&format!("/admin/plugins/{name}"))
        .await
        .json()
        .await
        .unwrap();
    info["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn audit(server: &TestServer, plugin: &str) -> Vec<Value> {
    server
        .admin_get(&format!("/admin/audit?plugin={plugin}"))
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_cannot_read_the_hosts_environment() {
    // The attack names the admin token; HOME is named here because it is always set.
    let home = std::env::var("HOME").expect("HOME is set");
    let err = plugd::manifest::Manifest::from_path(&test_plugin("envthief"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("default of 'theme' refers to environment variable 'PLUGD_ADMIN_TOKEN'")
            && err.contains("a manifest cannot read the host's environment"),
        "{err}"
    );

    let server = TestServer::start(&config(
        "",
        &[
            hello(),
            entry(
                "envthief",
                test_plugin("envthief"),
                "      permissions: { router: true }\n",
            ),
        ],
    ))
    .await;
    let r = server.get("/plugins/envthief/config").await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(!body.contains(&home) && !body.contains(TOKEN), "{body}");
    let message = last_error(&server, "envthief").await;
    assert!(
        message.contains("a manifest cannot read the host's environment"),
        "{message}"
    );
    assert_eq!(
        server.get("/plugins/hello/greet?name=Ada").await.status(),
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_intercept_sees_only_its_own_routes() {
    // `bigbody`'s pre_request hook answers any request carrying `x-huge: 1` with a body of its
    // own: without `intercept`, it cannot answer for hello's route.
    let server = TestServer::start(&config(
        "",
        &[
            hello(),
            entry(
                "bigbody",
                test_plugin("bigbody"),
                "      permissions: { router: true }\n",
            ),
        ],
    ))
    .await;
    let r = server
        .client
        .get(format!("{}/plugins/hello/greet?name=Ada&mib=1", server.url))
        .header("x-huge", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["plugin"], "hello", "hello answered, not bigbody");
    // On its own route its hook still runs.
    let r = server
        .client
        .get(format!("{}/plugins/bigbody/ok?mib=1", server.url))
        .header("x-huge", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 1 << 20);
    server.stop().await;

    // `sniffer` asks for `intercept`; granted only `router`, it does not run at all.
    let server = TestServer::start(&config(
        "",
        &[
            hello(),
            entry(
                "sniffer",
                test_plugin("sniffer"),
                "      permissions: { router: true }\n",
            ),
        ],
    ))
    .await;
    let message = last_error(&server, "sniffer").await;
    assert!(
        message.contains("needs the 'intercept' permission")
            && message.contains("plugins.plugins[1].permissions.intercept: true"),
        "{message}"
    );
    server
        .client
        .get(format!("{}/plugins/hello/greet", server.url))
        .header("authorization", "Bearer secret-1")
        .send()
        .await
        .unwrap();
    assert_eq!(server.get("/plugins/sniffer/loot").await.status(), 503);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_the_operator_hides_never_reach_the_plugin_and_reach_the_others() {
    let server = TestServer::start(&config(
        "",
        &[
            auth(),
            hello(),
            entry(
                "sniffer",
                test_plugin("sniffer"),
                "      permissions: { router: true, intercept: true }\n      hide_headers: [authorization, x-api-key, cookie]\n",
            ),
        ],
    ))
    .await;
    let r = server
        .client
        .get(format!("{}/plugins/auth/whoami", server.url))
        .bearer_auth("tok-ada")
        .header("x-api-key", "key-1")
        .header("cookie", "session=s1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "auth still sees the Authorization header");
    let loot: Value = server
        .get("/plugins/sniffer/loot")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        loot,
        json!([]),
        "the sniffer saw the request, not its credentials"
    );
    server.stop().await;

    // Scoped to /plugins/hello/*: requests elsewhere are out of its sight entirely.
    let server = TestServer::start(&config(
        "",
        &[
            auth(),
            hello(),
            entry(
                "sniffer",
                test_plugin("sniffer"),
                "      permissions: { router: true, intercept: true }\n      intercept: { paths: ['/plugins/hello/*'] }\n",
            ),
        ],
    ))
    .await;
    for path in ["/plugins/auth/whoami", "/plugins/hello/greet"] {
        server
            .client
            .get(format!("{}{path}", server.url))
            .bearer_auth("tok-ada")
            .send()
            .await
            .unwrap();
    }
    let loot: Value = server
        .get("/plugins/sniffer/loot")
        .await
        .json()
        .await
        .unwrap();
    let paths: Vec<&str> = loot
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().all(|p| *p == "/plugins/hello/greet"), "{loot}");
    assert!(!paths.is_empty(), "it sees what it was granted: {loot}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_the_identity_grant_cannot_make_anyone_an_admin() {
    let impostor = |grants: &str| {
        entry(
            "impostor",
            test_plugin("impostor"),
            &format!("      permissions: {grants}\n"),
        )
    };
    let server = TestServer::start(&config(
        "",
        &[auth(), hello(), impostor("{ intercept: true }")],
    ))
    .await;
    let r = server.get("/plugins/auth/admin").await;
    assert_eq!(r.status(), 401, "no credentials, no identity");
    let r = server
        .client
        .get(format!("{}/plugins/auth/admin", server.url))
        .bearer_auth("tok-ada")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "auth's identity still counts");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["subject"], "ada", "{body}");
    let entries = audit(&server, "impostor").await;
    assert!(
        entries.iter().any(|e| e["capability"] == "identity"
            && e["detail"]
                == "permission denied: plugin 'impostor' attempted identity access without permission"),
        "{entries:?}"
    );
    server.stop().await;

    // The grant is what decides: an operator who grants it is believed.
    let server = TestServer::start(&config(
        "",
        &[
            auth(),
            hello(),
            impostor("{ intercept: true, identity: true }"),
        ],
    ))
    .await;
    assert_eq!(server.get("/plugins/auth/admin").await.status(), 200);
    server.stop().await;
}

/// One HTTP/1.1 response read off a connection, framed by its own headers.
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Read the next response: status line, headers, then exactly `content-length` bytes
    /// (framing by anything else fails the test).
    fn read(reader: &mut BufReader<TcpStream>) -> Wire {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        let wire = Wire {
            status,
            headers,
            body: Vec::new(),
        };
        assert_eq!(wire.header("transfer-encoding"), None, "{:?}", wire.headers);
        let length: usize = wire
            .header("content-length")
            .unwrap_or_else(|| panic!("no content-length: {:?}", wire.headers))
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        Wire { body, ..wire }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_owns_http_framing_on_a_keep_alive_connection() {
    let server = TestServer::start(&config(
        "",
        &[
            hello(),
            entry(
                "framer",
                test_plugin("framer"),
                "      permissions: { router: true, intercept: true }\n",
            ),
        ],
    ))
    .await;
    let addr = server.url.strip_prefix("http://").unwrap().to_string();
    let wires = tokio::task::spawn_blocking(move || {
        let stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        // Pipelined on one keep-alive connection: a desynchronised stream shows at once.
        for path in [
            "/plugins/hello/greet?name=A",
            "/plugins/framer/frame",
            "/plugins/hello/greet?name=B",
        ] {
            write!(writer, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        }
        let mut reader = BufReader::new(stream);
        (0..3).map(|_| Wire::read(&mut reader)).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let json = |w: &Wire| serde_json::from_slice::<Value>(&w.body).unwrap();
    assert_eq!(wires[0].status, 200);
    assert_eq!(json(&wires[0])["message"], "Hello, A!");
    // framer's pre_response hook tried to reframe hello's answer: refused, each one.
    assert_eq!(
        wires[0].header("x-framer"),
        Some("content-length=Invalid transfer-encoding=Invalid connection=Invalid")
    );
    assert_eq!(wires[1].status, 200);
    assert_eq!(json(&wires[1]), json!({ "framed": true }));
    assert_eq!(wires[1].header("x-ok"), Some("1"));
    for dropped in ["upgrade", "proxy-x", "connection"] {
        assert_eq!(
            wires[1].header(dropped),
            None,
            "{dropped}: {:?}",
            wires[1].headers
        );
    }
    assert_eq!(json(&wires[2])["message"], "Hello, B!");

    let entries = audit(&server, "framer").await;
    for header in ["content-length", "transfer-encoding", "connection"] {
        assert!(
            entries
                .iter()
                .any(|e| e["capability"] == "framing"
                    && e["detail"].as_str().unwrap().contains(header)),
            "{header}: {entries:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_bombs_and_floods_are_the_plugins_errors_never_a_host_panic() {
    // framer's startup hook answers 30,000 headers: the host starts anyway. (The error texts
    // are exposed here so that the test reads the cause from the answer.)
    let server = TestServer::start(&config(
        "server: { expose_errors: true }\n",
        &[
            hello(),
            entry(
                "framer",
                test_plugin("framer"),
                "      permissions: { router: true, intercept: true }\n",
            ),
        ],
    ))
    .await;
    for n in [30_000, 24_577, 257] {
        let r = server.get(&format!("/plugins/framer/bomb?n={n}")).await;
        assert_eq!(r.status(), 500, "{n} headers");
        let body: Value = r.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        // Its headers and its content-type.
        let total = n + 1;
        assert!(
            message.contains(&format!(
                "the response has {total} headers, over the cap of 256"
            )),
            "{message}"
        );
    }
    assert_eq!(server.get("/plugins/framer/bomb?n=50").await.status(), 200);
    let r = server
        .client
        .get(format!("{}/plugins/hello/greet", server.url))
        .header("x-flood", "1000")
        .send()
        .await
        .unwrap();
    let flood: Value = r.json().await.unwrap();
    assert!(flood["set"].as_u64().unwrap() < 256, "{flood}");
    assert!(flood["refused"].as_u64().unwrap() > 700, "{flood}");
    assert_eq!(
        server.get("/plugins/hello/greet?name=Ada").await.status(),
        200
    );
    let entries = audit(&server, "framer").await;
    assert!(
        entries.iter().any(|e| e["capability"] == "headers"
            && e["detail"].as_str().unwrap().contains("over the cap")),
        "the refused flood is audited"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_a_request_id_not_the_plugins_error_text() {
    let trapper = entry(
        "trapper",
        test_plugin("trapper"),
        "      permissions: { router: true }\n",
    );
    let server = TestServer::start(&config("", std::slice::from_ref(&trapper))).await;
    let r = server.get("/plugins/trapper/trap").await;
    assert_eq!(r.status(), 500);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
    let message = body["message"].as_str().unwrap();
    assert!(!message.contains("trapped"), "{message}");
    assert!(message.contains(&id), "{message}");
    // The operator still reads the cause.
    assert!(
        last_error(&server, "trapper")
            .await
            .contains("plugin trapped")
    );
    server.stop().await;

    let server = TestServer::start(&config("server: { expose_errors: true }\n", &[trapper])).await;
    let body: Value = server
        .get("/plugins/trapper/trap")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("plugin trapped"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_redacts_secrets_and_never_expands_the_environment() {
    let server = TestServer::start(&config("", &[auth(), hello()])).await;
    let config: Value = server
        .admin_get("/admin/plugins/auth/config")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["tokens"], "[redacted]", "{config}");
    assert!(!config.to_string().contains("tok-ada"));

    let put = |body: Value| {
        server
            .client
            .put(format!("{}/admin/plugins/auth/config", server.admin_url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    // What the admin API showed can be sent back: the secret keeps its value.
    let r = put(json!({ "tokens": "[redacted]", "subject_header": "x-who" }))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .client
        .get(format!("{}/plugins/auth/whoami", server.url))
        .bearer_auth("tok-ada")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-who"], "ada");
    // `${VAR}` in the admin API reads nothing from the host's environment.
    let r = put(json!({ "subject_header": "${HOME}" })).await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("refers to environment variable 'HOME'"),
        "{body}"
    );
    let r = server
        .client
        .post(format!("{}/admin/plugins", server.admin_url))
        .bearer_auth(TOKEN)
        .json(&json!({
            "name": "trapper",
            "path": test_plugin("trapper"),
            "permissions": ["router"],
            "config": { "fail_init": "${HOME}" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    server.stop().await;
}

/// One raw request (the path as written: clients such as reqwest would normalize it).
async fn raw(server: &TestServer, path: &str, extra_headers: &str) -> String {
    let addr = server.url.strip_prefix("http://").unwrap().to_string();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}Connection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    })
    .await
    .unwrap()
}

/// A path that means another path to whoever normalizes it would let a request slip past a
/// guard's `intercept.paths` and still reach the route: every such spelling is refused before
/// any plugin sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_in_another_spelling_is_refused_before_any_plugin() {
    let server = TestServer::start(&config("", &[auth(), hello()])).await;
    for path in [
        "/plugins/hello/../auth/admin",
        "/plugins/auth/%2e%2e/auth/admin",
        "/plugins/auth//admin",
        "/plugins/auth/%61dmin",
        "/plugins/auth/a%2Fb",
    ] {
        let reply = raw(&server, path, "").await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
    }
    assert!(
        raw(&server, "/plugins/hello/greet?name=Ada", "")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Headers past what a plugin may keep: refused before a plugin could be made to fail on them.
    let padding: String = (0..9)
        .map(|i| format!("x-pad-{i}: {}\r\n", "p".repeat(8000)))
        .collect();
    let reply = raw(&server, "/plugins/hello/greet", &padding).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    // `/admin/`, the dashboard's usual address, is the host's on the main listener too.
    let reply = raw(&server, "/admin/", "").await;
    assert!(
        reply.starts_with("HTTP/1.1 404") && reply.contains("admin.listen"),
        "{reply}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_origin_plugins_cannot_install_service_workers() {
    let swjack = entry(
        "swjack",
        test_plugin("swjack"),
        "      permissions: { router: true }\n",
    );
    // Default: the admin API is elsewhere; a plugin's worker is its own business.
    let server = TestServer::start(&config("", std::slice::from_ref(&swjack))).await;
    assert_ne!(server.url, server.admin_url);
    assert_eq!(server.get("/admin/").await.status(), 404);
    let r = server
        .client
        .get(format!("{}/plugins/swjack/sw.js", server.url))
        .header("service-worker", "script")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["service-worker-allowed"], "/");
    server.stop().await;

    let server = TestServer::start(&config("admin: { listen: shared }\n", &[swjack])).await;
    assert_eq!(server.url, server.admin_url);
    let r = server
        .client
        .get(format!("{}/plugins/swjack/sw.js", server.url))
        .header("service-worker", "script")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = server.get("/plugins/swjack/sw.js").await;
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("service-worker-allowed"));
    let r = server.admin_raw("/admin/").await;
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    server.stop().await;
}
