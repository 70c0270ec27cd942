//! The `cache` capability (the WIT `cache` interface, `InitContext::cache`): key/value entries
//! with optional TTLs, one namespace per plugin. The port a backend implements
//! ([`CacheBackend`]), the policy the core keeps in front of it ([`PluginCache`]: the namespace,
//! the key and value caps, each plugin's quota, a deadline), and the in-memory backend
//! ([`MemoryCache`], the default).
//!
//! A backend only keeps bytes: the plugin is a separate argument (it never sees a key another
//! plugin could name), the quota travels with every write ([`CacheQuota`]) and the backend must
//! refuse a write that would go over it (`CacheSetError::Full`): a plugin must not be able to
//! fill the host's memory, or a shared cache server. A backend must not hold one lock for all
//! plugins across a call.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::error::BackendError;
use crate::error::{HostError, within};

/// Entries one plugin may keep.
pub const MAX_ENTRIES_PER_PLUGIN: usize = 100_000;
/// Bytes one plugin's values may take.
pub const MAX_BYTES_PER_PLUGIN: usize = 64 * 1024 * 1024;
/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// How long a cache call may take when the caller gives no deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one plugin may keep in the cache; passed with every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheQuota {
    /// Live entries.
    pub max_entries: usize,
    /// Bytes of live values.
    pub max_bytes: usize,
}

impl Default for CacheQuota {
    fn default() -> Self {
        CacheQuota {
            max_entries: MAX_ENTRIES_PER_PLUGIN,
            max_bytes: MAX_BYTES_PER_PLUGIN,
        }
    }
}

/// Why a write was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheSetError {
    /// The write would take the plugin over its quota (after expired entries were dropped).
    #[error("cache is full: at most {limit} {what} per plugin")]
    Full {
        /// `entries` or `bytes`.
        what: &'static str,
        /// The quota.
        limit: usize,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Where plugins' cache entries live. The core has checked the key before a call reaches it and
/// bounds each call by the caller's deadline; `plugin` is the plugin's name, a separate
/// namespace. An expired entry is absent for every call.
#[async_trait]
pub trait CacheBackend: Send + Sync + fmt::Debug + 'static {
    /// The value of `key`, unless absent or expired.
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError>;
    /// Store `value` under `key` (replacing it), for `ttl` if given; refuse with
    /// [`CacheSetError::Full`] what would take `plugin` over `quota`.
    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: CacheQuota,
    ) -> Result<(), CacheSetError>;
    /// Remove `key`; whether it was there (and not expired).
    async fn delete(&self, plugin: &str, key: &str) -> Result<bool, BackendError>;
    /// Forget every entry of `plugin` (it was unloaded).
    async fn clear(&self, plugin: &str) -> Result<(), BackendError>;
}

/// One plugin's view of the cache; it cannot name another plugin's keys. Cheap to clone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use plugd_core::{MemoryCache, PluginCache};
///
/// let backend = Arc::new(MemoryCache::default());
/// let (a, b) = (PluginCache::new("a", backend.clone()), PluginCache::new("b", backend));
/// a.set("k", b"1", None).await.unwrap();
/// assert_eq!(a.get("k").await.unwrap(), Some(b"1".to_vec()));
/// assert_eq!(b.get("k").await.unwrap(), None, "another plugin's namespace");
/// # });
/// ```
#[derive(Clone)]
pub struct PluginCache {
    plugin: Arc<str>,
    backend: Arc<dyn CacheBackend>,
    quota: CacheQuota,
    timeout: Duration,
}

