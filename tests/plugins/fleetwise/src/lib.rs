//! `fleetwise` (test plugin): what a fleet of instances shares. `GET /kv?key=K&value=V` stores V
//! under K in the plugin's storage (without `value`: answers the value, 404 when absent);
//! `GET /cache?key=K[&value=V]` the same in its cache; `GET /publish?topic=T&payload=P`
//! publishes P on `fleet.note` (every instance's subscriber gets it) or `fleet.job` (one
//! instance of the fleet gets it); `GET /seen` answers, as JSON, the events this instance
//! received (`["fleet.note:P", …]`), kept in the instance's memory.
use plugd_guest::prelude::*;
use plugd_guest::{cache, events, register, storage};

#[derive(Default)]
struct Fleetwise {
    seen: Vec<String>,
}

fn param(exchange: &Exchange, name: &str) -> Option<String> {
    exchange.query_param(name).map(|v| v.into_owned())
}

impl Plugin for Fleetwise {
    fn init(&mut self, _config: &Config) -> Result<()> {
        for route in ["/kv", "/cache", "/publish", "/seen"] {
            register::route("GET", route)?;
        }
        Ok(())
    }

    fn on_event(&mut self, topic: &str, payload: &[u8], _source: &str) -> Result<()> {
        self.seen
            .push(format!("{topic}:{}", String::from_utf8_lossy(payload)));
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        let key = param(exchange, "key").unwrap_or_default();
        let value = param(exchange, "value");
        match route {
            // A storage or cache error (its server away) is answered as 503 with the host's
            // message, for the fault tests to read.
            "/kv" => match value {
                Some(v) => match storage::set(&key, v.as_bytes()) {
                    Ok(()) => Ok(Response::text(200, "stored")),
                    Err(e) => Ok(Response::text(503, e.to_string())),
                },
                None => match storage::get(&key) {
                    Ok(Some(v)) => Ok(Response::text(200, String::from_utf8_lossy(&v))),
                    Ok(None) => Ok(Response::text(404, "absent")),
                    Err(e) => Ok(Response::text(503, e.to_string())),
                },
            },
            "/cache" => match value {
                Some(v) => match cache::set(&key, v.as_bytes(), None) {
                    Ok(()) => Ok(Response::text(200, "cached")),
                    Err(e) => Ok(Response::text(503, e.to_string())),
                },
                None => match cache::get(&key) {
                    Ok(Some(v)) => Ok(Response::text(200, String::from_utf8_lossy(&v))),
                    Ok(None) => Ok(Response::text(404, "absent")),
                    Err(e) => Ok(Response::text(503, e.to_string())),
                },
            },
            "/publish" => {
                let topic = param(exchange, "topic").unwrap_or_default();
                let payload = param(exchange, "payload").unwrap_or_default();
                match events::publish(&topic, payload.as_bytes()) {
                    Ok(()) => Ok(Response::text(200, "published")),
                    Err(e) => Ok(Response::text(403, e.to_string())),
                }
            }
            "/seen" => Ok(Response::json(200, &self.seen)),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Fleetwise, name = "fleetwise");
