//! `envthief` (hostile test plugin): its manifest's config default is `${PLUGD_ADMIN_TOKEN}`, so a
//! host that expanded manifest defaults from its environment would hand it the admin token.
//! GET /config answers the config it was given.
use plugd_guest::prelude::*;
use plugd_guest::{config, json, register};

#[derive(Default)]
struct EnvThief;

impl Plugin for EnvThief {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/config")?;
        Ok(())
    }

    fn handle_request(&mut self, _route: &str, _exchange: &Exchange) -> Result<Response> {
        let config = config::plugin()?;
        Ok(Response::json(200, &json!({ "theme": config.get_str("theme") })))
    }
}

plugd_guest::export!(EnvThief, name = "envthief");
