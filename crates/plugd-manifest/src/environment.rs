//! The operator's environment in a host config, applied to the parsed value tree before it is
//! checked:
//!
//! - `${VAR}` in every string the operator wrote is replaced from the environment (`$${` is a
//!   literal `${`); an unset variable is an error naming the key and the variable. A plugin's
//!   `config:` block is left as written here: it is expanded when the plugin loads, against its
//!   config schema ([`ConfigSchema::validate_with_env`](crate::ConfigSchema::validate_with_env)).
//! - `PLUGD_<KEY>__<KEY>…=value` overrides any key: `__` separates the levels, names are matched
//!   lowercased, and the value is read as a YAML scalar or flow collection (`true`, `30s`,
//!   `[a, b]`). A plugin's entry in `plugins.plugins` is named by its name (`-` written `_`) or
//!   its index. A variable without `__` overrides a top-level key when it names one
//!   (`PLUGD_DATA_DIR`); other `PLUGD_*` variables (`PLUGD_LOG`, `PLUGD_ADMIN_TOKEN`) are plugd's
//!   own and are not keys.
//!
//! Where the config's JSON Schema says a key is a string, a value from the environment stays a
//! string (`PLUGD_SERVER__LISTEN=8080` is `"8080"`); where it says the key is not, an expanded
//! `${VAR}` is read as a YAML scalar (`max_connections: ${MAX}` is a number).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::schema::substitute;

/// The environment variables a host config is read with: the process's
/// ([`Environment::process`]) or a given set (tests, an embedding application).
///
/// ```
/// use plugd_manifest::{Environment, Format, HostConfig};
///
/// let env = Environment::from_iter([
///     ("ADMIN_TOKEN", "s3cret"),
///     ("PLUGD_SERVER__LISTEN", "0.0.0.0:9000"),
/// ]);
/// let yaml = "admin:\n  token: ${ADMIN_TOKEN}\n";
/// let config = HostConfig::from_str_with_env(yaml, Format::Yaml, None, &env).unwrap();
/// assert_eq!(config.admin.token.as_deref(), Some("s3cret"));
/// assert_eq!(config.server.listen, "0.0.0.0:9000");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

/// The prefix of a variable that overrides a config key.
pub const ENV_PREFIX: &str = "PLUGD_";

impl Environment {
    /// The process's environment (variables that are not valid UTF-8 are left out).
    pub fn process() -> Environment {
        Environment {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// No variables at all: nothing is overridden, and any `${VAR}` is an error.
    pub fn empty() -> Environment {
        Environment::default()
    }

    /// One variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Environment {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Environment {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// Why the environment could not be applied (the host config's error kinds wrap it).
#[derive(Debug)]
pub(crate) enum EnvError {
    /// `${VAR}` at `field` names a variable that is not set.
    Unset { field: String, var: String },
    /// A `PLUGD_*` variable that names no key, or cannot be applied.
    Override { var: String, reason: String },
}

/// What [`apply`] did: whether the tree changed, and which key each override set (to name the
/// variable when the value is then refused).
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub changed: bool,
    pub overrides: Vec<(String, String)>,
}

impl Applied {
    /// The variable that set `field` (a dotted path) or a key under it, if one did.
    pub fn variable_for(&self, message: &str) -> Option<&str> {
        self.overrides
            .iter()
            .filter(|(path, _)| {
                message.starts_with(path.as_str())
                    && message[path.len()..].starts_with([':', '.', '['])
            })
            .map(|(_, var)| var.as_str())
            .next()
    }
}

/// Expand `${VAR}` over `tree` and apply the `PLUGD_*` overrides; `schema` is the config's JSON
/// Schema ([`host_config_json_schema`](crate::host_config_json_schema)).
pub(crate) fn apply(
    tree: &mut Value,
    env: &Environment,
    schema: &Value,
) -> Result<Applied, EnvError> {
    let mut applied = Applied::default();
    if tree.is_null() {
        *tree = Value::Object(Map::new());
    }
    let walk = Walk { env, root: schema };
    walk.expand(tree, schema, &mut String::new(), &mut applied.changed)?;
    for (name, value) in &env.vars {
        let Some(path) = override_path(name, schema) else {
            continue;
        };
        let field = walk.set(tree, &path, name, value)?;
        applied.changed = true;
        applied.overrides.push((field, name.clone()));
    }
    Ok(applied)
}

/// The lowercased keys a `PLUGD_*` variable names, or `None` when it is not an override.
fn override_path(name: &str, schema: &Value) -> Option<Vec<String>> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if segments.len() == 1 {
        // `PLUGD_LOG`, `PLUGD_ADMIN_TOKEN`: plugd's own variables, unless one names a key.
        schema.get("properties")?.get(&segments[0])?;
    }
    Some(segments)
}

/// The schema of a value about which nothing is said.
static ANY: Value = Value::Bool(true);

struct Walk<'a> {
    env: &'a Environment,
    root: &'a Value,
}

