//! The `ratelimit` example plugin (examples/plugins/ratelimit), a wasm guest, in front of `hello`:
//! each client (its `x-api-key`, or a configured header) gets `limit` requests per window, then
//! 429 with `Retry-After`; every answer carries `x-ratelimit-limit` and `x-ratelimit-remaining`.

use serde_json::Value;

use crate::support::{TestServer, example};

/// `hello` behind `ratelimit` with `limit: 3`. The window is a day so that no test run crosses
/// one of its boundaries (where every count starts again) but once in 86 400 seconds.
fn config(extra: &str) -> String {
    format!(
        r#"
data_dir: "{{data}}"
plugins:
  plugins:
    - name: ratelimit
      path: "{ratelimit}"
      permissions: {{ intercept: true, cache: true }}
      config: {{ limit: 3, window: 1d{extra} }}
    - name: hello
      path: "{hello}"
      permissions: {{ router: true }}
"#,
        ratelimit = example("ratelimit").display(),
        hello = example("hello").display(),
    )
}

async fn greet(server: &TestServer, header: Option<(&str, &str)>) -> reqwest::Response {
    let mut req = server
        .client
        .get(format!("{}/plugins/hello/greet", server.url));
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    req.send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", r.headers()))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fourth_request_of_a_key_gets_429_and_other_keys_are_not_limited() {
    let server = TestServer::start(&config("")).await;
    let alice = Some(("x-api-key", "alice"));
    for remaining in ["2", "1", "0"] {
        let r = greet(&server, alice).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit"), "3");
        assert_eq!(header(&r, "x-ratelimit-remaining"), remaining);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["plugin"], "hello");
    }

    let r = greet(&server, alice).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=86_400).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
    assert!(header(&r, "content-type").starts_with("application/json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("rate limit of 3 requests per 86400s exceeded"),
        "{body}"
    );
    // Refused requests never reached hello: its count is of the three allowed ones.
    let count = server.host.storage("hello").get("greetings").await.unwrap();
    assert_eq!(count.as_deref(), Some(&b"3"[..]));

    // Another key, and requests without one (the client "anonymous"), count on their own.
    let r = greet(&server, Some(("x-api-key", "bob"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "2");
    let r = greet(&server, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "2");
    // alice is still refused.
    assert_eq!(greet(&server, alice).await.status(), 429);
    server.stop().await;
}

/// `header` names another request header: the API key is then no client's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_header_is_configurable() {
    let server = TestServer::start(&config(", header: x-client")).await;
    for key in ["a", "b", "c"] {
        let r = greet(&server, Some(("x-api-key", key))).await;
        assert_eq!(r.status(), 200, "x-api-key {key}");
    }
    // Three requests without x-client: all were the client "anonymous".
    let r = greet(&server, Some(("x-api-key", "d"))).await;
    assert_eq!(r.status(), 429);
    let r = greet(&server, Some(("x-client", "carol"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "2");
    server.stop().await;
}
