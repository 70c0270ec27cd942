//! [`LogLevel`]: the level of one of a plugin's log lines, and the least level of its lines
//! the host keeps (`log_level:` of its host config entry).

use serde::{Deserialize, Serialize};

/// The level of a log line; ordered from `trace` (lowest) to `error` (highest).
///
/// ```
/// use plugd_manifest::LogLevel;
/// assert!(LogLevel::Debug < LogLevel::Warn);
/// assert_eq!("warn".parse::<LogLevel>(), Ok(LogLevel::Warn));
/// assert_eq!(LogLevel::Info.as_str(), "info");
/// assert_eq!(
///     "loud".parse::<LogLevel>().unwrap_err().to_string(),
///     "unknown log level 'loud': use trace, debug, info, warn or error"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

impl LogLevel {
    /// Every level, lowest first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    /// The level as written.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level name that is not one of [`LogLevel::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level '{0}': use trace, debug, info, warn or error")]
pub struct UnknownLogLevel(pub String);

impl std::str::FromStr for LogLevel {
    type Err = UnknownLogLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LogLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownLogLevel(s.to_string()))
    }
}

impl schemars::JsonSchema for LogLevel {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LogLevel".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The least level of the plugin's own log lines the host keeps: trace, debug, info, warn or error.",
            "type": "string",
            "enum": ["trace", "debug", "info", "warn", "error"]
        })
    }
}
