//! `bigbody` (hostile test plugin): tries to make the host carry bodies larger than its response
//! cap. GET /huge?mib=N answers an N MiB body (default 16); its pre_request hook answers such a
//! body early on `x-huge: 1`; its pre_response hook replaces the response body with one on
//! `x-huge-set: 1` and, refused, tells what the host answered in `x-bigbody-error`.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct BigBody;

fn huge(exchange: &Exchange) -> Vec<u8> {
    let mib = exchange
        .query_param("mib")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(16);
    vec![b'x'; mib << 20]
}

impl Plugin for BigBody {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/huge")?;
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        match hook {
            HookType::PreRequest if exchange.header("x-huge").as_deref() == Some("1") => Ok(
                Action::Respond(Response::bytes(200, "text/plain", huge(exchange))),
            ),
            HookType::PreResponse if exchange.header("x-huge-set").as_deref() == Some("1") => {
                // Applied at once, to report the host's answer.
                let set = exchange.set_response_body(huge(exchange));
                if let Err(e) = set.and_then(|()| exchange.apply_edits()) {
                    // At once too: the host fails this call for the body it refused, so edits
                    // returned with its result would not be applied.
                    let _ = exchange
                        .set_response_header("x-bigbody-error", &e.to_string())
                        .and_then(|()| exchange.apply_edits());
                }
                Ok(Action::Continue)
            }
            _ => Ok(Action::Continue),
        }
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/huge" => Ok(Response::bytes(200, "text/plain", huge(exchange))),
            "/ok" => Ok(Response::text(200, "bigbody ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(BigBody, name = "bigbody");
