//! Plugin key/value storage (the WIT `storage` interface, `InitContext::store`): the port a
//! backend implements ([`KvBackend`]), the policy the core keeps in front of it
//! ([`PluginStore`]: one key space per plugin, key and value caps, a quota of bytes and keys,
//! a bounded `list`, a deadline), and the in-memory backend ([`MemoryKv`], the default of a bare
//! `Host::builder()` and of tests).
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
/// Most keys one `list` answers: a longer list is refused (list a longer prefix).
pub const MAX_LIST_KEYS: usize = 10_000;

/// What one plugin's key space may hold (`limits.storage_bytes`, `limits.storage_keys`): a key
/// counts its key's and its value's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageQuota {
    /// Bytes of keys and values.
    pub bytes: u64,
    /// Keys.
    pub keys: u64,
}

impl Default for StorageQuota {
    /// The defaults of `limits`: 256 MiB and 100,000 keys.
    fn default() -> Self {
        StorageQuota {
            bytes: 256 * 1024 * 1024,
            keys: 100_000,
        }
    }
}

/// What one plugin's key space holds, as a backend counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvUsage {
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

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
    /// The first `limit` keys that start with `prefix` (literally: no wildcards), sorted.
    async fn list(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError>;
    /// Delete every key of `plugin`.
    async fn clear(&self, plugin: &str) -> Result<(), BackendError>;
    /// The length of `key`'s value, if it has one (without reading the value, where the engine
    /// can).
    async fn value_len(&self, plugin: &str, key: &str) -> Result<Option<u64>, BackendError>;
    /// What `plugin`'s key space holds: read once per key space, then kept up to date by the
    /// core.
    async fn usage(&self, plugin: &str) -> Result<KvUsage, BackendError>;
}

/// Writes of one key space that may be under way at once, the caller waiting or not: a write
/// whose caller stopped waiting still runs to its end (so that it is counted), and this bounds
/// what such writes hold.
pub const MAX_PENDING_WRITES: usize = 4;

/// The quota of one key space and what it holds: shared by every handle on the key space, so
/// that writes through any of them are counted once. Writes are counted one at a time (the
/// lock), which is what makes the count exact; each runs on a task of its own to its end, even
/// when its caller stops waiting, so that no write reaches the backend uncounted.
#[derive(Debug)]
struct Metered {
    quota: parking_lot::Mutex<StorageQuota>,
    /// `None` until the first write reads the usage from the backend.
    usage: tokio::sync::Mutex<Option<KvUsage>>,
    /// Writes under way ([`MAX_PENDING_WRITES`]).
    pending: Arc<tokio::sync::Semaphore>,
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
    metered: Arc<Metered>,
}

