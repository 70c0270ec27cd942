//! plugd: a plugin host for Rust backends.
//!
//! WebAssembly plugins run in a wasmtime sandbox with only the permissions their operator
//! granted; native Rust plugins are compiled in. Both share one lifecycle, one dispatch path and
//! one status model. This crate is the façade an application depends on: it re-exports the
//! manager ([`Host`], [`Plugin`]) and the manifest and config types ([`manifest`]), and, behind
//! features, the wasm runtime, the SQLite backends and the HTTP server, and wires them together.
//! The `plugd` command is another package (`plugd-cli`); nothing of it is compiled into an
//! application.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `wasm` | yes | `plugd::wasm`: the wasmtime runtime, a [`Loader`] of wasm plugins |
//! | `sqlite` | yes | `plugd::sqlite`: plugin storage, plugin databases and the status tables in SQLite; `with_embedded_backends` |
//! | `std` | yes | `plugd::std_backends`: outbound HTTP (reqwest), exec, file watching; package admission; `with_std_backends`, [`check_config_with_packages`] |
//! | `server` | yes | `plugd::server`: the axum router, the admin API and dashboard, `serve_with_admin`, `serve_router` |
//! | `fleet` | no | the fleet's engines as `backends:` names them: PostgreSQL (`plugd::postgres`), Redis (`plugd::redis`), NATS JetStream (`plugd::nats`), and fleet control (`plugd::fleet`); `connect_backends`, `connect_host`, `check_backends` |
//! | `test` | no | `plugd::test`: the `plugd-test` harness for plugin authors (`TestHost`, `tests.yaml` suites) |
//!
//! `host_from_config` (`wasm` and `sqlite`) builds the host `plugd serve` runs. With
//! `default-features = false` the crate is the manager alone: native plugins, storage in memory,
//! the manifest and config readers, dispatch through [`Dispatcher::handle`].
//!
//! ```
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! # let dir = std::env::temp_dir().join(format!("plugd-facade-doc-{}", std::process::id()));
//! let host = plugd::Host::builder().data_dir(&dir).build().unwrap();
//! host.start().await.unwrap();
//! assert!(host.list_plugins().is_empty());
//! host.shutdown().await;
//! # });
//! ```
//!
//! A native plugin is a manifest ([`manifest::Manifest::builder`]) and `async` closures
//! ([`NativePlugin`]); docs/native-plugins.md is the guide:
//!
//! ```
//! use plugd::manifest::{Manifest, Permission};
//! use plugd::{NativePlugin, Response};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manifest = Manifest::builder("clock", "1.0.0").description("Tells the time").author("you")
//!     .permission(Permission::Router)
//!     .build()?;
//! let clock = NativePlugin::new(manifest).route(http::Method::GET, "/now", |_ctx, _ex| async {
//!     Ok(Response::json(http::StatusCode::OK, &serde_json::json!({ "unix": 1_700_000_000 })))
//! });
//! # let dir = std::env::temp_dir().join(format!("plugd-facade-native-doc-{}", std::process::id()));
//! let host = plugd::Host::builder().data_dir(&dir).plugin(clock).build()?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

#[cfg(feature = "fleet")]
mod backends;
#[cfg(feature = "fleet")]
pub use backends::{
    BackendSetupError, Connected, EngineCheck, check_backends, connect_backends, connect_host,
};
#[cfg(feature = "fleet")]
pub use plugd_fleet as fleet;

pub use plugd_core::*;
pub use plugd_manifest as manifest;
#[cfg(feature = "server")]
pub use plugd_server as server;
#[cfg(feature = "sqlite")]
pub use plugd_sqlite as sqlite;
#[cfg(feature = "std")]
pub use plugd_std as std_backends;
#[cfg(feature = "test")]
pub use plugd_test as test;
#[cfg(feature = "wasm")]
pub use plugd_wasm as wasm;
#[cfg(feature = "fleet")]
pub use {plugd_nats as nats, plugd_postgres as postgres, plugd_redis as redis};

/// A host for `config`, with the wasm runtime as the loader of plugins from disk: its pooling
/// allocator sized by `plugins.pool`, fuel metering when `limits.fuel` is set, its compile
/// cache under `<data_dir>/cache/components`, and the native profiler `PLUGD_WASM_PROFILER`
/// names (`perfmap`, `jitdump`), if any; and with the SQLite backends
/// ([`with_embedded_backends`]). The host `plugd serve` runs. Features `wasm` and `sqlite`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = plugd::manifest::HostConfig::from_path("examples/plugd.yaml".as_ref())?;
/// let host = plugd::host_from_config(config)?;
/// host.start().await?;
/// # Ok(()) }
/// ```
#[cfg(all(feature = "wasm", feature = "sqlite"))]
pub fn host_from_config(config: plugd_manifest::HostConfig) -> Result<Host, SetupError> {
    let runtime = wasm_runtime(&config)?;
    let builder = with_embedded_backends(Host::builder(), &config)?;
    Ok(builder.config(config).loader(runtime).build()?)
}

