//! The audit log of denied capability calls and broken limits: plugin, capability, time,
//! detail. Kept in memory (the newest `limits.audit_entries` of each plugin, default
//! [`AUDIT_CAPACITY`]) and written to the host log.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use plugd_manifest::Permission;
use serde::Serialize;

use crate::error::HostError;
use crate::state::PluginState;

/// Where denied calls of one plugin are recorded: an error counted on the plugin and an entry in
/// the audit log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auditor {
    plugin: Arc<str>,
    state: Option<Arc<PluginState>>,
    log: Option<Arc<AuditLog>>,
}

impl Auditor {
    /// An auditor for `plugin`; either sink may be absent (tests, tools).
    pub fn new(plugin: &str, state: Option<Arc<PluginState>>, log: Option<Arc<AuditLog>>) -> Self {
        Auditor {
            plugin: Arc::from(plugin),
            state,
            log,
        }
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Record a denied call: count `message` as an error of the plugin and write an audit entry
    /// (`capability`, `detail`).
    pub fn record(&self, capability: &str, detail: &str, message: &str) {
        if let Some(state) = &self.state {
            state.record_error(message);
        }
        if let Some(log) = &self.log {
            // The entry is always kept; its line in the host's log is under the plugin's log
            // rate (a plugin denied 100,000 times a second must not flood the log).
            let say = self.state.as_ref().is_none_or(|s| {
                s.log()
                    .admit(capability.len() + detail.len().min(MAX_AUDIT_DETAIL_BYTES))
            });
            if say {
                log.record(&self.plugin, capability, detail);
            } else {
                log.keep(&self.plugin, capability, detail);
            }
        }
    }

    /// Check a permission: a missing one is the contract's `permission denied: plugin 'x' attempted
    /// database access without permission`, recorded with `call` as the audit detail.
    ///
    /// ```
    /// use plugd_core::{AuditLog, Auditor, Permission, PluginState};
    /// use std::sync::Arc;
    ///
    /// let (state, log) = (Arc::new(PluginState::default()), Arc::new(AuditLog::default()));
    /// let auditor = Auditor::new("p", Some(state.clone()), Some(log.clone()));
    /// let e = auditor.require(&[Permission::Cache].into(), Permission::Database, "database.query");
    /// assert_eq!(
    ///     e.unwrap_err().to_string(),
    ///     "permission denied: plugin 'p' attempted database access without permission"
    /// );
    /// assert_eq!(state.error_count(), 1);
    /// assert_eq!(log.entries(Some("p"))[0].detail, "database.query");
    /// ```
    pub fn require(
        &self,
        granted: &BTreeSet<Permission>,
        permission: Permission,
        call: &str,
    ) -> Result<(), HostError> {
        if granted.contains(&permission) {
            return Ok(());
        }
        let e = HostError::permission_denied(&self.plugin, permission);
        self.record(permission.as_str(), call, &e.to_string());
        Err(e)
    }

    /// Pass a result on; a [`HostError::Denied`] is recorded (detail: `call: message`), and so
    /// is a [`HostError::OverLimit`] (capability: the limit's name).
    pub fn check<T>(
        &self,
        r: Result<T, HostError>,
        capability: &str,
        call: &str,
    ) -> Result<T, HostError> {
        match &r {
            Err(HostError::Denied(m)) => self.record(capability, &format!("{call}: {m}"), m),
            Err(HostError::OverLimit { limit, message }) => {
                self.record(limit, &format!("{call}: {message}"), message)
            }
            _ => {}
        }
        r
    }
}

/// Entries kept of one plugin when its limits do not say (`limits.audit_entries`).
pub const AUDIT_CAPACITY: usize = 1_000;
/// Longest detail kept, bytes: details hold plugin strings (a command, a URL, a file name).
pub const MAX_AUDIT_DETAIL_BYTES: usize = 1024;

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

/// The audit log: each plugin has a share of its own (the newest `limits.audit_entries` of its
/// entries), so that one plugin's thousands of denials never push another's out.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Per plugin: its share and its entries with their sequence numbers, oldest first.
    plugins: HashMap<String, Share>,
    /// Entries ever recorded: the sequence number of the next one.
    recorded: u64,
}