impl fmt::Debug for PluginCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginCache")
            .field("plugin", &self.plugin)
            .field("backend", &self.backend)
            .field("quota", &self.quota)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn check_key(key: &str) -> Result<(), HostError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(HostError::Invalid(format!(
            "cache key must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

impl PluginCache {
    /// The namespace of `plugin` in `backend`, with the default quota.
    pub fn new(plugin: &str, backend: Arc<dyn CacheBackend>) -> PluginCache {
        PluginCache {
            plugin: Arc::from(plugin),
            backend,
            quota: CacheQuota::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same namespace with another quota.
    pub fn with_quota(mut self, quota: CacheQuota) -> PluginCache {
        self.quota = quota;
        self
    }

    /// The same namespace, each call limited to `timeout` (never longer than this handle's).
    pub fn with_timeout(&self, timeout: Duration) -> PluginCache {
        PluginCache {
            timeout: timeout.min(self.timeout),
            ..self.clone()
        }
    }

    /// The plugin this handle belongs to.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    async fn bounded<T, E: fmt::Display>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, HostError> {
        within("cache", what, self.timeout, call)
            .await?
            .map_err(|e| HostError::Failed(format!("cache.{what}: {e}")))
    }

    /// A value, unless absent or expired.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        check_key(key)?;
        self.bounded("get", self.backend.get(&self.plugin, key))
            .await
    }

    /// Store a value, for `ttl` if given. Over the plugin's quota: `HostError::Invalid`
    /// (`cache is full: at most 100000 entries per plugin`).
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), HostError> {
        check_key(key)?;
        if value.len() > self.quota.max_bytes {
            return Err(HostError::Invalid(
                CacheSetError::Full {
                    what: "bytes",
                    limit: self.quota.max_bytes,
                }
                .to_string(),
            ));
        }
        let call = self
            .backend
            .set(&self.plugin, key, value.to_vec(), ttl, self.quota);
        within("cache", "set", self.timeout, call)
            .await?
            .map_err(|e| match e {
                CacheSetError::Full { .. } => HostError::OverLimit {
                    limit: "cache.max_bytes",
                    message: e.to_string(),
                },
                e => HostError::Failed(format!("cache.set: {e}")),
            })
    }

    /// Remove a key; true when it was there (and not expired).
    pub async fn delete(&self, key: &str) -> Result<bool, HostError> {
        check_key(key)?;
        self.bounded("delete", self.backend.delete(&self.plugin, key))
            .await
    }

    /// Forget every entry of this plugin.
    pub async fn clear(&self) -> Result<(), HostError> {
        self.bounded("clear", self.backend.clear(&self.plugin))
            .await
    }
}

/// One plugin's entries in memory.
#[derive(Debug, Default)]
struct Space {
    entries: HashMap<String, (Vec<u8>, Option<Instant>)>,
    bytes: usize,
}

impl Space {
    fn remove(&mut self, key: &str) -> Option<(Vec<u8>, Option<Instant>)> {
        let removed = self.entries.remove(key);
        if let Some((v, _)) = &removed {
            self.bytes -= v.len();
        }
        removed
    }

    fn drop_expired(&mut self, now: Instant) {
        let bytes = &mut self.bytes;
        self.entries.retain(|_, (v, expiry)| {
            let live = expiry.is_none_or(|e| e > now);
            if !live {
                *bytes -= v.len();
            }
            live
        });
    }
}

/// The cache in memory (the default): lost when the process ends. A map per plugin behind its
/// own lock, so one plugin's writes (and the sweep of its expired entries when it reaches its
/// quota) never wait on another's.
#[derive(Debug, Default)]
pub struct MemoryCache {
    spaces: RwLock<HashMap<String, Arc<Mutex<Space>>>>,
}

impl MemoryCache {
    fn space(&self, plugin: &str) -> Arc<Mutex<Space>> {
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
impl CacheBackend for MemoryCache {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let space = self.space(plugin);
        let mut space = space.lock();
        match space.entries.get(key) {
            Some((_, Some(expiry))) if *expiry <= Instant::now() => {
                space.remove(key);
                Ok(None)
            }
            Some((v, _)) => Ok(Some(v.clone())),
            None => Ok(None),
        }
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: CacheQuota,
    ) -> Result<(), CacheSetError> {
        let space = self.space(plugin);
        let mut space = space.lock();
        let now = Instant::now();
        // Make room from expired entries before refusing.
        if space.entries.len() >= quota.max_entries || space.bytes + value.len() > quota.max_bytes {
            space.drop_expired(now);
        }
        let replaced = space.entries.get(key).map_or(0, |(v, _)| v.len());
        if !space.entries.contains_key(key) && space.entries.len() >= quota.max_entries {
            return Err(CacheSetError::Full {
                what: "entries",
                limit: quota.max_entries,
            });
        }
        if space.bytes - replaced + value.len() > quota.max_bytes {
            return Err(CacheSetError::Full {
                what: "bytes",
                limit: quota.max_bytes,
            });
        }
        space.bytes = space.bytes - replaced + value.len();
        space
            .entries
            .insert(key.to_string(), (value, ttl.map(|t| now + t)));
        Ok(())
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<bool, BackendError> {
        let space = self.space(plugin);
        let mut space = space.lock();
        Ok(space
            .remove(key)
            .is_some_and(|(_, expiry)| expiry.is_none_or(|e| e > Instant::now())))
    }

    async fn clear(&self, plugin: &str) -> Result<(), BackendError> {
        self.spaces.write().remove(plugin);
        Ok(())
    }
}

/// The conformance suite every [`CacheBackend`] runs against itself (`cargo test` of its crate).
#[cfg(any(test, feature = "testing"))]
pub mod conformance {
    use super::*;

    /// Run every check against `backend` (use plugin names no other test uses).
    pub async fn cache_backend(backend: Arc<dyn CacheBackend>) {
        namespaces_are_separate(backend.clone()).await;
        entries_expire(backend.clone()).await;
        quotas_hold(backend.clone()).await;
        clear_forgets_one_plugin(backend).await;
    }

    async fn namespaces_are_separate(backend: Arc<dyn CacheBackend>) {
        let a = PluginCache::new("cache-conformance-a", backend.clone());
        let b = PluginCache::new("cache-conformance-b", backend);
        let binary: Vec<u8> = (0..=255).collect();
        a.set("k", &binary, None).await.unwrap();
        assert_eq!(a.get("k").await.unwrap(), Some(binary));
        assert_eq!(b.get("k").await.unwrap(), None);
        assert!(!b.delete("k").await.unwrap());
        a.set("k", b"replaced", None).await.unwrap();
        assert_eq!(a.get("k").await.unwrap(), Some(b"replaced".to_vec()));
        assert!(a.delete("k").await.unwrap());
        assert!(!a.delete("k").await.unwrap());
        assert_eq!(a.get("k").await.unwrap(), None);
    }

    async fn entries_expire(backend: Arc<dyn CacheBackend>) {
        let c = PluginCache::new("cache-conformance-ttl", backend);
        c.set("short", b"x", Some(Duration::from_millis(50)))
            .await
            .unwrap();
        c.set("long", b"y", Some(Duration::from_secs(600)))
            .await
            .unwrap();
        assert_eq!(c.get("short").await.unwrap(), Some(b"x".to_vec()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(c.get("short").await.unwrap(), None, "expired");
        assert!(
            !c.delete("short").await.unwrap(),
            "an expired entry was not there"
        );
        assert_eq!(c.get("long").await.unwrap(), Some(b"y".to_vec()));
    }

    async fn quotas_hold(backend: Arc<dyn CacheBackend>) {
        let quota = CacheQuota {
            max_entries: 3,
            max_bytes: 10,
        };
        let c = PluginCache::new("cache-conformance-quota", backend.clone()).with_quota(quota);
        for k in ["a", "b", "c"] {
            c.set(k, b"12", None).await.unwrap();
        }
        let full = c.set("d", b"1", None).await.unwrap_err();
        assert_eq!(
            full.to_string(),
            "cache is full: at most 3 entries per plugin"
        );
        assert!(matches!(full, HostError::OverLimit { .. }), "{full:?}");
        c.set("a", b"1234", None).await.unwrap();
        let full = c.set("b", b"12345678", None).await.unwrap_err();
        assert_eq!(
            full.to_string(),
            "cache is full: at most 10 bytes per plugin"
        );
        // Another plugin's quota is its own.
        let other = PluginCache::new("cache-conformance-quota-2", backend).with_quota(quota);
        other.set("d", b"1", None).await.unwrap();
        // Deleting makes room.
        assert!(c.delete("a").await.unwrap());
        c.set("d", b"12345", None).await.unwrap();
    }

    async fn clear_forgets_one_plugin(backend: Arc<dyn CacheBackend>) {
        let a = PluginCache::new("cache-conformance-clear-a", backend.clone());
        let b = PluginCache::new("cache-conformance-clear-b", backend);
        a.set("k", b"1", None).await.unwrap();
        b.set("k", b"2", None).await.unwrap();
        a.clear().await.unwrap();
        assert_eq!(a.get("k").await.unwrap(), None);
        assert_eq!(b.get("k").await.unwrap(), Some(b"2".to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_backend_conforms() {
        conformance::cache_backend(Arc::new(MemoryCache::default())).await;
    }

    #[tokio::test]
    async fn keys_are_checked_before_the_backend() {
        let c = PluginCache::new("p", Arc::new(MemoryCache::default()));
        assert!(matches!(
            c.set("", b"", None).await,
            Err(HostError::Invalid(_))
        ));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(c.get(&long).await, Err(HostError::Invalid(_))));
    }

    #[tokio::test]
    async fn a_plugin_cannot_fill_memory() {
        let c = PluginCache::new("a", Arc::new(MemoryCache::default()));
        let big = vec![0u8; MAX_BYTES_PER_PLUGIN / 2 - 8];
        c.set("one", &big, None).await.unwrap();
        c.set("two", &big, None).await.unwrap();
        assert!(
            c.set("three", &big, None).await.is_err(),
            "over the byte budget"
        );
        c.set("two", b"small", None).await.unwrap();
        c.set("three", &big, None).await.unwrap();
        let huge = vec![0u8; MAX_BYTES_PER_PLUGIN + 1];
        assert!(matches!(
            c.set("four", &huge, None).await,
            Err(HostError::Invalid(_))
        ));
    }

    /// A backend that never answers: the caller's deadline holds.
    #[derive(Debug)]
    struct Stuck;

    #[async_trait]
    impl CacheBackend for Stuck {
        async fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, BackendError> {
            std::future::pending().await
        }
        async fn set(
            &self,
            _: &str,
            _: &str,
            _: Vec<u8>,
            _: Option<Duration>,
            _: CacheQuota,
        ) -> Result<(), CacheSetError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str, _: &str) -> Result<bool, BackendError> {
            std::future::pending().await
        }
        async fn clear(&self, _: &str) -> Result<(), BackendError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_call_is_bounded_by_the_callers_deadline() {
        let c = PluginCache::new("p", Arc::new(Stuck)).with_timeout(Duration::from_millis(20));
        let e = c.set("k", b"v", None).await.unwrap_err().to_string();
        assert_eq!(e, "cache.set did not finish within 20ms");
    }
}
