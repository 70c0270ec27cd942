//! `bench-ratelimit`: a token bucket per client (`rl:<client>` in the host cache: tokens as f64,
//! last refill in ms since the epoch as u64, both little-endian). 429 when the bucket is empty.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugd_guest::prelude::*;
use plugd_guest::{cache, register};

#[derive(Default)]
struct RateLimit {
    rate: f64,
    burst: f64,
}

impl Plugin for RateLimit {
    fn init(&mut self, config: &Config) -> Result<()> {
        self.rate = config.get_f64("rate").unwrap_or(1e9);
        self.burst = config.get_f64("burst").unwrap_or(1e9);
        register::hook_reading(HookType::PreRequest, 300, &[Field::local("client")])?;
        Ok(())
    }

    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        let client = exchange.local("client");
        let key = format!("rl:{}", client.as_deref().unwrap_or("anonymous"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (tokens, last) = match cache::get(&key)? {
            Some(v) if v.len() == 16 => (
                f64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(v[8..].try_into().expect("8 bytes")),
            ),
            _ => (self.burst, now),
        };
        let elapsed = now.saturating_sub(last) as f64 / 1000.0;
        let tokens = (tokens + elapsed * self.rate).min(self.burst);
        if tokens < 1.0 {
            return Ok(Action::Respond(
                Response::bytes(429, "application/json", r#"{"error":"rate limited"}"#)
                    .with_header("retry-after", "1"),
            ));
        }
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&(tokens - 1.0).to_le_bytes());
        value[8..].copy_from_slice(&now.to_le_bytes());
        cache::set(&key, &value, Some(Duration::from_secs(60)))?;
        Ok(Action::Continue)
    }
}

plugd_guest::export!(RateLimit, name = "bench-ratelimit");
