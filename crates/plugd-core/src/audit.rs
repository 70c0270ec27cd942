//! The audit log of denied capability calls: plugin, capability, time, detail. Kept in memory
//! (the newest [`AUDIT_CAPACITY`] entries) and written to the host log.

use std::collections::VecDeque;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;

/// Entries kept.
pub const AUDIT_CAPACITY: usize = 10_000;

/// One denied call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// The plugin.
    pub plugin: String,
    /// The permission it lacked (`database`, `router`, …) or the rule it broke.
    pub capability: String,
    /// RFC 3339 time.
    pub at: String,
    /// What it tried.
    pub detail: String,
}

/// The audit log.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: Mutex<VecDeque<AuditEntry>>,
}

impl AuditLog {
    /// Record a denied call.
    pub fn record(&self, plugin: &str, capability: &str, detail: &str) {
        tracing::warn!(target: "plugd::audit", plugin, capability, detail, "denied");
        let mut entries = self.entries.lock();
        if entries.len() == AUDIT_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(AuditEntry {
            plugin: plugin.to_string(),
            capability: capability.to_string(),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            detail: detail.to_string(),
        });
    }

    /// The entries, oldest first, optionally of one plugin.
    pub fn entries(&self, plugin: Option<&str>) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .iter()
            .filter(|e| plugin.is_none_or(|p| e.plugin == p))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries() {
        let log = AuditLog::default();
        for i in 0..AUDIT_CAPACITY + 5 {
            log.record("p", "database", &i.to_string());
        }
        let all = log.entries(None);
        assert_eq!(all.len(), AUDIT_CAPACITY);
        assert_eq!(all[0].detail, "5");
        assert!(log.entries(Some("other")).is_empty());
    }
}
