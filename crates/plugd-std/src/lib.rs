//! The standard backends of plugd: outbound HTTP with reqwest ([`ReqwestClient`]), process exec
//! ([`ProcessRunner`]).
//!
//! `plugd-core` defines the ports and keeps the policy around them (allowlists, caps, deadlines,
//! auditing); this crate moves the bytes. The `plugd` façade wires these backends by default.

mod exec;
mod http;

pub use exec::ProcessRunner;
pub use http::{ClientError, ReqwestClient};
