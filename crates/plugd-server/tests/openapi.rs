//! The admin API's OpenAPI document: a valid OpenAPI 3.1 spec that describes every admin route the
//! router serves, with the bearer scheme, JSON error bodies and public document and dashboard.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use plugd_manifest::{Format, HostConfig, Manifest};
use plugd_server::{AdminToken, ApiError};
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "openapi-test-token";

struct Quiet;
impl plugd_core::Plugin for Quiet {}

async fn start_host(config: HostConfig) -> (plugd_core::Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::from_str(
        "name: quiet\nversion: 1.2.3\ndescription: d\nauthor: a\n",
        Format::Yaml,
        None,
    )
    .unwrap();
    let host = plugd_core::Host::builder()
        .config(config)
        .data_dir(dir.path())
        .native(manifest, Quiet)
        .build()
        .unwrap();
    host.start().await.unwrap();
    (host, dir)
}

async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    token: bool,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(path);
    if token {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    let body = if path.ends_with("/config") || path == "/admin/plugins" {
        req = req.header("content-type", "application/json");
        Body::from("{}")
    } else {
        Body::empty()
    };
    let r = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, bytes.to_vec())
}

#[test]
fn the_document_is_a_valid_openapi_31_spec() {
    let text = serde_json::to_string(&plugd_server::openapi()).unwrap();
    let spec = oas3::from_json(&text).expect("the document parses as OpenAPI 3.1");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    assert_eq!(spec.info.title, "plugd admin API");

    let doc: Value = serde_json::from_str(&text).unwrap();
    // The bearer scheme, required by default.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]})
    );
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));

    // Every $ref resolves to a component schema.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }
    for name in [
        "ApiError",
        "PluginDetail",
        "PluginInfo",
        "PluginHealth",
        "ReloadOutcome",
        "LoadRequest",
        "HostInfo",
        "AuditEntry",
        "Status",
        "HookType",
        "Permission",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    // The status enum is the one of docs/design.md#lifecycle.
    assert_eq!(
        schemas["Status"]["enum"],
        serde_json::json!([
            "unloaded",
            "loading",
            "initialized",
            "running",
            "stopped",
            "error",
            "disabled"
        ])
    );
    // ApiError is `{error, message}`, both required.
    let mut required: Vec<&str> = schemas["ApiError"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(required, ["error", "message"]);

    // Every operation: an operationId, a 2xx response, and (protected ones) a JSON 401; every
    // error response is a JSON body.
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let id = format!("{method} {path}");
            assert!(op["operationId"].is_string(), "{id}: operationId");
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.keys().any(|k| k.starts_with('2')), "{id}: 2xx");
            let public = op.get("security") == Some(&serde_json::json!([{}]));
            if !public {
                assert!(responses.contains_key("401"), "{id}: 401");
            }
            for (code, resp) in responses {
                if code.starts_with('4') || code.starts_with('5') {
                    let schema = &resp["content"]["application/json"]["schema"];
                    assert!(schema.is_object(), "{id} {code}: JSON body");
                }
            }
        }
    }
    for public in ["/admin/openapi.json", "/admin/"] {
        assert_eq!(
            paths[public]["get"]["security"],
            serde_json::json!([{}]),
            "{public} needs no token"
        );
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Each operation of the document is served by the router (not the JSON 404 of unknown admin
/// paths, not a 405), needs the token unless it is public, and the document served is the one
/// built from the code. The router's admin routes are registered from the same `routes!` list as
/// the document, so this checks the mapping both ways for every method and path.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let (host, _dir) = start_host(HostConfig::default()).await;
    // The admin listener's application (admin.listen, the default).
    let app = plugd_server::admin_router(host.clone(), AdminToken::new(TOKEN).unwrap());
    let doc = serde_json::to_value(plugd_server::openapi()).unwrap();

    let (status, body) = call(&app, Method::GET, "/admin/openapi.json", false).await;
    assert_eq!(status, StatusCode::OK);
    let served: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(served, doc);

    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path.replace("{name}", "quiet");
            let method: Method = method.to_uppercase().parse().unwrap();
            let public = op.get("security") == Some(&serde_json::json!([{}]));
            let (status, body) = call(&app, method.clone(), &concrete, false).await;
            if public {
                assert_eq!(status, StatusCode::OK, "{method} {concrete}");
            } else {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {concrete}");
                let e: ApiError = serde_json::from_slice(&body).unwrap();
                assert_eq!(e.error, "unauthorized");
            }
            // With the token: answered by its handler, never the unknown-route 404 or a 405.
            let (status, body) = call(&app, method.clone(), &concrete, true).await;
            let text = String::from_utf8_lossy(&body);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {concrete}"
            );
            assert!(
                !text.contains("no admin endpoint"),
                "{method} {concrete} is documented but not served: {text}"
            );
            let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented.iter().any(|c| c.as_str() == status.as_str()),
                "{method} {concrete} answered {status}, documented {documented:?}: {text}"
            );
            operations += 1;
        }
    }
    assert!(operations >= 16, "{operations} operations");

    // Paths outside the document are a JSON 404; a documented path with another method a JSON 405.
    for path in ["/admin/nothing", "/admin/plugins/quiet/nothing"] {
        let (status, body) = call(&app, Method::GET, path, true).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let e: ApiError = serde_json::from_slice(&body).unwrap();
        assert_eq!(e.error, "not_found");
    }
    let (status, body) = call(&app, Method::PATCH, "/admin/plugins", true).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let e: ApiError = serde_json::from_slice(&body).unwrap();
    assert!(e.message.contains("PATCH"), "{}", e.message);
    host.shutdown().await;
}

