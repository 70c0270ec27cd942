//! The manager with native plugins: lifecycle order, hook semantics, failure handling.

mod authority;
mod capabilities;
mod cpu;
mod events;
mod exposition;
mod health;
mod hooks;
mod lifecycle;
mod manage;
mod policy;
mod readiness;
mod reload;
mod resolver;
mod roles;
mod status;
mod supervision;
mod thresholds;

mod support;

pub use support::*;
