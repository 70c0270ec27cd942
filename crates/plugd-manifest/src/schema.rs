//! A plugin's config schema (manifest key `config`) and the validation of the config the host
//! config gives the plugin.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::format::did_you_mean;

/// The type of a config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigType {
    /// A string.
    String,
    /// An integral number (`3`, also `3.0`).
    Integer,
    /// Any number.
    Float,
    /// `true` or `false`.
    Boolean,
    /// A humantime string: `"30s"`, `"24h"`, `"500ms"`.
    Duration,
    /// A list of values.
    Array,
    /// A map of values.
    Object,
}

impl ConfigType {
    /// Every type.
    pub const ALL: [ConfigType; 7] = [
        ConfigType::String,
        ConfigType::Integer,
        ConfigType::Float,
        ConfigType::Boolean,
        ConfigType::Duration,
        ConfigType::Array,
        ConfigType::Object,
    ];

    /// The name as written in a manifest: `string`, `integer`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigType::String => "string",
            ConfigType::Integer => "integer",
            ConfigType::Float => "float",
            ConfigType::Boolean => "boolean",
            ConfigType::Duration => "duration",
            ConfigType::Array => "array",
            ConfigType::Object => "object",
        }
    }

    /// What a value of this type looks like, for error messages: "an integer".
    pub fn describe(self) -> &'static str {
        match self {
            ConfigType::String => "a string",
            ConfigType::Integer => "an integer",
            ConfigType::Float => "a number",
            ConfigType::Boolean => "a boolean",
            ConfigType::Duration => "a duration such as \"30s\", \"24h\" or \"500ms\"",
            ConfigType::Array => "an array",
            ConfigType::Object => "an object",
        }
    }

    /// `value` as this type, or `None` when it is not one. Integral floats become integers
    /// for [`ConfigType::Integer`]; every other accepted value is returned unchanged.
    pub fn check(self, value: &Value) -> Option<Value> {
        let ok = match (self, value) {
            (ConfigType::String, Value::String(_))
            | (ConfigType::Float, Value::Number(_))
            | (ConfigType::Boolean, Value::Bool(_))
            | (ConfigType::Array, Value::Array(_))
            | (ConfigType::Object, Value::Object(_)) => true,
            (ConfigType::Integer, Value::Number(n)) => {
                if n.is_i64() || n.is_u64() {
                    true
                } else {
                    let f = n.as_f64()?;
                    // Integral and inside i64: 2^63 is exactly representable, so `<` is right.
                    if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) {
                        return Some(Value::Number(Number::from(f as i64)));
                    }
                    false
                }
            }
            (ConfigType::Duration, Value::String(s)) => humantime::parse_duration(s.trim()).is_ok(),
            _ => false,
        };
        ok.then(|| value.clone())
    }

    /// Parse a string (from an environment variable) as this type; strings stay strings.
    fn coerce(self, text: &str) -> Option<Value> {
        let t = text.trim();
        match self {
            ConfigType::Integer => t.parse::<i64>().ok().map(Value::from),
            ConfigType::Float => t
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number),
            ConfigType::Boolean => t.parse::<bool>().ok().map(Value::Bool),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The contract's message for a bad config type, without its "invalid config schema: " prefix
/// (docs/design.md#errors).
pub(crate) const TYPE_MUST_BE: &str =
    "type must be one of [string, integer, float, boolean, duration, array, object]";

impl FromStr for ConfigType {
    type Err = String;

    /// Parse a type name; the error is the contract's "type must be one of […]".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConfigType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| TYPE_MUST_BE.to_owned())
    }
}

/// One key of a [`ConfigSchema`].
///
/// ```
/// use plugd_manifest::{ConfigField, ConfigType};
///
/// let ttl = ConfigField::new(ConfigType::Duration)
///     .with_default("24h")
///     .with_description("Token time-to-live");
/// assert!(!ttl.required);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigField {
    /// The type of the value.
    #[serde(rename = "type")]
    pub ty: ConfigType,
    /// Whether the host config must give a value (when there is no default).
    pub required: bool,
    /// The value used when the host config gives none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// A description for operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether the value is a secret (shown redacted by [`ConfigSchema::redact`]).
    pub secret: bool,
}

