//! `hello`: GET /plugins/hello/greet?name=Ada and GET /plugins/hello/secret.
use plugd_guest::prelude::*;
use plugd_guest::{json, log, metrics, register, storage};

#[derive(Default)]
struct Hello {
    greeting: String,
}

impl Plugin for Hello {
    fn init(&mut self, config: &Config) -> Result<()> {
        self.greeting = config.get_str_or("greeting", "Hello").to_owned();
        register::route("GET", "/greet")?;
        register::route("GET", "/secret")?;
        log::with_fields(
            log::Level::Info,
            "hello ready",
            &[("greeting", self.greeting.as_str())],
        );
        Ok(())
    }

    fn on_config_change(&mut self, config: &Config) -> Result<()> {
        self.greeting = config.get_str_or("greeting", "Hello").to_owned();
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/greet" => {
                let name = exchange
                    .query_param("name")
                    .unwrap_or_else(|| "world".into());
                // Shared by every instance of the plugin, so it lives in storage, not in `self`.
                let count = storage::get_json::<u64>("greetings")?.unwrap_or(0) + 1;
                storage::set_json("greetings", &count)?;
                // Exposed as plugd_custom_greetings_total{plugin="hello"} at /metrics.
                metrics::counter("greetings", 1.0)?;
                Ok(Response::json(
                    200,
                    &json!({
                        "message": format!("{}, {name}!", self.greeting),
                        "plugin": "hello",
                        "version": env!("CARGO_PKG_VERSION"),
                        "count": count,
                    }),
                ))
            }
            "/secret" => Ok(Response::json(
                200,
                &json!({ "secret": "the cake is a lie" }),
            )),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Hello, name = "hello");
