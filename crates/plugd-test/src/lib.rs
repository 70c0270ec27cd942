//! A test harness for plugd plugin authors.
//!
//! Load a plugin folder (a manifest and its WebAssembly component, in any language) or a native
//! plugin into an in-process [`plugd_core::Host`] with the config and grants of your choice —
//! no server, no ports — then send it requests through the real dispatcher, call its hooks,
//! services and commands, publish events to it, and assert on responses, storage, the events
//! it published, what it logged and its metrics.
//!
//! ```no_run
//! use plugd_test::{TestHost, TestPlugin, TestRequest};
//! use plugd_manifest::Permission;
//! use serde_json::json;
//!
//! # async fn t() -> Result<(), plugd_test::Error> {
//! let t = TestHost::builder()
//!     .plugin(TestPlugin::new("examples/plugins/hello")
//!         .config(json!({ "greeting": "Hi" }))
//!         .grants([Permission::Router]))
//!     .start()
//!     .await?;
//! let res = t.request(TestRequest::get("/plugins/hello/greet?name=Ada")).await;
//! res.assert_status(200);
//! assert_eq!(res.json()["message"], "Hi, Ada!");
//! assert_eq!(t.stored("hello", "greetings").await.as_deref(), Some("1"));
//! assert!(t.logs("hello").iter().any(|l| l.message == "hello ready"));
//! t.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Plugins in any language can also be tested without Rust: a `tests.yaml` beside the manifest
//! (see [`suite`]) is run by `plugd test <dir>`.

#![warn(missing_docs)]

mod host;
mod logs;
pub mod metrics;
mod request;
pub mod suite;

pub use host::{DEFAULT_WAIT, HookOutcome, TAP, TestHost, TestHostBuilder, TestPlugin};
pub use logs::LogLine;
pub use plugd_core::{Action, Event, HookType, PluginError};
pub use request::{TestRequest, TestResponse};
pub use suite::{Suite, SuiteOptions, SuiteReport, run_suite};

/// What can go wrong in the harness (as opposed to an assertion failing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A plugin could not be loaded, initialized or started.
    #[error("load failed: {0}")]
    Load(String),
    /// A call into the host (event, service, command) was refused or failed.
    #[error("{0}")]
    Call(String),
    /// A condition waited for did not come true.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A `tests.yaml` could not be read.
    #[error("invalid test suite: {0}")]
    Suite(String),
}
