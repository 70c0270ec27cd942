//! The Redis backend of plugd's `cache` capability: [`RedisCache`] implements
//! [`plugd_core::CacheBackend`] on a Redis server that several plugd instances share.
//!
//! - Entries are `<prefix>:cache:<plugin>:<key>`; a plugin never names another's keys.
//! - Each plugin's quota ([`plugd_core::CacheQuota`]) holds across instances: the books and the
//!   write are one Lua script (`EVALSHA`, `EVAL` when the server does not know it yet).
//! - With ACL users ([`AclMode`]), each plugin's commands run as a Redis user that may touch
//!   only its own keys and run only the cache's commands.
//! - A lost server is an error naming Redis within [`RedisOptions::timeout`]; the same value
//!   reconnects by itself when the server is back.
//!
//! ```no_run
//! # async fn run() -> Result<(), plugd_redis::RedisError> {
//! use plugd_redis::{RedisCache, RedisOptions};
//! let cache = RedisCache::connect(&RedisOptions {
//!     url: "redis://127.0.0.1:6379".into(),
//!     ..RedisOptions::default()
//! })
//! .await?;
//! cache.ping().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod cache;
mod options;

pub use cache::RedisCache;
pub use options::{AclMode, RedisError, RedisOptions, redact};
/// The client crate, for [`RedisCache::plugin_connection`]'s connection type.
pub use redis;
