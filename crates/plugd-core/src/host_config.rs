//! The `config` capability's view of the host config: the config as JSON (the shape of the
//! config file, durations as text such as `"5s"`), with secrets redacted:
//!
//! - every key whose name contains `token`, `secret`, `password` or `key` (any case), at any
//!   depth, reads `"[redacted]"` (so `admin.token`, and such keys in the plugin's own config);
//! - the `config` block of every other plugin's entry reads `"[redacted]"`.
//!
//! Values are read at a dotted key: `server.listen`, `plugins.limits.timeout`,
//! `plugins.plugins.0.name` (a number indexes a list); the empty key is the whole config.

use std::sync::Arc;

use plugd_manifest::HostConfig;
use serde_json::Value;

use crate::error::HostError;

/// What a redacted value reads.
pub use plugd_manifest::REDACTED;
/// Key names holding any of these (lower-cased) are redacted.
pub const SECRET_WORDS: &[&str] = &["token", "secret", "password", "key"];
/// The longest key accepted.
pub const MAX_KEY_BYTES: usize = 512;

/// One plugin's view of the host config. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HostConfigView {
    plugin: Arc<str>,
    json: Arc<Value>,
}

impl HostConfigView {
    /// The view `plugin` gets of `config`.
    ///
    /// ```
    /// use plugd_core::HostConfigView;
    /// use plugd_manifest::{Format, HostConfig};
    /// use serde_json::json;
    ///
    /// let yaml = "admin: { token: s3cret }\nplugins:\n  plugins:\n    - name: a\n      config: { api_key: k, region: eu }\n    - name: b\n      config: { region: us }\n";
    /// let config = HostConfig::from_str(yaml, Format::Yaml, None).unwrap();
    /// let view = HostConfigView::new(&config, "a");
    /// assert_eq!(view.get("server.listen").unwrap(), Some(json!("127.0.0.1:8080")));
    /// assert_eq!(view.get("admin.token").unwrap(), Some(json!("[redacted]")));
    /// assert_eq!(view.get("plugins.plugins.0.config").unwrap(), Some(json!({"api_key": "[redacted]", "region": "eu"})));
    /// assert_eq!(view.get("plugins.plugins.1.config").unwrap(), Some(json!("[redacted]")));
    /// assert_eq!(view.get("plugins.limits.timeout").unwrap(), Some(json!("5s")));
    /// assert_eq!(view.get("no.such.key").unwrap(), None);
    /// ```
    pub fn new(config: &HostConfig, plugin: &str) -> HostConfigView {
        let mut json = match serde_json::to_value(config) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "the host config did not serialize; the config capability shows nothing");
                Value::Null
            }
        };
        if let Some(entries) = json
            .pointer_mut("/plugins/plugins")
            .and_then(Value::as_array_mut)
        {
            for entry in entries {
                let own = entry.get("name").and_then(Value::as_str) == Some(plugin);
                if !own && let Some(c) = entry.get_mut("config") {
                    *c = Value::String(REDACTED.into());
                }
            }
        }
        redact_secrets(&mut json);
        HostConfigView {
            plugin: Arc::from(plugin),
            json: Arc::new(json),
        }
    }

    /// The whole view.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The value at a dotted key; `None` when nothing is there.
    pub fn get(&self, key: &str) -> Result<Option<Value>, HostError> {
        let key = key.trim();
        if key.len() > MAX_KEY_BYTES {
            return Err(HostError::Invalid(format!(
                "config.host-config of plugin '{}': the key is longer than {MAX_KEY_BYTES} bytes",
                self.plugin
            )));
        }
        if key.is_empty() {
            return Ok(Some((*self.json).clone()));
        }
        let mut at = &*self.json;
        for segment in key.split('.') {
            if segment.is_empty() {
                return Err(HostError::Invalid(format!(
                    "config.host-config of plugin '{}': '{key}' has an empty segment; write keys like 'server.listen'",
                    self.plugin
                )));
            }
            let next = match at {
                Value::Object(map) => map.get(segment),
                Value::Array(list) => segment.parse::<usize>().ok().and_then(|i| list.get(i)),
                _ => None,
            };
            match next {
                Some(v) => at = v,
                None => return Ok(None),
            }
        }
        Ok(Some(at.clone()))
    }
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

fn redact_secrets(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if is_secret(k) {
                    if !x.is_null() {
                        *x = Value::String(REDACTED.into());
                    }
                } else {
                    redact_secrets(x);
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugd_manifest::Format;
    use serde_json::json;

    const YAML: &str = r#"
admin:
  token: very-secret-admin-token
server:
  listen: 0.0.0.0:9000
plugins:
  limits:
    timeout: 2s
  plugins:
    - name: me
      config:
        db_password: hunter2
        nested: { ApiKey: abc, list: [{ secret_value: x, ok: 1 }] }
        region: eu
      network: { allow: [api.example.com] }
    - name: other
      config:
        region: us
        harmless: visible-to-nobody
"#;

    #[test]
    fn secrets_and_other_plugins_configs_are_redacted() {
        let config = HostConfig::from_str(YAML, Format::Yaml, None).unwrap();
        let view = HostConfigView::new(&config, "me");
        let text = view.json().to_string();
        for secret in [
            "very-secret-admin-token",
            "hunter2",
            "abc",
            "visible-to-nobody",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(
            view.get("server.listen").unwrap(),
            Some(json!("0.0.0.0:9000"))
        );
        assert_eq!(
            view.get("plugins.limits.timeout").unwrap(),
            Some(json!("2s"))
        );
        assert_eq!(view.get("admin.token").unwrap(), Some(json!(REDACTED)));
        assert_eq!(
            view.get("plugins.plugins.0.config").unwrap(),
            Some(json!({
                "db_password": REDACTED,
                "nested": { "ApiKey": REDACTED, "list": [{ "secret_value": REDACTED, "ok": 1 }] },
                "region": "eu"
            }))
        );
        assert_eq!(
            view.get("plugins.plugins.0.network.allow").unwrap(),
            Some(json!(["api.example.com"]))
        );
        assert_eq!(
            view.get("plugins.plugins.1.name").unwrap(),
            Some(json!("other"))
        );
        assert_eq!(
            view.get("plugins.plugins.1.config").unwrap(),
            Some(json!(REDACTED))
        );
        assert_eq!(view.get("plugins.plugins.7").unwrap(), None);
        assert_eq!(view.get("server.listen.deeper").unwrap(), None);
        assert!(view.get("").unwrap().unwrap().is_object());
        assert!(matches!(
            view.get("server..listen"),
            Err(HostError::Invalid(_))
        ));
        // A config without a token shows null, not "[redacted]".
        let bare = HostConfigView::new(&HostConfig::default(), "me");
        assert_eq!(bare.get("admin.token").unwrap(), Some(Value::Null));
    }
}
