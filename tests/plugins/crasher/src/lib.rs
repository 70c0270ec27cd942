//! `crasher` (hostile test plugin): GET /panic panics, GET /unreachable executes `unreachable`;
//! both trap. GET /ok answers.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Crasher;

impl Plugin for Crasher {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/panic")?;
        register::route("GET", "/unreachable")?;
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/panic" => {
                let items: Vec<u32> = Vec::new();
                // An index the optimiser cannot prove out of bounds at compile time.
                let i = exchange.path().len();
                Ok(Response::text(200, items[i].to_string()))
            }
            "/unreachable" => core::arch::wasm32::unreachable(),
            "/ok" => Ok(Response::text(200, "crasher ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Crasher, name = "crasher");
