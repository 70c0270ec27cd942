//! The errors of the wasm runtime.

use std::path::PathBuf;

/// Why the runtime could not be made, or a component could not become a plugin. Each message
/// says what failed and where (the file, the plugin, the setting to change).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// wasmtime refused the engine configuration.
    #[error("wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The WASI or plugd imports could not be added to the linker.
    #[error("linking the host imports ({what}): {source:#}")]
    Imports {
        /// `wasi` or `plugd`.
        what: &'static str,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// The thread that advances the engines' epochs (the deadlines) could not start.
    #[error("epoch thread: {0}")]
    EpochThread(std::io::Error),
    /// The component file does not exist.
    #[error(
        "plugin file not found: {} (build the plugin first, for example with scripts/build-examples.sh)",
        .0.display()
    )]
    NotFound(PathBuf),
    /// The component file could not be read.
    #[error("cannot read component {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A plugin has a fuel limit but the runtime was made without fuel metering.
    #[error(
        "limits.fuel is set for plugin '{plugin}' but this runtime does not meter fuel: fuel metering is switched on when the host starts with limits.fuel set (globally or for any plugin); restart the host"
    )]
    FuelOff {
        /// The plugin.
        plugin: String,
    },
    /// Not a valid component, or not one this engine compiles.
    #[error("{0}")]
    Compile(String),
    /// The component does not implement the contract this host speaks.
    #[error("{0}")]
    Contract(String),
    /// The component's imports could not be satisfied.
    #[error("cannot link component: {0:#}")]
    Link(wasmtime::Error),
    /// The compile task panicked or was cancelled.
    #[error("compile task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// `PLUGD_WASM_PROFILER` names no profiler.
    #[error("PLUGD_WASM_PROFILER: {0}")]
    Profiler(#[from] UnknownProfiler),
}

/// A profiler name other than `perfmap`, `jitdump` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profiler '{0}' (expected perfmap or jitdump, or none)")]
pub struct UnknownProfiler(pub String);
