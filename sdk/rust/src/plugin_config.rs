use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The plugin's configuration: the JSON object the host passes to `init` and `on_config_change`,
/// already validated against the manifest's `config` schema with its defaults applied.
///
/// ```ignore
/// fn init(&mut self, config: &Config) -> Result<()> {
///     self.greeting = config.get_str_or("greeting", "Hello").to_owned();
///     self.max = config.get_i64("max").unwrap_or(10);
///     let tags: Vec<String> = config.get("tags")?.unwrap_or_default();
///     let whole: MySettings = config.deserialize()?;   // #[derive(Deserialize)]
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    values: Map<String, Value>,
}

impl Config {
    /// Parses the host's JSON. An empty string or `null` is an empty configuration; anything but
    /// an object is an error.
    pub fn from_json(json: &str) -> Result<Config> {
        if json.trim().is_empty() {
            return Ok(Config::default());
        }
        match serde_json::from_str::<Value>(json)
            .map_err(|e| Error::msg(format!("invalid plugin config JSON: {e}")))?
        {
            Value::Object(values) => Ok(Config { values }),
            Value::Null => Ok(Config::default()),
            other => Err(Error::msg(format!(
                "plugin config must be a JSON object, got {other}"
            ))),
        }
    }

    /// The raw value at `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// The string at `key`; `None` when missing or not a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.values.get(key)?.as_str()
    }

    /// The string at `key`, or `default` when missing or not a string.
    pub fn get_str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get_str(key).unwrap_or(default)
    }

    /// The integer at `key`; `None` when missing or not an integer.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.values.get(key)?.as_i64()
    }

    /// The number at `key` (integer or float); `None` when missing or not a number.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.values.get(key)?.as_f64()
    }

    /// The boolean at `key`; `None` when missing or not a boolean.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.values.get(key)?.as_bool()
    }

    /// The value at `key` deserialized as `T`: `Ok(None)` when missing or `null`, an error naming
    /// the key when it has the wrong shape.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.values.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| Error::msg(format!("config key '{key}': {e}"))),
        }
    }

    /// The whole configuration deserialized as `T` (a `#[derive(Deserialize)]` struct).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(Value::Object(self.values.clone()))
            .map_err(|e| Error::msg(format!("invalid plugin config: {e}")))
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The keys, in the host's order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The configuration as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.values
    }
}
