//! Standard WASI interfaces served from a plugin's own resources, to any component the runtime
//! loads (a plugd-contract plugin or a standard one): `wasi:keyvalue` (`store`, `batch`) from its
//! [`PluginStore`](plugd_core::PluginStore), `wasi:config/store` from its validated config,
//! `wasi:logging/logging` into its log stream. None needs a permission beyond what its plugd
//! equivalent needs (`storage`, `config.plugin-config`, `log.log`: always available); each keeps
//! the rules of that equivalent (key and value caps, quota, deadline, audit; log rate and level).
//!
//! Buckets: `open("")` and `open("default")` are the plugin's store itself, the keys plugd's
//! `storage` interface sees. `open(name)` is the part of that store whose keys start with
//! `bucket:<name>/`; a name is 1 to [`MAX_BUCKET_NAME_BYTES`] of ASCII letters, digits, `-`, `_`
//! and `.` (not `.` or `..`), so it can never leave the plugin's store nor reach another bucket.
//!
//! The WIT files are vendored under `wit/deps/` (see `wit/deps/README.md`).

use std::time::Instant;

use plugd_core::{HostError, LogLevel, MAX_KEY_BYTES, PluginStore};
use serde_json::{Map, Value};
use wasmtime::component::{HasSelf, Linker, Resource};

use crate::host::InstanceState;

wasmtime::component::bindgen!({
    path: ["wit/deps/keyvalue", "wit/deps/config", "wit/deps/logging"],
    inline: "
        package plugd:wasi-std;

        world wasi-std {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/batch@0.2.0-draft;
            import wasi:config/store@0.2.0-rc.1;
            import wasi:logging/logging@0.1.0-draft;
        }
    ",
    world: "wasi-std",
    // Storage goes to its backend within what is left of the guest call's deadline.
    imports: {
        "wasi:keyvalue/store": async,
        "wasi:keyvalue/batch": async,
    },
    with: {
        "wasi:keyvalue/store.bucket": Bucket,
    },
});

use wasi::config::store as config;
use wasi::keyvalue::{batch, store};
use wasi::logging::logging;

/// Longest bucket name accepted, bytes.
pub const MAX_BUCKET_NAME_BYTES: usize = 64;
/// Most keys one `list-keys` answers; the cursor of the answer fetches the next page.
pub const LIST_PAGE_KEYS: usize = 1_000;

/// The prefix of a named bucket's keys in the plugin's store.
const BUCKET_PREFIX: &str = "bucket:";

/// An open bucket: a prefix of the plugin's store (empty for the default bucket).
#[derive(Debug)]
pub struct Bucket {
    /// `bucket:<name>/`, or empty.
    prefix: String,
    /// What the guest called it, for error messages.
    name: String,
}

