//! From the host config to candidates: reading an entry (manifest, grants, config, package
//! check), the placeholders of plugins that failed or are disabled, native plugins, deadlines,
//! and the framework and dependency checks that order them.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use plugd_manifest::{Manifest, PluginEntry};

use crate::access::RequestAccess;
use crate::audit::Auditor;
use crate::check::{Checked, check_entry, check_package, framework_error, merged_before_after};
use crate::error::LoadError;
use crate::loaded::{ABSENT, CallLimits, Loaded};
use crate::order::{OrderError, OrderNode, order_nodes};
use crate::state::{DisabledBy, PluginState, Status};

use super::Host;
use super::builder::Native;

/// A plugin read from the config, ready to order.
pub(crate) struct Candidate {
    pub(crate) loaded: Loaded,
    pub(super) dir: Option<PathBuf>,
    pub(super) entry: Option<PluginEntry>,
    /// The component bytes the package check verified (see [`LoaderContext::component`]),
    /// until the loader takes them.
    pub(super) component: Option<Arc<[u8]>>,
    pub(super) priority: i32,
    /// `before`/`after` of the manifest and the config entry together.
    pub(super) before: Vec<String>,
    pub(super) after: Vec<String>,
    /// Why it cannot run, if it cannot.
    pub(super) failure: Option<String>,
}

