//! A plugin's own view of its health ([`Health`]) and its last answer ([`HealthReport`]). The
//! host polls and summarises them (`host/health.rs`).

use std::time::SystemTime;

use serde::Serialize;

/// A plugin's own view of its health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "message", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Health {
    /// All well.
    Healthy,
    /// Working, with a problem worth showing.
    Degraded(String),
    /// Not working; shown, not stopped.
    Unhealthy(String),
}

/// A plugin's answer to a health check, and when it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthReport {
    /// The answer.
    #[serde(flatten)]
    pub health: Health,
    /// When it was given (RFC 3339).
    pub checked_at: String,
}

impl HealthReport {
    pub(crate) fn now(health: Health) -> HealthReport {
        HealthReport {
            health,
            checked_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }
    }
}

pub(crate) fn health_label(h: &Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Degraded(_) => "degraded",
        Health::Unhealthy(_) => "unhealthy",
    }
}
