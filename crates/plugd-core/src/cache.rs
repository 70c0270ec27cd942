//! The `cache` capability: an in-memory key/value cache with TTLs, one namespace per plugin.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::HostError;

/// Entries one plugin may keep.
pub const MAX_ENTRIES_PER_PLUGIN: usize = 100_000;
/// Bytes one plugin's values may take.
pub const MAX_BYTES_PER_PLUGIN: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
struct Space {
    entries: HashMap<String, (Vec<u8>, Option<Instant>)>,
    bytes: usize,
}

/// The host's cache.
#[derive(Debug, Default)]
pub struct Cache {
    spaces: Mutex<HashMap<String, Space>>,
}

impl Cache {
    /// One plugin's namespace.
    pub fn plugin(self: &Arc<Self>, plugin: &str) -> PluginCache {
        PluginCache {
            cache: self.clone(),
            plugin: Arc::from(plugin),
        }
    }

    /// Forget a plugin's entries (unload).
    pub fn clear_plugin(&self, plugin: &str) {
        self.spaces.lock().remove(plugin);
    }
}

/// One plugin's view of the cache; it cannot name another plugin's keys.
#[derive(Debug, Clone)]
pub struct PluginCache {
    cache: Arc<Cache>,
    plugin: Arc<str>,
}

impl PluginCache {
    /// A value, unless absent or expired.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut spaces = self.cache.spaces.lock();
        let space = spaces.get_mut(&*self.plugin)?;
        match space.entries.get(key) {
            Some((_, Some(expiry))) if *expiry <= Instant::now() => {
                if let Some((v, _)) = space.entries.remove(key) {
                    space.bytes -= v.len();
                }
                None
            }
            Some((v, _)) => Some(v.clone()),
            None => None,
        }
    }

    /// Store a value, for `ttl` if given.
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), HostError> {
        if key.is_empty() || key.len() > 1024 {
            return Err(HostError::Invalid(
                "cache key must be 1 to 1024 bytes".into(),
            ));
        }
        let mut spaces = self.cache.spaces.lock();
        let space = spaces.entry(self.plugin.to_string()).or_default();
        let now = Instant::now();
        // Make room from expired entries before refusing.
        if space.entries.len() >= MAX_ENTRIES_PER_PLUGIN
            || space.bytes + value.len() > MAX_BYTES_PER_PLUGIN
        {
            let expired: Vec<String> = space
                .entries
                .iter()
                .filter(|(_, (_, e))| e.is_some_and(|e| e <= now))
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                if let Some((v, _)) = space.entries.remove(&k) {
                    space.bytes -= v.len();
                }
            }
        }
        let replaced = space.entries.get(key).map_or(0, |(v, _)| v.len());
        if !space.entries.contains_key(key) && space.entries.len() >= MAX_ENTRIES_PER_PLUGIN {
            return Err(HostError::Invalid(format!(
                "cache is full: at most {MAX_ENTRIES_PER_PLUGIN} entries per plugin"
            )));
        }
        if space.bytes - replaced + value.len() > MAX_BYTES_PER_PLUGIN {
            return Err(HostError::Invalid(format!(
                "cache is full: at most {MAX_BYTES_PER_PLUGIN} bytes per plugin"
            )));
        }
        space.bytes = space.bytes - replaced + value.len();
        space
            .entries
            .insert(key.to_string(), (value.to_vec(), ttl.map(|t| now + t)));
        Ok(())
    }

    /// Remove a key; true when it was there (and not expired).
    pub fn delete(&self, key: &str) -> bool {
        let mut spaces = self.cache.spaces.lock();
        let Some(space) = spaces.get_mut(&*self.plugin) else {
            return false;
        };
        match space.entries.remove(key) {
            Some((v, expiry)) => {
                space.bytes -= v.len();
                expiry.is_none_or(|e| e > Instant::now())
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_ttls() {
        let cache = Arc::new(Cache::default());
        let a = cache.plugin("a");
        let b = cache.plugin("b");
        a.set("k", b"1", None).unwrap();
        assert_eq!(a.get("k"), Some(b"1".to_vec()));
        assert_eq!(b.get("k"), None, "another plugin's key is invisible");
        a.set("short", b"x", Some(Duration::from_millis(1)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(a.get("short"), None, "expired");
        assert!(a.delete("k"));
        assert!(!a.delete("k"));
        cache.clear_plugin("a");
        assert!(a.set("", b"", None).is_err());
    }

    #[test]
    fn a_plugin_cannot_fill_memory() {
        let cache = Arc::new(Cache::default());
        let a = cache.plugin("a");
        let big = vec![0u8; MAX_BYTES_PER_PLUGIN / 2 - 8];
        a.set("one", &big, None).unwrap();
        a.set("two", &big, None).unwrap();
        assert!(a.set("three", &big, None).is_err(), "over the byte budget");
        a.set("two", b"small", None).unwrap();
        a.set("three", &big, None).unwrap();
    }
}