/// `admin.listen`: the main router no longer serves `/admin`; the admin router does, with
/// `/healthz` and `/metrics`, and answers nothing else.
#[tokio::test]
async fn a_separate_admin_listener_takes_the_admin_api_away_from_the_main_one() {
    let mut config = HostConfig::default();
    config.admin.listen = Some("9999".into());
    let (host, _dir) = start_host(config).await;
    let token = AdminToken::new(TOKEN).unwrap();
    let main = plugd_server::router(host.clone(), token.clone());
    let admin = plugd_server::admin_router(host.clone(), token);
    // Every spelling of /admin is the host's 404 that points at the admin listener, never a
    // plugin's answer (dispatch's own 404 would say "no route for").
    for path in ["/admin/plugins", "/admin/", "/admin/openapi.json", "/admin"] {
        let (status, body) = call(&main, Method::GET, path, true).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "main {path}");
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("served on their own listener, admin.listen (127.0.0.1:9999)"),
            "{path}: {error}"
        );
    }
    let (status, body) = call(&admin, Method::GET, "/admin/plugins", true).await;
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list[0]["name"], "quiet");
    assert_eq!(
        call(&admin, Method::GET, "/admin/", false).await.0,
        StatusCode::OK
    );
    for app in [&main, &admin] {
        assert_eq!(
            call(app, Method::GET, "/healthz", false).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(app, Method::GET, "/metrics", false).await.0,
            StatusCode::OK
        );
    }
    let (status, _) = call(&admin, Method::GET, "/plugins/quiet/x", true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.shutdown().await;
}

/// `admin.protect`: `/healthz` and `/metrics` are public by default and need the token when listed.
#[tokio::test]
async fn healthz_and_metrics_are_public_unless_protected() {
    let yaml = "admin:\n  protect: [healthz, metrics]\n";
    let config = HostConfig::from_str(yaml, Format::Yaml, None).unwrap();
    let (host, _dir) = start_host(config).await;
    let app = plugd_server::router(host.clone(), AdminToken::new(TOKEN).unwrap());
    for path in ["/healthz", "/metrics"] {
        let (status, body) = call(&app, Method::GET, path, false).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let _: ApiError = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            call(&app, Method::GET, path, true).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    host.shutdown().await;

    let config =
        HostConfig::from_str("admin:\n  protect: [metrics]\n", Format::Yaml, None).unwrap();
    let (host, _dir) = start_host(config).await;
    let app = plugd_server::router(host.clone(), AdminToken::new(TOKEN).unwrap());
    assert_eq!(
        call(&app, Method::GET, "/healthz", false).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::GET, "/metrics", false).await.0,
        StatusCode::UNAUTHORIZED
    );
    host.shutdown().await;

    let err =
        HostConfig::from_str("admin:\n  protect: [metric]\n", Format::Yaml, None).unwrap_err();
    assert!(err.to_string().contains("metric"), "{err}");
}

/// Every `items` of the document, with where it is (JSON pointer).
fn collect_items<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            if let Some(items) = m.get("items") {
                out.push((format!("{at}/items"), items));
            }
            for (k, v) in m {
                collect_items(v, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_items(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The document is as strict as the server, so that a schemathesis run (scripts/schemathesis.sh,
/// RELIABILITY.md) ends clean: what the document allows the server accepts, and what the server
/// answers the document describes.
#[test]
fn the_document_says_what_the_server_accepts_and_answers() {
    let doc = serde_json::to_value(plugd_server::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];

    // No tuple form at all: neither `items: [..]` (not OpenAPI 3.1) nor `prefixItems` (which
    // schemathesis rewrites into `items: [..]` and then rejects).
    let text = doc.to_string();
    assert!(
        !text.contains("prefixItems"),
        "a prefixItems tuple is in the document"
    );
    let mut items = Vec::new();
    collect_items(&doc, String::new(), &mut items);
    assert!(!items.is_empty());
    for (at, v) in &items {
        assert!(v.is_object(), "{at}: `items` must be one schema: {v}");
    }
    // The pairs the server answers: arrays of exactly two strings.
    for pairs in [
        &schemas["ConfigReloadReport"]["properties"]["rejected"],
        &schemas["HostInfo"]["properties"]["services"],
    ] {
        let pair = &pairs["items"];
        assert_eq!(pair["type"], "array", "{pairs}");
        assert_eq!(pair["items"]["type"], "string", "{pairs}");
        assert_eq!(
            (&pair["minItems"], &pair["maxItems"]),
            (&2.into(), &2.into()),
            "{pairs}"
        );
    }

    // POST /admin/plugins: the name is a plugin name (a 400 otherwise), the path is not empty.
    let load = &schemas["LoadRequest"]["properties"];
    assert_eq!(load["name"]["pattern"], "^[a-z0-9][a-z0-9_-]*$");
    assert_eq!(
        load["name"]["maxLength"],
        plugd_manifest::MAX_NAME_LEN as u64
    );
    assert_eq!(load["name"]["minLength"], 1);
    assert_eq!(load["path"]["minLength"], 1);
    // The pattern and the length are the server's own rule.
    for (name, ok) in [
        ("hello", true),
        ("a", true),
        ("0-x_y", true),
        ("Hello", false),
        ("-x", false),
        ("_x", false),
        ("a b", false),
        ("", false),
    ] {
        assert_eq!(plugd_manifest::is_valid_plugin_name(name), ok, "{name}");
    }
    assert!(plugd_manifest::is_valid_plugin_name(&"a".repeat(64)));
    assert!(!plugd_manifest::is_valid_plugin_name(&"a".repeat(65)));
}