impl ConfigField {
    /// An optional field of type `ty`, without default or description.
    pub fn new(ty: ConfigType) -> Self {
        ConfigField {
            ty,
            required: false,
            default: None,
            description: None,
            secret: false,
        }
    }

    /// Mark the field required.
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Mark the field secret.
    #[must_use]
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Set the default value.
    #[must_use]
    pub fn with_default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// Set the description.
    #[must_use]
    pub fn with_description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }
}

/// A plugin's config schema: the keys its config may have, with types, defaults and which are
/// required. Written under `config` in the manifest:
///
/// ```yaml
/// config:
///   jwt_secret: { type: string, required: true, description: JWT signing secret }
///   token_ttl:  { type: duration, default: "24h" }
/// ```
///
/// ```
/// use plugd_manifest::{ConfigField, ConfigSchema, ConfigType};
/// use serde_json::json;
///
/// let schema = ConfigSchema::new()
///     .field("jwt_secret", ConfigField::new(ConfigType::String).required())
///     .field("token_ttl", ConfigField::new(ConfigType::Duration).with_default("24h"));
/// let config = json!({ "jwt_secret": "s3cret" });
/// let config = schema.validate(config.as_object().unwrap()).unwrap();
/// assert_eq!(config["token_ttl"], "24h");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ConfigSchema {
    /// The keys, by name.
    pub fields: BTreeMap<String, ConfigField>,
}

impl ConfigSchema {
    /// An empty schema: any config is accepted as written.
    pub fn new() -> Self {
        ConfigSchema::default()
    }

    /// Add (or replace) a key.
    #[must_use]
    pub fn field(mut self, name: impl Into<String>, field: ConfigField) -> Self {
        self.fields.insert(name.into(), field);
        self
    }

    /// Whether the schema has no keys.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Validate a plugin's config (from the host config) against the schema, and return it
    /// complete:
    ///
    /// - `${ENV_VAR}` in strings (at any depth) is replaced from the environment; an unset
    ///   variable is an error naming it. `$${` writes a literal `${`. A string that came from a
    ///   variable is parsed for `integer`, `float` and `boolean` keys (`"${RETRIES}"` → `3`).
    ///   Only the operator's values are expanded: a manifest's defaults never are (a manifest
    ///   that names a variable is refused when it is read), so a plugin's author can never read
    ///   the host's environment.
    /// - a missing (or `null`) key takes its default; a missing required key is an error;
    /// - types are checked: `integer` accepts integral numbers, `float` any number, `duration`
    ///   a humantime string (`"30s"`, `"24h"`, `"500ms"`);
    /// - a key the schema does not have is an error (with a "did you mean") — unless the schema
    ///   is empty, in which case the config is accepted as written (after substitution).
    ///
    /// The error does not name the plugin; add it with [`ConfigError::for_plugin`].
    pub fn validate(&self, config: &Map<String, Value>) -> Result<Map<String, Value>, ConfigError> {
        self.validate_with_env(config, |name| std::env::var(name).ok())
    }

