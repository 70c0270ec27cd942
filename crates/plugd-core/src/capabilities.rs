//! The gated capabilities of one plugin — `database`, `network`, `exec`, `config` and
//! `filesystem` — opened once at load and shared by the wasm host imports and by native plugins'
//! [`InitContext`](crate::InitContext).
//!
//! Every call checks the plugin's effective permissions first. A denied call (a missing
//! permission, a host not in `network.allow`, a command not in `exec.allow`, SQL the database's
//! authorizer refuses) returns [`HostError::Denied`], counts as an error of the plugin
//! ([`PluginState::record_error`]) and is written to the [`AuditLog`].
//!
//! On disk, under the host's `data_dir`:
//!
//! ```text
//! plugins/<name>/            mode 0700; the working directory of `exec`
//! plugins/<name>/files/      mode 0700; the `filesystem` capability, preopened at /data
//! ```
//!
//! The `database` capability is the host's [`SqlBackend`] (`HostBuilder::sql`); the SQLite one
//! keeps `plugins/<name>/db.sqlite` (mode 0600). A plugin whose manifest's `database.dialects`
//! does not list the backend's dialect is refused at load ([`CapabilityError::Dialect`]), and
//! its migrations are read from the folder of that dialect ([`Migration::dir`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use plugd_manifest::{DatabaseDecl, HostConfig, Permission, PluginEntry};

use crate::audit::Auditor;
use crate::database::{Database, DatabaseOpenError, Migration, SqlBackend};
use crate::error::HostError;
use crate::exec::{CommandRunner, Exec};
use crate::host_config::HostConfigView;
use crate::outbound::{AllowRuleError, HttpClient, NetworkAllow, Outbound};
use crate::private::{FileError, make_private_dir};

/// What [`Capabilities::open`] needs to know about one plugin.
#[derive(Debug)]
pub struct CapabilityOptions<'a> {
    /// The plugin's name.
    pub plugin: &'a str,
    /// Its effective permissions.
    pub granted: &'a BTreeSet<Permission>,
    /// The host config (`data_dir`, and the source of `config.host-config`).
    pub host: &'a HostConfig,
    /// Its entry in the host config (`network.allow`, `exec.allow`), when it has one.
    pub entry: Option<&'a PluginEntry>,
    /// Its directory, the parent of `migrations/` (none for native plugins).
    pub plugin_dir: Option<&'a Path>,
    /// Its manifest's `database` key (the SQL dialects it is written in); none without a
    /// manifest, which means `[sqlite]`.
    pub database: Option<&'a DatabaseDecl>,
    /// Where denials go.
    pub auditor: Auditor,
    /// The backend of outbound HTTP (`network`); a plugin granted `network` on a host without
    /// one fails to load.
    pub http: Option<Arc<dyn HttpClient>>,
    /// The backend of `exec`; a plugin granted `exec` on a host without one fails to load.
    pub commands: Option<Arc<dyn CommandRunner>>,
    /// Where plugins' databases live; none, and a plugin granted `database` does not load.
    pub sql: Option<Arc<dyn SqlBackend>>,
}

/// The gated capabilities of one plugin. Cheap to clone; what is not granted is not opened.
#[derive(Debug, Clone)]
pub struct Capabilities {
    granted: BTreeSet<Permission>,
    auditor: Auditor,
    database: Option<Database>,
    outbound: Option<Outbound>,
    exec: Option<Exec>,
    host_config: Option<HostConfigView>,
    files: Option<PathBuf>,
}

impl Capabilities {
    /// Capabilities with nothing opened: every permission is still checked (and a denial
    /// recorded), and a granted capability answers `unsupported`. For tests and tools.
    pub fn unopened(granted: BTreeSet<Permission>, auditor: Auditor) -> Capabilities {
        Capabilities {
            granted,
            auditor,
            database: None,
            outbound: None,
            exec: None,
            host_config: None,
            files: None,
        }
    }

