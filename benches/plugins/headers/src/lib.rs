//! `bench-headers`: `x-request-id` (from the request's locals) and `x-powered-by` on every response.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Headers;

impl Plugin for Headers {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::hook_reading(HookType::PreResponse, 100, &[Field::local("request_id")])?;
        Ok(())
    }

    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        if let Some(id) = exchange.local("request_id") {
            exchange.set_response_header("x-request-id", &id)?;
        }
        exchange.set_response_header("x-powered-by", "plugd-bench")?;
        Ok(Action::Continue)
    }
}

plugd_guest::export!(Headers, name = "bench-headers");
