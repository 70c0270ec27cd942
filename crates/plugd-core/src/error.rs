//! The error types of the manager.

use std::path::PathBuf;

/// Why a host call made by a plugin failed. Mirrors `host-error` of the WIT contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The plugin lacks the permission, or the call is not allowed at this point.
    #[error("{0}")]
    Denied(String),
    /// This plugd build does not provide the call yet.
    #[error("{0}")]
    Unsupported(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The arguments were rejected.
    #[error("{0}")]
    Invalid(String),
    /// The host tried and failed.
    #[error("{0}")]
    Failed(String),
    /// The call would take the plugin over one of its limits (a quota, a cap): `limit` names
    /// it (`limits.storage_bytes`, `events.queue_bytes`, …). The contract calls it `invalid`;
    /// the host audits it like a denial.
    #[error("{message}")]
    OverLimit {
        /// The limit, as the operator would look it up.
        limit: &'static str,
        /// What happened, for the plugin and the audit log.
        message: String,
    },
}

impl HostError {
    /// The contract's wording for a call made without its permission (docs/design.md#errors).
    ///
    /// ```
    /// use plugd_core::{HostError, Permission};
    /// let e = HostError::permission_denied("logging-plugin", Permission::Database);
    /// assert_eq!(e.to_string(), "permission denied: plugin 'logging-plugin' attempted database access without permission");
    /// ```
    pub fn permission_denied(plugin: &str, permission: plugd_manifest::Permission) -> Self {
        HostError::Denied(format!(
            "permission denied: plugin '{plugin}' attempted {} access without permission",
            permission.as_str()
        ))
    }

    /// The answer of a host call this build does not provide yet.
    pub fn unsupported(call: &str) -> Self {
        HostError::Unsupported(format!(
            "{call} is not provided by this plugd build (plugd {}) yet",
            env!("CARGO_PKG_VERSION")
        ))
    }
}

/// A plugin's own failure: an error it returned, a trap, a timeout. Never a host panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The plugin returned an error.
    #[error("{0}")]
    Failed(String),
    /// The plugin trapped (a panic, an out-of-bounds access, unreachable code): a crash.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call ran out of what the host caps — memory, its wasm stack, fuel — and was stopped.
    /// Unlike a crash, an input can make a correct plugin do this (a big body, deep nesting), so
    /// it does not count as one (a hot reload's `rollback_on_crashes`).
    #[error("plugin trapped: {0}")]
    Exhausted(String),
    /// The call ran past its deadline and was interrupted.
    #[error("{0}")]
    Timeout(String),
    /// The plugin does not implement what was asked of it.
    #[error("{0}")]
    NotImplemented(String),
    /// The plugin is not in a state to be called (stopped, failed, disabled).
    #[error("{0}")]
    Unavailable(String),
}

impl PluginError {
    /// The contract's wording for a hook that ran past its deadline (docs/design.md#errors).
    ///
    /// ```
    /// use plugd_core::{HookType, PluginError};
    /// use std::time::Duration;
    /// let e = PluginError::hook_timeout(HookType::PreRequest, Duration::from_secs(5));
    /// assert_eq!(e.to_string(), "hook execution timeout: pre_request hook exceeded 5s timeout");
    /// ```
    pub fn hook_timeout(hook: plugd_manifest::HookType, timeout: std::time::Duration) -> Self {
        PluginError::Timeout(format!(
            "hook execution timeout: {} hook exceeded {} timeout",
            hook.as_str(),
            humantime::format_duration(timeout)
        ))
    }
}

/// Any error type, boxed: what a [`Loader`](crate::Loader) returns (its own typed error; `?`
/// converts) and the source of [`LoadError::Runtime`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A host call that failed inside a native plugin's hook, route or handler, passed on with `?`:
/// the plugin failed, with the host's message.
///
/// ```
/// use plugd_core::{HostError, PluginError};
/// fn handler() -> Result<(), PluginError> {
///     Err(HostError::NotFound("no such key".into()))?
/// }
/// assert_eq!(handler().unwrap_err(), PluginError::Failed("no such key".into()));
/// ```
impl From<HostError> for PluginError {
    fn from(e: HostError) -> PluginError {
        PluginError::Failed(e.to_string())
    }
}

