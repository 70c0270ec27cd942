//! The WebAssembly runtime of plugd: wasmtime components implementing `plugd:plugin@0.2.0`, and
//! `plugd:plugin@0.1.0` through a shim (`v0_1`: every 0.1 import converts to its 0.2 namesake).
//!
//! [`WasmRuntime`] owns two wasmtime [`Engine`](wasmtime::Engine)s (component model, epoch
//! interruption, async calls): one allocating instances from the pooling allocator, one on demand
//! for plugins that do not fit a pool slot; and a cache of compiled components; it is the [`Loader`] the host
//! uses for plugins from disk. Each loaded plugin is a [`WasmPlugin`]: a pool of long-lived
//! instances made from one `InstancePre`. An instance that traps or times out is thrown away and
//! replaced; the host and the other plugins keep serving.
//!
//! [`Loader`]: plugd_core::Loader

mod bindings;
mod cache;
mod code;
mod contract;
mod disk;
mod edits;
mod error;
mod host;
mod limits;
mod output;
mod plugin;
mod proxy;
mod reads;
mod runtime;
mod v0_1;
mod wasi_http;
mod wasi_std;

pub use contract::{CONTRACT, GUEST_INTERFACE, SUPPORTED_CONTRACTS};
pub use disk::FileLimits;
pub use error::{UnknownProfiler, WasmError};
pub use limits::Allocator;
pub use plugin::WasmPlugin;
pub use proxy::{INCOMING_HANDLER, METHODS, ProxyPlugin};
pub use runtime::{PluginOptions, PoolOptions, Profiler, RuntimeOptions, WasmRuntime};
pub use wasi_http::{MAX_OUTGOING_PER_INSTANCE, MAX_REQUEST_BODY_BYTES};
