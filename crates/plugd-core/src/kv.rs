//! Plugin key/value storage (the WIT `storage` interface, `InitContext::store`): the port a
//! backend implements ([`KvBackend`]), the policy the core keeps in front of it
//! ([`PluginStore`]: one key space per plugin, key and value caps, a deadline), and the
//! in-memory backend ([`MemoryKv`], the default of a bare `Host::builder()` and of tests).
//!
//! A backend only moves bytes: it never sees a key another plugin could name (the plugin is a
//! separate argument), and it is never reached without the caps checked. A backend must not hold
//! one lock for all plugins across its I/O: one plugin's storage must never stall another's.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::error::{BackendError, HostError, within};

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// How long a storage call may take when the caller gives no deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where plugins' key/value storage lives. The core has checked the key and value sizes before
/// a call reaches it, and bounds each call by the caller's deadline; `plugin` is the plugin's
/// name, a separate key space.
#[async_trait]
pub trait KvBackend: Send + Sync + fmt::Debug + 'static {
    /// The value of `key`, if any.
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError>;
    /// Set `key` to `value` (replacing it).
    async fn set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), BackendError>;
    /// Delete `key`; whether it existed.
    async fn delete(&self, plugin: &str, key: &str) -> Result<bool, BackendError>;
    /// The keys that start with `prefix` (literally: no wildcards), sorted.
    async fn list(&self, plugin: &str, prefix: &str) -> Result<Vec<String>, BackendError>;
    /// Delete every key of `plugin`.
    async fn clear(&self, plugin: &str) -> Result<(), BackendError>;
}

/// One plugin's key space: what a plugin (or the host on its behalf) holds. Cheap to clone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use plugd_core::{MemoryKv, PluginStore};
///
/// let backend = Arc::new(MemoryKv::default());
/// let (a, b) = (PluginStore::new("a", backend.clone()), PluginStore::new("b", backend));
/// a.set("greetings", b"3").await.unwrap();
/// assert_eq!(a.get("greetings").await.unwrap(), Some(b"3".to_vec()));
/// assert_eq!(b.get("greetings").await.unwrap(), None, "another plugin's key space");
/// # });
/// ```
#[derive(Clone)]
pub struct PluginStore {
    plugin: Arc<str>,
    backend: Arc<dyn KvBackend>,
    timeout: Duration,
}

