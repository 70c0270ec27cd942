//! `hanger` (hostile test plugin): its pre_request hook, which every request passes, loops
//! forever on `x-loop: 1`. The host's per-call deadline must stop it; GET /ok answers.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Hanger;

impl Plugin for Hanger {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        if hook == HookType::PreRequest && exchange.header("x-loop").as_deref() == Some("1") {
            let mut n: u64 = 0;
            loop {
                // black_box: the optimiser may not prove the loop useless and remove it.
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        Ok(Action::Continue)
    }

    fn handle_request(&mut self, route: &str, _exchange: &Exchange) -> Result<Response> {
        match route {
            "/ok" => Ok(Response::text(200, "hanger ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Hanger, name = "hanger");
