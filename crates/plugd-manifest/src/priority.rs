//! Priorities: an integer, or a class name (`infrastructure` 400, `security` 300, `middleware` 200,
//! `business` 100). Higher goes first, everywhere (docs/design.md#ordering).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};

/// A priority: higher runs (and starts) first.
///
/// Written as an integer or as a class name, which stands for a number:
/// `infrastructure` = 400, `security` = 300, `middleware` = 200, `business` = 100 (the default).
///
/// ```
/// use plugd_manifest::Priority;
///
/// assert_eq!("security".parse::<Priority>().unwrap(), Priority(300));
/// assert_eq!("-5".parse::<Priority>().unwrap(), Priority(-5));
/// assert!(Priority::INFRASTRUCTURE > Priority::BUSINESS);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub i32);

impl Priority {
    /// `infrastructure`: message bus, logging — starts first.
    pub const INFRASTRUCTURE: Priority = Priority(400);
    /// `security`: authentication, authorization.
    pub const SECURITY: Priority = Priority(300);
    /// `middleware`: request processing.
    pub const MIDDLEWARE: Priority = Priority(200);
    /// `business`: application features; the default.
    pub const BUSINESS: Priority = Priority(100);
    /// The default priority, [`Priority::BUSINESS`].
    pub const DEFAULT: Priority = Priority::BUSINESS;
    /// The class names and the numbers they stand for.
    pub const CLASSES: [(&'static str, Priority); 4] = [
        ("infrastructure", Priority::INFRASTRUCTURE),
        ("security", Priority::SECURITY),
        ("middleware", Priority::MIDDLEWARE),
        ("business", Priority::BUSINESS),
    ];

    /// The number.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::DEFAULT
    }
}

impl From<i32> for Priority {
    fn from(value: i32) -> Self {
        Priority(value)
    }
}

impl From<Priority> for i32 {
    fn from(value: Priority) -> Self {
        value.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A priority that is neither an integer nor a class name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid priority '{0}': expected an integer or one of infrastructure (400), security (300), middleware (200), business (100)"
)]
pub struct PriorityError(pub String);

/// Parse a priority: an integer (`200`, `-5`) or a class name (`infrastructure`, `security`,
/// `middleware`, `business`; any case).
///
/// ```
/// assert_eq!(plugd_manifest::parse_priority("Middleware"), Ok(200));
/// assert!(plugd_manifest::parse_priority("urgent").is_err());
/// ```
pub fn parse_priority(text: &str) -> Result<i32, PriorityError> {
    let trimmed = text.trim();
    if let Ok(n) = trimmed.parse::<i32>() {
        return Ok(n);
    }
    Priority::CLASSES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
        .map(|(_, p)| p.0)
        .ok_or_else(|| PriorityError(text.to_owned()))
}

impl FromStr for Priority {
    type Err = PriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_priority(s).map(Priority)
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(self.0)
    }
}

impl schemars::JsonSchema for Priority {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Priority".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                { "type": "integer" },
                { "type": "string", "enum": ["infrastructure", "security", "middleware", "business"] }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PriorityVisitor;

        impl Visitor<'_> for PriorityVisitor {
            type Value = Priority;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an integer priority or a class name (infrastructure, security, middleware, business)",
                )
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Priority, E> {
                i32::try_from(v)
                    .map(Priority)
                    .map_err(|_| E::custom(PriorityError(v.to_string())))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Priority, E> {
                i32::try_from(v)
                    .map(Priority)
                    .map_err(|_| E::custom(PriorityError(v.to_string())))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Priority, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(PriorityVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_numbers() {
        assert_eq!(parse_priority("infrastructure"), Ok(400));
        assert_eq!(parse_priority("SECURITY"), Ok(300));
        assert_eq!(parse_priority("middleware"), Ok(200));
        assert_eq!(parse_priority("business"), Ok(100));
        assert_eq!(parse_priority(" 250 "), Ok(250));
        assert_eq!(Priority::default(), Priority(100));
    }

    #[test]
    fn bad_priority_is_an_error() {
        let err = parse_priority("urgent").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid priority 'urgent': expected an integer or one of infrastructure (400), security (300), middleware (200), business (100)"
        );
    }

    #[test]
    fn deserializes_from_integers_and_names() {
        let p: Priority = serde_json::from_str("200").unwrap();
        assert_eq!(p, Priority(200));
        let p: Priority = serde_json::from_str("\"infrastructure\"").unwrap();
        assert_eq!(p, Priority(400));
        assert!(serde_json::from_str::<Priority>("\"urgent\"").is_err());
        assert!(serde_json::from_str::<Priority>("99999999999").is_err());
        assert!(serde_json::from_str::<Priority>("[1]").is_err());
        assert_eq!(serde_json::to_string(&Priority(7)).unwrap(), "7");
    }
}
