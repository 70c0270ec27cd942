//! `bench-sub`: the event-bus benchmark's wasm subscriber. Subscribes to `orders.*` and counts
//! the events and their payload bytes.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Sub {
    events: u64,
    bytes: u64,
}

impl Plugin for Sub {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::subscribe("orders.*")?;
        Ok(())
    }

    fn on_event(&mut self, _topic: &str, payload: &[u8], _source: &str) -> Result<()> {
        self.events += 1;
        self.bytes += payload.len() as u64;
        Ok(())
    }
}

plugd_guest::export!(Sub, name = "bench-sub");
