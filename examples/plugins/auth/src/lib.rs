//! `auth`: bearer-token authentication for plugd.
//!
//! - `pre_request`: `Authorization: Bearer <token>` with a token from the `tokens` config attaches
//!   its identity to the request; an unknown token is answered 401 at once; no header leaves the
//!   request anonymous (routes that need roles then answer 401 themselves).
//! - `pre_response`: names the subject in a response header, to show that later hooks see the
//!   identity.
//! - Routes: `GET /plugins/auth/whoami` (needs the role `user`) and `GET /plugins/auth/admin`
//!   (needs `admin`); the host enforces the roles before the handler runs.
use std::collections::BTreeMap;

use plugd_guest::prelude::*;
use plugd_guest::{Identity, json, register};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Grant {
    subject: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Default)]
struct Auth {
    tokens: BTreeMap<String, Grant>,
    subject_header: String,
}

impl Auth {
    fn configure(&mut self, config: &Config) -> Result<()> {
        self.tokens = config
            .get::<BTreeMap<String, Grant>>("tokens")
            .context("config key `tokens`")?
            .unwrap_or_default();
        self.subject_header = config
            .get_str_or("subject_header", "x-plugd-subject")
            .to_owned();
        Ok(())
    }

    fn authenticate(&self, exchange: &Exchange) -> Option<Action> {
        let header = exchange.header("authorization")?;
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
            return Some(unauthorized("the Authorization header must be `Bearer <token>`"));
        };
        let Some(grant) = self.tokens.get(token) else {
            return Some(unauthorized("unknown bearer token"));
        };
        let identity = Identity {
            subject: grant.subject.clone(),
            roles: grant.roles.clone(),
        };
        if let Err(e) = exchange.set_identity(Some(&identity)) {
            return Some(Action::Respond(Response::json(
                500,
                &json!({ "error": "auth", "message": format!("cannot attach identity: {e:?}") }),
            )));
        }
        None
    }
}

fn unauthorized(message: &str) -> Action {
    Action::Respond(
        Response::json(401, &json!({ "error": "unauthorized", "message": message }))
            .with_header("www-authenticate", "Bearer"),
    )
}

impl Plugin for Auth {
    fn init(&mut self, config: &Config) -> Result<()> {
        self.configure(config)?;
        register::route_with_roles("GET", "/whoami", &["user"])?;
        register::route_with_roles("GET", "/admin", &["admin"])?;
        Ok(())
    }

    fn on_config_change(&mut self, config: &Config) -> Result<()> {
        self.configure(config)
    }

    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        match hook {
            HookType::PreRequest => Ok(self.authenticate(exchange).unwrap_or(Action::Continue)),
            HookType::PreResponse if !self.subject_header.is_empty() => {
                if let Some(identity) = exchange.identity() {
                    exchange.set_response_header(&self.subject_header, &identity.subject)?;
                }
                Ok(Action::Continue)
            }
            _ => Ok(Action::Continue),
        }
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        // The host checked the roles before calling: an identity is always present here.
        let identity = exchange.identity();
        let subject = identity.as_ref().map(|i| i.subject.as_str()).unwrap_or("");
        let roles = identity.as_ref().map(|i| i.roles.clone()).unwrap_or_default();
        match route {
            "/whoami" => Ok(Response::json(
                200,
                &json!({ "subject": subject, "roles": roles }),
            )),
            "/admin" => Ok(Response::json(
                200,
                &json!({ "subject": subject, "admin": true }),
            )),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Auth, name = "auth");
