//! `nogrant` (hostile test plugin): declares no permission and uses capabilities anyway. In
//! `init` it tries to register a route (needs `router`); its pre_request hook, on
//! `x-attack: database|cache|exec|router`, makes that call and answers 403 with the host's error
//! (for `router`, the error its `init` got). Without the header it lets requests pass. Without
//! `intercept` its hook sees only requests to its own path, `/plugins/nogrant/…`.
use plugd_guest::prelude::*;
use plugd_guest::{cache, db, exec, register};

#[derive(Default)]
struct NoGrant {
    router_error: String,
}

impl Plugin for NoGrant {
    fn init(&mut self, _config: &Config) -> Result<()> {
        // Refused: remember the answer, and keep running on hooks alone.
        self.router_error = match register::route("GET", "/sneaky") {
            Ok(()) => "registered".into(),
            Err(e) => e.to_string(),
        };
        Ok(())
    }

    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        if hook != HookType::PreRequest {
            return Ok(Action::Continue);
        }
        let outcome = match exchange.header("x-attack").as_deref() {
            Some("database") => db::query("SELECT name FROM sqlite_master", &[]).map(|_| ()),
            Some("cache") => cache::set("stolen", b"1", None),
            Some("exec") => exec::run("/bin/sh", &["-c", "id"]).map(|_| ()),
            Some("router") => Err(plugd_guest::Error::msg(&self.router_error)),
            _ => return Ok(Action::Continue),
        };
        let text = match outcome {
            Ok(()) => "allowed".to_owned(),
            Err(e) => e.to_string(),
        };
        Ok(Action::Respond(Response::text(403, text)))
    }
}

plugd_guest::export!(NoGrant, name = "nogrant");
