//! The Rust guest SDK for plugd WebAssembly plugins.
//!
//! A plugin is a type that implements [`Plugin`] (every method has a default) and is handed to
//! [`export!`]. Build it for `wasm32-wasip2`; the result is a component that implements the plugd
//! contract (`plugd:plugin/plugin@0.2.0`). Host functions are wrapped in the modules [`log`],
//! [`metrics`], [`storage`], [`config`], [`register`], [`events`], [`services`], [`db`],
//! [`cache`], [`http`] and [`exec`]; the request a hook or a route is called for is the
//! [`Exchange`].
//!
//! ```ignore
//! use plugd_guest::prelude::*;
//! use plugd_guest::{json, register};
//!
//! #[derive(Default)]
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn init(&mut self, _config: &Config) -> Result<()> {
//!         register::route("GET", "/hi")?;
//!         Ok(())
//!     }
//!
//!     fn handle_request(&mut self, _route: &str, exchange: &Exchange) -> Result<Response> {
//!         let name = exchange.query_param("name").unwrap_or_else(|| "world".into());
//!         Ok(Response::json(200, &json!({ "hello": name })))
//!     }
//! }
//!
//! plugd_guest::export!(Hello, name = "hello");
//! ```
//!
//! # Plugins on every request
//!
//! Each call into a plugin, and each call from it to the host, crosses the sandbox boundary
//! (a few thousand instructions each). A hook that runs on every request should cross it as
//! little as it can:
//!
//! - **Declare what it reads** when it registers ([`register::hook_reading`],
//!   [`register::route_reading`], [`register::middleware_reading`] with [`Field`]s): those values
//!   come with each call, and reading them through the [`Exchange`] costs no host call.
//! - **Change the exchange through its setters**: the changes are returned with the call's
//!   result, in one crossing ([`Exchange`] says where that holds).
//! - Build responses without intermediate values: `Response::json(200, &my_struct)` with
//!   `#[derive(Serialize)]` serializes straight into the body; `json!` builds a
//!   `serde_json::Value` first.
//! - Build the plugin at `opt-level = 3` (size-optimised code costs about 70 % more instructions).
//!
//! ```ignore
//! fn init(&mut self, _config: &Config) -> Result<()> {
//!     register::hook_reading(HookType::PreRequest, 400, &[Field::header("authorization")])?;
//!     Ok(())
//! }
//!
//! fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
//!     let Some(token) = exchange.header("authorization") else {   // no host call: declared
//!         return Ok(Action::Respond(Response::text(401, "no token")));
//!     };
//!     exchange.set_local("client", client_of(&token)?);            // returned with the action
//!     Ok(Action::Continue)
//! }
//! ```
//!
//! # Files
//!
//! With the `filesystem` permission the plugin's own directory (kept by the host under its data
//! directory) is at `/data`: use `std::fs` there (`std::fs::write("/data/state.json", …)`).
//! Nothing else of the host's file system is visible; `..`, other absolute paths and symlinks
//! out of `/data` fail. Without the permission there is no `/data`.
//!
//! # Instances and state
//!
//! The host runs a plugin as a pool of long-lived instances; each instance holds its own value of
//! your type, created with `Default` before the first call. `init`, `start`, `stop`, `cleanup` and
//! `on_config_change` run on every instance; a request, hook, event or service call runs on any
//! one of them. So fields of your type are per-instance caches: state that every call must see
//! (counters, sessions) belongs in [`storage`] or the [`cache`]. An instance that traps (a panic)
//! or runs past its deadline is thrown away and replaced by a fresh one (`init` + `start` again).

#![warn(missing_docs)]

mod error;
mod exchange;
mod guest;
mod host;
mod plugin_config;
mod reads;

/// The bindings `wit-bindgen` generates for the contract (world `plugin`). The SDK's wrappers
/// cover all of it; reach in here only for what they do not.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        // The SDK's own copy of the repository's wit/ (the published crate holds its files;
        // crates/plugd-wasm/tests/wit_copies.rs keeps it equal).
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "plugd_guest::bindings",
        export_macro_name: "__export_world",
        additional_derives: [PartialEq],
    });
}

pub use error::{Error, ErrorKind, Result, ResultExt};
pub use guest::Plugin;
pub use host::{cache, config, db, events, exec, http, log, metrics, register, services, storage};
pub use plugin_config::Config;

pub use exchange::{Action, Exchange};

pub use bindings::plugd::plugin::types::{
    Edit, Field, Health, HookType, HostError, Identity, Permission, PluginMetadata, Response,
};

/// `serde_json`, re-exported so that plugins need no dependency of their own for JSON
/// (`#[derive(Serialize)]` needs `serde` with its `derive` feature in the plugin's own
/// Cargo.toml).
pub use serde_json;
pub use serde_json::json;

/// The usual imports: `use plugd_guest::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Action, Config, Error, Exchange, Field, Health, HookType, Plugin, Response, Result,
        ResultExt, bail,
    };
}

/// Makes `T: Plugin` the component's implementation of the plugd contract.
///
/// Invoke it once, at the top level of the plugin crate:
///
/// ```ignore
/// plugd_guest::export!(MyPlugin);                   // metadata name = the crate's name
/// plugd_guest::export!(MyPlugin, name = "hello");   // metadata name = "hello"
/// ```
///
/// The component's `metadata()` reports the name (by default `CARGO_PKG_NAME` of the plugin
/// crate; give `name = "..."` when the manifest's name differs), `CARGO_PKG_VERSION` of the plugin
/// crate, and `plugd-guest <version>` as the SDK, for diagnostics: the manifest is what the host
/// goes by. Each instance keeps one value of `T` (created with `Default` on first use).
/// The plugin crate must depend on this crate under its own name, `plugd_guest`.
#[macro_export]
macro_rules! export {
    ($ty:ty $(,)?) => {
        $crate::export!($ty, name = ::core::env!("CARGO_PKG_NAME"));
    };
    ($ty:ty, name = $name:expr $(,)?) => {
        const _: () = {
            impl $crate::__private::PluginInfo for $ty {
                const NAME: &'static str = $name;
                const VERSION: &'static str = ::core::env!("CARGO_PKG_VERSION");
            }
            type __PlugdGuestAdapter = $crate::__private::Adapter<$ty>;
    $crate::bindings::__export_world!(__PlugdGuestAdapter with_types_in $crate::bindings);
        };
    };
}

/// Returns early with an [`Error`] built from a format string: `bail!("no user {id}")`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}

/// With the `talc` feature, talc is the component's allocator (single-threaded wasm only).
#[cfg(all(
    feature = "talc",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

#[doc(hidden)]
pub mod __private {
    pub use crate::guest::{Adapter, PluginInfo};
}
