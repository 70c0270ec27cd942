//! The WebAssembly runtime of plugd: wasmtime components implementing `plugd:plugin@0.1.0`.
//!
//! [`WasmRuntime`] owns one wasmtime [`Engine`](wasmtime::Engine) (component model, epoch
//! interruption, async calls) and a cache of compiled components; it is the [`Loader`] the host
//! uses for plugins from disk. Each loaded plugin is a [`WasmPlugin`]: a pool of long-lived
//! instances made from one `InstancePre`. An instance that traps or times out is thrown away and
//! replaced; the host and the other plugins keep serving.
//!
//! [`Loader`]: plugd_core::Loader

mod bindings;
mod cache;
mod contract;
mod host;
mod plugin;
mod runtime;

pub use contract::{CONTRACT, GUEST_INTERFACE};
pub use plugin::WasmPlugin;
pub use runtime::{PluginOptions, RuntimeOptions, WasmRuntime};
