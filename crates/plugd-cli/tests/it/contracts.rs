//! Contract versions side by side (docs/authors/contract-versions.md), through a real server:
//!
//! - a component built against `plugd:plugin@0.1.0` in 2026 and kept as built
//!   (tests/fixtures/contract-0.1.0) still serves on today's host, through the 0.1 shim: this
//!   test must keep passing on every later plugd for as long as 0.1.0 is supported;
//! - a `plugd:plugin@0.2.0` guest made with raw wit-bindgen (`tests/plugins/rawv02`, no SDK)
//!   gets the values its registrations declared with each call, hidden headers as none, and its
//!   edits are applied with the setters' checks: refused ones are its errors, and audited.

use std::time::Duration;

use serde_json::Value;

use crate::support::{TestServer, repo_root, test_plugin};

fn config(entries: &[(&str, std::path::PathBuf, &str)]) -> String {
    let mut yaml = String::from(
        "data_dir: \"{data}\"\nserver: { expose_errors: true }\nplugins:\n  limits:\n    timeout: 5s\n  plugins:\n",
    );
    for (name, path, lines) in entries {
        yaml.push_str(&format!(
            "    - name: {name}\n      path: \"{}\"\n{lines}",
            path.display()
        ));
    }
    yaml
}

/// The folder of the frozen 0.1.0 component.
fn legacy() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/contract-0.1.0/legacy")
}

async fn audit(server: &TestServer, plugin: &str) -> Vec<Value> {
    server
        .admin_get(&format!("/admin/audit?plugin={plugin}"))
        .await
        .json()
        .await
        .unwrap()
}

async fn last_error(server: &TestServer, plugin: &str) -> String {
    let info: Value = server
        .admin_get(&format!("/admin/plugins/{plugin}"))
        .await
        .json()
        .await
        .unwrap();
    info["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_0_1_0_component_built_in_2026_still_serves() {
    let bytes = std::fs::read(legacy().join("plugin.wasm")).expect("the frozen component");
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        has("plugd:plugin/guest@0.1.0") && !has("plugd:plugin/guest@0.2.0"),
        "tests/fixtures/contract-0.1.0/legacy/plugin.wasm must stay the 0.1.0 component as built (see its README)"
    );

    let server = TestServer::start(&config(&[(
        "legacy",
        legacy(),
        "      permissions: { router: true }\n",
    )]))
    .await;
    for count in 1..=2 {
        let r = server.get("/plugins/legacy/visit?name=Ada").await;
        assert_eq!(r.status(), 200);
        // Its middleware's on-response changed the response through the exchange's setter.
        assert_eq!(
            r.headers().get("x-legacy-mw").map(|v| v.to_str().unwrap()),
            Some("seen")
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["contract"], "0.1.0");
        // Its pre-request hook's header and local reached its handler; its storage counts.
        assert_eq!(body["hook_header"], "seen", "{body}");
        assert_eq!(body["local"], "yes", "{body}");
        assert_eq!(body["name"], "Ada", "{body}");
        assert_eq!(body["count"], count, "{body}");
    }
    assert_eq!(last_error(&server, "legacy").await, "");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_0_2_0_guest_gets_what_it_declared_and_its_edits_pass_the_setters_checks() {
    let server = TestServer::start(&config(&[(
        "rawv02",
        test_plugin("rawv02"),
        "      permissions: { router: true }\n      hide_headers: [authorization]\n",
    )]))
    .await;

    // The hook got [x-in, method, local none-yet] and set x-out and the local k by edits; the
    // route got [local k, route param id, authorization] with the hidden header as none; the
    // middleware got [status] and set x-tag by an edit.
    let r = server
        .client
        .get(format!("{}/plugins/rawv02/items/42", server.url))
        .header("x-in", "hi")
        .header("authorization", "Bearer secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("x-tag").map(|v| v.to_str().unwrap()),
        Some("200")
    );
    assert_eq!(
        r.text().await.unwrap(),
        "k=from-hook id=42 authorization=- x-out=hi|GET|- given=3"
    );

    // Its post_response hook returned an edit of the written response: refused, its error,
    // audited (it runs after the answer: wait for it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let entries = audit(&server, "rawv02").await;
        if entries.iter().any(|e| {
            e["capability"] == "edit"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("the response cannot be changed in post_response")
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused edit is audited: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Counted as its error (the audit's record comes last).
    let message = last_error(&server, "rawv02").await;
    assert!(
        message.contains("the response cannot be changed in post_response"),
        "{message}"
    );

    // A framing header asked for by an edit: refused (the hook fails open, so the request goes
    // on without its edits), the plugin's error, audited as the setter's refusal is.
    let r = server
        .client
        .get(format!("{}/plugins/rawv02/items/7", server.url))
        .header("x-in", "frame")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "k=- id=7 authorization=- x-out=- given=3"
    );
    // (Not read from its last error: this request's own post_response hook, which runs after
    // the answer, may have replaced it with its refused edit by then.)
    let entries = audit(&server, "rawv02").await;
    assert!(
        entries.iter().any(|e| e["capability"] == "framing"
            && e["detail"].as_str().unwrap().contains("content-length")),
        "{entries:?}"
    );
    server.stop().await;
}
