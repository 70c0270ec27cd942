//! `ratelimit`: at most `limit` requests per client in each fixed `window`. The client is the
//! value of the `header` request header (default `x-api-key`), or `anonymous` without it.
//!
//! - pre_request counts the request in the shared cache (one counter per client and window,
//!   expiring with the window) and answers 429 with `Retry-After` (seconds to the next window)
//!   and a JSON error once the client is over the limit.
//! - pre_response sets `x-ratelimit-limit` and `x-ratelimit-remaining` on the answer.
//!
//! The counters are read and written in two cache calls, so concurrent requests of one client
//! can each see the same count: under load the limit is approximate (a few requests over), never
//! stricter than configured.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugd_guest::prelude::*;
use plugd_guest::{cache, json, log};

/// Client keys longer than this are hashed (the cache takes keys up to 1 KiB).
const MAX_CLIENT_BYTES: usize = 128;

#[derive(Default)]
struct RateLimit {
    limit: u64,
    window_secs: u64,
    header: String,
}

impl RateLimit {
    fn configure(&mut self, config: &Config) -> Result<()> {
        let limit = config.get_i64("limit").unwrap_or(60);
        if limit < 1 {
            bail!("config 'limit': must be at least 1, got {limit}");
        }
        let window = config.get_str_or("window", "1m");
        let window = parse_duration(window).ok_or_else(|| {
            Error::msg(format!(
                "config 'window': '{window}' is not a duration this plugin reads; write a number and a unit (ms, s, m, h, d), e.g. \"30s\" or \"1m\""
            ))
        })?;
        if window < Duration::from_secs(1) {
            bail!(
                "config 'window': must be at least 1s, got {}ms",
                window.as_millis()
            );
        }
        self.limit = limit as u64;
        self.window_secs = window.as_secs();
        self.header = config
            .get_str_or("header", "x-api-key")
            .to_ascii_lowercase();
        Ok(())
    }

    /// The client a request counts for.
    fn client(&self, exchange: &Exchange) -> String {
        let key = exchange
            .header(&self.header)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "anonymous".to_owned());
        if key.len() > MAX_CLIENT_BYTES {
            format!("fnv:{:016x}", fnv1a(key.as_bytes()))
        } else {
            key
        }
    }

    /// The current window's number and the seconds left in it.
    fn window(&self) -> (u64, u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let index = now / self.window_secs;
        let left = (index + 1) * self.window_secs - now;
        (index, left)
    }

    fn counter_key(client: &str, window: u64) -> String {
        format!("{window}:{client}")
    }

    fn count(key: &str) -> Result<u64> {
        Ok(cache::get(key)?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    fn pre_request(&self, exchange: &Exchange) -> Result<Action> {
        let client = self.client(exchange);
        let (window, left) = self.window();
        let key = Self::counter_key(&client, window);
        let count = Self::count(&key)? + 1;
        if count > self.limit {
            log::with_fields(
                log::Level::Debug,
                "rate limit exceeded",
                &[("path", &exchange.path())],
            );
            let body = json!({
                "error": "too_many_requests",
                "message": format!(
                    "rate limit of {} requests per {}s exceeded; retry in {left}s",
                    self.limit, self.window_secs
                ),
            });
            let response = Response::json(429, &body)
                .with_header("retry-after", left.to_string())
                .with_header("x-ratelimit-limit", self.limit.to_string())
                .with_header("x-ratelimit-remaining", "0");
            return Ok(Action::Respond(response));
        }
        // The counter outlives its window by a second, so a late read still finds it.
        cache::set(
            &key,
            count.to_string().as_bytes(),
            Some(Duration::from_secs(left + 1)),
        )?;
        Ok(Action::Continue)
    }

    fn pre_response(&self, exchange: &Exchange) -> Result<Action> {
        let (window, _) = self.window();
        let used = Self::count(&Self::counter_key(&self.client(exchange), window))?;
        let remaining = self.limit.saturating_sub(used);
        exchange.set_response_header("x-ratelimit-limit", &self.limit.to_string())?;
        exchange.set_response_header("x-ratelimit-remaining", &remaining.to_string())?;
        Ok(Action::Continue)
    }
}

impl Plugin for RateLimit {
    fn init(&mut self, config: &Config) -> Result<()> {
        self.configure(config)
    }

    fn on_config_change(&mut self, config: &Config) -> Result<()> {
        self.configure(config)
    }

    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        match hook {
            HookType::PreRequest => self.pre_request(exchange),
            HookType::PreResponse => self.pre_response(exchange),
            _ => Ok(Action::Continue),
        }
    }
}

/// A duration as the host's config check accepts the common ones: numbers with a unit, several
/// of them separated by spaces (`"1m 30s"`). `None` for anything else.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut parts = 0;
    for part in text.split_whitespace() {
        let digits = part.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = part.split_at(digits);
        let n: u64 = number.parse().ok()?;
        let one = match unit {
            "ms" | "msec" => Duration::from_millis(1),
            "s" | "sec" | "secs" | "second" | "seconds" => Duration::from_secs(1),
            "m" | "min" | "mins" | "minute" | "minutes" => Duration::from_secs(60),
            "h" | "hr" | "hrs" | "hour" | "hours" => Duration::from_secs(3600),
            "d" | "day" | "days" => Duration::from_secs(86_400),
            _ => return None,
        };
        total = total.checked_add(one.checked_mul(u32::try_from(n).ok()?)?)?;
        parts += 1;
    }
    (parts > 0).then_some(total)
}

/// FNV-1a, 64 bits: a short stable name for a long client key.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

plugd_guest::export!(RateLimit, name = "ratelimit");
