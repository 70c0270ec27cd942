//! `trapper` (test plugin): GET /ok answers "ok", GET /trap panics (a wasm trap), GET /count
//! counts in the instance's memory, so a test sees a trapped instance replaced by a fresh one.
//! Config `fail_init` / `fail_start` make init / start fail.
use plugd_guest::prelude::*;
use plugd_guest::register;

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
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        if self.fail_start {
            bail!("start failed on purpose");
        }
        Ok(())
    }

    fn handle_request(&mut self, route: &str, _exchange: &Exchange) -> Result<Response> {
        match route {
            "/ok" => Ok(Response::text(200, "ok")),
            "/trap" => panic!("trapper: trap on purpose"),
            "/count" => {
                self.count += 1;
                Ok(Response::text(200, self.count.to_string()))
            }
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Trapper, name = "trapper");