/// Why a plugin could not be loaded, initialized or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The manifest was missing or invalid.
    #[error(transparent)]
    Manifest(#[from] plugd_manifest::ManifestError),
    /// The plugin's path does not exist (the contract's wording, docs/design.md#errors).
    #[error("failed to load plugin: plugin file not found: {}", .0.display())]
    NotFound(PathBuf),
    /// The config entry names a plugin whose manifest says otherwise.
    #[error("plugin name mismatch: config entry '{entry}' points at {} whose manifest is named '{manifest}'", .path.display())]
    NameMismatch {
        /// The name in the host config.
        entry: String,
        /// The name in the manifest.
        manifest: String,
        /// The plugin directory.
        path: PathBuf,
    },
    /// Two plugins with one name.
    #[error("duplicate plugin: '{0}' is already loaded")]
    Duplicate(String),
    /// Grants, dependencies or ordering failed.
    #[error("{0}")]
    Invalid(String),
    /// The plugin's config did not validate against its schema.
    #[error("config of plugin '{plugin}': {message}")]
    Config {
        /// The plugin.
        plugin: String,
        /// What was wrong.
        message: String,
    },
    /// The runtime could not load the plugin (compile error, contract mismatch), or its
    /// capabilities could not be opened.
    #[error("failed to load plugin '{plugin}': {source}")]
    Runtime {
        /// The plugin.
        plugin: String,
        /// What went wrong: the loader's own error.
        source: BoxError,
    },
    /// The plugin is loaded from disk but the host was built without a [`Loader`](crate::Loader).
    #[error("failed to load plugin '{0}': this host has no loader for plugins from disk")]
    NoLoader(String),
    /// `init` failed.
    #[error("plugin initialization failed: {plugin}: {error}")]
    Init {
        /// The plugin.
        plugin: String,
        /// Its error.
        error: PluginError,
    },
    /// `start` failed.
    #[error("plugin start failed: {plugin}: {error}")]
    Start {
        /// The plugin.
        plugin: String,
        /// Its error.
        error: PluginError,
    },
    /// A dependency failed, so this plugin was not started.
    #[error("dependency '{dependency}' failed")]
    Dependency {
        /// The dependency that failed.
        dependency: String,
    },
    /// The host's own files (the data directory) could not be made.
    #[error("storage: {0}")]
    Storage(#[from] crate::private::FileError),
    /// A backend the host was built with failed to start.
    #[error("{what}: {source}")]
    Backend {
        /// Which (`the event transport`).
        what: &'static str,
        /// Its error.
        source: BackendError,
    },
    /// No plugin by that name.
    #[error("plugin not found: '{0}'")]
    UnknownPlugin(String),
    /// Running plugins depend on the plugin.
    #[error("plugin '{plugin}' is in use: running plugins depend on it: {}; unload them first or force", .dependents.join(", "))]
    InUse {
        /// The plugin.
        plugin: String,
        /// The running plugins that depend on it.
        dependents: Vec<String>,
    },
    /// The plugin refused a new config; the old one stays in force.
    #[error(
        "plugin '{plugin}' rejected the new config (the previous config stays in force): {error}"
    )]
    ConfigRejected {
        /// The plugin.
        plugin: String,
        /// Its error.
        error: PluginError,
    },
    /// A reload failed; `restored` tells whether the previous version serves again.
    #[error("plugin reload failed: {plugin} {message}; {}", if *.restored { "the previous version serves again" } else { "the plugin is in error" })]
    Reload {
        /// The plugin.
        plugin: String,
        /// What failed.
        message: String,
        /// Whether the previous version serves again.
        restored: bool,
    },
    /// The plugin's manifest does not list the `hot_reload` capability.
    #[error(
        "plugin '{0}' does not support hot reload: its manifest lacks the `hot_reload` capability (its config can still change live)"
    )]
    NotReloadable(String),
    /// A registration made during `init` was refused.
    #[error("plugin '{plugin}' registration refused: {message}")]
    Registration {
        /// The plugin.
        plugin: String,
        /// Why.
        message: String,
    },
}

/// A backend that failed (its database went away, its disk is full): what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{backend}: {message}")]
#[non_exhaustive]
pub struct BackendError {
    /// The backend (`sqlite`, `memory`, `postgres`).
    pub backend: String,
    /// What went wrong, with the file or address at fault.
    pub message: String,
}

impl BackendError {
    /// An error of `backend`.
    pub fn new(backend: impl Into<String>, message: impl Into<String>) -> Self {
        BackendError {
            backend: backend.into(),
            message: message.into(),
        }
    }
}

/// Wait for a backend's `call` at most `timeout`. An overrun is `HostError::Failed`
/// (`storage.get did not finish within 5s`, from `area` and `what`); the call's own result is
/// the caller's to map. Shared by the ports whose calls the caller's deadline bounds.
pub(crate) async fn within<T>(
    area: &str,
    what: &str,
    timeout: std::time::Duration,
    call: impl std::future::Future<Output = T>,
) -> Result<T, HostError> {
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        HostError::Failed(format!(
            "{area}.{what} did not finish within {}",
            humantime::format_duration(timeout)
        ))
    })
}
