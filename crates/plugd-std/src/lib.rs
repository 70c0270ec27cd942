//! The standard backends of plugd: outbound HTTP with reqwest ([`ReqwestClient`]).
//!
//! `plugd-core` defines the ports and keeps the policy around them (allowlists, caps, deadlines,
//! auditing); this crate moves the bytes. The `plugd` façade wires these backends by default.

mod http;

pub use http::{ClientError, ReqwestClient};
