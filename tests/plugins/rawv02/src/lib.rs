//! `rawv02` (test plugin): contract `plugd:plugin@0.2.0` through raw wit-bindgen bindings of the
//! repository's `wit/plugin.wit`, no SDK. Each registration declares what it reads and gets those
//! values with each call; changes to the exchange come back as edits.
//!
//! - pre_request hook, reads `[header(x-in), method, local(none-yet)]`: continues with
//!   `set-header(x-out, "<x-in>|<method>|<none-yet or ->")` and `set-local(k, from-hook)`;
//!   with `x-in: frame` it asks for `set-header(content-length, 0)` instead (refused: framing);
//! - GET /items/{id}, reads `[local(k), route-param(id), header(authorization)]`: answers them,
//!   and `x-out` read through the `exchange` functions;
//! - post_response hook: returns `set-response-header(x-late, 1)` (refused: the response is
//!   written);
//! - `tag` middleware around its routes, reads `[status]`: on-response sets `x-tag: <status>`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

use exports::plugd::plugin::guest::Guest;
use plugd::plugin::exchange;
use plugd::plugin::registry;
use plugd::plugin::types::{
    Action, Edit, Field, Health, HookType, PluginMetadata, Response, RouteOptions,
};

struct RawV02;

fn shown(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

fn given_at(given: &[Option<String>], i: usize) -> &Option<String> {
    given.get(i).unwrap_or(&None)
}

impl Guest for RawV02 {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "rawv02".into(),
            version: "0.1.0".into(),
            sdk: "wit-bindgen 0.63 (no SDK)".into(),
        }
    }

    fn init(_config: String) -> Result<(), String> {
        let e = |e| format!("{e:?}");
        registry::register_hook(
            HookType::PreRequest,
            10,
            &[
                Field::Header("x-in".into()),
                Field::Method,
                Field::Local("none-yet".into()),
            ],
        )
        .map_err(e)?;
        registry::register_hook(HookType::PostResponse, 0, &[]).map_err(e)?;
        registry::register_route(
            "GET",
            "/items/{id}",
            &RouteOptions {
                required_roles: Vec::new(),
                reads: vec![
                    Field::Local("k".into()),
                    Field::RouteParam("id".into()),
                    Field::Header("authorization".into()),
                ],
            },
        )
        .map_err(e)?;
        registry::register_middleware("tag", 10, &["/plugins/rawv02/*".into()], &[Field::Status])
            .map_err(e)?;
        Ok(())
    }

    fn start() -> Result<(), String> {
        Ok(())
    }

    fn stop() -> Result<(), String> {
        Ok(())
    }

    fn cleanup() -> Result<(), String> {
        Ok(())
    }

    fn on_config_change(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn health_check() -> Health {
        Health::Healthy
    }

    fn on_hook(hook: HookType, given: Vec<Option<String>>) -> Result<Action, String> {
        match hook {
            HookType::PreRequest => {
                let x_in = given_at(&given, 0);
                if x_in.as_deref() == Some("frame") {
                    return Ok(Action::Continue(vec![Edit::SetHeader((
                        "content-length".into(),
                        "0".into(),
                    ))]));
                }
                let out = format!(
                    "{}|{}|{}",
                    shown(x_in),
                    shown(given_at(&given, 1)),
                    shown(given_at(&given, 2))
                );
                Ok(Action::Continue(vec![
                    Edit::SetHeader(("x-out".into(), out)),
                    Edit::SetLocal(("k".into(), "from-hook".into())),
                ]))
            }
            HookType::PostResponse => Ok(Action::Continue(vec![Edit::SetResponseHeader((
                "x-late".into(),
                "1".into(),
            ))])),
            _ => Ok(Action::Continue(Vec::new())),
        }
    }

    fn handle_request(route: String, given: Vec<Option<String>>) -> Result<Response, String> {
        if route != "/items/{id}" {
            return Err(format!("no handler for route {route}"));
        }
        let body = format!(
            "k={} id={} authorization={} x-out={} given={}",
            shown(given_at(&given, 0)),
            shown(given_at(&given, 1)),
            shown(given_at(&given, 2)),
            shown(&exchange::header("x-out")),
            given.len()
        );
        Ok(Response {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.into_bytes(),
        })
    }

    fn on_request(_middleware: String, _given: Vec<Option<String>>) -> Result<Action, String> {
        Ok(Action::Continue(Vec::new()))
    }

    fn on_response(_middleware: String, given: Vec<Option<String>>) -> Result<Vec<Edit>, String> {
        Ok(vec![Edit::SetResponseHeader((
            "x-tag".into(),
            shown(given_at(&given, 0)).into(),
        ))])
    }

    fn on_event(_topic: String, _payload: Vec<u8>, _source: String) -> Result<(), String> {
        Ok(())
    }

    fn call_service(
        service: String,
        _method: String,
        _payload: Vec<u8>,
        _caller: String,
    ) -> Result<Vec<u8>, String> {
        Err(format!("no service {service}"))
    }

    fn on_tick(_timer: String) -> Result<(), String> {
        Ok(())
    }

    fn run_command(command: String, _args: Vec<String>) -> Result<String, String> {
        Err(format!("no command {command}"))
    }
}

export!(RawV02);
