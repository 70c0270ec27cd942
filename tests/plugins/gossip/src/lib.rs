//! `gossip` (hostile test plugin): GET /publish?topic=T publishes T; it declares only
//! `gossip.ok`. Answers 200 "published", or 403 with the host's error.
use plugd_guest::prelude::*;
use plugd_guest::{events, register};

#[derive(Default)]
struct Gossip;

impl Plugin for Gossip {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/publish")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/publish" => {
                let topic = exchange.query_param("topic").unwrap_or_default();
                match events::publish(&topic, b"psst") {
                    Ok(()) => Ok(Response::text(200, "published")),
                    Err(e) => Ok(Response::text(403, e.to_string())),
                }
            }
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Gossip, name = "gossip");