impl fmt::Debug for PluginStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginStore")
            .field("plugin", &self.plugin)
            .field("backend", &self.backend)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn check_key(key: &str) -> Result<(), HostError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(HostError::Invalid(format!(
            "storage key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

impl PluginStore {
    /// The key space of `plugin` in `backend`.
    pub fn new(plugin: &str, backend: Arc<dyn KvBackend>) -> PluginStore {
        PluginStore {
            plugin: Arc::from(plugin),
            backend,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same key space, each call limited to `timeout` (never longer than this handle's):
    /// what is left of a guest call's deadline, say.
    pub fn with_timeout(&self, timeout: Duration) -> PluginStore {
        PluginStore {
            timeout: timeout.min(self.timeout),
            ..self.clone()
        }
    }

    /// The plugin this handle belongs to.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, HostError> {
        within("storage", what, self.timeout, call)
            .await?
            .map_err(|e| HostError::Failed(format!("storage.{what}: {e}")))
    }

    /// Read a value.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        check_key(key)?;
        self.bounded("get", self.backend.get(&self.plugin, key))
            .await
    }

    /// Write a value (at most [`MAX_VALUE_BYTES`]).
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(HostError::Invalid(format!(
                "storage value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            )));
        }
        self.bounded("set", self.backend.set(&self.plugin, key, value.to_vec()))
            .await
    }

    /// Delete a key; true when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, HostError> {
        check_key(key)?;
        self.bounded("delete", self.backend.delete(&self.plugin, key))
            .await
    }

    /// Keys that start with `prefix` (literally), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, HostError> {
        self.bounded("list", self.backend.list(&self.plugin, prefix))
            .await
    }

    /// Delete every key.
    pub async fn clear(&self) -> Result<(), HostError> {
        self.bounded("clear", self.backend.clear(&self.plugin))
            .await
    }
}

/// One plugin's keys in memory.
type MemorySpace = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// Storage in memory: lost when the process ends. A map per plugin behind its own lock.
#[derive(Debug, Default)]
pub struct MemoryKv {
    spaces: RwLock<HashMap<String, MemorySpace>>,
}

impl MemoryKv {
    fn space(&self, plugin: &str) -> MemorySpace {
        if let Some(s) = self.spaces.read().get(plugin) {
            return s.clone();
        }
        self.spaces
            .write()
            .entry(plugin.to_string())
            .or_default()
            .clone()
    }
}

#[async_trait]
impl KvBackend for MemoryKv {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.space(plugin).lock().get(key).cloned())
    }

    async fn set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        self.space(plugin).lock().insert(key.to_string(), value);
        Ok(())
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<bool, BackendError> {
        Ok(self.space(plugin).lock().remove(key).is_some())
    }

    async fn list(&self, plugin: &str, prefix: &str) -> Result<Vec<String>, BackendError> {
        Ok(self
            .space(plugin)
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn clear(&self, plugin: &str) -> Result<(), BackendError> {
        self.space(plugin).lock().clear();
        Ok(())
    }
}

/// The conformance suite every [`KvBackend`] runs against itself (`cargo test` of its crate):
/// what the core and plugins rely on, whatever the engine.
#[cfg(any(test, feature = "testing"))]
pub mod conformance {
    use super::*;

    /// Run every check against `backend` (use plugin names no other test uses).
    pub async fn kv_backend(backend: Arc<dyn KvBackend>) {
        key_spaces_are_separate(backend.clone()).await;
        values_are_bytes_and_replace(backend.clone()).await;
        list_is_literal_and_sorted(backend.clone()).await;
        clear_empties_one_plugin(backend).await;
    }

    async fn key_spaces_are_separate(backend: Arc<dyn KvBackend>) {
        let a = PluginStore::new("conformance-a", backend.clone());
        let b = PluginStore::new("conformance-b", backend);
        a.set("k", b"1").await.unwrap();
        assert_eq!(a.get("k").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(b.get("k").await.unwrap(), None);
        assert!(b.list("").await.unwrap().is_empty());
        assert!(!b.delete("k").await.unwrap());
        assert_eq!(a.get("k").await.unwrap(), Some(b"1".to_vec()));
        assert!(a.delete("k").await.unwrap());
        assert!(!a.delete("k").await.unwrap());
        assert_eq!(a.get("k").await.unwrap(), None);
    }

    async fn values_are_bytes_and_replace(backend: Arc<dyn KvBackend>) {
        let s = PluginStore::new("conformance-bytes", backend);
        let binary: Vec<u8> = (0..=255).collect();
        s.set("bin", &binary).await.unwrap();
        assert_eq!(s.get("bin").await.unwrap(), Some(binary));
        s.set("empty", b"").await.unwrap();
        assert_eq!(s.get("empty").await.unwrap(), Some(Vec::new()));
        s.set("bin", b"replaced").await.unwrap();
        assert_eq!(s.get("bin").await.unwrap(), Some(b"replaced".to_vec()));
        s.set("ключ/🔑", b"unicode").await.unwrap();
        assert_eq!(s.get("ключ/🔑").await.unwrap(), Some(b"unicode".to_vec()));
        let big = vec![7u8; 1 << 20];
        s.set("big", &big).await.unwrap();
        assert_eq!(s.get("big").await.unwrap().map(|v| v.len()), Some(1 << 20));
    }

    async fn list_is_literal_and_sorted(backend: Arc<dyn KvBackend>) {
        let s = PluginStore::new("conformance-list", backend);
        for k in ["user:2", "user:1", "user%", "user_", "session:1", "use"] {
            s.set(k, b"x").await.unwrap();
        }
        assert_eq!(
            s.list("user").await.unwrap(),
            ["user%", "user:1", "user:2", "user_"]
        );
        assert_eq!(s.list("user%").await.unwrap(), ["user%"]);
        assert_eq!(s.list("user_").await.unwrap(), ["user_"]);
        assert_eq!(s.list("").await.unwrap().len(), 6);
        assert!(s.list("nothing").await.unwrap().is_empty());
    }

    async fn clear_empties_one_plugin(backend: Arc<dyn KvBackend>) {
        let a = PluginStore::new("conformance-clear-a", backend.clone());
        let b = PluginStore::new("conformance-clear-b", backend);
        a.set("k", b"1").await.unwrap();
        b.set("k", b"2").await.unwrap();
        a.clear().await.unwrap();
        assert!(a.list("").await.unwrap().is_empty());
        assert_eq!(b.get("k").await.unwrap(), Some(b"2".to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_backend_conforms() {
        conformance::kv_backend(Arc::new(MemoryKv::default())).await;
    }

    #[tokio::test]
    async fn keys_and_values_are_capped_before_the_backend() {
        let s = PluginStore::new("p", Arc::new(MemoryKv::default()));
        assert!(matches!(s.get("").await, Err(HostError::Invalid(_))));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            s.set(&long, b"v").await,
            Err(HostError::Invalid(_))
        ));
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert!(matches!(s.set("k", &big).await, Err(HostError::Invalid(_))));
    }

    /// A backend that never answers: the caller's deadline holds.
    #[derive(Debug)]
    struct Stuck;

    #[async_trait]
    impl KvBackend for Stuck {
        async fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, BackendError> {
            std::future::pending().await
        }
        async fn set(&self, _: &str, _: &str, _: Vec<u8>) -> Result<(), BackendError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str, _: &str) -> Result<bool, BackendError> {
            std::future::pending().await
        }
        async fn list(&self, _: &str, _: &str) -> Result<Vec<String>, BackendError> {
            std::future::pending().await
        }
        async fn clear(&self, _: &str) -> Result<(), BackendError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_call_is_bounded_by_the_callers_deadline() {
        let s = PluginStore::new("p", Arc::new(Stuck)).with_timeout(Duration::from_millis(20));
        let e = s.get("k").await.unwrap_err().to_string();
        assert_eq!(e, "storage.get did not finish within 20ms");
    }
}