/// The wasm runtime `config` asks for, with the native profiler `PLUGD_WASM_PROFILER` names.
#[cfg(feature = "wasm")]
fn wasm_runtime(
    config: &plugd_manifest::HostConfig,
) -> Result<plugd_wasm::WasmRuntime, SetupError> {
    let mut options = plugd_wasm::RuntimeOptions::from_config(config);
    options.profiler = plugd_wasm::Profiler::from_env()?;
    if options.profiler != plugd_wasm::Profiler::None {
        tracing::info!(profiler = ?options.profiler, "guest code is described to native profilers");
    }
    Ok(plugd_wasm::WasmRuntime::new(options)?)
}

/// Why [`host_from_config`] or [`with_embedded_backends`] could not set a host up.
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// let file = std::env::temp_dir().join(format!("plugd-setup-error-doc-{}", std::process::id()));
/// std::fs::write(&file, "a file where the data directory should be").unwrap();
/// let config = plugd::manifest::HostConfig { data_dir: file.clone(), ..Default::default() };
/// let err = plugd::with_embedded_backends(plugd::Host::builder(), &config).unwrap_err();
/// assert!(matches!(err, plugd::SetupError::Sqlite(_)), "{err}");
/// # std::fs::remove_file(&file).unwrap();
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The wasm runtime could not be made (engine, profiler, epoch thread).
    #[cfg(feature = "wasm")]
    #[error(transparent)]
    Wasm(#[from] plugd_wasm::WasmError),
    /// The SQLite backends could not be opened under the data directory.
    #[cfg(feature = "sqlite")]
    #[error(transparent)]
    Sqlite(#[from] plugd_sqlite::SqliteError),
    /// A standard backend could not be set up (outbound HTTP's TLS).
    #[cfg(feature = "std")]
    #[error(transparent)]
    Std(#[from] plugd_std::ClientError),
    /// An engine of `backends` (PostgreSQL, Redis, NATS) could not be reached or set up.
    #[cfg(feature = "fleet")]
    #[error(transparent)]
    Backend(#[from] backends::BackendSetupError),
    /// The host refused its config.
    #[error(transparent)]
    Host(#[from] LoadError),
}

/// `builder` with the embedded defaults' backends for `config`: plugins' key/value storage and
/// their SQL databases (the `database` capability) in SQLite files per plugin, and the status
/// tables in `host.db`, under `data_dir` ([`plugd_sqlite`]), and with feature `std` the standard
/// backends ([`with_std_backends`]). Feature `sqlite`; without it a host keeps storage and status
/// in memory and has no SQL backend (a plugin granted `database` fails to load).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("plugd-embedded-doc-{}", std::process::id()));
/// let config = plugd::manifest::HostConfig { data_dir: dir.clone(), ..Default::default() };
/// let host = plugd::with_embedded_backends(plugd::Host::builder(), &config)
///     .unwrap()
///     .config(config)
///     .build()
///     .unwrap();
/// assert_eq!(host.config().data_dir, dir);
/// ```
#[cfg(feature = "sqlite")]
pub fn with_embedded_backends(
    builder: plugd_core::HostBuilder,
    config: &plugd_manifest::HostConfig,
) -> Result<plugd_core::HostBuilder, SetupError> {
    let sqlite = plugd_sqlite::Backends::open(&config.data_dir)?;
    let builder = builder
        .kv(sqlite.kv)
        .sql(sqlite.sql)
        .status_sink(sqlite.status);
    #[cfg(feature = "std")]
    let builder = with_std_backends(builder)?;
    Ok(builder)
}

/// `builder` with the standard backends ([`plugd_std`]): outbound HTTP through reqwest for the
/// `network` capability, process groups with resource limits for `exec`, notify for
/// `plugins.hot_reload`, and `plugd-pkg`'s package admission (blocklist, installed digests,
/// signatures). Feature `std`; without it a plugin granted `network` or `exec` fails to load,
/// hot reload is off, and a config that sets `plugins.blocked`, `trusted_keys` or
/// `require_signatures` loads nothing.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("plugd-std-facade-doc-{}", std::process::id()));
/// let host = plugd::with_std_backends(plugd::Host::builder()).unwrap().data_dir(&dir).build();
/// assert!(host.is_ok());
/// ```
#[cfg(feature = "std")]
pub fn with_std_backends(
    builder: plugd_core::HostBuilder,
) -> Result<plugd_core::HostBuilder, SetupError> {
    let http = plugd_std::ReqwestClient::new()?;
    Ok(builder
        .http(std::sync::Arc::new(http))
        .commands(std::sync::Arc::new(plugd_std::ProcessRunner))
        .watcher(std::sync::Arc::new(plugd_std::NotifyWatcher))
        .admission(std::sync::Arc::new(plugd_pkg::PackageAdmission)))
}

/// [`check_config`] with the package checks `plugd serve` makes ([`plugd_pkg::PackageAdmission`]):
/// what `plugd check` reports. Feature `std`.
///
/// ```
/// let report = plugd::check_config_with_packages(&plugd::manifest::HostConfig::default()).unwrap();
/// assert!(report.start_order.is_empty());
/// ```
#[cfg(feature = "std")]
pub fn check_config_with_packages(
    config: &plugd_manifest::HostConfig,
) -> Result<CheckReport, plugd_core::ConfigProblems> {
    check_config(config, &plugd_pkg::PackageAdmission)
}
