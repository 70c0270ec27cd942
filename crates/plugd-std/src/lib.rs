//! The standard backends of plugd: outbound HTTP with reqwest ([`ReqwestClient`]), process exec
//! ([`ProcessRunner`]), file watching with notify ([`NotifyWatcher`]).
//!
//! `plugd-core` defines the ports and keeps the policy around them (allowlists, caps, deadlines,
//! auditing); this crate moves the bytes. The `plugd` façade wires these backends by default.

mod exec;
mod http;
mod watch;

pub use exec::ProcessRunner;
pub use http::{ClientError, ReqwestClient};
pub use watch::NotifyWatcher;
