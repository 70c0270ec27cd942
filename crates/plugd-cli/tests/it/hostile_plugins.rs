//! The hostile-plugin suite: each test loads one attacking plugin (`tests/plugins/<name>`, one
//! attack each) beside the well-behaved `hello`, runs the attack through real HTTP, and asserts
//! that the attack is contained (the right status, error or denial, counted against the
//! attacker), that the host keeps serving (`/healthz`), and that `hello` keeps answering
//! correctly, during the attack where that means something and after it.
//!
//! Deadlines are short (500 ms) so that the suite is quick; nothing here asserts a duration.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value;
use tokio::task::JoinSet;

use crate::support::{TestServer, example, test_plugin};

/// A host config: `hello`, then each attacker with its own entry lines (indented for the entry).
/// Every attacker's call has a 500 ms deadline; hello's are generous, so that a loaded machine
/// never fails it. The answers carry the plugins' error texts (`server.expose_errors`), so that
/// the tests read what the operator reads (`trust.rs` checks that clients do not by default).
fn config(attackers: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        r#"
data_dir: "{{data}}"
server: {{ expose_errors: true }}
plugins:
  limits:
    timeout: 500ms
  plugins:
    - name: hello
      path: "{hello}"
      permissions: {{ router: true }}
      limits: {{ timeout: 10s }}
"#,
        hello = example("hello").display()
    );
    for (name, entry) in attackers {
        yaml.push_str(&format!(
            "    - name: {name}\n      path: \"{path}\"\n{entry}",
            path = test_plugin(name).display()
        ));
    }
    yaml
}

/// `hello` answers a greeting correctly. Returns its count (kept in hello's storage).
async fn hello_answers(server: &TestServer) -> u64 {
    hello_answers_with(&server.client, &server.url).await
}

async fn hello_answers_with(client: &reqwest::Client, url: &str) -> u64 {
    let r = client
        .get(format!("{url}/plugins/hello/greet?name=Ada"))
        .send()
        .await
        .expect("GET /plugins/hello/greet");
    assert_eq!(r.status(), 200, "hello must keep answering");
    let body: Value = r.json().await.expect("hello answers JSON");
    assert_eq!(body["message"], "Hello, Ada!");
    assert_eq!(body["plugin"], "hello");
    body["count"].as_u64().expect("a count")
}

/// The host serves, and `hello` answers correctly.
async fn still_serving(server: &TestServer) {
    let r = server.get("/healthz").await;
    assert_eq!(r.status(), 200);
    hello_answers(server).await;
    let hello = server.host.plugin_info("hello").expect("hello");
    assert_eq!(hello.status, plugd::Status::Running);
    assert_eq!(hello.error_count, 0, "nothing is counted against hello");
}

/// Greetings from `hello` asked in a loop by `n` clients from the moment this is called until
/// [`Meanwhile::finish`], each answer checked: the attack runs while hello is being asked.
struct Meanwhile {
    stop: Arc<AtomicBool>,
    clients: JoinSet<Vec<Instant>>,
}

fn hello_meanwhile(server: &TestServer, n: usize) -> Meanwhile {
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for _ in 0..n {
        let (client, url, stop) = (server.client.clone(), server.url.clone(), stop.clone());
        clients.spawn(async move {
            let mut answered = Vec::new();
            loop {
                hello_answers_with(&client, &url).await;
                answered.push(Instant::now());
                if stop.load(Ordering::Relaxed) {
                    return answered;
                }
            }
        });
    }
    Meanwhile { stop, clients }
}

impl Meanwhile {
    /// Stop asking, check that every greeting was answered correctly, and count those answered
    /// while the attack was in flight (between `from` and `to`).
    async fn finish(mut self, from: Instant, to: Instant) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut during = 0;
        while let Some(client) = self.clients.join_next().await {
            let answered = client.expect("hello must keep answering");
            during += answered.iter().filter(|t| **t > from && **t < to).count();
        }
        during
    }
}

