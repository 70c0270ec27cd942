//! `trapper` (test plugin): GET /ok answers "ok", GET /trap panics (a wasm trap), GET /count
//! counts in the instance's memory, so a test sees a trapped instance replaced by a fresh one.
//! Config `fail_init` / `fail_start` make init / start fail. GET /publish publishes `test.ping`
//! (declared); GET /publish-undeclared tries `test.secret` (not declared) and answers the error.
//! GET /stash fills a zero-initialised static with a marker; GET /peek answers how many of its
//! bytes are not zero — in a fresh instance, whatever slot it got, that must be 0.
use std::sync::atomic::{AtomicU8, Ordering};

use plugd_guest::prelude::*;
use plugd_guest::{cache, events, register};

/// 64 KiB of the instance's zero-initialised data (bss), in its linear memory.
static STASH: [AtomicU8; 64 * 1024] = [const { AtomicU8::new(0) }; 64 * 1024];

#[derive(Default)]
struct Trapper {
    count: u64,
    fail_start: bool,
}

impl Plugin for Trapper {
    fn init(&mut self, config: &Config) -> Result<()> {
        if config.get_bool("fail_init").unwrap_or(false) {
            bail!("init failed on purpose");
        }
        self.fail_start = config.get_bool("fail_start").unwrap_or(false);
        register::route("GET", "/ok")?;
        register::route("GET", "/trap")?;
        register::route("GET", "/count")?;
        register::route("GET", "/publish")?;
        register::route("GET", "/cache")?;
        register::route("GET", "/publish-undeclared")?;
        register::route("GET", "/stash")?;
        register::route("GET", "/peek")?;
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        if self.fail_start {
            bail!("start failed on purpose");
        }
        Ok(())
    }

    /// The `text` service (declared under `exports`): `upper` answers the payload in upper case,
    /// signed with the caller's name.
    fn call_service(&mut self, service: &str, method: &str, payload: &[u8], caller: &str) -> Result<Vec<u8>> {
        match (service, method) {
            ("text", "upper") => {
                Ok(format!("{} (for {caller})", String::from_utf8_lossy(payload).to_uppercase()).into_bytes())
            }
            _ => bail!("unknown method {service}.{method}"),
        }
    }

    /// `plugd run trapper echo a b` prints "a b"; `count-keys` prints how many storage keys it has.
    fn run_command(&mut self, command: &str, args: &[String]) -> Result<String> {
        match command {
            "echo" => Ok(args.join(" ")),
            "count-keys" => Ok(plugd_guest::storage::list("")?.len().to_string()),
            other => bail!("unknown command: {other}"),
        }
    }

    fn handle_request(&mut self, route: &str, _exchange: &Exchange) -> Result<Response> {
        match route {
            "/ok" => Ok(Response::text(200, "ok")),
            "/trap" => panic!("trapper: trap on purpose"),
            "/count" => {
                self.count += 1;
                Ok(Response::text(200, self.count.to_string()))
            }
            "/cache" => {
                let result = cache::set("k", b"cached", Some(std::time::Duration::from_secs(60)))
                    .and_then(|()| cache::get("k"));
                match result {
                    Ok(v) => Ok(Response::text(200, String::from_utf8_lossy(&v.unwrap_or_default()))),
                    Err(e) => Ok(Response::text(403, e.to_string())),
                }
            }
            "/publish" => {
                events::publish("test.ping", b"ping")?;
                Ok(Response::text(200, "published"))
            }
            "/stash" => {
                for b in &STASH {
                    b.store(0xA5, Ordering::Relaxed);
                }
                Ok(Response::text(200, "stashed"))
            }
            "/peek" => {
                let left = STASH.iter().filter(|b| b.load(Ordering::Relaxed) != 0).count();
                Ok(Response::text(200, left.to_string()))
            }
            "/publish-undeclared" => match events::publish("test.secret", b"psst") {
                Ok(()) => Ok(Response::text(200, "published")),
                Err(e) => Ok(Response::text(403, e.to_string())),
            },
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Trapper, name = "trapper");
