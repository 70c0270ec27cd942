//! Native plugins reach the gated capabilities through `InitContext`, with their grants.

use std::sync::Arc;

use parking_lot::Mutex;
use plugd_core::{Host, InitContext, Plugin, PluginError, SqlValue, Status};
use plugd_manifest::{Format, Manifest};

use crate::config;

/// Uses the database, exec and the host config in `init`, and records what it saw.
#[derive(Default)]
struct Capable {
    seen: Arc<Mutex<Vec<String>>>,
}

fn failed(e: impl std::fmt::Display) -> PluginError {
    PluginError::Failed(e.to_string())
}

#[async_trait::async_trait]
impl Plugin for Capable {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        let mut seen = Vec::new();
        match ctx.database() {
            Ok(db) => {
                db.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)", &[])
                    .await
                    .map_err(failed)?;
                db.execute(
                    "INSERT INTO t VALUES (?1)",
                    &[SqlValue::Text("native".into())],
                )
                .await
                .map_err(failed)?;
                let rows = db.query("SELECT v FROM t", &[]).await.map_err(failed)?;
                seen.push(format!("db:{:?}", rows.rows));
                seen.push(format!(
                    "db-file:{}",
                    db.location().ends_with("plugins/capable/db.sqlite")
                ));
            }
            Err(e) => seen.push(format!("db-error:{e}")),
        }
        match ctx.exec() {
            Ok(exec) => {
                let out = exec
                    .run("echo", &["hi".into()], b"", None)
                    .await
                    .map_err(failed)?;
                seen.push(format!(
                    "exec:{}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ));
            }
            Err(e) => seen.push(format!("exec-error:{e}")),
        }
        match ctx.host_config() {
            Ok(view) => seen.push(format!(
                "config:{}",
                view.get("admin.token").map_err(failed)?.unwrap_or_default()
            )),
            Err(e) => seen.push(format!("config-error:{e}")),
        }
        *self.seen.lock() = seen;
        Ok(())
    }
}

fn manifest() -> Manifest {
    Manifest::from_str(
        "name: capable\nversion: 1.0.0\ndescription: d\nauthor: a\npermissions: { database: true, exec: true, config: true }\n",
        Format::Yaml,
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn a_native_plugin_uses_what_it_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = Capable::default();
    let seen = plugin.seen.clone();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "admin: { token: t0ps3cret }\nplugins:\n  plugins:\n    - name: capable\n      permissions: { database: true, exec: true, config: true }\n      exec: { allow: [echo] }\n",
        ))
        .commands(Arc::new(plugd_std::ProcessRunner))
        .sql(Arc::new(plugd_sqlite::SqliteDatabase::new(dir.path())))
        .native(manifest(), plugin)
        .build()
        .unwrap();
    host.start().await.unwrap();
    assert_eq!(host.plugin_info("capable").unwrap().status, Status::Running);
    assert_eq!(
        *seen.lock(),
        [
            "db:[[Text(\"native\")]]",
            "db-file:true",
            "exec:hi",
            "config:\"[redacted]\""
        ]
    );
    assert!(dir.path().join("plugins/capable/db.sqlite").exists());
    assert_eq!(host.plugin_info("capable").unwrap().error_count, 0);
    host.shutdown().await;
}

#[tokio::test]
async fn without_grants_each_accessor_is_denied_counted_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = Capable::default();
    let seen = plugin.seen.clone();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  plugins:\n    - name: capable\n      permissions: { database: false }\n",
        ))
        .native(manifest(), plugin)
        .build()
        .unwrap();
    host.start().await.unwrap();
    assert_eq!(
        *seen.lock(),
        [
            "db-error:permission denied: plugin 'capable' attempted database access without permission",
            "exec-error:permission denied: plugin 'capable' attempted exec access without permission",
            "config-error:permission denied: plugin 'capable' attempted config access without permission",
        ]
    );
    let info = host.plugin_info("capable").unwrap();
    assert_eq!(info.error_count, 3);
    let audit = host.audit_log(Some("capable"));
    let got: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.capability.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("database", "InitContext::database"),
            ("exec", "InitContext::exec"),
            ("config", "InitContext::host_config"),
        ]
    );
    assert!(!dir.path().join("plugins/capable/db.sqlite").exists());
    host.shutdown().await;
}

#[tokio::test]
async fn a_plugin_granted_exec_on_a_host_without_a_command_runner_fails_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  plugins:\n    - name: capable\n      permissions: { exec: true, config: true }\n      exec: { allow: [echo] }\n",
        ))
        .native(manifest(), Capable::default())
        .build()
        .unwrap();
    let _ = host.start().await;
    let info = host.plugin_info("capable").unwrap();
    assert_ne!(info.status, Status::Running);
    let error = info.last_error.unwrap().message;
    assert!(
        error.contains(
            "plugin 'capable' is granted 'exec', but this host has no command backend: set one with HostBuilder::commands"
        ),
        "{error}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_database_grant_on_a_host_without_an_sql_backend_fails_the_load_naming_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = Capable::default();
    let seen = plugin.seen.clone();
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  plugins:\n    - name: capable\n      permissions: { database: true }\n",
        ))
        .native(manifest(), plugin)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let info = host.plugin_info("capable").unwrap();
    assert_eq!(info.status, Status::Error);
    let message = info.last_error.unwrap().message;
    assert!(
        message.starts_with(
            "failed to load plugin 'capable': plugin 'capable' is granted 'database', but this host has no SQL backend"
        ),
        "{message}"
    );
    assert!(seen.lock().is_empty(), "init never ran");
    host.shutdown().await;
}
