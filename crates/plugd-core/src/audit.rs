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
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    kept: VecDeque<AuditEntry>,
    /// Entries ever recorded: the sequence number of the next one.
    recorded: u64,
}

impl AuditLog {
    /// Record a denied call.
    pub fn record(&self, plugin: &str, capability: &str, detail: &str) {
        tracing::warn!(target: "plugd::audit", plugin, capability, detail, "denied");
        let mut entries = self.entries.lock();
        if entries.kept.len() == AUDIT_CAPACITY {
            entries.kept.pop_front();
        }
        entries.recorded += 1;
        entries.kept.push_back(AuditEntry {
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
            .kept
            .iter()
            .filter(|e| plugin.is_none_or(|p| e.plugin == p))
            .cloned()
            .collect()
    }

    /// The entries recorded after the first `seen` ones (those still kept), and the number
    /// recorded so far, to pass as `seen` next time.
    pub fn since(&self, seen: u64) -> (Vec<AuditEntry>, u64) {
        let entries = self.entries.lock();
        let first_kept = entries.recorded - entries.kept.len() as u64;
        let skip = seen.saturating_sub(first_kept) as usize;
        let new = entries.kept.iter().skip(skip).cloned().collect();
        (new, entries.recorded)
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

    #[test]
    fn since_gives_what_came_after_a_mark() {
        let log = AuditLog::default();
        assert_eq!(log.since(0), (vec![], 0));
        log.record("p", "database", "1");
        log.record("p", "network", "2");
        let (new, mark) = log.since(0);
        assert_eq!(new.len(), 2);
        assert_eq!(mark, 2);
        log.record("q", "exec", "3");
        let (new, mark) = log.since(mark);
        assert_eq!(new.iter().map(|e| &e.detail[..]).collect::<Vec<_>>(), ["3"]);
        assert_eq!(mark, 3);
        assert!(log.since(mark).0.is_empty());
        // Entries pushed out of memory before they were read are skipped, not repeated.
        for i in 0..AUDIT_CAPACITY + 10 {
            log.record("p", "database", &i.to_string());
        }
        let (new, _) = log.since(mark);
        assert_eq!(new.len(), AUDIT_CAPACITY);
        assert_eq!(new[0].detail, "10");
    }
}
