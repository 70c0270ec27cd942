//! One plugin as the host holds it ([`Loaded`]): its code, manifest, grants, config, storage,
//! registrations, tasks, capabilities and state. Everything that calls a plugin (the dispatcher,
//! the guarded call, services, health) works on this record; only the host makes one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use plugd_manifest::{FailurePolicy, HookType, Manifest, Permission, PluginEntry};
use serde_json::{Map, Value};

use crate::access::RequestAccess;
use crate::audit::Auditor;
use crate::capabilities::Capabilities;
use crate::kv::PluginStore;
use crate::plugin::Plugin;
use crate::registrations::Registrations;
use crate::state::PluginState;
use crate::tasks::Tasks;

/// Per-call deadlines of one plugin.
#[derive(Debug, Clone)]
pub(crate) struct CallLimits {
    pub(crate) timeout: Duration,
    pub(crate) hook_timeouts: BTreeMap<HookType, Duration>,
    /// Its instances (a wasm plugin's lifecycle calls run on each in turn).
    pub(crate) instances: u32,
}

impl CallLimits {
    /// The longest deadline any of its calls has.
    pub(crate) fn longest(&self) -> Duration {
        self.hook_timeouts
            .values()
            .copied()
            .fold(self.timeout, Duration::max)
    }

    pub(crate) fn hook_timeout(&self, hook: HookType) -> Duration {
        self.hook_timeouts
            .get(&hook)
            .copied()
            .unwrap_or(self.timeout)
    }
}

/// One plugin as the host holds it.
pub(crate) struct Loaded {
    pub(crate) name: String,
    pub(crate) manifest: Option<Manifest>,
    pub(crate) kind: &'static str,
    pub(crate) enabled: bool,
    pub(crate) plugin: Arc<dyn Plugin>,
    pub(crate) state: Arc<PluginState>,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) limits: CallLimits,
    pub(crate) granted: BTreeSet<Permission>,
    pub(crate) config: ArcSwap<Map<String, Value>>,
    pub(crate) store: PluginStore,
    pub(crate) registrations: ArcSwap<Registrations>,
    /// `<plugin dir>/assets`, canonical, when the plugin has one.
    pub(crate) assets: Option<PathBuf>,
    /// Its timer and background tasks while it runs.
    pub(crate) tasks: Tasks,
    /// Its gated capabilities, opened at load.
    pub(crate) capabilities: Option<Capabilities>,
    /// The reload gate of its name, shared by all its versions.
    pub(crate) gate: Arc<crate::gate::Gate>,
    /// The config entry it was loaded from (`None` for a native plugin).
    pub(crate) entry: parking_lot::RwLock<Option<PluginEntry>>,
    /// What it may see and do of requests (intercept scope, identity, hidden headers).
    pub(crate) access: Arc<RequestAccess>,
    /// Where what it is refused on the request path is counted and audited.
    pub(crate) auditor: Auditor,
}

/// A placeholder for a plugin that never loaded: answers nothing, counts as failed.
struct Absent;
impl Plugin for Absent {}

pub(crate) static ABSENT: std::sync::LazyLock<Arc<dyn Plugin>> =
    std::sync::LazyLock::new(|| Arc::new(Absent));

/// Whether the host holds no code for this plugin (it never loaded).
pub(crate) fn is_absent(p: &Loaded) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(&p.plugin), Arc::as_ptr(&*ABSENT))
}