impl Host {
    pub(super) fn limits(&self, entry: Option<&PluginEntry>) -> CallLimits {
        let global = &self.inner.config.plugins.limits;
        let mut limits = CallLimits {
            timeout: global.timeout,
            hook_timeouts: global.hook_timeouts.clone(),
            // The wasm runtime's default pool: one instance per tokio worker.
            instances: global.instances.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
            }),
        };
        if let Some(o) = entry.and_then(|e| e.limits.as_ref()) {
            if let Some(t) = o.timeout {
                limits.timeout = t;
            }
            if let Some(n) = o.instances {
                limits.instances = n;
            }
            limits
                .hook_timeouts
                .extend(o.hook_timeouts.iter().map(|(k, v)| (*k, *v)));
        }
        limits
    }

    /// Read one config entry: manifest, name, grants, config (see [`check_entry`]).
    pub(crate) fn read_entry(&self, entry: &PluginEntry) -> Result<Candidate, LoadError> {
        let Checked {
            manifest,
            granted,
            config,
            priority,
            before,
            after,
        } = check_entry(entry)?;
        let component = check_package(
            &*self.inner.admission,
            entry,
            &manifest,
            &self.inner.config.plugins,
        )?;
        let mut loaded = self.placeholder(entry, Some(manifest));
        loaded.access = Arc::new(RequestAccess::new(&entry.name, &granted, Some(entry)));
        loaded.granted = granted;
        loaded.config = ArcSwap::from_pointee(config);
        loaded.assets = entry
            .path
            .join("assets")
            .canonicalize()
            .ok()
            .filter(|p| p.is_dir());
        Ok(Candidate {
            loaded,
            dir: Some(entry.path.clone()),
            entry: Some(entry.clone()),
            component,
            priority,
            before,
            after,
            failure: None,
        })
    }

    /// The config's plugin entries, plus, with `plugins.autoload`, an entry with no grants for
    /// every plugin folder of `plugins.directory` the config does not list.
    pub(super) fn entries(&self, natives: &[Native]) -> Vec<PluginEntry> {
        let plugins = &self.inner.config.plugins;
        let mut entries = plugins.plugins.clone();
        if !plugins.autoload {
            return entries;
        }
        let Ok(dir) = std::fs::read_dir(&plugins.directory) else {
            tracing::warn!(directory = %plugins.directory.display(), "plugins.autoload: cannot read the plugins directory");
            return entries;
        };
        let mut found: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .filter(|p| Manifest::FILE_NAMES.iter().any(|f| p.join(f).exists()))
            .collect();
        found.sort();
        for path in found {
            let listed = entries.iter().any(|e| e.path == path);
            let name = match Manifest::from_path(&path) {
                Ok(m) => m.name,
                Err(_) => path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let taken = entries.iter().any(|e| e.name == name)
                || natives.iter().any(|n| n.manifest.name == name);
            if !listed && !taken {
                tracing::info!(plugin = %name, path = %path.display(), "autoloading an unlisted plugin, with no grants");
                entries.push(PluginEntry::new(name, path));
            }
        }
        entries
    }

    /// A candidate for a config entry that could not be read.
    pub(super) fn failed_entry(&self, entry: &PluginEntry, error: &LoadError) -> Candidate {
        let loaded = self.placeholder(entry, None);
        loaded.state.fail(error.to_string());
        Candidate {
            loaded,
            dir: None,
            entry: Some(entry.clone()),
            component: None,
            priority: entry.priority.unwrap_or(100),
            before: entry.before.clone(),
            after: entry.after.clone(),
            failure: Some(error.to_string()),
        }
    }

    /// A plugin the host lists but does not run: one that failed to load, or one the operator
    /// disabled (status `disabled`; its manifest is read for display when it can be).
    pub(super) fn placeholder(&self, entry: &PluginEntry, manifest: Option<Manifest>) -> Loaded {
        let state = self.new_state(&entry.name, Some(entry));
        // Until its grants are checked, the operator's grants bound what it guards when it
        // fails closed without ever running.
        let access = RequestAccess::new(&entry.name, &entry.granted(), Some(entry));
        let declared = manifest.as_ref().and_then(|m| m.failure_policy);
        Loaded {
            name: entry.name.clone(),
            kind: "wasm",
            enabled: entry.enabled,
            plugin: ABSENT.clone(),
            auditor: self.auditor(&entry.name, &state),
            state,
            failure_policy: entry.failure_policy.max(declared.unwrap_or_default()),
            access: Arc::new(access),
            manifest,
            limits: self.limits(Some(entry)),
            granted: BTreeSet::new(),
            config: ArcSwap::default(),
            store: self.storage(&entry.name),
            registrations: ArcSwap::default(),
            assets: None,
            tasks: Default::default(),
            capabilities: None,
            gate: self.gate(&entry.name),
            entry: parking_lot::RwLock::new(Some(entry.clone())),
        }
    }

    /// The dotted key of a plugin's entry in the host config, for errors that say what to change:
    /// `plugins.plugins[2]`, or `plugins.plugins[<new entry for 'x'>]` when it has none.
    pub(crate) fn entry_key(&self, name: &str) -> String {
        match self
            .inner
            .config
            .plugins
            .plugins
            .iter()
            .position(|e| e.name == name)
        {
            Some(i) => format!("plugins.plugins[{i}]"),
            None => format!("plugins.plugins[<new entry for '{name}'>]"),
        }
    }

    pub(super) fn auditor(&self, name: &str, state: &Arc<PluginState>) -> Auditor {
        Auditor::new(name, Some(state.clone()), Some(self.inner.audit.clone()))
    }

    pub(super) fn disabled_entry(&self, entry: &PluginEntry) -> Loaded {
        let manifest = Manifest::from_path(&entry.path)
            .ok()
            .filter(|m| m.name == entry.name);
        let loaded = self.placeholder(entry, manifest);
        loaded.state.set_disabled_by(Some(DisabledBy::Operator));
        loaded.state.set_status(Status::Disabled);
        loaded
    }

    /// The live state of a new plugin record: its threshold, supervision and CPU budget from its
    /// config entry (or the global settings), connected to the supervisor.
    pub(super) fn new_state(&self, name: &str, entry: Option<&PluginEntry>) -> Arc<PluginState> {
        let plugins = &self.inner.config.plugins;
        let state = PluginState::new(name);
        let (threshold, supervision, limits) = match entry {
            Some(e) => (
                plugins.error_threshold_for(e),
                plugins.supervision_for(e),
                plugins.limits_for(e),
            ),
            None => (
                plugins.error_threshold.clone(),
                plugins.supervision.clone(),
                plugins.limits.clone(),
            ),
        };
        state.set_error_threshold(threshold);
        state.set_supervision(supervision);
        state.set_cpu_budget(limits.max_cpu_percent);
        state
            .log()
            .set_limits(crate::logs::LogLimits::from(&limits));
        if let Some(level) = entry.and_then(|e| e.log_level) {
            state.log().set_level(level);
        }
        self.inner
            .audit
            .set_share(name, limits.audit_entries as usize);
        state.connect(self.inner.notices.clone());
        Arc::new(state)
    }

    /// The config entry of a plugin: listed in the config, or found by `plugins.autoload`.
    pub(crate) fn entry_for(&self, name: &str) -> Option<PluginEntry> {
        // The entry in force: a config reload may have replaced the file's.
        if let Some(e) = self.find(name).and_then(|p| p.entry.read().clone()) {
            return Some(e);
        }
        if let Some(e) = self.inner.config.plugin(name) {
            return Some(e.clone());
        }
        if !self.inner.config.plugins.autoload {
            return None;
        }
        self.entries(&[]).into_iter().find(|e| e.name == name)
    }

    pub(super) fn native_candidate(&self, native: Native) -> Result<Candidate, LoadError> {
        let entry = self.inner.config.plugin(&native.manifest.name).cloned();
        let granted = match &entry {
            Some(e) => plugd_manifest::effective_permissions(&native.manifest, e)
                .map_err(|e| LoadError::Invalid(e.to_string()))?,
            None => native.manifest.permissions.clone(),
        };
        let raw = entry.as_ref().map(|e| e.config.clone()).unwrap_or_default();
        let config = native
            .manifest
            .config
            .validate(&raw)
            .map_err(|e| LoadError::Config {
                plugin: native.manifest.name.clone(),
                message: e.to_string(),
            })?;
        let priority = entry
            .as_ref()
            .and_then(|e| e.priority)
            .or(native.manifest.priority)
            .unwrap_or(100);
        let (before, after) = merged_before_after(&native.manifest, entry.as_ref());
        let state = self.new_state(&native.manifest.name, entry.as_ref());
        Ok(Candidate {
            loaded: Loaded {
                name: native.manifest.name.clone(),
                kind: native.plugin.kind(),
                enabled: entry.as_ref().is_none_or(|e| e.enabled),
                plugin: native.plugin,
                auditor: self.auditor(&native.manifest.name, &state),
                state,
                failure_policy: entry
                    .as_ref()
                    .map(|e| e.failure_policy)
                    .unwrap_or_default()
                    .max(native.manifest.failure_policy.unwrap_or_default()),
                access: Arc::new(RequestAccess::new(
                    &native.manifest.name,
                    &granted,
                    entry.as_ref(),
                )),
                limits: self.limits(entry.as_ref()),
                granted,
                config: ArcSwap::from_pointee(config),
                store: self.storage(&native.manifest.name),
                registrations: ArcSwap::default(),
                assets: None,
                tasks: Default::default(),
                capabilities: None,
                gate: self.gate(&native.manifest.name),
                entry: parking_lot::RwLock::new(None),
                manifest: Some(native.manifest),
            },
            dir: None,
            entry,
            component: None,
            priority,
            before,
            after,
            failure: None,
        })
    }
}

