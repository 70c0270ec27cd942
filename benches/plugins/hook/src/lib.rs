//! `bench-hook`: the call-overhead benchmark's hook. Reads one request header and continues.
use plugd_guest::prelude::*;

#[derive(Default)]
struct Hook {
    seen: u64,
}

impl Plugin for Hook {
    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        if exchange.header("x-api-key").is_some_and(|v| !v.is_empty()) {
            self.seen += 1;
        }
        Ok(Action::Continue)
    }
}

plugd_guest::export!(Hook, name = "bench-hook");