impl Bucket {
    /// The bucket `identifier` names (see the module's documentation for the rules).
    fn open(identifier: &str) -> Result<Bucket, String> {
        if identifier.is_empty() || identifier == "default" {
            return Ok(Bucket {
                prefix: String::new(),
                name: "default".into(),
            });
        }
        let shown = plugd_core::clean_text(identifier, MAX_BUCKET_NAME_BYTES);
        if identifier.len() > MAX_BUCKET_NAME_BYTES {
            return Err(format!(
                "bucket name {shown:?} is {} bytes, over the {MAX_BUCKET_NAME_BYTES}-byte limit",
                identifier.len()
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if !identifier.chars().all(allowed) || identifier == "." || identifier == ".." {
            return Err(format!(
                "bucket name {shown:?} is invalid: use ASCII letters, digits, '-', '_' and '.' (\"\" or \"default\" is the plugin's own store)"
            ));
        }
        Ok(Bucket {
            prefix: format!("{BUCKET_PREFIX}{identifier}/"),
            name: identifier.to_string(),
        })
    }

    /// The store key of the bucket's `key`.
    fn key(&self, key: &str) -> Result<String, String> {
        if key.is_empty() {
            return Err(format!("bucket '{}': a key must not be empty", self.name));
        }
        if key.contains('\0') {
            return Err(format!(
                "bucket '{}': key {:?} holds a NUL byte, which keys may not",
                self.name,
                plugd_core::clean_text(key, 64)
            ));
        }
        let room = MAX_KEY_BYTES - self.prefix.len();
        if key.len() > room {
            return Err(format!(
                "bucket '{}': a key of {} bytes is over the {room}-byte limit of its keys (storage keys are at most {MAX_KEY_BYTES} bytes, the bucket's prefix {:?} included)",
                self.name,
                key.len(),
                self.prefix
            ));
        }
        Ok(format!("{}{key}", self.prefix))
    }
}

/// Add the interfaces to a linker.
pub(crate) fn add_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    WasiStd::add_to_linker::<InstanceState, HasSelf<InstanceState>>(linker, |s| s)
}

fn other(e: HostError) -> store::Error {
    match e {
        HostError::Denied(_) => store::Error::AccessDenied,
        HostError::Invalid(m)
        | HostError::NotFound(m)
        | HostError::Unsupported(m)
        | HostError::Failed(m)
        | HostError::OverLimit { message: m, .. } => store::Error::Other(m),
        e => store::Error::Other(e.to_string()),
    }
}

impl InstanceState {
    /// The plugin's store, each call limited to what is left of the guest call's deadline.
    fn kv(&self) -> PluginStore {
        let left = self.deadline.saturating_duration_since(Instant::now());
        self.shared.store.with_timeout(left)
    }

    fn bucket(&self, r: &Resource<Bucket>) -> Result<&Bucket, store::Error> {
        self.table
            .get(r)
            .map_err(|e| store::Error::Other(format!("bucket handle: {e}")))
    }

    /// The store key of `key` in bucket `r`.
    fn store_key(&self, r: &Resource<Bucket>, key: &str) -> Result<String, store::Error> {
        self.bucket(r)?.key(key).map_err(store::Error::Other)
    }

    async fn kv_get(
        &mut self,
        r: &Resource<Bucket>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        let key = self.store_key(r, key)?;
        self.kv().get(&key).await.map_err(other)
    }

    /// A write, audited like `storage.set` (a quota refusal is recorded against the plugin).
    async fn kv_set(
        &mut self,
        r: &Resource<Bucket>,
        key: &str,
        value: &[u8],
    ) -> Result<(), store::Error> {
        let key = self.store_key(r, key)?;
        let written = self.kv().set(&key, value).await;
        self.shared
            .capabilities
            .auditor()
            .check(written, "storage", "keyvalue.set")
            .map_err(other)
    }

    async fn kv_delete(&mut self, r: &Resource<Bucket>, key: &str) -> Result<(), store::Error> {
        let key = self.store_key(r, key)?;
        self.kv().delete(&key).await.map(drop).map_err(other)
    }
}

impl store::Host for InstanceState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        let bucket = Bucket::open(&identifier).map_err(store::Error::Other)?;
        // The table is capped per instance (with the instance's open files): a guest opening
        // buckets without dropping them is refused, not given memory.
        self.table.push(bucket).map_err(|e| {
            store::Error::Other(format!(
                "cannot open bucket {:?}: {e} (drop buckets no longer used)",
                plugd_core::clean_text(&identifier, MAX_BUCKET_NAME_BYTES)
            ))
        })
    }
}

impl store::HostBucket for InstanceState {
    async fn get(
        &mut self,
        r: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        self.kv_get(&r, &key).await
    }

    async fn set(
        &mut self,
        r: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        self.kv_set(&r, &key, &value).await
    }

    async fn delete(&mut self, r: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        self.kv_delete(&r, &key).await
    }

    async fn exists(&mut self, r: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        Ok(self.kv_get(&r, &key).await?.is_some())
    }

    async fn list_keys(
        &mut self,
        r: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, store::Error> {
        let prefix = self.bucket(&r)?.prefix.clone();
        // Sorted; more than `plugd_core::MAX_LIST_KEYS` under the prefix is refused.
        let keys = self.kv().list(&prefix).await.map_err(other)?;
        let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let end = start.saturating_add(LIST_PAGE_KEYS).min(keys.len());
        let page = keys
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|k| k[prefix.len()..].to_string())
            .collect();
        Ok(store::KeyResponse {
            keys: page,
            cursor: (end < keys.len()).then_some(end as u64),
        })
    }