/// The last error counted against `plugin`.
fn last_error(server: &TestServer, plugin: &str) -> String {
    server
        .host
        .plugin_info(plugin)
        .expect("plugin")
        .last_error
        .expect("an error was recorded")
        .message
}

fn error_count(server: &TestServer, plugin: &str) -> u64 {
    server.host.plugin_info(plugin).expect("plugin").error_count
}

/// `s` percent-encoded for a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `message` of a JSON error answer.
async fn message(r: reqwest::Response) -> String {
    let body: Value = r.json().await.expect("a JSON error");
    body["message"].as_str().expect("a message").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_loops_forever_is_stopped_while_hello_answers() {
    // Six instances: the two that spin and one for each greeting, so that no greeting waits for
    // a free hanger instance and every error counted is a spin's.
    let server = TestServer::start(&config(&[(
        "hanger",
        "      permissions: { router: true, intercept: true }\n      limits: { instances: 6 }\n",
    )]))
    .await;
    let meanwhile = hello_meanwhile(&server, 4);
    let attack = Instant::now();
    // Two hanger instances spin in their pre_request hook (x-loop: 1) while hello is asked.
    let spins: Vec<_> = (0..2)
        .map(|_| {
            let request = server
                .client
                .get(format!("{}/plugins/hello/greet?name=Ada", server.url))
                .header("x-loop", "1");
            tokio::spawn(async move { request.send().await.expect("spinning request") })
        })
        .collect();
    for spin in spins {
        // fail_open (the default): the hook is interrupted at its deadline, the request goes on.
        let r = spin.await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["message"], "Hello, Ada!");
    }
    let during = meanwhile.finish(attack, Instant::now()).await;
    assert!(during >= 1, "hello answered while the hooks spun");
    assert_eq!(error_count(&server, "hanger"), 2, "the two spins");
    // The wasm runtime's own deadline stopped the hook, not the host's backstop a second later.
    assert_eq!(
        last_error(&server, "hanger"),
        "pre_request hook: hook execution timeout: pre_request hook exceeded 500ms timeout"
    );
    assert_eq!(server.get("/plugins/hanger/ok").await.status(), 200);
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_loops_forever_is_a_504_while_hello_answers() {
    // An instance for each spin: none waits for a free one.
    let server = TestServer::start(&config(&[(
        "looper",
        "      permissions: { router: true }\n      limits: { instances: 3 }\n",
    )]))
    .await;
    let meanwhile = hello_meanwhile(&server, 4);
    let attack = Instant::now();
    let spins: Vec<_> = (0..3)
        .map(|_| {
            let request = server
                .client
                .get(format!("{}/plugins/looper/spin", server.url));
            tokio::spawn(async move { request.send().await.expect("spinning request") })
        })
        .collect();
    for spin in spins {
        let r = spin.await.unwrap();
        assert_eq!(r.status(), 504);
        // Interrupted by the runtime at its deadline.
        assert_eq!(
            message(r).await,
            "plugin 'looper' failed: route /spin exceeded 500ms timeout"
        );
    }
    let during = meanwhile.finish(attack, Instant::now()).await;
    assert!(during >= 1, "hello answered while the routes spun");
    assert_eq!(error_count(&server, "looper"), 3);
    // The interrupted instances were replaced.
    assert_eq!(server.get("/plugins/looper/ok").await.status(), 200);
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_is_the_plugins_out_of_memory() {
    let server = TestServer::start(&config(&[(
        "hog",
        "      permissions: { router: true }\n      limits: { memory_mb: 16 }\n",
    )]))
    .await;
    // Greetings beside the attack; it ends within milliseconds, so none need finish inside it.
    let meanwhile = hello_meanwhile(&server, 4);
    let attack = Instant::now();
    let r = server.get("/plugins/hog/alloc").await;
    assert_eq!(r.status(), 500);
    let m = message(r).await;
    assert!(
        m.starts_with(
            "plugin 'hog' failed: plugin trapped: out of memory: plugin 'hog' exceeded its 16 MiB memory limit in route /alloc"
        ),
        "{m}"
    );
    meanwhile.finish(attack, Instant::now()).await;
    let last = last_error(&server, "hog");
    assert!(
        last.contains("out of memory: plugin 'hog' exceeded its 16 MiB memory limit"),
        "{last}"
    );
    // The exhausted instance was discarded; a fresh one answers.
    assert_eq!(server.get("/plugins/hog/ok").await.status(), 200);
    assert_eq!(
        server.host.plugin_info("hog").unwrap().status,
        plugd::Status::Running
    );
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_the_plugins_500() {
    let server = TestServer::start(&config(&[(
        "crasher",
        "      permissions: { router: true }\n",
    )]))
    .await;
    for (route, trap) in [
        (
            "/panic",
            "wasm trap: wasm `unreachable` instruction executed",
        ),
        (
            "/unreachable",
            "wasm trap: wasm `unreachable` instruction executed",
        ),
    ] {
        let r = server.get(&format!("/plugins/crasher{route}")).await;
        assert_eq!(r.status(), 500, "{route}");
        let m = message(r).await;
        assert_eq!(
            m,
            format!("plugin 'crasher' failed: plugin trapped: route {route}: {trap}")
        );
        hello_answers(&server).await;
    }
    assert_eq!(error_count(&server, "crasher"), 2);
    assert_eq!(server.get("/plugins/crasher/ok").await.status(), 200);
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_recursion_is_a_stack_overflow() {
    let server = TestServer::start(&config(&[(
        "recurser",
        "      permissions: { router: true }\n",
    )]))
    .await;
    // Greetings beside the attack; it ends within milliseconds, so none need finish inside it.
    let meanwhile = hello_meanwhile(&server, 4);
    let attack = Instant::now();
    let r = server.get("/plugins/recurser/deep").await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        message(r).await,
        "plugin 'recurser' failed: plugin trapped: stack overflow: plugin 'recurser' exhausted its 512 KiB wasm stack in route /deep (runaway recursion?)"
    );
    meanwhile.finish(attack, Instant::now()).await;
    assert_eq!(server.get("/plugins/recurser/ok").await.status(), 200);
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_refused_whichever_way_it_comes() {
    // A 1 MiB cap and 2 MiB bodies keep the copies small in a debug build; the deadline is
    // generous for the same reason (this test is about sizes, not time).
    let server = TestServer::start(&config(&[(
        "bigbody",
        "      permissions: { router: true }\n      limits: { timeout: 10s, max_response_bytes: 1MiB }\n",
    )]))
    .await;
    let over = "over its limit of 1048576 bytes (1 MiB, limits.max_response_bytes)";

    // A route's answer: a 500 that names the cap, not the body relayed.
    let r = server.get("/plugins/bigbody/huge?mib=2").await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        message(r).await,
        format!(
            "plugin 'bigbody' failed: response too large: plugin 'bigbody' produced a body of 2097152 bytes (2 MiB) in route /huge, {over}"
        )
    );
    // At the cap it is an ordinary answer.
    let r = server.get("/plugins/bigbody/huge?mib=1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 1 << 20);

    // An early answer of its pre_request hook (on its own route: it has no `intercept`):
    // refused, counted; fail_open lets the route answer.
    let before = error_count(&server, "bigbody");
    let r = server
        .client
        .get(format!("{}/plugins/bigbody/ok?mib=2", server.url))
        .header("x-huge", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "bigbody ok");
    assert_eq!(error_count(&server, "bigbody"), before + 1);
    let last = last_error(&server, "bigbody");
    assert!(
        last.contains("response too large: plugin 'bigbody' produced a body of 2097152 bytes (2 MiB) in pre_request hook"),
        "{last}"
    );

    // A replaced body in pre_response: the host refuses the call; the response stays the route's.
    let r = server
        .client
        .get(format!("{}/plugins/bigbody/ok?mib=2", server.url))
        .header("x-huge-set", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refused = r.headers()["x-bigbody-error"].to_str().unwrap().to_string();
    assert_eq!(
        refused,
        format!(
            "response too large: plugin 'bigbody' produced a body of 2097152 bytes (2 MiB) in exchange.set-response-body, {over}"
        )
    );
    assert_eq!(r.text().await.unwrap(), "bigbody ok");
    assert_eq!(error_count(&server, "bigbody"), before + 2);

    // A body the guest cannot even build within its memory cap is its out-of-memory.
    let r = server.get("/plugins/bigbody/huge?mib=100").await;
    assert_eq!(r.status(), 500);
    let m = message(r).await;
    assert!(
        m.contains("out of memory: plugin 'bigbody' exceeded its 64 MiB memory limit"),
        "{m}"
    );

    assert_eq!(server.get("/plugins/bigbody/ok").await.status(), 200);
    still_serving(&server).await;
    server.stop().await;
}

/// The `filesystem` grant: `<data_dir>/plugins/<name>/files/` preopened at `/data`, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_outside_the_data_directory_cannot_be_read() {
    let server = TestServer::start(&config(&[(
        "prowler",
        "      permissions: { router: true, filesystem: true }\n",
    )]))
    .await;
    let files = server.data_dir().join("plugins/prowler/files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("own.txt"), "prowler's own file").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc", files.join("escape")).unwrap();

    let read = |path: &str| {
        let request = server.client.get(format!(
            "{}/plugins/prowler/read?path={}",
            server.url,
            encode(path)
        ));
        async move { request.send().await.expect("GET /read") }
    };
    // Its own files are there: the grant works, so the refusals below are refusals.
    let r = read("/data/own.txt").await;
    assert_eq!(
        r.status(),
        200,
        "the filesystem grant preopens <data_dir>/plugins/prowler/files at /data: {}",
        r.text().await.unwrap()
    );
    assert_eq!(
        read("/data/own.txt").await.text().await.unwrap(),
        "prowler's own file"
    );

    for path in [
        "/data/../../etc/passwd",
        "/data/../own.txt",
        "/etc/passwd",
        "../etc/passwd",
        "/data/escape/passwd",
        "/data/escape/../passwd",
    ] {
        let r = read(path).await;
        assert_eq!(r.status(), 403, "{path} must not be readable");
        let text = r.text().await.unwrap();
        assert!(!text.contains("root:"), "{path} leaked: {text}");
        hello_answers(&server).await;
    }
    still_serving(&server).await;
    server.stop().await;
}

/// The `network` grant: outbound HTTP only to `network.allow`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_outside_the_allowlist_is_denied_before_any_connection() {
    // The allowed service answers "pong".
    let allowed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let allowed_port = allowed.local_addr().unwrap().port();
    tokio::spawn(async move {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "pong" }));
        let _ = axum::serve(allowed, app).await;
    });
    // The attacked one counts every connection it is offered.
    let forbidden = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forbidden_port = forbidden.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    {
        let connections = connections.clone();
        tokio::spawn(async move {
            while forbidden.accept().await.is_ok() {
                connections.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let entry = format!(
        "      permissions: {{ router: true, network: true }}\n      network: {{ allow: [\"127.0.0.1:{allowed_port}\"] }}\n"
    );
    let server = TestServer::start(&config(&[("caller", &entry)])).await;
    let fetch = |url: String| {
        let request = server.client.get(format!(
            "{}/plugins/caller/fetch?url={}",
            server.url,
            encode(&url)
        ));
        async move { request.send().await.expect("GET /fetch") }
    };

    let r = fetch(format!("http://127.0.0.1:{allowed_port}/")).await;
    let (status, text) = (r.status(), r.text().await.unwrap());
    assert_eq!(
        (status.as_u16(), text.as_str()),
        (200, "pong"),
        "the allowed host answers through outbound.fetch"
    );

    let before = error_count(&server, "caller");
    let r = fetch(format!("http://127.0.0.1:{forbidden_port}/")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().await.unwrap(),
        format!(
            "network access denied: plugin 'caller' may not connect to '127.0.0.1:{forbidden_port}' (not in network.allow)"
        )
    );
    assert!(error_count(&server, "caller") > before, "a denial counts");
    // Dressing the forbidden host up as the allowed one changes nothing.
    let r = fetch(format!(
        "http://127.0.0.1:{allowed_port}@127.0.0.1:{forbidden_port}/"
    ))
    .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().starts_with("network access denied"));
    hello_answers(&server).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "denied before a connection is made"
    );
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_plugins_storage_keys_cannot_be_named() {
    let server = TestServer::start(&config(&[(
        "snoop",
        "      permissions: { router: true }\n",
    )]))
    .await;
    let first = hello_answers(&server).await;
    let second = hello_answers(&server).await;
    assert_eq!(second, first + 1);

    let r = server.get("/plugins/snoop/snoop").await;
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(
        seen["found"],
        serde_json::json!([]),
        "no probe found a value"
    );
    let listed = seen["listed"].as_object().unwrap();
    for (prefix, keys) in listed {
        let keys: BTreeSet<&str> = keys
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let expected: BTreeSet<&str> = if prefix.is_empty() {
            ["mine"].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(
            keys, expected,
            "list({prefix:?}) sees only snoop's own keys"
        );
    }
    assert_eq!(listed.len(), 6);
    assert_eq!(
        seen["deleted"], false,
        "hello's key is not snoop's to delete"
    );

    // hello's counter went on untouched by the writes and deletes aimed at it.
    assert_eq!(hello_answers(&server).await, second + 1);
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_without_a_grant_are_denied_counted_and_audited() {
    let server =
        TestServer::start(&config(&[("nogrant", "      limits: { instances: 1 }\n")])).await;
    // Its route registration in init was refused: counted once (one instance).
    assert_eq!(error_count(&server, "nogrant"), 1);
    assert!(
        server
            .host
            .plugin_info("nogrant")
            .unwrap()
            .routes
            .is_empty()
    );
    for capability in ["database", "cache", "exec", "router"] {
        let before = error_count(&server, "nogrant");
        // Its hook sees only its own path (it has no `intercept`): it attacks from there.
        let r = server
            .client
            .get(format!("{}/plugins/nogrant/attack", server.url))
            .header("x-attack", capability)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{capability}");
        assert_eq!(
            r.text().await.unwrap(),
            format!(
                "permission denied: plugin 'nogrant' attempted {capability} access without permission"
            )
        );
        // The router denial happened in init; the others are counted as they happen.
        let expected = if capability == "router" {
            before
        } else {
            before + 1
        };
        assert_eq!(error_count(&server, "nogrant"), expected, "{capability}");
        hello_answers(&server).await;
    }
    let last = last_error(&server, "nogrant");
    assert!(
        last.contains(
            "permission denied: plugin 'nogrant' attempted exec access without permission"
        ),
        "{last}"
    );

    let audit: Vec<Value> = server
        .admin_get("/admin/audit?plugin=nogrant")
        .await
        .json()
        .await
        .unwrap();
    let capabilities: BTreeSet<&str> = audit
        .iter()
        .map(|e| e["capability"].as_str().unwrap())
        .collect();
    assert_eq!(
        capabilities,
        ["cache", "database", "exec", "router"].into(),
        "{audit:?}"
    );
    assert!(audit.iter().all(|e| e["plugin"] == "nogrant"));
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_event_cannot_be_published() {
    let server = TestServer::start(&config(&[(
        "gossip",
        "      permissions: { router: true }\n",
    )]))
    .await;
    let r = server.get("/plugins/gossip/publish?topic=gossip.ok").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "published");

    let before = error_count(&server, "gossip");
    let r = server
        .get("/plugins/gossip/publish?topic=admin.secret")
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().await.unwrap(),
        "plugin 'gossip' attempted to publish undeclared event 'admin.secret': declare it under events.publishes in its manifest"
    );
    assert_eq!(error_count(&server, "gossip"), before + 1);
    let audit = server.host.audit_log(Some("gossip"));
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].capability, "events");
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_come_from_the_pool_unless_a_plugin_does_not_fit() {
    let yaml = config(&[
        (
            "hog",
            "      permissions: { router: true }\n      limits: { memory_mb: 128 }\n",
        ),
        (
            "crasher",
            "      permissions: { router: true }\n      priority: 50\n      limits: { instances: 2 }\n",
        ),
    ])
    .replace(
        "  limits:\n    timeout: 500ms\n",
        "  limits:\n    timeout: 500ms\n    instances: 2\n  pool: { slots: 3, memory_per_slot_mb: 64 }\n",
    );
    let server = TestServer::start(&yaml).await;
    // hello (2 instances) takes two of the three slots.
    assert_eq!(
        server.host.plugin_info("hello").unwrap().allocator,
        Some("pooling")
    );
    // hog's cap (128 MiB) is larger than a slot: it runs on demand, outside the pool.
    let hog = server.host.plugin_info("hog").unwrap();
    assert_eq!(hog.allocator, Some("on-demand"));
    assert_eq!(hog.status, plugd::Status::Running);
    assert_eq!(server.get("/plugins/hog/ok").await.status(), 200);
    // crasher starts last (lower priority) and finds one slot for its two instances.
    let crasher = server.host.plugin_info("crasher").unwrap();
    assert_eq!(crasher.status, plugd::Status::Error);
    let m = crasher.last_error.unwrap().message;
    assert!(
        m.contains("instance pool exhausted: plugin 'crasher' could not get a wasm instance for instantiation: maximum concurrent limit of 3 for component instances reached (raise plugins.pool.slots or lower limits.instances)"),
        "{m}"
    );
    assert_eq!(server.get("/plugins/crasher/ok").await.status(), 503);
    // The admin API shows where each plugin's instances live.
    let listed: Value = server
        .admin_get("/admin/plugins/hog")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["allocator"], "on-demand");
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_stops_a_loop_deterministically() {
    // With limits.fuel the loop ends when its budget does, long before its (generous) deadline.
    let server = TestServer::start(&config(&[(
        "looper",
        "      permissions: { router: true }\n      limits: { timeout: 30s, fuel: 5000000 }\n",
    )]))
    .await;
    // Greetings beside the attack; it ends within milliseconds, so none need finish inside it.
    let meanwhile = hello_meanwhile(&server, 4);
    let attack = Instant::now();
    let r = server.get("/plugins/looper/spin").await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        message(r).await,
        "plugin 'looper' failed: plugin trapped: fuel exhausted: plugin 'looper' used all 5000000 units of its fuel in route /spin (limits.fuel)"
    );
    meanwhile.finish(attack, Instant::now()).await;
    // A call within its budget answers; hello, without a budget, runs unmetered beside it.
    assert_eq!(server.get("/plugins/looper/ok").await.status(), 200);
    still_serving(&server).await;
    server.stop().await;
}

/// A freed pool slot keeps its first pages mapped for the next instance
/// (`plugins.pool.keep_resident_kb`): what an instance wrote there must never be readable by the
/// instance that gets the slot next. trapper fills 64 KiB of its zero-initialised data, traps
/// (the instance is dropped and its slot freed), and its fresh instance reads the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_never_sees_what_the_last_one_in_its_slot_wrote() {
    let server = TestServer::start(&format!(
        "data_dir: \"{{data}}\"\nplugins:\n  limits: {{ instances: 1 }}\n  pool: {{ slots: 4, keep_resident_kb: 4096 }}\n  plugins:\n    - name: trapper\n      path: \"{}\"\n      permissions: {{ router: true }}\n",
        test_plugin("trapper").display()
    ))
    .await;
    for round in 0..3 {
        let stashed = server.get("/plugins/trapper/stash").await;
        assert_eq!(stashed.status(), 200);
        // The same instance sees its own writes: the marker is really in its memory.
        let peek = server
            .get("/plugins/trapper/peek")
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(peek, (64 * 1024).to_string(), "round {round}");
        assert_eq!(server.get("/plugins/trapper/trap").await.status(), 500);
        let peek = server
            .get("/plugins/trapper/peek")
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(
            peek, "0",
            "round {round}: a fresh instance read the last one's bytes"
        );
    }
    server.stop().await;
}