pub(super) fn check_frameworks(candidates: &mut [Candidate], abort: bool) -> Result<(), LoadError> {
    for c in candidates.iter_mut().filter(|c| c.failure.is_none()) {
        let Some(message) = c.loaded.manifest.as_ref().and_then(framework_error) else {
            continue;
        };
        if abort {
            return Err(LoadError::Invalid(format!(
                "plugin '{}': {message}",
                c.loaded.name
            )));
        }
        c.loaded.state.fail(message.clone());
        c.failure = Some(message);
    }
    Ok(())
}

/// The start order of the candidates that can run. Under `continue`, a plugin whose
/// dependencies cannot be satisfied (or that sits in a cycle) is failed and left out.
pub(super) fn order_candidates(
    candidates: &mut [Candidate],
    abort: bool,
) -> Result<Vec<usize>, LoadError> {
    loop {
        let live: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].failure.is_none())
            .collect();
        let input: Vec<OrderNode<'_>> = live
            .iter()
            .filter_map(|&i| {
                let c = &candidates[i];
                Some(OrderNode {
                    manifest: c.loaded.manifest.as_ref()?,
                    priority: c.priority,
                    before: &c.before,
                    after: &c.after,
                })
            })
            .collect();
        let error = match order_nodes(&input) {
            Ok(order) => return Ok(order.into_iter().map(|k| live[k]).collect()),
            Err(e) => e,
        };
        if abort {
            return Err(LoadError::Invalid(error.to_string()));
        }
        let culprits: Vec<String> = match &error {
            OrderError::Missing { plugin, .. } | OrderError::Version { plugin, .. } => {
                vec![plugin.clone()]
            }
            OrderError::Cycle(names) => names.clone(),
        };
        let mut changed = false;
        for c in candidates.iter_mut().filter(|c| c.failure.is_none()) {
            if culprits.contains(&c.loaded.name) {
                tracing::error!(plugin = %c.loaded.name, error = %error, "plugin cannot be ordered");
                c.loaded.state.fail(error.to_string());
                c.failure = Some(error.to_string());
                changed = true;
            }
        }
        if !changed {
            return Err(LoadError::Invalid(error.to_string()));
        }
    }
}

/// The first dependency of `p` that failed.
pub(super) fn failed_dependency(p: &Loaded, failed: &HashSet<String>) -> Option<String> {
    p.manifest
        .as_ref()?
        .dependencies
        .iter()
        .find(|d| failed.contains(&d.name))
        .map(|d| d.name.clone())
}
