//! The example `auth` plugin (a wasm guest) attaches identities; the host enforces the roles that
//! routes declare: 401 without an identity, 403 without a role.

use serde_json::Value;

use crate::support::{TestServer, example};

fn config() -> String {
    format!(
        r#"
data_dir: "{{data}}"
plugins:
  plugins:
    - name: auth
      path: "{auth}"
      permissions: {{ router: true, intercept: true, identity: true }}
      config:
        tokens:
          tok-ada: {{ subject: ada, roles: [user, admin] }}
          tok-bob: {{ subject: bob, roles: [user] }}
    - name: hello
      path: "{hello}"
      permissions: {{ router: true }}
"#,
        auth = example("auth").display(),
        hello = example("hello").display(),
    )
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> (u16, Value, Option<String>) {
    let mut req = server.client.get(format!("{}{path}", server.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let subject = r
        .headers()
        .get("x-plugd-subject")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, subject)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_for_identities_attached_by_a_wasm_auth_plugin() {
    let server = TestServer::start(&config()).await;

    // Anonymous: open routes serve, role-protected routes are 401 from the host.
    let (status, _, subject) = get(&server, "/plugins/hello/greet", None).await;
    assert_eq!(status, 200);
    assert_eq!(subject, None);
    let (status, body, _) = get(&server, "/plugins/auth/whoami", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("identity"),
        "{body}"
    );

    // An unknown token is refused by the plugin's pre_request hook before routing.
    let (status, body, _) = get(&server, "/plugins/hello/greet", Some("nope")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["message"], "unknown bearer token");

    // bob holds `user`: whoami answers with his identity, admin is 403 naming the role.
    let (status, body, subject) = get(&server, "/plugins/auth/whoami", Some("tok-bob")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], "bob");
    assert_eq!(body["roles"], serde_json::json!(["user"]));
    assert_eq!(
        subject.as_deref(),
        Some("bob"),
        "pre_response saw the identity"
    );
    let (status, body, _) = get(&server, "/plugins/auth/admin", Some("tok-bob")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["message"], "missing role(s): admin");

    // ada holds both roles.
    let (status, body, _) = get(&server, "/plugins/auth/admin", Some("tok-ada")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], "ada");

    // Another plugin's route sees the request authenticated too (the subject header is stamped).
    let (status, _, subject) = get(&server, "/plugins/hello/greet", Some("tok-ada")).await;
    assert_eq!(status, 200);
    assert_eq!(subject.as_deref(), Some("ada"));

    server.stop().await;
}
