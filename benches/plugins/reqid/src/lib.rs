//! `bench-reqid`: keeps the client's `x-request-id` or makes one (`<instance prefix>-<counter>`),
//! sets it on the request and in the request's locals for later hooks.
use std::hash::BuildHasher;

use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct ReqId {
    prefix: u32,
    counter: u64,
}

impl Plugin for ReqId {
    fn init(&mut self, _config: &Config) -> Result<()> {
        // RandomState is seeded from WASI's random source: instances get distinct prefixes.
        self.prefix = std::collections::hash_map::RandomState::new().hash_one(0u8) as u32;
        // The hook is declared in plugin.yaml; registering it here adds what it reads.
        register::hook_reading(HookType::PreRequest, 500, &[Field::header("x-request-id")])?;
        Ok(())
    }

    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        let id = match exchange.header("x-request-id") {
            Some(id) => id,
            None => {
                self.counter += 1;
                let id = format!("{:08x}-{:08x}", self.prefix, self.counter);
                exchange.set_header("x-request-id", &id)?;
                id.into()
            }
        };
        exchange.set_local("request_id", &id);
        Ok(Action::Continue)
    }
}

plugd_guest::export!(ReqId, name = "bench-reqid");