    async fn drop(&mut self, r: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl batch::Host for InstanceState {
    async fn get_many(
        &mut self,
        r: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.kv_get(&r, &key).await?;
            found.push(value.map(|v| (key, v)));
        }
        Ok(found)
    }

    async fn set_many(
        &mut self,
        r: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        for (key, value) in key_values {
            self.kv_set(&r, &key, &value).await?;
        }
        Ok(())
    }

    async fn delete_many(
        &mut self,
        r: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        for key in keys {
            self.kv_delete(&r, &key).await?;
        }
        Ok(())
    }
}

/// A config value as `wasi:config` gives it: a string as it is, any other JSON value as its JSON
/// text; `null` (an optional field left unset) is absent.
fn config_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl InstanceState {
    /// The plugin's validated config now (after its latest `on-config-change`).
    fn config_map(&self) -> Result<Map<String, Value>, config::Error> {
        serde_json::from_str(&self.shared.config_json.read())
            .map_err(|e| config::Error::Upstream(format!("the plugin's config: {e}")))
    }
}

impl config::Host for InstanceState {
    fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        Ok(self.config_map()?.get(&key).and_then(config_value))
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self
            .config_map()?
            .iter()
            .filter_map(|(k, v)| config_value(v).map(|v| (k.clone(), v)))
            .collect())
    }
}

fn level(level: logging::Level) -> LogLevel {
    match level {
        logging::Level::Trace => LogLevel::Trace,
        logging::Level::Debug => LogLevel::Debug,
        logging::Level::Info => LogLevel::Info,
        logging::Level::Warn => LogLevel::Warn,
        logging::Level::Error | logging::Level::Critical => LogLevel::Error,
    }
}

impl logging::Host for InstanceState {
    fn log(&mut self, l: logging::Level, context: String, message: String) {
        // The plugin's log stream: its level filter, its rate, its caps and escaping.
        let mut fields = Vec::with_capacity(2);
        if !context.is_empty() {
            fields.push(("context".to_string(), context));
        }
        if l == logging::Level::Critical {
            fields.push(("critical".to_string(), "true".to_string()));
        }
        self.shared.log.write(level(l), &message, &fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_stay_inside_the_plugins_store() {
        assert_eq!(Bucket::open("").unwrap().prefix, "");
        assert_eq!(Bucket::open("default").unwrap().prefix, "");
        assert_eq!(Bucket::open("sessions").unwrap().prefix, "bucket:sessions/");
        assert_eq!(Bucket::open("a.b-c_9").unwrap().prefix, "bucket:a.b-c_9/");
        for bad in [
            "a/b", "..", ".", "../other", "a\0b", "x:y", "spa ce", "é", "a\nb", "*",
        ] {
            let e = Bucket::open(bad).unwrap_err();
            assert!(e.contains("invalid"), "{bad:?}: {e}");
        }
        let long = "b".repeat(MAX_BUCKET_NAME_BYTES + 1);
        assert!(
            Bucket::open(&long)
                .unwrap_err()
                .contains("over the 64-byte limit")
        );
        assert!(Bucket::open(&"b".repeat(MAX_BUCKET_NAME_BYTES)).is_ok());
    }

    #[test]
    fn keys_are_literal_and_within_the_store_key_limit() {
        let b = Bucket::open("s").unwrap();
        assert_eq!(b.key("../x").unwrap(), "bucket:s/../x");
        assert_eq!(b.key("a/b").unwrap(), "bucket:s/a/b");
        assert!(b.key("").unwrap_err().contains("must not be empty"));
        assert!(b.key("a\0b").unwrap_err().contains("NUL"));
        let room = MAX_KEY_BYTES - "bucket:s/".len();
        assert_eq!(b.key(&"k".repeat(room)).unwrap().len(), MAX_KEY_BYTES);
        let e = b.key(&"k".repeat(room + 1)).unwrap_err();
        assert!(e.contains(&format!("{room}-byte limit")), "{e}");
        let d = Bucket::open("").unwrap();
        assert_eq!(
            d.key(&"k".repeat(MAX_KEY_BYTES)).unwrap().len(),
            MAX_KEY_BYTES
        );
    }

    #[test]
    fn config_values_are_strings_or_json_text() {
        assert_eq!(config_value(&Value::from("x")), Some("x".into()));
        assert_eq!(config_value(&Value::from(3)), Some("3".into()));
        assert_eq!(config_value(&Value::from(true)), Some("true".into()));
        assert_eq!(
            config_value(&serde_json::json!({"a": [1, "b"]})),
            Some(r#"{"a":[1,"b"]}"#.into())
        );
        assert_eq!(config_value(&Value::Null), None);
    }
}
