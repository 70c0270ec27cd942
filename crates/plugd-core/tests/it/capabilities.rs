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

mod dialects {
    //! The SQL dialects a plugin declares, against the host's database backend: the refusal at
    //! load, and the migrations folder of the backend's dialect.

    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::Arc;

    use plugd_core::{
        Auditor, Capabilities, CapabilityError, CapabilityOptions, Permission, SqlBackend,
    };

    /// SQLite files under another dialect's name: what a plugin's manifest and migrations
    /// folder are matched against.
    #[derive(Debug)]
    struct Speaking(plugd_sqlite::SqliteDatabase, &'static str);

    #[async_trait::async_trait]
    impl SqlBackend for Speaking {
        async fn open(
            &self,
            plugin: &str,
        ) -> Result<Arc<dyn plugd_core::SqlConnection>, plugd_core::BackendError> {
            self.0.open(plugin).await
        }
        fn dialect(&self) -> &'static str {
            self.1
        }
    }

    fn manifest(extra: &str) -> plugd_manifest::Manifest {
        plugd_manifest::Manifest::from_str(
            &format!("name: notes\nversion: 1.0.0\ndescription: d\nauthor: a\n{extra}"),
            plugd_manifest::Format::Yaml,
            None,
        )
        .unwrap()
    }

    async fn open_notes(
        data: &Path,
        plugin_dir: &Path,
        manifest: &plugd_manifest::Manifest,
        dialect: &'static str,
    ) -> Result<Capabilities, CapabilityError> {
        let host = plugd_manifest::HostConfig {
            data_dir: data.to_path_buf(),
            ..plugd_manifest::HostConfig::default()
        };
        let granted: BTreeSet<Permission> = [Permission::Database].into();
        let backend = Speaking(plugd_sqlite::SqliteDatabase::new(data), dialect);
        Capabilities::open(CapabilityOptions {
            plugin: "notes",
            granted: &granted,
            host: &host,
            entry: None,
            plugin_dir: Some(plugin_dir),
            database: Some(&manifest.database),
            auditor: Auditor::new("notes", None, None),
            http: None,
            commands: None,
            sql: Some(Arc::new(backend)),
        })
        .await
    }

    #[tokio::test]
    async fn a_plugin_whose_dialects_lack_the_backends_is_refused_at_load() {
        let (data, plugin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let e = open_notes(data.path(), plugin.path(), &manifest(""), "postgres")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "plugin 'notes' supports the SQL dialects [sqlite]; this host's database backend is postgres (declare `database: { dialects: [..., postgres] }` and ship migrations/postgres/)"
        );
        let sqlite_only = manifest("database: { dialects: [sqlite] }");
        assert!(
            open_notes(data.path(), plugin.path(), &sqlite_only, "sqlite")
                .await
                .is_ok()
        );
        let pg_only = manifest("database: { dialects: [postgres] }");
        let e = open_notes(data.path(), plugin.path(), &pg_only, "sqlite")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("plugin 'notes' supports the SQL dialects [postgres]; this host's database backend is sqlite"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn migrations_come_from_the_backends_dialect_folder_or_the_flat_one_for_sqlite() {
        let plugin = tempfile::tempdir().unwrap();
        let migrations = plugin.path().join("migrations");
        std::fs::create_dir_all(migrations.join("postgres")).unwrap();
        std::fs::write(
            migrations.join("0001_flat.sql"),
            "CREATE TABLE flat (v TEXT);",
        )
        .unwrap();
        std::fs::write(
            migrations.join("postgres/0001_pg.sql"),
            "CREATE TABLE from_pg (v TEXT);",
        )
        .unwrap();
        let both = manifest("database: { dialects: [sqlite, postgres] }");
        let tables = |caps: Capabilities| async move {
            let db = caps.database("database.query").unwrap();
            let rows = db
                .query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name", &[])
                .await
                .unwrap();
            rows.rows
                .into_iter()
                .map(|r| format!("{:?}", r[0]))
                .collect::<Vec<_>>()
        };
        // SQLite without migrations/sqlite/: the flat files (backward compatible).
        let data = tempfile::tempdir().unwrap();
        let caps = open_notes(data.path(), plugin.path(), &both, "sqlite")
            .await
            .unwrap();
        assert_eq!(tables(caps).await, [r#"Text("flat")"#]);
        // Another dialect: its own folder only.
        let data = tempfile::tempdir().unwrap();
        let caps = open_notes(data.path(), plugin.path(), &both, "postgres")
            .await
            .unwrap();
        assert_eq!(tables(caps).await, [r#"Text("from_pg")"#]);
        // SQLite with migrations/sqlite/: that folder, not the flat files.
        std::fs::create_dir_all(migrations.join("sqlite")).unwrap();
        std::fs::write(
            migrations.join("sqlite/0001_lite.sql"),
            "CREATE TABLE from_sqlite (v TEXT);",
        )
        .unwrap();
        let data = tempfile::tempdir().unwrap();
        let caps = open_notes(data.path(), plugin.path(), &both, "sqlite")
            .await
            .unwrap();
        assert_eq!(tables(caps).await, [r#"Text("from_sqlite")"#]);
    }
}
