//! {{name}}: a plugd plugin (made with `plugd new {{name}} --lang rust`).
//!
//! Built with the guest SDK `plugd-guest`; every method of `Plugin` has a default, so implement
//! only what you use. In-memory fields are per instance: what every call must see lives in
//! `storage`.
use plugd_guest::prelude::*;
use plugd_guest::{log, register, storage};
{{#route}}
use plugd_guest::{events, metrics};
{{/route}}

#[derive(Default)]
struct {{Type}} {
    greeting: String,
}

impl Plugin for {{Type}} {
    /// Runs on every instance with the validated config (defaults from plugin.yaml applied).
    fn init(&mut self, config: &Config) -> Result<()> {
        self.greeting = config.get_str_or("greeting", "Hello").to_owned();
{{#route}}
        // Served at /plugins/{{name}}/hello; needs the `router` permission.
        register::route("GET", "/hello")?;
{{/route}}
        // Hooks and subscriptions declared in plugin.yaml are registered by the host; these
        // calls show the code way (the same registration twice is fine).
        register::subscribe("{{name}}.ping")?;
        register::export_service("greeter")?;
        log::info("ready");
        Ok(())
    }

    fn on_config_change(&mut self, config: &Config) -> Result<()> {
        self.greeting = config.get_str_or("greeting", "Hello").to_owned();
        Ok(())
    }
{{#route}}

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/hello" => {
                let name = exchange.query_param("name").unwrap_or_else(|| "world".into());
                let count = storage::get_json::<u64>("count")?.unwrap_or(0) + 1;
                storage::set_json("count", &count)?;
                metrics::counter("greetings", 1.0)?;
                events::publish("{{name}}.greeted", name.as_bytes())?;
                log::with_fields(log::Level::Info, "greeted", &[("name", &name)]);
                Ok(Response::json(
                    200,
                    &plugd_guest::json!({ "message": format!("{}, {name}!", self.greeting), "count": count }),
                ))
            }
            other => bail!("no handler for route {other}"),
        }
    }
{{/route}}
{{#hooks}}

    /// The hooks declared in plugin.yaml: {{hook_list}}.
    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        match hook {
{{#hook_pre_request}}
            HookType::PreRequest => {
                if exchange.header("x-{{name}}-block").is_some() {
                    let body = plugd_guest::json!({ "error": "blocked by {{name}}" });
                    return Ok(Action::Respond(Response::json(403, &body)));
                }
                exchange.set_header("x-{{name}}-seen", "1")?;
            }
{{/hook_pre_request}}
{{#hook_post_request}}
            HookType::PostRequest => exchange.set_response_header("x-{{name}}", "post_request")?,
{{/hook_post_request}}
{{#hook_pre_response}}
            HookType::PreResponse => exchange.set_response_header("x-{{name}}", "pre_response")?,
{{/hook_pre_response}}
            other => log::info(format!("{other:?} hook ran")),
        }
        Ok(Action::Continue)
    }
{{/hooks}}

    /// Events on the topics it subscribed to.
    fn on_event(&mut self, topic: &str, payload: &[u8], _source: &str) -> Result<()> {
        if topic == "{{name}}.ping" {
            storage::set("last-ping", payload)?;
        }
        Ok(())
    }

    /// The exported service `greeter`: another plugin calls
    /// `services::call("{{name}}", "greeter", "greet", b"Bob")`.
    fn call_service(&mut self, service: &str, method: &str, payload: &[u8], _caller: &str) -> Result<Vec<u8>> {
        match (service, method) {
            ("greeter", "greet") => {
                Ok(format!("{}, {}!", self.greeting, String::from_utf8_lossy(payload)).into_bytes())
            }
            _ => bail!("unknown method {service}.{method}"),
        }
    }
}

plugd_guest::export!({{Type}}, name = "{{name}}");
