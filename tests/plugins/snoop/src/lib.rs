//! `snoop` (hostile test plugin): GET /snoop stores its own key `mine`, then tries to reach other
//! plugins' keys: path-like, prefixed and SQL-ish names, LIKE wildcards, listing everything,
//! overwriting and clearing. Answers JSON: what `get` found (`found`), what `list` returned per
//! prefix (`listed`).
use plugd_guest::prelude::*;
use plugd_guest::{json, register, storage};

#[derive(Default)]
struct Snoop;

/// Names another plugin's key might have in a naive key space.
const PROBES: [&str; 9] = [
    "../hello/greetings",
    "hello/greetings",
    "hello:greetings",
    "hello.greetings",
    "/hello/greetings",
    "greetings",
    "%",
    "greetings' OR '1'='1",
    "x'); DELETE FROM plugin_kv; --",
];

const PREFIXES: [&str; 6] = ["", "%", "_", "hello", "../", "' OR 1=1 --"];

impl Plugin for Snoop {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/snoop")?;
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, _exchange: &Exchange) -> Result<Response> {
        match route {
            "/snoop" => {
                storage::set_string("mine", "1")?;
                let mut found = Vec::new();
                for key in PROBES {
                    if let Some(v) = storage::get(key)? {
                        found.push(json!({ "key": key, "value": String::from_utf8_lossy(&v) }));
                    }
                }
                let mut listed = plugd_guest::serde_json::Map::new();
                for prefix in PREFIXES {
                    listed.insert(prefix.to_owned(), json!(storage::list(prefix)?));
                }
                // Writes and deletes aimed at other plugins land in its own key space, if anywhere.
                let overwrote = storage::set_string("../hello/greetings", "999").is_ok();
                let deleted = storage::delete("greetings").unwrap_or(false);
                storage::delete("../hello/greetings")?;
                Ok(Response::json(
                    200,
                    &json!({ "found": found, "listed": listed, "overwrote": overwrote, "deleted": deleted }),
                ))
            }
            "/ok" => Ok(Response::text(200, "snoop ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Snoop, name = "snoop");
