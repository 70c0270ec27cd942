//! The gated capabilities end to end: the `capable` test plugin uses its database (with
//! migrations), outbound HTTP to a local server, exec, the host config and files under `/data`;
//! without grants each call is refused with the contract's `permission denied` message, counted
//! and audited (docs/design.md#permissions).

use std::path::Path;

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use crate::support::{TestServer, test_plugin};

/// A local upstream for outbound calls, on a free loopback port.
async fn upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route("/hello", get(|| async { "hi from upstream" }));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

fn config(data: &str, plugin_dir: &Path, grants: &str, port: u16) -> String {
    format!(
        r#"
data_dir: "{data}"
admin:
  token: not-for-plugins
plugins:
  plugins:
    - name: capable
      path: "{dir}"
      permissions: {grants}
      network:
        allow: ["127.0.0.1:{port}"]
      exec:
        allow: [cat, echo]
      config:
        unused: true
"#,
        dir = plugin_dir.display(),
    )
}

const ALL: &str =
    "{ router: true, database: true, network: true, exec: true, config: true, filesystem: true }";

async fn json_of(server: &TestServer, path: &str) -> Value {
    let r = server.get(path).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

async fn refused(server: &TestServer, path: &str) -> String {
    let r = server.get(path).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 403, "{path}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_plugin_uses_database_network_exec_config_and_files() {
    let (port, _upstream) = upstream().await;
    let server = TestServer::start(&config("{data}", &test_plugin("capable"), ALL, port)).await;
    let data = server.host.config().data_dir.clone();

    // database: migrations applied in order and recorded, bound parameters, a transaction.
    let db = json_of(&server, "/plugins/capable/db?text=it's%20%22quoted%22").await;
    assert_eq!(db["migrations"], json!(["0001_notes.sql", "0002_tags.sql"]));
    assert_eq!(db["inserted"], json!(1));
    assert_eq!(db["tagged"], json!([1, 1]));
    assert_eq!(
        db["notes"],
        json!([
            { "text": "seeded by 0002", "tags": 0 },
            { "text": "it's \"quoted\"", "tags": 2 },
        ])
    );
    assert!(data.join("plugins/capable/db.sqlite").is_file());
    let attach = refused(&server, "/plugins/capable/db-attach").await;
    assert_eq!(
        attach,
        "database access denied: plugin 'capable' may not attach another database ('/tmp/elsewhere.db')"
    );

    // network: the allowed upstream answers; another port is refused before connecting.
    let fetched = json_of(
        &server,
        &format!("/plugins/capable/fetch?url=http://127.0.0.1:{port}/hello"),
    )
    .await;
    assert_eq!(
        fetched,
        json!({ "status": 200, "body": "hi from upstream" })
    );
    let other = if port == 65535 { port - 1 } else { port + 1 };
    let denied = refused(
        &server,
        &format!("/plugins/capable/fetch?url=http://127.0.0.1:{other}/"),
    )
    .await;
    assert_eq!(
        denied,
        format!(
            "network access denied: plugin 'capable' may not connect to '127.0.0.1:{other}' (not in network.allow)"
        )
    );

    // exec: allowlisted commands, stdin, argv.
    let exec = json_of(&server, "/plugins/capable/exec").await;
    assert_eq!(
        exec,
        json!({ "cat": "piped through cat", "echo": "two words\n", "status": 0 })
    );

    // config: values at dotted keys, secrets redacted.
    assert_eq!(
        json_of(
            &server,
            "/plugins/capable/config?key=plugins.limits.timeout"
        )
        .await,
        json!("5s")
    );
    assert_eq!(
        json_of(&server, "/plugins/capable/config?key=admin.token").await,
        json!("[redacted]")
    );
    assert_eq!(
        json_of(
            &server,
            "/plugins/capable/config?key=plugins.plugins.0.exec.allow"
        )
        .await,
        json!(["cat", "echo"])
    );

    // filesystem: /data is the plugin's files directory, and nothing else is visible.
    let files = json_of(&server, "/plugins/capable/files").await;
    assert_eq!(
        files,
        json!({ "read": "kept in /data", "entries": ["notes"], "outside_visible": false })
    );
    let on_host = data.join("plugins/capable/files/notes/first.txt");
    assert_eq!(std::fs::read_to_string(&on_host).unwrap(), "kept in /data");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("plugins/capable/files"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    // The two refusals counted against the plugin and audited; it keeps running.
    let info = server.host.plugin_info("capable").unwrap();
    assert_eq!(info.status, plugd::Status::Running);
    assert_eq!(info.error_count, 2);
    let audit = server.host.audit_log(Some("capable"));
    let capabilities: Vec<&str> = audit.iter().map(|e| e.capability.as_str()).collect();
    assert_eq!(capabilities, ["database", "network"]);
    assert!(
        audit[1]
            .detail
            .starts_with("outbound.fetch: network access denied"),
        "{}",
        audit[1].detail
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grants_each_capability_is_denied_counted_and_audited() {
    let (port, _upstream) = upstream().await;
    let server = TestServer::start(&config(
        "{data}",
        &test_plugin("capable"),
        "{ router: true }",
        port,
    ))
    .await;
    let data = server.host.config().data_dir.clone();
    let cases = [
        ("/plugins/capable/db", "database", "database.execute"),
        (
            &*format!("/plugins/capable/fetch?url=http://127.0.0.1:{port}/hello"),
            "network",
            "outbound.fetch",
        ),
        ("/plugins/capable/exec", "exec", "exec.run"),
        (
            "/plugins/capable/config?key=server.listen",
            "config",
            "config.host-config",
        ),
    ];
    for (path, permission, _) in &cases {
        assert_eq!(
            refused(&server, path).await,
            format!(
                "permission denied: plugin 'capable' attempted {permission} access without permission"
            )
        );
    }
    // No preopen without `filesystem`: /data does not exist for the guest.
    let r = server.get("/plugins/capable/files").await;
    assert_eq!(r.status(), 500);
    assert!(!data.join("plugins/capable").exists(), "nothing was opened");

    let info = server.host.plugin_info("capable").unwrap();
    assert_eq!(info.status, plugd::Status::Running);
    assert_eq!(info.error_count, 4);
    assert_eq!(
        info.last_error.unwrap().message,
        "permission denied: plugin 'capable' attempted config access without permission"
    );
    let audit = server.host.audit_log(Some("capable"));
    let got: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.capability.as_str(), e.detail.as_str()))
        .collect();
    let expected: Vec<(&str, &str)> = cases.iter().map(|(_, c, d)| (*c, *d)).collect();
    assert_eq!(got, expected);
    // The audit log is what the admin API shows.
    let shown: Vec<Value> = server
        .admin_get("/admin/audit?plugin=capable")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown.len(), 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_changed_after_it_was_applied_fails_the_load_and_names_the_file() {
    let (port, _upstream) = upstream().await;
    // A copy of the plugin whose migrations the test can change, and a data dir that outlives
    // one server.
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("capable");
    std::fs::create_dir_all(plugin.join("migrations")).unwrap();
    let source = test_plugin("capable");
    for file in [
        "plugin.yaml",
        "plugin.wasm",
        "migrations/0001_notes.sql",
        "migrations/0002_tags.sql",
    ] {
        crate::support::guests_built();
        std::fs::copy(source.join(file), plugin.join(file)).unwrap();
    }
    let data = dir.path().join("data").display().to_string();
    let yaml = config(&data, &plugin, ALL, port);

    let server = TestServer::start(&yaml).await;
    assert_eq!(
        server.host.plugin_info("capable").unwrap().status,
        plugd::Status::Running
    );
    server.stop().await;

    std::fs::write(
        plugin.join("migrations/0001_notes.sql"),
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL, extra TEXT);\n",
    )
    .unwrap();
    let server = TestServer::start(&yaml).await;
    let info = server.host.plugin_info("capable").unwrap();
    assert_eq!(info.status, plugd::Status::Error);
    let message = info.last_error.unwrap().message;
    assert!(
        message.contains(
            "migration migrations/0001_notes.sql of plugin 'capable' has changed since it was applied"
        ),
        "{message}"
    );
    server.stop().await;
}