#[derive(Debug)]
struct Share {
    capacity: usize,
    kept: VecDeque<(u64, AuditEntry)>,
}

impl AuditLog {
    /// Set how many entries of `plugin` are kept (its `limits.audit_entries`).
    pub fn set_share(&self, plugin: &str, capacity: usize) {
        let mut entries = self.entries.lock();
        let share = entries
            .plugins
            .entry(plugin.to_string())
            .or_insert_with(|| Share {
                capacity,
                kept: VecDeque::new(),
            });
        share.capacity = capacity.max(1);
        while share.kept.len() > share.capacity {
            share.kept.pop_front();
        }
    }

    /// Record a denied call: an entry, and a line in the host's log.
    pub fn record(&self, plugin: &str, capability: &str, detail: &str) {
        let detail = crate::logs::clean_text(detail, MAX_AUDIT_DETAIL_BYTES);
        tracing::warn!(target: "plugd::audit", plugin, capability, detail, "denied");
        self.keep_clean(plugin, capability, detail);
    }

    /// Record a denied call without a line in the host's log (over the plugin's log rate).
    pub fn keep(&self, plugin: &str, capability: &str, detail: &str) {
        let detail = crate::logs::clean_text(detail, MAX_AUDIT_DETAIL_BYTES);
        self.keep_clean(plugin, capability, detail);
    }

    fn keep_clean(&self, plugin: &str, capability: &str, detail: String) {
        let mut entries = self.entries.lock();
        let seq = entries.recorded;
        entries.recorded += 1;
        let share = entries
            .plugins
            .entry(plugin.to_string())
            .or_insert_with(|| Share {
                capacity: AUDIT_CAPACITY,
                kept: VecDeque::new(),
            });
        if share.kept.len() >= share.capacity {
            share.kept.pop_front();
        }
        share.kept.push_back((
            seq,
            AuditEntry {
                plugin: plugin.to_string(),
                capability: capability.to_string(),
                at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                detail,
            },
        ));
    }

    /// The entries kept with a sequence number of at least `from`, oldest first, optionally of
    /// one plugin.
    fn kept(&self, plugin: Option<&str>, from: u64) -> (Vec<AuditEntry>, u64) {
        let entries = self.entries.lock();
        let mut found: Vec<(u64, AuditEntry)> = entries
            .plugins
            .iter()
            .filter(|(name, _)| plugin.is_none_or(|p| p == name.as_str()))
            .flat_map(|(_, share)| share.kept.iter().filter(|(seq, _)| *seq >= from).cloned())
            .collect();
        found.sort_unstable_by_key(|(seq, _)| *seq);
        (
            found.into_iter().map(|(_, e)| e).collect(),
            entries.recorded,
        )
    }

    /// The entries, oldest first, optionally of one plugin.
    pub fn entries(&self, plugin: Option<&str>) -> Vec<AuditEntry> {
        self.kept(plugin, 0).0
    }

    /// The entries recorded after the first `seen` ones (those still kept), and the number
    /// recorded so far, to pass as `seen` next time.
    pub fn since(&self, seen: u64) -> (Vec<AuditEntry>, u64) {
        self.kept(None, seen)
    }
}

/// A size for messages: `10 MiB`, `64 KiB`, `1000 bytes`.
pub(crate) fn bytes_text(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_plugin_cannot_push_out_another_plugins_entries() {
        let log = AuditLog::default();
        log.record("quiet", "database", "the one that matters");
        for i in 0..20_000 {
            log.record("noisy", "exec", &i.to_string());
        }
        assert_eq!(log.entries(Some("quiet")).len(), 1);
        let noisy = log.entries(Some("noisy"));
        assert_eq!(noisy.len(), AUDIT_CAPACITY);
        assert_eq!(noisy[0].detail, (20_000 - AUDIT_CAPACITY).to_string());
        log.set_share("noisy", 10);
        assert_eq!(log.entries(Some("noisy")).len(), 10);
        let big = "\n".repeat(MAX_AUDIT_DETAIL_BYTES * 4);
        log.record("quiet", "network", &big);
        let detail = &log.entries(Some("quiet"))[1].detail;
        assert!(
            detail.len() < MAX_AUDIT_DETAIL_BYTES * 3 && !detail.contains('\n'),
            "{detail}"
        );
    }

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
