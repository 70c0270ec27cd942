//! `reloader`: a plugin for the hot-reload tests.
//!
//! - `GET /version` → `{"label": <config label>, "served": <storage counter>}`; the counter lives
//!   in storage, so it carries over a reload while in-memory state does not.
//! - `GET /slow?ms=N` sleeps N ms before answering (a request in flight during a reload); it
//!   counts the slow requests that entered the guest in the storage key `slow_entered` before
//!   it sleeps, so that a test knows when one is in flight.
//! - `mode`: `fail_init` or `fail_start` refuse to come up; `trap` traps on every request;
//!   `refuse` answers every request with an error (what a client can make a correct plugin do).
use std::time::Duration;

use plugd_guest::prelude::*;
use plugd_guest::{json, register, storage};

#[derive(Default)]
struct Reloader {
    label: String,
    mode: String,
}

impl Plugin for Reloader {
    fn init(&mut self, config: &Config) -> Result<()> {
        self.label = config.get_str_or("label", "v1").to_owned();
        self.mode = config.get_str_or("mode", "ok").to_owned();
        if self.mode == "fail_init" {
            bail!("{} refuses to initialize (mode fail_init)", self.label);
        }
        register::route("GET", "/version")?;
        register::route("GET", "/slow")?;
        Ok(())
    }

    fn on_config_change(&mut self, config: &Config) -> Result<()> {
        let label = config.get_str_or("label", "v1");
        if label.trim().is_empty() {
            bail!("label must not be empty");
        }
        self.label = label.to_owned();
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        if self.mode == "fail_start" {
            bail!("{} refuses to start (mode fail_start)", self.label);
        }
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        if self.mode == "trap" {
            panic!("{} traps on every request (mode trap)", self.label);
        }
        if self.mode == "refuse" {
            bail!("{} refuses this request (mode refuse)", self.label);
        }
        let served = storage::get_json::<u64>("served")?.unwrap_or(0) + 1;
        storage::set_json("served", &served)?;
        match route {
            "/version" => Ok(Response::json(
                200,
                &json!({ "label": self.label, "served": served }),
            )),
            "/slow" => {
                let ms = exchange
                    .query_param("ms")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(100);
                let entered = storage::get_json::<u64>("slow_entered")?.unwrap_or(0) + 1;
                storage::set_json("slow_entered", &entered)?;
                std::thread::sleep(Duration::from_millis(ms));
                Ok(Response::json(200, &json!({ "label": self.label, "slept_ms": ms })))
            }
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Reloader, name = "reloader");
