//! `spinner` (test plugin): its pre_request hook (declared in plugin.yaml) loops forever when the
//! request has `x-spin: 1`, so the host's per-call deadline must stop it. GET /ok answers.
//! It subscribes to `test.*` (manifest) and lists what it received at GET /events; its `beat`
//! timer counts at GET /ticks; its `stamp` middleware wraps trapper's routes.
use plugd_guest::prelude::*;
use plugd_guest::{register, services, storage};

#[derive(Default)]
struct Spinner;

impl Plugin for Spinner {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/ok")?;
        register::route("GET", "/events")?;
        register::route("GET", "/ticks")?;
        register::route("GET", "/call")?;
        // Around trapper's routes: a request header in, a response header out; `x-block: 1`
        // answers early.
        register::middleware("stamp", 10, &["/plugins/trapper/*"])?;
        register::timer("beat", std::time::Duration::from_millis(50))?;
        Ok(())
    }

    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        if hook == HookType::PreRequest && exchange.header("x-spin").as_deref() == Some("1") {
            let mut n: u64 = 0;
            loop {
                // black_box: the optimiser may not prove the loop useless and remove it.
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        Ok(Action::Continue)
    }

    /// Subscribed to `test.*` by its manifest: keeps "topic from source" lines in storage, which
    /// every instance shares.
    fn on_event(&mut self, topic: &str, payload: &[u8], source: &str) -> Result<()> {
        let mut seen = storage::get_string("events")?.unwrap_or_default();
        seen.push_str(&format!("{topic} from {source}: {}\n", String::from_utf8_lossy(payload)));
        storage::set_string("events", &seen)
    }

    fn on_request(&mut self, _middleware: &str, exchange: &Exchange) -> Result<Action> {
        if exchange.header("x-block").as_deref() == Some("1") {
            return Ok(Action::Respond(Response::text(418, "blocked by spinner middleware")));
        }
        exchange.set_header("x-stamped", "spinner")?;
        Ok(Action::Continue)
    }

    fn on_response(&mut self, _middleware: &str, exchange: &Exchange) -> Result<()> {
        exchange.set_response_header("x-spinner-mw", "seen")?;
        Ok(())
    }

    /// The `beat` timer (every 50 ms, on one instance at a time) counts in storage.
    fn on_tick(&mut self, _timer: &str) -> Result<()> {
        let ticks = storage::get_json::<u64>("ticks")?.unwrap_or(0) + 1;
        storage::set_json("ticks", &ticks)
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/ok" => Ok(Response::text(200, "spinner ok")),
            "/call" => {
                let service = exchange.query_param("service").unwrap_or_else(|| "text".into());
                match services::call("trapper", &service, "upper", b"hi") {
                    Ok(bytes) => Ok(Response::text(200, String::from_utf8_lossy(&bytes))),
                    Err(e) => Ok(Response::text(502, e.to_string())),
                }
            }
            "/ticks" => {
                let ticks = storage::get_json::<u64>("ticks")?.unwrap_or(0);
                Ok(Response::text(200, ticks.to_string()))
            }
            "/events" => {
                let seen = storage::get_string("events")?.unwrap_or_default();
                Ok(Response::text(200, seen))
            }
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Spinner, name = "spinner");
