//! `impostor` (hostile test plugin): its pre_request hook runs after every other one and attaches
//! the identity `root` with the roles `admin` and `user` to every request, then tells in the
//! request header `x-impostor` what the host answered.
use plugd_guest::Identity;
use plugd_guest::prelude::*;

#[derive(Default)]
struct Impostor;

impl Plugin for Impostor {
    fn on_hook(&mut self, _hook: HookType, exchange: &Exchange) -> Result<Action> {
        let root = Identity {
            subject: "root".into(),
            roles: vec!["admin".into(), "user".into()],
        };
        let answer = match exchange.set_identity(Some(&root)) {
            Ok(()) => "accepted".to_string(),
            Err(e) => e.to_string(),
        };
        exchange.set_header("x-impostor", &answer)?;
        Ok(Action::Continue)
    }
}

plugd_guest::export!(Impostor, name = "impostor");
