//! How to reach Redis ([`RedisOptions`], [`AclMode`]) and what goes wrong ([`RedisError`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use plugd_core::BackendError;

/// Whether each plugin's commands run as a Redis ACL user of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AclMode {
    /// Use ACL users when the server has them and lets plugd manage them (Redis >= 6 with the
    /// `ACL` command allowed); otherwise the shared connection with the key prefix only.
    #[default]
    Auto,
    /// Require ACL users: [`crate::RedisCache::connect`] fails without them.
    On,
    /// One shared connection for every plugin; the key prefix alone keeps plugins apart (a
    /// managed Redis without `ACL SETUSER`).
    Off,
}

impl FromStr for AclMode {
    type Err = RedisError;

    /// `auto`, `on` or `off`.
    ///
    /// ```
    /// use plugd_redis::AclMode;
    /// assert_eq!("off".parse::<AclMode>().unwrap(), AclMode::Off);
    /// assert!("maybe".parse::<AclMode>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AclMode::Auto),
            "on" => Ok(AclMode::On),
            "off" => Ok(AclMode::Off),
            other => Err(RedisError::Invalid {
                field: "acl",
                message: format!("'{other}' is not one of auto, on, off"),
            }),
        }
    }
}

impl fmt::Display for AclMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AclMode::Auto => "auto",
            AclMode::On => "on",
            AclMode::Off => "off",
        })
    }
}

/// Where the Redis server is and how plugd uses it.
///
/// ```
/// use plugd_redis::{AclMode, RedisOptions};
/// let options = RedisOptions {
///     url: "redis://:secret@127.0.0.1:6379/0".into(),
///     ..RedisOptions::default()
/// };
/// assert_eq!(options.prefix, "plugd");
/// assert_eq!(options.acl, AclMode::Auto);
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` (`rediss://` is not built in).
    pub url: String,
    /// Connections shared by the plugins without an ACL user of their own and by the host's
    /// own commands (each multiplexes any number of calls).
    pub pool_size: usize,
    /// How long connecting (and each reconnection attempt) may take.
    pub connect_timeout: Duration,
    /// How long one cache call may take before it fails naming Redis.
    pub timeout: Duration,
    /// The first part of every key (`<prefix>:cache:<plugin>:<key>`) and of every ACL user
    /// name (`<prefix>-cache-<plugin>`): letters, digits and `_`.
    pub prefix: String,
    /// Whether each plugin gets an ACL user of its own.
    pub acl: AclMode,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            prefix: "plugd".into(),
            acl: AclMode::Auto,
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .field("acl", &self.acl)
            .finish()
    }
}

impl RedisOptions {
    pub(crate) fn check(&self) -> Result<(), RedisError> {
        let invalid = |field, message: &str| {
            Err(RedisError::Invalid {
                field,
                message: message.into(),
            })
        };
        if self.pool_size == 0 {
            return invalid("pool_size", "must be at least 1");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be more than 0");
        }
        if self.timeout.is_zero() {
            return invalid("timeout", "must be more than 0");
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return invalid(
                "prefix",
                "must be 1 to 64 letters, digits or '_' (it is part of key patterns and ACL user names)",
            );
        }
        Ok(())
    }
}

/// The URL with its password replaced by `***`: `redis://user:***@host:6379/0`.
///
/// ```
/// assert_eq!(plugd_redis::redact("redis://u:pw@h:1/2"), "redis://u:***@h:1/2");
/// assert_eq!(plugd_redis::redact("redis://h:1"), "redis://h:1");
/// ```
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        // Unparsable: keep the scheme and the host part, never what may be credentials.
        Err(_) => match url.rsplit_once('@') {
            Some((head, host)) => {
                let scheme = head.split_once("://").map_or("", |(s, _)| s);
                format!("{scheme}://***@{host}")
            }
            None => url.to_string(),
        },
    }
}

/// Why Redis could not be used; every message names Redis and its (redacted) address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// An option is wrong.
    #[error("redis option {field}: {message}")]
    Invalid {
        /// The [`RedisOptions`] field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The server could not be reached or refused the connection.
    #[error("redis at {url}: cannot connect: {message} (is Redis running and the url right?)")]
    Connect {
        /// The redacted URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The server did not answer in time.
    #[error("redis at {url}: {what} got no answer within {after}")]
    Timeout {
        /// The redacted URL.
        url: String,
        /// The command (`get`, `set`, `connect`).
        what: String,
        /// The timeout, `2s`.
        after: String,
    },
    /// A command failed.
    #[error("redis at {url}: {what} failed: {message}")]
    Command {
        /// The redacted URL.
        url: String,
        /// The command and the plugin (`get of plugin 'p'`).
        what: String,
        /// Why.
        message: String,
    },
    /// `acl: on` but the server has no ACL users or does not let plugd manage them.
    #[error(
        "redis at {url}: acl is on but ACL users are unavailable: {message}; use acl: auto or off for a server without ACL (a managed Redis)"
    )]
    AclUnavailable {
        /// The redacted URL.
        url: String,
        /// Why.
        message: String,
    },
}

impl From<RedisError> for BackendError {
    fn from(e: RedisError) -> Self {
        BackendError::new("redis", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("redis://:hunter2@localhost:6379/0"),
            "redis://:***@localhost:6379/0"
        );
        assert_eq!(redact("redis://u:p@w@[bad"), "redis://***@[bad");
        let options = RedisOptions {
            url: "redis://admin:hunter2@localhost".into(),
            ..RedisOptions::default()
        };
        assert!(!format!("{options:?}").contains("hunter2"));
    }

    #[test]
    fn prefixes_are_checked() {
        for bad in ["", "a:b", "a*", "a-b", "a b"] {
            let options = RedisOptions {
                prefix: bad.into(),
                ..RedisOptions::default()
            };
            assert!(options.check().is_err(), "{bad:?}");
        }
        assert!(RedisOptions::default().check().is_ok());
    }
}