    /// [`ConfigSchema::validate`] for a config that did not come from the host config file (the
    /// admin API, a tool): nothing is expanded from the environment, and a `${VAR}` reference is
    /// an error ([`ConfigErrorKind::EnvNotExpanded`]) rather than a way to read the host's
    /// environment. `$${` still writes a literal `${`.
    ///
    /// ```
    /// use plugd_manifest::{ConfigField, ConfigSchema, ConfigType};
    /// use serde_json::{json, Map, Value};
    ///
    /// let schema = ConfigSchema::new().field("greeting", ConfigField::new(ConfigType::String));
    /// let given = |v: Value| v.as_object().cloned().unwrap_or_default();
    /// let err = schema.validate_untrusted(&given(json!({"greeting": "${HOME}"}))).unwrap_err();
    /// assert!(err.to_string().starts_with("key 'greeting' refers to environment variable 'HOME'"));
    /// let ok = schema.validate_untrusted(&given(json!({"greeting": "$${HOME}"}))).unwrap();
    /// assert_eq!(ok["greeting"], "${HOME}");
    /// ```
    pub fn validate_untrusted(
        &self,
        config: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ConfigError> {
        self.validate_from(config, &|_| None, Origin::Untrusted)
    }

    /// [`ConfigSchema::validate`] with the environment given as a function (for tests, or an
    /// environment that is not the process's).
    pub fn validate_with_env(
        &self,
        config: &Map<String, Value>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Map<String, Value>, ConfigError> {
        self.validate_from(config, &env, Origin::Operator)
    }

    fn validate_from(
        &self,
        config: &Map<String, Value>,
        env: &dyn Fn(&str) -> Option<String>,
        origin: Origin,
    ) -> Result<Map<String, Value>, ConfigError> {
        let mut out = Map::new();
        if self.fields.is_empty() {
            for (key, value) in config {
                let (value, _) = substitute_value(value, key, env, origin)?;
                out.insert(key.clone(), value);
            }
            return Ok(out);
        }
        for key in config.keys() {
            if !self.fields.contains_key(key) {
                let suggestion = did_you_mean(key, self.fields.keys().map(String::as_str));
                return Err(ConfigErrorKind::UnknownKey {
                    key: key.clone(),
                    suggestion,
                }
                .into());
            }
        }
        for (key, field) in &self.fields {
            let given = config.get(key).filter(|v| !v.is_null());
            let (value, from_env) = match (given, &field.default) {
                (Some(raw), _) => substitute_value(raw, key, env, origin)?,
                // The manifest's author wrote the default: never expanded from the environment.
                (None, Some(default)) => {
                    substitute_value(default, key, &|_| None, Origin::Default)?
                }
                (None, None) if field.required => {
                    return Err(ConfigErrorKind::MissingKey(key.clone()).into());
                }
                (None, None) => continue,
            };
            let checked = field.ty.check(&value).or_else(|| match &value {
                Value::String(s) if from_env => field.ty.coerce(s),
                _ => None,
            });
            match checked {
                Some(v) => {
                    out.insert(key.clone(), v);
                }
                None => {
                    return Err(ConfigErrorKind::WrongType {
                        key: key.clone(),
                        expected: field.ty,
                        // A secret's value never reaches an error (errors are logged and shown).
                        found: if field.secret {
                            format!("{} (a secret: value not shown)", kind_of(&value))
                        } else {
                            describe_value(&value)
                        },
                    }
                    .into());
                }
            }
        }
        Ok(out)
    }

    /// `config` with the values of secret keys replaced by [`REDACTED`], for display (the admin
    /// API, the dashboard, logs). A secret key without a value stays absent.
    ///
    /// ```
    /// use plugd_manifest::{ConfigField, ConfigSchema, ConfigType, REDACTED};
    /// use serde_json::json;
    ///
    /// let schema = ConfigSchema::new()
    ///     .field("jwt_secret", ConfigField::new(ConfigType::String).secret())
    ///     .field("ttl", ConfigField::new(ConfigType::Duration));
    /// let config = json!({"jwt_secret": "s3cret", "ttl": "1h"}).as_object().cloned().unwrap();
    /// assert_eq!(json!(schema.redact(&config)), json!({"jwt_secret": REDACTED, "ttl": "1h"}));
    /// ```
    pub fn redact(&self, config: &Map<String, Value>) -> Map<String, Value> {
        config
            .iter()
            .map(|(k, v)| {
                let v = if self.is_secret(k) {
                    Value::String(REDACTED.into())
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// Whether `key` is declared `secret: true`.
    pub fn is_secret(&self, key: &str) -> bool {
        self.fields.get(key).is_some_and(|f| f.secret)
    }

    /// A config to apply, given as [`ConfigSchema::redact`] showed it: every secret key whose
    /// value is still [`REDACTED`] takes its value from `current`, so an editor can send back what
    /// it was shown without learning, or wiping, the secret.
    pub fn unredact(
        &self,
        given: &Map<String, Value>,
        current: &Map<String, Value>,
    ) -> Map<String, Value> {
        given
            .iter()
            .filter_map(|(k, v)| {
                if self.is_secret(k) && v.as_str() == Some(REDACTED) {
                    return current.get(k).map(|c| (k.clone(), c.clone()));
                }
                Some((k.clone(), v.clone()))
            })
            .collect()
    }

    /// Build from the manifest's raw form; the error is the detail after "invalid config
    /// schema: ".
    pub(crate) fn from_raw(raw: BTreeMap<String, RawConfigField>) -> Result<Self, String> {
        let mut fields = BTreeMap::new();
        for (key, raw) in raw {
            let ty = match raw.ty.as_deref() {
                None => return Err(format!("{TYPE_MUST_BE}, but key '{key}' has no type")),
                Some(t) => t
                    .parse::<ConfigType>()
                    .map_err(|e| format!("{e}, got '{t}' for key '{key}'"))?,
            };
            if let Some(default) = &raw.default {
                if let Some(var) = env_reference(default) {
                    return Err(format!(
                        "default of '{key}' refers to environment variable '{var}': a manifest cannot read the host's environment; leave the default out and let the operator set it in the host config (plugins.plugins[].config.{key}: \"${{{var}}}\"), or write $${{ for a literal ${{"
                    ));
                }
                let literal = substitute_value(default, &key, &|_| None, Origin::Default)
                    .map(|(v, _)| v)
                    .unwrap_or_else(|_| default.clone());
                if !default.is_null() && ty.check(&literal).is_none() {
                    return Err(format!(
                        "default of '{key}' must be {}, got {}",
                        ty.describe(),
                        describe_value(default)
                    ));
                }
            }
            fields.insert(
                key,
                ConfigField {
                    ty,
                    required: raw.required.unwrap_or(false),
                    default: raw.default.filter(|v| !v.is_null()),
                    description: raw.description,
                    secret: raw.secret.unwrap_or(false),
                },
            );
        }
        Ok(ConfigSchema { fields })
    }
}

/// A config key as written in a manifest.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfigField {
    /// string, integer, float, boolean, duration (`"30s"`), array or object.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["string", "integer", "float", "boolean", "duration", "array", "object"]))]
    ty: Option<String>,
    /// The host refuses to start the plugin without it.
    required: Option<bool>,
    /// The value when the host config gives none.
    default: Option<Value>,
    /// What it is for.
    description: Option<String>,
    /// Redacted wherever the host shows config (admin API, logs).
    secret: Option<bool>,
}

/// A config that does not match its schema.
///
/// [`ConfigSchema::validate`] leaves `plugin` empty; the caller names the plugin with
/// [`ConfigError::for_plugin`], and the message becomes
/// `config of plugin 'x': Configuration key missing and no default value provided: 'jwt_secret'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The plugin whose config it is, when known.
    pub plugin: Option<String>,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

impl ConfigError {
    /// Name the plugin the config belongs to.
    #[must_use]
    pub fn for_plugin(mut self, name: impl Into<String>) -> Self {
        self.plugin = Some(name.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.plugin {
            Some(p) => write!(f, "config of plugin '{p}': {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl From<ConfigErrorKind> for ConfigError {
    fn from(kind: ConfigErrorKind) -> Self {
        ConfigError { plugin: None, kind }
    }
}

/// What is wrong with a plugin's config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    /// A required key without value or default (the contract's wording, then the key).
    #[error("Configuration key missing and no default value provided: '{0}'")]
    MissingKey(String),
    /// A key the schema does not have.
    #[error("unknown key '{key}'{}", suggest(.suggestion))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The closest key of the schema, if close.
        suggestion: Option<String>,
    },
    /// A value of the wrong type.
    #[error("key '{key}' must be {}, got {found}", .expected.describe())]
    WrongType {
        /// The key.
        key: String,
        /// The schema's type.
        expected: ConfigType,
        /// What was given, described: `string "abc"`.
        found: String,
    },
    /// `${VAR}` names a variable that is not set.
    #[error("key '{key}' refers to environment variable '{var}', which is not set")]
    UnsetEnv {
        /// The key whose value holds the reference.
        key: String,
        /// The variable.
        var: String,
    },
    /// `${VAR}` in a value the operator's host config file did not give (the admin API, a
    /// default): never expanded from the host's environment.
    #[error(
        "key '{key}' refers to environment variable '{var}': only the host config file is expanded from the host's environment; set the value there, or write $${{ for a literal ${{"
    )]
    EnvNotExpanded {
        /// The key whose value holds the reference.
        key: String,
        /// The variable.
        var: String,
    },
}

/// Who wrote a config value, which decides whether `${VAR}` is expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The operator, in the host config file: expanded.
    Operator,
    /// A manifest's author (a default): never expanded (refused when the manifest is read).
    Default,
    /// The admin API or another caller: never expanded, refused.
    Untrusted,
}

/// What a secret value reads wherever plugd shows it.
pub const REDACTED: &str = "[redacted]";

/// The first `${VAR}` reference in the strings of `value` (at any depth), if any; `$${` is a
/// literal and not a reference.
///
/// ```
/// use serde_json::json;
/// assert_eq!(plugd_manifest::env_reference(&json!({"a": ["x", "${HOME}"]})).as_deref(), Some("HOME"));
/// assert_eq!(plugd_manifest::env_reference(&json!("$${HOME} costs $5")), None);
/// ```
pub fn env_reference(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => substitute(s, &|_: &str| None).err(),
        Value::Array(items) => items.iter().find_map(env_reference),
        Value::Object(map) => map.values().find_map(env_reference),
        _ => None,
    }
}

fn suggest(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean '{s}'?"),
        None => String::new(),
    }
}

/// The kind of a value, without the value: `a string`, `an integer`.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value, described for an error message: `string "abc"`, `integer 3`.
fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if n.is_f64() => format!("number {n}"),
        Value::Number(n) => format!("integer {n}"),
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            let ellipsis = if shown.len() < s.len() { "…" } else { "" };
            format!("string \"{shown}{ellipsis}\"")
        }
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Replace `${VAR}` references in every string of `value`; also say whether any was replaced.
fn substitute_value(
    value: &Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    origin: Origin,
) -> Result<(Value, bool), ConfigError> {
    match value {
        Value::String(s) => {
            let (text, replaced) = substitute(s, env).map_err(|var| {
                let key = key.to_owned();
                match origin {
                    Origin::Operator => ConfigErrorKind::UnsetEnv { key, var },
                    Origin::Default | Origin::Untrusted => {
                        ConfigErrorKind::EnvNotExpanded { key, var }
                    }
                }
            })?;
            Ok((Value::String(text), replaced))
        }
        Value::Array(items) => {
            let mut any = false;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let (v, r) = substitute_value(item, key, env, origin)?;
                any |= r;
                out.push(v);
            }
            Ok((Value::Array(out), any))
        }
        Value::Object(map) => {
            let mut any = false;
            let mut out = Map::new();
            for (k, item) in map {
                let (v, r) = substitute_value(item, key, env, origin)?;
                any |= r;
                out.insert(k.clone(), v);
            }
            Ok((Value::Object(out), any))
        }
        other => Ok((other.clone(), false)),
    }
}