    /// Open what is granted: the plugin's database in the host's SQL backend (applying its
    /// `migrations/`), its outbound client, its command runner, its view of the host config, its
    /// `files/` directory. Runs the blocking work (migrations, directories) off the async workers.
    pub async fn open(options: CapabilityOptions<'_>) -> Result<Capabilities, CapabilityError> {
        let plugin = options.plugin.to_string();
        let granted = options.granted.clone();
        let auditor = options.auditor;
        let root = options.host.data_dir.join("plugins").join(&plugin);
        let wants_dir = [
            Permission::Database,
            Permission::Filesystem,
            Permission::Exec,
        ]
        .iter()
        .any(|p| granted.contains(p));
        let files = granted
            .contains(&Permission::Filesystem)
            .then(|| root.join("files"));
        let database = if granted.contains(&Permission::Database) {
            let backend = options
                .sql
                .ok_or_else(|| missing(&plugin, "database", "SQL", "sql", "sqlite"))?;
            let decl = options.database.cloned().unwrap_or_default();
            let dialect = backend.dialect();
            if !decl.supports(dialect) {
                return Err(CapabilityError::Dialect {
                    plugin,
                    dialects: decl.dialects,
                    backend: dialect,
                });
            }
            let plugin_dir = options.plugin_dir.map(Path::to_path_buf);
            let (name, root, files) = (plugin.clone(), root.clone(), files.clone());
            let migrations = tokio::task::spawn_blocking(move || {
                make_private_dir(&root)?;
                if let Some(files) = &files {
                    make_private_dir(files)?;
                }
                Ok::<_, CapabilityError>(match plugin_dir {
                    Some(dir) => Migration::read_dir(&name, &Migration::dir(&dir, dialect))?,
                    None => Vec::new(),
                })
            })
            .await
            .map_err(|source| CapabilityError::Task {
                plugin: plugin.clone(),
                source,
            })??;
            let database =
                Database::open(&plugin, backend.as_ref(), &migrations, auditor.clone()).await?;
            Some(database)
        } else {
            if wants_dir {
                make_private_dir(&root)?;
            }
            if let Some(files) = &files {
                make_private_dir(files)?;
            }
            None
        };
        let entry = options.entry;
        let outbound = if granted.contains(&Permission::Network) {
            let allow_list = entry.map(|e| e.network.allow.as_slice()).unwrap_or(&[]);
            let allow = NetworkAllow::parse(allow_list).map_err(|source| {
                CapabilityError::NetworkAllow {
                    plugin: plugin.clone(),
                    source,
                }
            })?;
            let client = options
                .http
                .ok_or_else(|| missing(&plugin, "network", "outbound HTTP", "http", "std"))?;
            Some(Outbound::new(&plugin, allow, client, auditor.clone()))
        } else {
            None
        };
        let exec = if granted.contains(&Permission::Exec) {
            let grant = entry.map(|e| e.exec.clone()).unwrap_or_default();
            let runner = options
                .commands
                .ok_or_else(|| missing(&plugin, "exec", "command", "commands", "std"))?;
            Some(Exec::new(
                &plugin,
                grant,
                root.clone(),
                runner,
                auditor.clone(),
            ))
        } else {
            None
        };
        let host_config = granted
            .contains(&Permission::Config)
            .then(|| HostConfigView::new(options.host, &plugin));
        Ok(Capabilities {
            granted,
            auditor,
            database,
            outbound,
            exec,
            host_config,
            files,
        })
    }

    /// The effective permissions.
    pub fn granted(&self) -> &BTreeSet<Permission> {
        &self.granted
    }

    /// Where denials are recorded.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// Check a permission for `call`; a denial is counted and audited.
    pub fn require(&self, permission: Permission, call: &str) -> Result<(), HostError> {
        self.auditor.require(&self.granted, permission, call)
    }

    /// The plugin's database; needs `database`.
    pub fn database(&self, call: &str) -> Result<Database, HostError> {
        self.require(Permission::Database, call)?;
        opened(&self.database, "database")
    }

