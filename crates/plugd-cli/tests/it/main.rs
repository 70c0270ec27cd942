//! Integration tests of plugd: one binary (every test binary links wasmtime).

mod support;

mod admin;
mod browser;
mod capabilities;
mod cli;
mod contracts;
mod crash;
mod dashboard;
mod events;
mod exhaustion;
mod failure;
mod fleet_faults;
mod hostile_plugins;
mod idle_memory;
mod operations;
mod packages;
mod ratelimit;
mod reload;
mod roles;
mod sandbox;
mod serve;
mod server_abuse;
mod standard;
mod templates;
mod trust;
mod wasi_std;
