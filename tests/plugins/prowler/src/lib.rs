//! `prowler` (hostile test plugin): GET /read?path=P reads the file P with `std::fs` (WASI) and
//! answers 200 with its text, or 403 with the error. With the `filesystem` grant the host
//! preopens the plugin's own `files/` folder at `/data`; nothing else may be reachable.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Prowler;

impl Plugin for Prowler {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/read")?;
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/read" => {
                let path = exchange.query_param("path").unwrap_or_default();
                match std::fs::read_to_string(&*path) {
                    Ok(text) => Ok(Response::text(200, text)),
                    Err(e) => Ok(Response::text(403, format!("cannot read {path}: {e}"))),
                }
            }
            "/ok" => Ok(Response::text(200, "prowler ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Prowler, name = "prowler");
