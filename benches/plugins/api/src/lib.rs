//! `api`: `GET /plugins/api/hello` answers `{"message":"hello","client":…,"request_id":…}`.
use plugd_guest::prelude::*;
use plugd_guest::{json, register};

#[derive(Default)]
struct Api;

impl Plugin for Api {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/hello")?;
        Ok(())
    }

    fn handle_request(&mut self, _route: &str, exchange: &Exchange) -> Result<Response> {
        let body = json!({
            "message": "hello",
            "client": exchange.local("client"),
            "request_id": exchange.local("request_id"),
        });
        Ok(Response::json(200, &body))
    }
}

plugd_guest::export!(Api, name = "api");
