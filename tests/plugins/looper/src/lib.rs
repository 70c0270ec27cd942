//! `looper` (hostile test plugin): its route GET /spin loops forever. The host's per-call
//! deadline must stop it; GET /ok answers. (`hanger` does the same in a hook.)
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Looper;

impl Plugin for Looper {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/spin")?;
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, _exchange: &Exchange) -> Result<Response> {
        match route {
            "/spin" => {
                let mut n: u64 = 0;
                loop {
                    // black_box: the optimiser may not prove the loop useless and remove it.
                    n = core::hint::black_box(n.wrapping_add(1));
                }
            }
            "/ok" => Ok(Response::text(200, "looper ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Looper, name = "looper");
