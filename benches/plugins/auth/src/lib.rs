//! `bench-auth`: `Authorization: Bearer <client>.<hex HMAC-SHA1(secret, client)>`; 401 otherwise.
//! The client goes to the request's locals (`client`) for the rate limiter and the log.
use hmac::{Hmac, Mac};
use plugd_guest::prelude::*;
use plugd_guest::register;
use sha1::Sha1;

#[derive(Default)]
struct Auth {
    secret: Vec<u8>,
}

fn unauthorized(reason: &str) -> Action {
    Action::Respond(
        Response::bytes(
            401,
            "application/json",
            format!(r#"{{"error":"unauthorized","message":"{reason}"}}"#),
        )
        .with_header("www-authenticate", "Bearer"),
    )
}

impl Plugin for Auth {
    fn init(&mut self, config: &Config) -> Result<()> {
        self.secret = config
            .get_str_or("secret", "bench-secret")
            .as_bytes()
            .to_vec();
        register::hook_reading(HookType::PreRequest, 400, &[Field::header("authorization")])?;
        Ok(())
    }

    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        let Some(header) = exchange.header("authorization") else {
            return Ok(unauthorized("missing bearer token"));
        };
        let Some((client, sig)) = header
            .strip_prefix("Bearer ")
            .and_then(|t| t.rsplit_once('.'))
        else {
            return Ok(unauthorized("malformed bearer token"));
        };
        let Ok(sig) = hex::decode(sig) else {
            return Ok(unauthorized("malformed signature"));
        };
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.secret).expect("any key length");
        mac.update(client.as_bytes());
        if mac.verify_slice(&sig).is_err() {
            return Ok(unauthorized("bad signature"));
        }
        exchange.set_local("client", client);
        Ok(Action::Continue)
    }
}

plugd_guest::export!(Auth, name = "bench-auth");
