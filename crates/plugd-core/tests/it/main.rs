//! The manager with native plugins: lifecycle order, hook semantics, failure handling.

mod authority;
mod capabilities;
mod cpu;
mod events;
mod exposition;
mod health;
mod hooks;
mod lifecycle;
mod log_level;
mod manage;
mod messages;
mod mounts;
mod native;
mod policy;
mod readiness;
mod reload;
mod reload_paths;
mod resolve_running;
mod resolver;
mod roles;
mod runtime_middleware;
mod status;
mod supervision;
mod thresholds;

mod support;

pub use support::*;
