//! `bench-hook`: the call-overhead benchmark's hook. Reads one request header and continues.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Hook {
    seen: u64,
}

impl Plugin for Hook {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::hook_reading(HookType::PreRequest, 100, &[Field::header("x-api-key")])?;
        Ok(())
    }

    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        if exchange.header("x-api-key").is_some_and(|v| !v.is_empty()) {
            self.seen += 1;
        }
        Ok(Action::Continue)
    }
}

plugd_guest::export!(Hook, name = "bench-hook");
