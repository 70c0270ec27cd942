//! The hook points of the request path and the lifecycle.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};

use crate::format::did_you_mean;

/// A hook point. docs/design.md#hooks says when each runs and what it may do.
///
/// Written in snake_case (`pre_request`); [`FromStr`] also accepts the WIT spelling
/// (`pre-request`).
///
/// ```
/// use plugd_manifest::HookType;
///
/// let hook: HookType = "pre_request".parse().unwrap();
/// assert_eq!(hook, HookType::PreRequest);
/// assert_eq!(hook.to_string(), "pre_request");
/// assert_eq!(HookType::ALL.len(), 7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookType {
    /// Once, after every plugin has started.
    Startup,
    /// Once, before plugins are stopped.
    Shutdown,
    /// A request was received, before routing and middleware.
    PreRequest,
    /// The handler (or an early answer) has produced a response.
    PostRequest,
    /// Just before the response is written.
    PreResponse,
    /// After the response is written, off the response path.
    PostResponse,
    /// A handler, hook or middleware failed.
    Error,
}

impl HookType {
    /// Every hook type, in lifecycle order.
    pub const ALL: [HookType; 7] = [
        HookType::Startup,
        HookType::Shutdown,
        HookType::PreRequest,
        HookType::PostRequest,
        HookType::PreResponse,
        HookType::PostResponse,
        HookType::Error,
    ];

    /// The names of [`HookType::ALL`], as written in manifests.
    pub const NAMES: [&'static str; 7] = [
        "startup",
        "shutdown",
        "pre_request",
        "post_request",
        "pre_response",
        "post_response",
        "error",
    ];

    /// The snake_case name, as written in manifests: `pre_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookType::Startup => "startup",
            HookType::Shutdown => "shutdown",
            HookType::PreRequest => "pre_request",
            HookType::PostRequest => "post_request",
            HookType::PreResponse => "pre_response",
            HookType::PostResponse => "post_response",
            HookType::Error => "error",
        }
    }

    /// Whether the hook runs per request (all but `startup` and `shutdown`).
    pub fn is_request_hook(self) -> bool {
        !matches!(self, HookType::Startup | HookType::Shutdown)
    }
}

impl fmt::Display for HookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hook type name that is not one of [`HookType::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownHookType(pub String);

impl fmt::Display for UnknownHookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown hook type: {}", self.0)?;
        match did_you_mean(&self.0, HookType::NAMES) {
            Some(s) => write!(f, "; did you mean '{s}'?"),
            None => write!(f, " (expected one of {})", HookType::NAMES.join(", ")),
        }
    }
}

impl std::error::Error for UnknownHookType {}

impl FromStr for HookType {
    type Err = UnknownHookType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s.replace('-', "_");
        HookType::ALL
            .into_iter()
            .find(|h| h.as_str() == normalized)
            .ok_or_else(|| UnknownHookType(s.to_owned()))
    }
}

impl Serialize for HookType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl schemars::JsonSchema for HookType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HookType".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = HookType::ALL.iter().map(|h| h.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

impl<'de> Deserialize<'de> for HookType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HookVisitor;

        impl Visitor<'_> for HookVisitor {
            type Value = HookType;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a hook type ({})", HookType::NAMES.join(", "))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<HookType, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(HookVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (hook, name) in HookType::ALL.into_iter().zip(HookType::NAMES) {
            assert_eq!(hook.as_str(), name);
            assert_eq!(name.parse::<HookType>(), Ok(hook));
            assert_eq!(serde_json::to_string(&hook).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<HookType>(&format!("\"{name}\"")).unwrap(),
                hook
            );
        }
        assert_eq!(
            "post-response".parse::<HookType>(),
            Ok(HookType::PostResponse)
        );
        assert!(HookType::PreRequest.is_request_hook());
        assert!(!HookType::Startup.is_request_hook());
    }

    #[test]
    fn unknown_hook_type_suggests() {
        let err = "pre_reqest".parse::<HookType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown hook type: pre_reqest; did you mean 'pre_request'?"
        );
        let err = "zzz".parse::<HookType>().unwrap_err();
        assert!(
            err.to_string()
                .contains("expected one of startup, shutdown")
        );
    }
}
