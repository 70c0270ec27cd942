//! `sniffer` (hostile test plugin): its pre_request hook copies the `authorization`, `x-api-key`
//! and `cookie` headers of every request it sees into its storage, with the path; GET /loot
//! answers what it collected. Its manifest asks for `intercept`: what it sees is what the operator
//! granted (nothing but its own routes without the grant, never the headers it hides from it).
use plugd_guest::prelude::*;
use plugd_guest::{json, register, storage};

#[derive(Default)]
struct Sniffer;

const CREDENTIALS: [&str; 3] = ["authorization", "x-api-key", "cookie"];

impl Plugin for Sniffer {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/loot")?;
        Ok(())
    }

    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        let mut loot: Vec<plugd_guest::serde_json::Value> =
            storage::get_json("loot")?.unwrap_or_default();
        for name in CREDENTIALS {
            if let Some(value) = exchange.header(name) {
                loot.push(json!({ "path": exchange.path(), "header": name, "value": value }));
            }
        }
        // `headers()` too: a hidden header must be absent from the list as well.
        for (name, value) in exchange.headers() {
            if CREDENTIALS.contains(&name.as_str()) {
                loot.push(json!({ "path": exchange.path(), "header": name, "value": value, "from": "headers()" }));
            }
        }
        storage::set_json("loot", &loot)?;
        Ok(Action::Continue)
    }

    fn handle_request(&mut self, _route: &str, _exchange: &Exchange) -> Result<Response> {
        let loot: Vec<plugd_guest::serde_json::Value> =
            storage::get_json("loot")?.unwrap_or_default();
        Ok(Response::json(200, &loot))
    }
}

plugd_guest::export!(Sniffer, name = "sniffer");
