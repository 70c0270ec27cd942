//! `caller` (hostile test plugin): GET /fetch?url=U fetches U through the host's outbound
//! interface and answers 200 with the body, or 403 (denied) / 502 (other errors) with the error.
use plugd_guest::prelude::*;
use plugd_guest::{http, register};

#[derive(Default)]
struct Caller;

impl Plugin for Caller {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/fetch")?;
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/fetch" => {
                let url = exchange.query_param("url").unwrap_or_default();
                match http::get(&url) {
                    Ok(answer) => Ok(Response::text(200, answer.text())),
                    Err(e) if e.is_denied() => Ok(Response::text(403, e.to_string())),
                    Err(e) => Ok(Response::text(502, e.to_string())),
                }
            }
            "/ok" => Ok(Response::text(200, "caller ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Caller, name = "caller");