    /// The SQL dialect of its database (`sqlite`, `postgres`), when one is open. Not a use of
    /// the database: nothing is checked or audited.
    pub fn database_dialect(&self) -> Option<&'static str> {
        self.database.as_ref().map(Database::dialect)
    }

    /// Outbound HTTP; needs `network`.
    pub fn outbound(&self, call: &str) -> Result<Outbound, HostError> {
        self.require(Permission::Network, call)?;
        opened(&self.outbound, "outbound HTTP")
    }

    /// Allowlisted commands; needs `exec`.
    pub fn exec(&self, call: &str) -> Result<Exec, HostError> {
        self.require(Permission::Exec, call)?;
        opened(&self.exec, "exec")
    }

    /// The host config, secrets redacted; needs `config`.
    pub fn host_config(&self, call: &str) -> Result<HostConfigView, HostError> {
        self.require(Permission::Config, call)?;
        opened(&self.host_config, "the host config")
    }

    /// The plugin's `files/` directory when `filesystem` is granted (the wasm runtime preopens it
    /// at `/data`). Not a host call: nothing is recorded.
    pub fn files_dir(&self) -> Option<&Path> {
        self.files.as_deref()
    }
}

/// The load error of a plugin granted a capability whose backend the host lacks.
/// Why a plugin's capabilities could not be opened (its load fails with this as the reason).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapabilityError {
    /// The plugin is granted a capability the host has no backend for: what to set, and which
    /// feature of the `plugd` façade sets it.
    #[error(
        "plugin '{plugin}' is granted '{permission}', but this host has no {what} backend: set one with HostBuilder::{method} (the plugd façade's \"{feature}\" feature does)"
    )]
    NoBackend {
        /// The plugin.
        plugin: String,
        /// The permission granted.
        permission: &'static str,
        /// The kind of backend missing.
        what: &'static str,
        /// The `HostBuilder` method that sets one.
        method: &'static str,
        /// The façade feature that sets one.
        feature: &'static str,
    },
    /// Its manifest does not list the SQL dialect of the host's database backend.
    #[error(
        "plugin '{plugin}' supports the SQL dialects [{}]; this host's database backend is {backend} (declare `database: {{ dialects: [..., {backend}] }}` and ship migrations/{backend}/)",
        .dialects.join(", ")
    )]
    Dialect {
        /// The plugin.
        plugin: String,
        /// The dialects its manifest lists.
        dialects: Vec<String>,
        /// The backend's dialect.
        backend: &'static str,
    },
    /// Its folders under `data_dir` could not be made.
    #[error(transparent)]
    Files(#[from] FileError),
    /// Its database (or its migrations) could not be opened.
    #[error(transparent)]
    Database(#[from] DatabaseOpenError),
    /// An entry of its `network.allow` is invalid.
    #[error("network.allow of plugin '{plugin}': {source}")]
    NetworkAllow {
        /// The plugin.
        plugin: String,
        /// The entry and why.
        source: AllowRuleError,
    },
    /// The blocking task that prepared its database ended abnormally.
    #[error("opening the database of plugin '{plugin}': {source}")]
    Task {
        /// The plugin.
        plugin: String,
        /// What the runtime said.
        source: tokio::task::JoinError,
    },
}

/// The error of a grant whose backend the host lacks.
fn missing(
    plugin: &str,
    permission: &'static str,
    what: &'static str,
    method: &'static str,
    feature: &'static str,
) -> CapabilityError {
    CapabilityError::NoBackend {
        plugin: plugin.to_string(),
        permission,
        what,
        method,
        feature,
    }
}

fn opened<T: Clone>(slot: &Option<T>, what: &str) -> Result<T, HostError> {
    slot.clone()
        .ok_or_else(|| HostError::unsupported(&format!("{what} (not opened in this context)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditLog;
    use crate::state::PluginState;
    use std::sync::Arc;

    fn host(dir: &Path) -> HostConfig {
        HostConfig {
            data_dir: dir.to_path_buf(),
            ..HostConfig::default()
        }
    }

    #[tokio::test]
    async fn only_what_is_granted_is_opened_and_a_denial_is_counted_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path());
        let state = Arc::new(PluginState::default());
        let log = Arc::new(AuditLog::default());
        let granted: BTreeSet<Permission> = [Permission::Filesystem].into();
        let caps = Capabilities::open(CapabilityOptions {
            plugin: "p",
            granted: &granted,
            host: &host,
            entry: None,
            plugin_dir: None,
            database: None,
            auditor: Auditor::new("p", Some(state.clone()), Some(log.clone())),
            http: None,
            commands: None,
            sql: None,
        })
        .await
        .unwrap();
        let files = dir.path().join("plugins/p/files");
        assert_eq!(caps.files_dir(), Some(files.as_path()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert!(!dir.path().join("plugins/p/db.sqlite").exists());
        let e = caps.database("database.execute").unwrap_err();
        assert_eq!(
            e,
            HostError::Denied(
                "permission denied: plugin 'p' attempted database access without permission".into()
            )
        );
        assert!(caps.exec("exec.run").is_err());
        assert_eq!(state.error_count(), 2);
        assert_eq!(
            state.last_error().unwrap().message,
            "permission denied: plugin 'p' attempted exec access without permission"
        );
        let audit = log.entries(Some("p"));
        assert_eq!(audit.len(), 2);
        assert_eq!(
            (audit[0].capability.as_str(), audit[0].detail.as_str()),
            ("database", "database.execute")
        );
    }

    #[tokio::test]
    async fn a_bad_network_allow_entry_fails_the_open_and_names_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path());
        let mut entry = PluginEntry::new("p", dir.path());
        entry.network.allow = vec!["api.example.com/v1".into()];
        let granted: BTreeSet<Permission> = [Permission::Network].into();
        let e = Capabilities::open(CapabilityOptions {
            plugin: "p",
            granted: &granted,
            host: &host,
            entry: Some(&entry),
            plugin_dir: None,
            database: None,
            auditor: Auditor::new("p", None, None),
            http: None,
            commands: None,
            sql: None,
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("network.allow of plugin 'p': "), "{e}");
        assert!(e.contains("api.example.com/v1"), "{e}");
    }

    #[tokio::test]
    async fn a_grant_without_its_backend_fails_the_open_naming_plugin_and_capability() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path());
        let granted: BTreeSet<Permission> = [Permission::Network].into();
        let e = Capabilities::open(CapabilityOptions {
            plugin: "p",
            granted: &granted,
            host: &host,
            entry: None,
            plugin_dir: None,
            database: None,
            auditor: Auditor::new("p", None, None),
            http: None,
            commands: None,
            sql: None,
        })
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "plugin 'p' is granted 'network', but this host has no outbound HTTP backend: set one with HostBuilder::http (the plugd façade's \"std\" feature does)"
        );
    }

    #[tokio::test]
    async fn a_database_grant_without_an_sql_backend_fails_the_open_and_names_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path());
        let granted: BTreeSet<Permission> = [Permission::Database].into();
        let e = Capabilities::open(CapabilityOptions {
            plugin: "notes",
            granted: &granted,
            host: &host,
            entry: None,
            plugin_dir: None,
            database: None,
            auditor: Auditor::new("notes", None, None),
            http: None,
            commands: None,
            sql: None,
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("plugin 'notes' is granted 'database', but this host has no SQL backend"),
            "{e}"
        );
    }

    #[test]
    fn unopened_capabilities_still_check_permissions() {
        let caps =
            Capabilities::unopened([Permission::Database].into(), Auditor::new("p", None, None));
        assert!(matches!(
            caps.database("database.query"),
            Err(HostError::Unsupported(_))
        ));
        assert!(matches!(
            caps.outbound("outbound.fetch"),
            Err(HostError::Denied(_))
        ));
    }
}
