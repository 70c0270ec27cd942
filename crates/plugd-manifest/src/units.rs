//! Durations and byte sizes as written in config files.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serializer;
use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::HookType;

/// Parse a duration: a humantime string (`"30s"`, `"5m"`, `"500ms"`, `"1h 30m"`) or a bare
/// integer, taken as milliseconds.
///
/// ```
/// use std::time::Duration;
/// use plugd_manifest::parse_duration;
///
/// assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let trimmed = text.trim();
    if let Ok(ms) = trimmed.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(trimmed).map_err(|e| UnitError::Duration {
        text: text.to_string(),
        why: e.to_string(),
    })
}

/// A duration or size that does not parse; the message shows the text and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// Not a duration.
    #[error(
        "invalid duration '{text}': {why}; expected e.g. \"30s\", \"5m\", \"500ms\" or an integer number of milliseconds"
    )]
    Duration {
        /// The text as written.
        text: String,
        /// What the parser said.
        why: String,
    },
    /// Not a byte size (or one past 2^64 bytes).
    #[error(
        "invalid size '{0}': expected bytes as an integer or with a unit such as \"512KiB\", \"2MiB\", \"1MB\""
    )]
    Size(String),
}

/// Parse a byte size: an integer number of bytes, or an integer with a unit — `B`, `KB`/`MB`/`GB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB` (powers of 1024); `K`, `M`, `G` alone mean the binary
/// units. Case-insensitive.
///
/// ```
/// use plugd_manifest::parse_byte_size;
///
/// assert_eq!(parse_byte_size("2MiB"), Ok(2 * 1024 * 1024));
/// assert_eq!(parse_byte_size("1MB"), Ok(1_000_000));
/// assert_eq!(parse_byte_size("512 KiB"), Ok(512 * 1024));
/// assert!(parse_byte_size("lots").is_err());
/// ```
pub fn parse_byte_size(text: &str) -> Result<u64, UnitError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let invalid = || UnitError::Size(text.to_string());
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return Err(invalid()),
    };
    number.checked_mul(multiplier).ok_or_else(invalid)
}

/// A duration read from a config file (string or integer milliseconds).
pub(crate) struct DurationValue(pub(crate) Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"5m\", \"500ms\" or an integer number of milliseconds")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Ok(DurationValue(Duration::from_millis(v)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                u64::try_from(v)
                    .map(|ms| DurationValue(Duration::from_millis(ms)))
                    .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

impl schemars::JsonSchema for DurationValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: a humantime string (\"30s\", \"5m\", \"1h 30m\", \"500ms\") or an integer number of milliseconds.",
            "oneOf": [
                { "type": "string", "minLength": 1, "examples": ["500ms", "30s", "5m", "24h"] },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

/// A byte size read from a config file (integer or string with a unit).
pub(crate) struct ByteSize(pub(crate) u64);

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: an integer, or an integer with a unit: B, KB, MB, GB (powers of 1000), KiB, MiB, GiB or K, M, G (powers of 1024); case-insensitive.",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                {
                    "type": "string",
                    "pattern": "^\\s*[0-9]+\\s*([bB]|[kKmMgG]([iI]?[bB])?)?\\s*$",
                    "examples": ["512KiB", "2MiB", "1MB"]
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a string such as \"512KiB\", \"2MiB\", \"1MB\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_byte_size(v).map(ByteSize).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// `deserialize_with` for a [`Duration`].
pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    DurationValue::deserialize(d).map(|v| v.0)
}

/// `deserialize_with` for an optional [`Duration`] (use with `#[serde(default)]`).
pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    Option::<DurationValue>::deserialize(d).map(|v| v.map(|v| v.0))
}

/// `deserialize_with` for a byte size.
pub(crate) fn de_byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ByteSize::deserialize(d).map(|v| v.0)
}

/// `deserialize_with` for an optional byte size.
pub(crate) fn de_opt_byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<ByteSize>::deserialize(d).map(|v| v.map(|b| b.0))
}

/// `deserialize_with` for per-hook durations.
pub(crate) fn de_hook_durations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<HookType, Duration>, D::Error> {
    let map = BTreeMap::<HookType, DurationValue>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// `serialize_with` for a [`Duration`]: a humantime string (`"5s"`, `"1m 30s"`), the form the
/// config file takes.
pub(crate) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// `serialize_with` for an optional [`Duration`].
pub(crate) fn ser_opt_duration<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

/// `serialize_with` for per-hook durations.
pub(crate) fn ser_hook_durations<S: Serializer>(
    map: &BTreeMap<HookType, Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(
        map.iter()
            .map(|(k, v)| (k, humantime::format_duration(*v).to_string())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("").is_err());
        let d: DurationValue = serde_json::from_str("1500").unwrap();
        assert_eq!(d.0, Duration::from_millis(1500));
        let d: DurationValue = serde_json::from_str("\"2s\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(2));
        assert!(serde_json::from_str::<DurationValue>("-1").is_err());
        assert!(serde_json::from_str::<DurationValue>("true").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("100"), Ok(100));
        assert_eq!(parse_byte_size("100B"), Ok(100));
        assert_eq!(parse_byte_size("1kb"), Ok(1000));
        assert_eq!(parse_byte_size("1K"), Ok(1024));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert!(parse_byte_size("1.5MiB").is_err());
        assert!(parse_byte_size("MiB").is_err());
        assert!(parse_byte_size("99999999999999999999GiB").is_err());
        let s: ByteSize = serde_json::from_str("\"2MiB\"").unwrap();
        assert_eq!(s.0, 2 << 20);
    }
}