impl Walk<'_> {
    /// `schema`, with `$ref`s followed and an `Option`'s `anyOf: [T, null]` reduced to `T`.
    fn resolve<'s>(&'s self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..16 {
            if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
                match r
                    .strip_prefix("#/")
                    .and_then(|p| self.root.pointer(&format!("/{p}")))
                {
                    Some(target) => schema = target,
                    None => return schema,
                }
            } else if let Some(options) = schema
                .get("anyOf")
                .or_else(|| schema.get("oneOf"))
                .and_then(Value::as_array)
            {
                let mut structured = options.iter().filter(|o| {
                    let o = self.resolve(o);
                    o.get("properties").is_some() || o.get("items").is_some()
                });
                match structured.next() {
                    Some(one) => schema = one,
                    None => return schema,
                }
            } else {
                return schema;
            }
        }
        schema
    }

    /// Whether `schema` admits a value of JSON type `ty` (`string`, `number`, …); a schema that
    /// says nothing admits anything.
    fn admits(&self, schema: &Value, ty: &str) -> bool {
        let schema = match schema.get("$ref") {
            Some(_) => self.resolve(schema),
            None => schema,
        };
        if let Some(options) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            return options.iter().any(|o| self.admits(o, ty));
        }
        let matches = |t: &str| t == ty || (t == "number" && ty == "integer");
        match schema.get("type") {
            Some(Value::String(t)) => matches(t),
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(matches),
            _ => match schema.get("enum").and_then(Value::as_array) {
                Some(values) => values.iter().any(|v| json_type(v) == ty),
                None => true,
            },
        }
    }

    /// The schema of `key` inside an object schema: its property, else its
    /// `additionalProperties` (a map), else `None` (not a key).
    fn child<'s>(&'s self, schema: &'s Value, key: &str) -> Option<&'s Value> {
        let schema = self.resolve(schema);
        if let Some(p) = schema.get("properties").and_then(|p| p.get(key)) {
            return Some(p);
        }
        match schema.get("additionalProperties") {
            Some(Value::Bool(false)) => None,
            Some(other) => Some(other),
            None if schema.get("properties").is_some() => None,
            None => Some(&ANY),
        }
    }

    fn items<'s>(&'s self, schema: &'s Value) -> &'s Value {
        self.resolve(schema).get("items").unwrap_or(&ANY)
    }

    /// Expand `${VAR}` in every string under `value`; a string the schema does not admit is read
    /// as a YAML scalar once expanded, and a number or boolean where only a string is admitted
    /// becomes its text (as the file's own decoder reads an unquoted `8080` for a string key).
    fn expand(
        &self,
        value: &mut Value,
        schema: &Value,
        path: &mut String,
        changed: &mut bool,
    ) -> Result<(), EnvError> {
        match value {
            Value::String(s) => {
                if !s.contains('$') {
                    return Ok(());
                }
                let (text, replaced) =
                    substitute(s, &|name: &str| self.env.get(name).map(str::to_owned)).map_err(
                        |var| EnvError::Unset {
                            field: path.clone(),
                            var,
                        },
                    )?;
                if text != *s {
                    *changed = true;
                    *value = if replaced && !self.admits(schema, "string") {
                        scalar(&text)
                    } else {
                        Value::String(text)
                    };
                }
            }
            Value::Number(_) | Value::Bool(_) => {
                let ty = json_type(value);
                if !self.admits(schema, ty) && self.admits(schema, "string") {
                    *value = Value::String(scalar_text(value));
                }
            }
            Value::Array(items) => {
                let item_schema = self.items(schema);
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.expand(item, item_schema, path, changed)?;
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    // A plugin's own config is expanded when it loads, against its schema.
                    let plugin_config = k == "config" && is_plugin_entry(path);
                    match self.child(schema, k) {
                        Some(child) if !plugin_config => {
                            self.expand(item, child, path, changed)?;
                        }
                        // Unknown keys are reported by the decoder, with their position.
                        _ => {}
                    }
                    path.truncate(len);
                }
            }
            Value::Null => {}
        }
        Ok(())
    }

    /// Set the key `path` names to `text`; the dotted path of the key set.
    fn set(
        &self,
        tree: &mut Value,
        path: &[String],
        var: &str,
        text: &str,
    ) -> Result<String, EnvError> {
        let bad = |reason: String| EnvError::Override {
            var: var.to_owned(),
            reason,
        };
        let mut node = tree;
        let mut schema = self.root;
        let mut field = String::new();
        for (depth, segment) in path.iter().enumerate() {
            let last = depth + 1 == path.len();
            if segment.is_empty() {
                return Err(bad("an empty key (`___` or a trailing `__`)".into()));
            }
            if node.is_null() {
                *node = if self.resolve(schema).get("items").is_some() {
                    Value::Array(Vec::new())
                } else {
                    Value::Object(Map::new())
                };
            }
            match node {
                Value::Array(items) => {
                    let index = match segment.parse::<usize>() {
                        Ok(i) if i < items.len() => i,
                        Ok(i) => {
                            return Err(bad(format!(
                                "{field} has {} entries, no [{i}]",
                                items.len()
                            )));
                        }
                        Err(_) => items
                            .iter()
                            .position(|item| {
                                item.get("name")
                                    .and_then(Value::as_str)
                                    .is_some_and(|n| n.replace('-', "_").eq_ignore_ascii_case(segment))
                            })
                            .ok_or_else(|| {
                                bad(format!("{field} has no entry named '{segment}' (write an entry's name with `_` for `-`, or its index)"))
                            })?,
                    };
                    field.push_str(&format!("[{index}]"));
                    schema = self.items(schema);
                    node = &mut items[index];
                }
                Value::Object(map) => {
                    let Some(child) = self.child(schema, segment) else {
                        let known = self
                            .resolve(schema)
                            .get("properties")
                            .and_then(Value::as_object)
                            .map(|p| p.keys().cloned().collect::<Vec<_>>())
                            .unwrap_or_default();
                        let suggestion =
                            crate::format::did_you_mean(segment, known.iter().map(String::as_str))
                                .map(|s| format!("; did you mean '{s}'?"))
                                .unwrap_or_default();
                        let within = if field.is_empty() {
                            "the config"
                        } else {
                            &field
                        };
                        return Err(bad(format!(
                            "unknown key '{segment}' in {within}{suggestion}"
                        )));
                    };
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field.push_str(segment);
                    schema = child;
                    if last {
                        let mut value = scalar(text);
                        let ty = json_type(&value);
                        if !self.admits(schema, ty) && self.admits(schema, "string") {
                            value = Value::String(text.to_owned());
                        }
                        map.insert(segment.clone(), value);
                        return Ok(field);
                    }
                    if !(self.admits(schema, "object") || self.admits(schema, "array")) {
                        return Err(bad(format!(
                            "{field} is a single value: it has no key '{}'",
                            path[depth + 1]
                        )));
                    }
                    node = map.entry(segment.clone()).or_insert(Value::Null);
                }
                _ => {
                    return Err(bad(format!(
                        "{field} is a single value: it has no key '{segment}'"
                    )));
                }
            }
        }
        // The last segment was an index into a list: replace the entry.
        *node = scalar(text);
        Ok(field)
    }
}

/// Whether `path` (ending in `config`) is a plugin entry's `config`: `plugins.plugins[i].config`.
fn is_plugin_entry(path: &str) -> bool {
    path.strip_prefix("plugins.plugins[")
        .and_then(|rest| rest.strip_suffix("].config"))
        .is_some_and(|i| i.bytes().all(|b| b.is_ascii_digit()))
}

/// `text` read as YAML (a scalar, or a flow list or map); text YAML cannot read stays a string.
fn scalar(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::String(text.to_owned());
    }
    serde_saphyr::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
