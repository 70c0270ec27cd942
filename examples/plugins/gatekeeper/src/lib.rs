//! `gatekeeper`: answers 401 for protected paths without an API key (pre_request), and stamps a
//! header on every plugin response (pre_response). Its hooks are declared in plugin.yaml.
use plugd_guest::json;
use plugd_guest::prelude::*;

#[derive(Default)]
struct Gatekeeper {
    header: String,
    protected_prefix: String,
    response_header: String,
}

impl Gatekeeper {
    fn configure(&mut self, config: &Config) {
        self.header = config.get_str_or("header", "x-api-key").to_owned();
        self.protected_prefix = config
            .get_str_or("protected_prefix", "/plugins/hello/secret")
            .to_owned();
        self.response_header = config
            .get_str_or("response_header", "x-plugd-gatekeeper")
            .to_owned();
    }

    fn has_key(&self, exchange: &Exchange) -> bool {
        exchange
            .header(&self.header)
            .is_some_and(|v| !v.trim().is_empty())
    }
}

impl Plugin for Gatekeeper {
    fn init(&mut self, config: &Config) -> Result<()> {
        self.configure(config);
        Ok(())
    }

    fn on_config_change(&mut self, config: &Config) -> Result<()> {
        self.configure(config);
        Ok(())
    }

    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        let path = exchange.path();
        match hook {
            HookType::PreRequest
                if path.starts_with(&self.protected_prefix) && !self.has_key(exchange) =>
            {
                let message = format!("missing {} header", self.header);
                let body = json!({ "error": "unauthorized", "message": message });
                Ok(Action::Respond(Response::json(401, &body)))
            }
            HookType::PreResponse if path.starts_with("/plugins/") => {
                exchange.set_response_header(&self.response_header, "checked")?;
                Ok(Action::Continue)
            }
            _ => Ok(Action::Continue),
        }
    }
}

plugd_guest::export!(Gatekeeper, name = "gatekeeper");
