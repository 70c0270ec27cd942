//! `api`: `GET /plugins/api/hello` answers `{"client":…,"message":"hello","request_id":…}`.
use plugd_guest::prelude::*;
use plugd_guest::register;
use serde::Serialize;

#[derive(Default)]
struct Api;

#[derive(Serialize)]
struct Hello<'a> {
    client: Option<&'a str>,
    message: &'a str,
    request_id: Option<&'a str>,
}

impl Plugin for Api {
    fn init(&mut self, _config: &Config) -> Result<()> {
        let reads = [Field::local("client"), Field::local("request_id")];
        register::route_reading("GET", "/hello", &reads)?;
        Ok(())
    }

    fn handle_request(&mut self, _route: &str, exchange: &Exchange) -> Result<Response> {
        let client = exchange.local("client");
        let request_id = exchange.local("request_id");
        let body = Hello {
            client: client.as_deref(),
            message: "hello",
            request_id: request_id.as_deref(),
        };
        Ok(Response::json(200, &body))
    }
}

plugd_guest::export!(Api, name = "api");