/// Replace `${VAR}` in `text`; `$${` is a literal `${`. The error is the unset variable.
pub(crate) fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, bool), String> {
    if !text.contains("${") {
        return Ok((text.to_owned(), false));
    }
    let mut out = String::with_capacity(text.len());
    let mut replaced = false;
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${")
            && let Some(end) = tail.find('}')
            && is_env_name(&tail[..end])
        {
            let name = &tail[..end];
            let value = env(name).ok_or_else(|| name.to_owned())?;
            out.push_str(&value);
            replaced = true;
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok((out, replaced))
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> ConfigSchema {
        ConfigSchema::new()
            .field(
                "jwt_secret",
                ConfigField::new(ConfigType::String).required().secret(),
            )
            .field(
                "token_ttl",
                ConfigField::new(ConfigType::Duration).with_default("24h"),
            )
            .field(
                "refresh_enabled",
                ConfigField::new(ConfigType::Boolean).with_default(true),
            )
            .field("max_retries", ConfigField::new(ConfigType::Integer))
            .field("ratio", ConfigField::new(ConfigType::Float))
            .field("hosts", ConfigField::new(ConfigType::Array))
            .field("extra", ConfigField::new(ConfigType::Object))
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "JWT_SECRET" => Some("from-env".into()),
            "RETRIES" => Some("7".into()),
            "ON" => Some("true".into()),
            _ => None,
        }
    }

    #[test]
    fn defaults_are_applied() {
        let out = schema()
            .validate_with_env(&obj(json!({"jwt_secret": "s"})), no_env)
            .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"jwt_secret": "s", "token_ttl": "24h", "refresh_enabled": true})
        );
    }

    #[test]
    fn required_keys_are_required() {
        let err = schema()
            .validate_with_env(&obj(json!({"token_ttl": "1h"})), no_env)
            .unwrap_err();
        assert_eq!(err.kind, ConfigErrorKind::MissingKey("jwt_secret".into()));
        assert_eq!(
            err.for_plugin("auth-plugin").to_string(),
            "config of plugin 'auth-plugin': Configuration key missing and no default value provided: 'jwt_secret'"
        );
        // null counts as missing
        let err = schema()
            .validate_with_env(&obj(json!({"jwt_secret": null})), no_env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Configuration key missing and no default value provided: 'jwt_secret'"
        );
    }

    #[test]
    fn types_are_checked() {
        let cases = [
            (
                json!({"jwt_secret": 5}),
                "key 'jwt_secret' must be a string, got an integer (a secret: value not shown)",
            ),
            (
                json!({"jwt_secret": "s", "token_ttl": "soon"}),
                "key 'token_ttl' must be a duration such as \"30s\", \"24h\" or \"500ms\", got string \"soon\"",
            ),
            (
                json!({"jwt_secret": "s", "max_retries": 1.5}),
                "key 'max_retries' must be an integer, got number 1.5",
            ),
            (
                json!({"jwt_secret": "s", "refresh_enabled": "yes"}),
                "key 'refresh_enabled' must be a boolean, got string \"yes\"",
            ),
            (
                json!({"jwt_secret": "s", "ratio": "x"}),
                "key 'ratio' must be a number, got string \"x\"",
            ),
            (
                json!({"jwt_secret": "s", "hosts": {}}),
                "key 'hosts' must be an array, got an object",
            ),
            (
                json!({"jwt_secret": "s", "extra": []}),
                "key 'extra' must be an object, got an array",
            ),
        ];
        for (config, message) in cases {
            let err = schema()
                .validate_with_env(&obj(config), no_env)
                .unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn numbers_are_normalized() {
        let out = schema()
            .validate_with_env(
                &obj(json!({"jwt_secret": "s", "max_retries": 3.0, "ratio": 2})),
                no_env,
            )
            .unwrap();
        assert_eq!(out["max_retries"], json!(3));
        assert!(out["max_retries"].is_i64());
        assert_eq!(out["ratio"], json!(2));
    }

    #[test]
    fn env_references_are_substituted() {
        let out = schema()
            .validate_with_env(
                &obj(json!({
                    "jwt_secret": "${JWT_SECRET}",
                    "max_retries": "${RETRIES}",
                    "refresh_enabled": "${ON}",
                    "hosts": ["a-${JWT_SECRET}", "$${LITERAL}", "$5"],
                })),
                env,
            )
            .unwrap();
        assert_eq!(out["jwt_secret"], "from-env");
        assert_eq!(out["max_retries"], json!(7));
        assert_eq!(out["refresh_enabled"], json!(true));
        assert_eq!(out["hosts"], json!(["a-from-env", "${LITERAL}", "$5"]));

        let err = schema()
            .validate_with_env(&obj(json!({"jwt_secret": "${NOPE}"})), env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "key 'jwt_secret' refers to environment variable 'NOPE', which is not set"
        );
        // a literal string is not coerced
        let err = schema()
            .validate_with_env(&obj(json!({"jwt_secret": "s", "max_retries": "3"})), env)
            .unwrap_err();
        assert!(matches!(err.kind, ConfigErrorKind::WrongType { .. }));
    }

    #[test]
    fn process_environment_is_used_by_validate() {
        let schema = ConfigSchema::new().field("home", ConfigField::new(ConfigType::String));
        let out = schema.validate(&obj(json!({"home": "${PATH}"}))).unwrap();
        assert_eq!(
            out["home"],
            Value::String(std::env::var("PATH").unwrap_or_default())
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_suggestion() {
        let err = schema()
            .validate_with_env(&obj(json!({"jwt_secret": "s", "token_tll": "1h"})), no_env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key 'token_tll'; did you mean 'token_ttl'?"
        );
    }

    #[test]
    fn empty_schema_accepts_anything() {
        let out = ConfigSchema::new()
            .validate_with_env(&obj(json!({"a": 1, "b": "${JWT_SECRET}"})), env)
            .unwrap();
        assert_eq!(Value::Object(out), json!({"a": 1, "b": "from-env"}));
    }

    #[test]
    fn redact_hides_secrets() {
        let out = schema().redact(&obj(json!({"jwt_secret": "s", "token_ttl": "1h"})));
        assert_eq!(
            Value::Object(out),
            json!({"jwt_secret": REDACTED, "token_ttl": "1h"})
        );
    }

    #[test]
    fn raw_schema_types_and_defaults_are_checked() {
        let raw =
            |v: Value| -> BTreeMap<String, RawConfigField> { serde_json::from_value(v).unwrap() };
        let err = ConfigSchema::from_raw(raw(json!({"k": {"type": "strng"}}))).unwrap_err();
        assert!(err.starts_with(TYPE_MUST_BE), "{err}");
        let err = ConfigSchema::from_raw(raw(json!({"k": {}}))).unwrap_err();
        assert!(err.starts_with(TYPE_MUST_BE), "{err}");
        let err = ConfigSchema::from_raw(raw(json!({"k": {"type": "duration", "default": "x"}})))
            .unwrap_err();
        assert!(
            err.starts_with("default of 'k' must be a duration"),
            "{err}"
        );
        let ok = ConfigSchema::from_raw(raw(
            json!({"k": {"type": "integer", "default": 3, "secret": true}}),
        ))
        .unwrap();
        assert!(ok.fields["k"].secret);
    }

    /// A manifest is the plugin author's: a default naming the host's environment (the admin
    /// token, cloud keys) is refused when the manifest is read, at any depth.
    #[test]
    fn a_default_naming_the_environment_is_refused() {
        let raw =
            |v: Value| -> BTreeMap<String, RawConfigField> { serde_json::from_value(v).unwrap() };
        for default in [
            json!("${PLUGD_ADMIN_TOKEN}"),
            json!("prefix-${HOME}-suffix"),
            json!(["a", "${AWS_SECRET_ACCESS_KEY}"]),
            json!({"nested": {"deeper": "${X}"}}),
        ] {
            let ty = match &default {
                Value::Array(_) => "array",
                Value::Object(_) => "object",
                _ => "string",
            };
            let err =
                ConfigSchema::from_raw(raw(json!({"theme": {"type": ty, "default": default}})))
                    .unwrap_err();
            assert!(
                err.starts_with("default of 'theme' refers to environment variable '"),
                "{err}"
            );
            assert!(
                err.contains("a manifest cannot read the host's environment"),
                "{err}"
            );
        }
        // `$${` is a literal, kept as `${` and never looked up.
        let schema =
            ConfigSchema::from_raw(raw(json!({"t": {"type": "string", "default": "$${HOME}"}})))
                .unwrap();
        let out = schema
            .validate_with_env(&Map::new(), |_| Some("leak".into()))
            .unwrap();
        assert_eq!(out["t"], "${HOME}");
    }

    /// A schema built in code (a native plugin's) with such a default still never expands it.
    #[test]
    fn defaults_are_never_expanded() {
        let schema = ConfigSchema::new().field(
            "t",
            ConfigField::new(ConfigType::String).with_default("${SECRET}"),
        );
        let err = schema
            .validate_with_env(&Map::new(), |_| Some("leak".into()))
            .unwrap_err();
        assert!(
            matches!(&err.kind, ConfigErrorKind::EnvNotExpanded { var, .. } if var == "SECRET"),
            "{err}"
        );
    }

    /// A secret's value never appears in an error, which is logged and shown to operators.
    #[test]
    fn a_wrongly_typed_secret_is_not_echoed() {
        let schema =
            ConfigSchema::new().field("pin", ConfigField::new(ConfigType::Integer).secret());
        let err = schema
            .validate_with_env(&obj(json!({"pin": "hunter2"})), no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "key 'pin' must be an integer, got a string (a secret: value not shown)"
        );
    }

    /// Config from the admin API is never expanded: `${VAR}` is refused, naming the key.
    #[test]
    fn untrusted_config_is_not_expanded() {
        let err = schema()
            .validate_untrusted(&obj(json!({"jwt_secret": "${PLUGD_ADMIN_TOKEN}"})))
            .unwrap_err();
        assert!(matches!(
            &err.kind,
            ConfigErrorKind::EnvNotExpanded { key, var } if key == "jwt_secret" && var == "PLUGD_ADMIN_TOKEN"
        ));
        let err = schema()
            .validate_untrusted(&obj(json!({"jwt_secret": "x", "hosts": ["${HOME}"]})))
            .unwrap_err();
        assert!(matches!(err.kind, ConfigErrorKind::EnvNotExpanded { .. }));
    }
}
