//! `recurser` (hostile test plugin): GET /deep recurses without end, until the wasm stack
//! overflows. GET /ok answers.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Recurser;

/// Recursion the optimiser cannot turn into a loop: the result of the inner call is mixed with
/// the depth after the call returns, and the depth comes from the request.
#[inline(never)]
#[allow(unconditional_recursion)]
fn descend(depth: u64) -> u64 {
    let below = descend(depth.wrapping_add(1));
    below.rotate_left(7) ^ depth.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Plugin for Recurser {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/deep")?;
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/deep" => {
                let start = exchange.path().len() as u64;
                Ok(Response::text(200, descend(start).to_string()))
            }
            "/ok" => Ok(Response::text(200, "recurser ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Recurser, name = "recurser");
