//! Integration tests of plugd: one binary (every test binary links wasmtime).

mod support;

mod admin;
mod cli;
mod events;
mod packages;
mod roles;
mod sandbox;
mod serve;
