//! `bench-accesslog`: after the response is written, one JSON line per request to the host log
//! (level info).
use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use plugd_guest::prelude::*;
use plugd_guest::{log, register, serde_json};
use serde::Serialize;

#[derive(Default)]
struct AccessLog;

#[derive(Serialize)]
struct Line<'a> {
    ts: u64,
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    status: u16,
    request_id: Cow<'a, str>,
    client: Cow<'a, str>,
}

impl Plugin for AccessLog {
    fn init(&mut self, _config: &Config) -> Result<()> {
        let reads = [
            Field::Method,
            Field::Path,
            Field::Status,
            Field::local("request_id"),
            Field::local("client"),
        ];
        register::hook_reading(HookType::PostResponse, 100, &reads)?;
        Ok(())
    }

    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        let line = Line {
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            method: exchange.method(),
            path: exchange.path(),
            status: exchange.status().unwrap_or(0),
            request_id: exchange.local("request_id").unwrap_or_default(),
            client: exchange.local("client").unwrap_or_default(),
        };
        log::info(serde_json::to_string(&line)?);
        Ok(Action::Continue)
    }
}

plugd_guest::export!(AccessLog, name = "bench-accesslog");
