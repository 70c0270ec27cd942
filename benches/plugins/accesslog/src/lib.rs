//! `bench-accesslog`: after the response is written, one JSON line per request to the host log
//! (level info).
use std::time::{SystemTime, UNIX_EPOCH};

use plugd_guest::log;
use plugd_guest::prelude::*;

#[derive(Default)]
struct AccessLog;

impl Plugin for AccessLog {
    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let line = format!(
            r#"{{"ts":{ts},"method":"{}","path":"{}","status":{},"request_id":"{}","client":"{}"}}"#,
            exchange.method(),
            exchange.path(),
            exchange.status().unwrap_or(0),
            exchange.local("request_id").unwrap_or_default(),
            exchange.local("client").unwrap_or_default(),
        );
        log::info(line);
        Ok(Action::Continue)
    }
}

plugd_guest::export!(AccessLog, name = "bench-accesslog");