impl fmt::Debug for PluginStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginStore")
            .field("plugin", &self.plugin)
            .field("backend", &self.backend)
            .field("timeout", &self.timeout)
            .field("quota", &self.metered.quota)
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
    /// The key space of `plugin` in `backend`, under the default [`StorageQuota`].
    pub fn new(plugin: &str, backend: Arc<dyn KvBackend>) -> PluginStore {
        PluginStore::with_quota(plugin, backend, StorageQuota::default())
    }

    /// The key space of `plugin` in `backend`, under `quota`. Keep one handle per key space
    /// (clones share the count): two handles made separately each count only their own writes.
    pub fn with_quota(plugin: &str, backend: Arc<dyn KvBackend>, quota: StorageQuota) -> Self {
        PluginStore {
            plugin: Arc::from(plugin),
            backend,
            timeout: DEFAULT_TIMEOUT,
            metered: Arc::new(Metered {
                quota: parking_lot::Mutex::new(quota),
                usage: tokio::sync::Mutex::new(None),
                pending: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_WRITES)),
            }),
        }
    }

    /// Its quota.
    pub fn quota(&self) -> StorageQuota {
        *self.metered.quota.lock()
    }

    /// What it holds as last counted, without waiting (`None` before its first write, or while a
    /// write holds the count): for metrics.
    pub fn counted_usage(&self) -> Option<KvUsage> {
        self.metered.usage.try_lock().ok().and_then(|u| *u)
    }

    /// Change the quota (new limits); the count goes on, shared by every handle.
    pub fn set_quota(&self, quota: StorageQuota) {
        *self.metered.quota.lock() = quota;
    }

    /// What it holds: keys and bytes, as counted by the backend.
    pub async fn usage(&self) -> Result<KvUsage, HostError> {
        let store = self.clone();
        self.counted_write("usage", move || async move {
            let mut usage = store.metered.usage.lock().await;
            store.counted(&mut usage).await
        })
        .await
    }

    /// The usage under the lock, read from the backend the first time.
    async fn counted(&self, usage: &mut Option<KvUsage>) -> Result<KvUsage, HostError> {
        if let Some(u) = *usage {
            return Ok(u);
        }
        let u = self
            .unbounded("usage", self.backend.usage(&self.plugin))
            .await?;
        *usage = Some(u);
        Ok(u)
    }

    /// Run `write` (which takes the count's lock) on a task of its own: the caller waits at
    /// most its deadline, the write runs to its end either way, and at most
    /// [`MAX_PENDING_WRITES`] are under way.
    async fn counted_write<T, F, Fut>(&self, what: &str, write: F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, HostError>> + Send + 'static,
    {
        let permit = self.metered.pending.clone().try_acquire_owned().map_err(|_| {
            HostError::Failed(format!(
                "storage.{what}: {MAX_PENDING_WRITES} writes of plugin '{}' are still under way",
                self.plugin
            ))
        })?;
        let work = write();
        let task = tokio::spawn(async move {
            let result = work.await;
            drop(permit);
            result
        });
        within("storage", what, self.timeout, task)
            .await?
            .map_err(|e| HostError::Failed(format!("storage.{what}: {e}")))?
    }

    async fn unbounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, HostError> {
        call.await
            .map_err(|e| HostError::Failed(format!("storage.{what}: {e}")))
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

    /// Write a value (at most [`MAX_VALUE_BYTES`]), within the quota: a write that would take
    /// the key space over its bytes or keys is refused ("storage quota
    /// exceeded", [`HostError::OverLimit`]) and changes nothing. Replacing a value counts only the difference.
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(HostError::Invalid(format!(
                "storage value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            )));
        }
        let store = self.clone();
        let (key, value) = (key.to_string(), value.to_vec());
        self.counted_write("set", move || async move {
            store.set_counted(&key, value).await
        })
        .await
    }

    async fn set_counted(&self, key: &str, value: Vec<u8>) -> Result<(), HostError> {
        let mut usage = self.metered.usage.lock().await;
        let held = self.counted(&mut usage).await?;
        let old = self
            .unbounded("set", self.backend.value_len(&self.plugin, key))
            .await?;
        let entry = |len: u64| key.len() as u64 + len;
        let after = KvUsage {
            keys: held.keys + u64::from(old.is_none()),
            bytes: (held.bytes + entry(value.len() as u64)).saturating_sub(old.map_or(0, entry)),
        };
        let quota = self.quota();
        // Only growth is refused: a plugin over a quota lowered since can still shrink.
        if (after.bytes > quota.bytes && after.bytes > held.bytes)
            || (after.keys > quota.keys && after.keys > held.keys)
        {
            return Err(HostError::OverLimit {
                limit: "limits.storage_bytes",
                message: format!(
                    "storage quota exceeded: plugin '{}' holds {} keys of {} bytes; this write would make it {} keys of {} bytes, over its limits of {} keys and {} bytes (limits.storage_keys, limits.storage_bytes)",
                    self.plugin,
                    held.keys,
                    held.bytes,
                    after.keys,
                    after.bytes,
                    quota.keys,
                    quota.bytes
                ),
            });
        }
        self.unbounded("set", self.backend.set(&self.plugin, key, value))
            .await?;
        *usage = Some(after);
        Ok(())
    }

    /// Delete a key; true when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, HostError> {
        check_key(key)?;
        let store = self.clone();
        let key = key.to_string();
        self.counted_write(
            "delete",
            move || async move { store.delete_counted(&key).await },
        )
        .await
    }

    async fn delete_counted(&self, key: &str) -> Result<bool, HostError> {
        let mut usage = self.metered.usage.lock().await;
        let held = self.counted(&mut usage).await?;
        let old = self
            .unbounded("delete", self.backend.value_len(&self.plugin, key))
            .await?;
        let existed = self
            .unbounded("delete", self.backend.delete(&self.plugin, key))
            .await?;
        if let Some(len) = old.filter(|_| existed) {
            *usage = Some(KvUsage {
                keys: held.keys.saturating_sub(1),
                bytes: held.bytes.saturating_sub(key.len() as u64 + len),
            });
        }
        Ok(existed)
    }

    /// Keys that start with `prefix` (literally), sorted; more than [`MAX_LIST_KEYS`] of them
    /// is refused ([`HostError::Invalid`]): list a longer prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, HostError> {
        let keys = self
            .bounded(
                "list",
                self.backend.list(&self.plugin, prefix, MAX_LIST_KEYS + 1),
            )
            .await?;
        if keys.len() > MAX_LIST_KEYS {
            return Err(HostError::Invalid(format!(
                "storage.list: more than {MAX_LIST_KEYS} keys start with {prefix:?}; list a longer prefix"
            )));
        }
        Ok(keys)
    }

    /// Delete every key.
    pub async fn clear(&self) -> Result<(), HostError> {
        let store = self.clone();
        self.counted_write("clear", move || async move {
            let mut usage = store.metered.usage.lock().await;
            store
                .unbounded("clear", store.backend.clear(&store.plugin))
                .await?;
            *usage = Some(KvUsage::default());
            Ok(())
        })
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

    async fn list(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        Ok(self
            .space(plugin)
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn clear(&self, plugin: &str) -> Result<(), BackendError> {
        self.space(plugin).lock().clear();
        Ok(())
    }

    async fn value_len(&self, plugin: &str, key: &str) -> Result<Option<u64>, BackendError> {
        Ok(self.space(plugin).lock().get(key).map(|v| v.len() as u64))
    }

    async fn usage(&self, plugin: &str) -> Result<KvUsage, BackendError> {
        let space = self.space(plugin);
        let space = space.lock();
        Ok(KvUsage {
            keys: space.len() as u64,
            bytes: space.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
        })
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
        usage_is_counted_and_the_quota_holds(backend.clone()).await;
        clear_empties_one_plugin(backend).await;
    }

    async fn usage_is_counted_and_the_quota_holds(backend: Arc<dyn KvBackend>) {
        let quota = StorageQuota {
            bytes: 100,
            keys: 3,
        };
        let s = PluginStore::with_quota("conformance-quota", backend.clone(), quota);
        s.set("a", &[1; 40]).await.unwrap();
        s.set("b", &[2; 40]).await.unwrap();
        assert_eq!(s.usage().await.unwrap(), KvUsage { keys: 2, bytes: 82 });
        let e = s.set("c", &[3; 40]).await.unwrap_err();
        assert!(
            matches!(&e, HostError::OverLimit { message, .. } if message.starts_with("storage quota exceeded")),
            "{e}"
        );
        assert_eq!(
            s.get("c").await.unwrap(),
            None,
            "a refused write changes nothing"
        );
        s.set("a", &[1; 10]).await.unwrap();
        s.set("c", &[3; 10]).await.unwrap();
        assert_eq!(s.usage().await.unwrap(), KvUsage { keys: 3, bytes: 63 });
        assert!(
            s.set("d", b"").await.is_err(),
            "the key count is a quota too"
        );
        assert!(s.delete("c").await.unwrap());
        s.set("d", b"").await.unwrap();
        // A fresh handle reads the same usage from the backend.
        let again = PluginStore::with_quota("conformance-quota", backend.clone(), quota);
        assert_eq!(again.usage().await.unwrap(), KvUsage { keys: 3, bytes: 53 });
        // list is bounded by the backend, not after the fact.
        let keys = backend.list("conformance-quota", "", 2).await.unwrap();
        assert_eq!(keys, ["a", "b"]);
        again.clear().await.unwrap();
        assert_eq!(again.usage().await.unwrap(), KvUsage::default());
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

    #[tokio::test]
    async fn a_list_longer_than_the_cap_is_refused() {
        let s = PluginStore::new("p", Arc::new(MemoryKv::default()));
        for i in 0..=MAX_LIST_KEYS {
            s.set(&format!("k{i:05}"), b"").await.unwrap();
        }
        s.set("other", b"").await.unwrap();
        let e = s.list("k").await.unwrap_err().to_string();
        assert!(e.contains("more than 10000 keys start with \"k\""), "{e}");
        assert_eq!(s.list("k0000").await.unwrap().len(), 10);
        assert_eq!(s.list("o").await.unwrap(), ["other"]);
    }

    /// Memory, with writes that take a while.
    #[derive(Debug, Default)]
    struct Slow(MemoryKv);

    #[async_trait]
    impl KvBackend for Slow {
        async fn get(&self, p: &str, k: &str) -> Result<Option<Vec<u8>>, BackendError> {
            self.0.get(p, k).await
        }
        async fn set(&self, p: &str, k: &str, v: Vec<u8>) -> Result<(), BackendError> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.0.set(p, k, v).await
        }
        async fn delete(&self, p: &str, k: &str) -> Result<bool, BackendError> {
            self.0.delete(p, k).await
        }
        async fn list(&self, p: &str, x: &str, n: usize) -> Result<Vec<String>, BackendError> {
            self.0.list(p, x, n).await
        }
        async fn clear(&self, p: &str) -> Result<(), BackendError> {
            self.0.clear(p).await
        }
        async fn value_len(&self, p: &str, k: &str) -> Result<Option<u64>, BackendError> {
            self.0.value_len(p, k).await
        }
        async fn usage(&self, p: &str) -> Result<KvUsage, BackendError> {
            self.0.usage(p).await
        }
    }

    #[tokio::test]
    async fn a_write_the_caller_stopped_waiting_for_is_still_counted() {
        let quota = StorageQuota {
            bytes: 150,
            keys: 10,
        };
        let s = PluginStore::with_quota("p", Arc::new(Slow::default()), quota);
        let hurried = s.with_timeout(Duration::from_millis(10));
        let e = hurried.set("a", &[0; 99]).await.unwrap_err().to_string();
        assert!(e.contains("did not finish within"), "{e}");
        // The write lands after the caller gave up, and it is counted: the next one that would
        // go over the quota is refused.
        assert_eq!(
            s.usage().await.unwrap(),
            KvUsage {
                keys: 1,
                bytes: 100
            }
        );
        let e = s.set("b", &[0; 99]).await.unwrap_err();
        assert!(matches!(e, HostError::OverLimit { .. }), "{e}");
        // Writes still under way are bounded.
        for i in 0..MAX_PENDING_WRITES {
            let _ = hurried.set(&format!("x{i}"), b"").await;
        }
        let e = hurried.set("one-more", b"").await.unwrap_err().to_string();
        assert!(e.contains("still under way"), "{e}");
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
        async fn list(&self, _: &str, _: &str, _: usize) -> Result<Vec<String>, BackendError> {
            std::future::pending().await
        }
        async fn clear(&self, _: &str) -> Result<(), BackendError> {
            std::future::pending().await
        }
        async fn value_len(&self, _: &str, _: &str) -> Result<Option<u64>, BackendError> {
            std::future::pending().await
        }
        async fn usage(&self, _: &str) -> Result<KvUsage, BackendError> {
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
