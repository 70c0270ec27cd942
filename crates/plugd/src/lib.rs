//! plugd: a plugin host for Rust backends.
//!
//! WebAssembly plugins run in a wasmtime sandbox with only the permissions their operator
//! granted; native Rust plugins are compiled in. Both share one lifecycle, one dispatch path and
//! one status model. This crate is the façade: it re-exports the manager ([`Host`], [`Plugin`]),
//! the manifest and config types, the wasm runtime and the HTTP server, and wires them together.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = plugd::manifest::HostConfig::from_path("examples/plugd.yaml".as_ref())?;
//! let host = plugd::host_from_config(config)?;
//! host.start().await?;
//! # Ok(()) }
//! ```

pub use plugd_core::*;
pub use plugd_manifest as manifest;
pub use plugd_server as server;
pub use plugd_sqlite as sqlite;
pub use plugd_wasm as wasm;

use plugd_manifest::HostConfig;

/// A host for `config`, with the wasm runtime as the loader of plugins from disk: its pooling
/// allocator sized by `plugins.pool`, fuel metering when `limits.fuel` is set, its compile
/// cache under `<data_dir>/cache/components`, and the native profiler `PLUGD_WASM_PROFILER`
/// names (`perfmap`, `jitdump`), if any.
pub fn host_from_config(config: HostConfig) -> anyhow::Result<Host> {
    let mut options = plugd_wasm::RuntimeOptions::from_config(&config);
    options.profiler = plugd_wasm::Profiler::from_env().map_err(anyhow::Error::msg)?;
    if options.profiler != plugd_wasm::Profiler::None {
        tracing::info!(profiler = ?options.profiler, "guest code is described to native profilers");
    }
    let runtime = plugd_wasm::WasmRuntime::new(options).map_err(anyhow::Error::msg)?;
    let builder = with_embedded_backends(Host::builder(), &config)?;
    Ok(builder.config(config).loader(runtime).build()?)
}

/// `builder` with the embedded defaults' backends for `config`: plugins' key/value storage in a
/// SQLite file per plugin and the status tables in `host.db`, under `data_dir`
/// ([`plugd_sqlite`]).
pub fn with_embedded_backends(
    builder: plugd_core::HostBuilder,
    config: &HostConfig,
) -> anyhow::Result<plugd_core::HostBuilder> {
    let sqlite = plugd_sqlite::Backends::open(&config.data_dir)?;
    Ok(builder.kv(sqlite.kv).status_sink(sqlite.status))
}
