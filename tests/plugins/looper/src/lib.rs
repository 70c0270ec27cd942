//! `looper` (hostile test plugin): spins forever, in its pre_request hook (on `x-loop: 1`) and in
//! its route GET /spin. The host's per-call deadline must stop both; GET /ok answers.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Looper;

/// Never returns. `black_box` keeps the optimiser from proving the loop useless.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}

impl Plugin for Looper {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/spin")?;
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        if hook == HookType::PreRequest && exchange.header("x-loop").as_deref() == Some("1") {
            spin();
        }
        Ok(Action::Continue)
    }

    fn handle_request(&mut self, route: &str, _exchange: &Exchange) -> Result<Response> {
        match route {
            "/spin" => spin(),
            "/ok" => Ok(Response::text(200, "looper ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Looper, name = "looper");
