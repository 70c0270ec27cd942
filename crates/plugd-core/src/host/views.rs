//! What the host shows of its plugins: info, health, metrics (the admin API's and
//! `plugd list`'s values). Nothing here calls a plugin, except [`Host::plugin_health`].

use std::collections::BTreeMap;
use std::sync::Arc;

use plugd_manifest::{HookType, Permission};
use serde::Serialize;

use crate::cpu::CpuStatus;
use crate::events::SubscriptionInfo;
use crate::health::Health;
use crate::health::HealthReport;
use crate::loaded::{Loaded, is_absent};
use crate::plugin::Plugin;
use crate::state::{DisabledBy, ErrorRecord, HookMetrics, Status};
use crate::supervise::SupervisionStatus;
use crate::threshold::ThresholdStatus;

use super::Host;

/// What the admin API and `ListPlugins` show of one plugin.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version ("" when the manifest could not be read).
    pub version: String,
    /// Description.
    pub description: String,
    /// Author.
    pub author: String,
    /// "wasm" or "native".
    pub kind: &'static str,
    /// Where a wasm plugin's instances are allocated: "pooling" or "on-demand".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocator: Option<&'static str>,
    /// Whether the plugin's code is loaded.
    pub loaded: bool,
    /// Whether the operator enabled it.
    pub enabled: bool,
    /// Its status.
    pub status: Status,
    /// The transitional step in progress, if any.
    pub phase: Option<&'static str>,
    /// When loading finished (RFC 3339).
    pub load_time: Option<String>,
    /// How long loading (read, compile, init, start) took.
    pub load_duration_ms: f64,
    /// Errors counted.
    pub error_count: u64,
    /// The last error.
    pub last_error: Option<ErrorRecord>,
    /// Effective permissions.
    pub permissions: Vec<Permission>,
    /// Registered hooks with priority.
    pub hooks: Vec<HookInfo>,
    /// Registered routes as `METHOD /full/path`.
    pub routes: Vec<String>,
    /// Event topic patterns it subscribes to.
    pub subscriptions: Vec<String>,
    /// Services it exports.
    pub exports: Vec<String>,
    /// Per-hook metrics of hooks that ran.
    pub hook_metrics: BTreeMap<HookType, HookMetrics>,
    /// Who disabled it, while disabled.
    pub disabled_by: Option<DisabledBy>,
    /// Its last answer to the health poll, and when.
    pub health: Option<HealthReport>,
    /// Its error threshold and the errors in its window.
    pub threshold: ThresholdStatus,
    /// Restarts by supervision.
    pub supervision: SupervisionStatus,
    /// Its CPU budget and throttling.
    pub cpu: CpuStatus,
}

/// The contract's PluginHealth (docs/design.md#manager-api): status, errors, per-hook metrics, and
/// the plugin's own answer; with the threshold, supervision and CPU budget.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginHealth {
    /// Status.
    pub status: Status,
    /// The transitional step in progress, if any.
    pub phase: Option<&'static str>,
    /// Who disabled it, while disabled.
    pub disabled_by: Option<DisabledBy>,
    /// Errors counted.
    pub error_count: u64,
    /// The last error and when.
    pub last_error: Option<ErrorRecord>,
    /// Per-hook metrics (execution count, total and average duration, errors).
    pub hook_metrics: BTreeMap<HookType, HookMetrics>,
    /// Counters of its routes.
    pub route_metrics: HookMetrics,
    /// What the plugin's `health-check` answered (running plugins only).
    pub reported: Option<Health>,
    /// When it answered (RFC 3339).
    pub checked_at: Option<String>,
    /// Its error threshold and the errors in its window.
    pub threshold: ThresholdStatus,
    /// Restarts by supervision.
    pub supervision: SupervisionStatus,
    /// Its CPU budget and throttling.
    pub cpu: CpuStatus,
}

/// One plugin's metrics, from [`Host::plugin_metrics`].
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginMetricsReport {
    /// The plugin.
    pub plugin: String,
    /// In ms (`/metrics` has it in seconds: `plugd_plugin_load_duration_seconds`).
    pub load_duration_ms: f64,
    /// `plugd_plugin_load_success`.
    pub load_success: bool,
    /// `plugd_plugin_status`.
    pub status: Status,
    /// `plugd_plugin_errors_total`.
    pub error_count: u64,
    /// `plugd_plugin_hook_*` per hook type that ran.
    pub hooks: BTreeMap<HookType, HookMetrics>,
    /// Its routes' counters.
    pub routes: HookMetrics,
    /// Its routes' durations: cumulative counts per bound of [`crate::BUCKETS_SECONDS`], the
    /// last one `+Inf` (the total), as `plugd_plugin_route_duration_seconds_bucket`. Two
    /// snapshots subtracted give a window's histogram (a fleet rollout compares p99s so).
    pub route_durations: Vec<u64>,
    /// The series it recorded through its context.
    pub recorded: Vec<crate::metrics::MetricSample>,
}

/// One registered hook.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HookInfo {
    /// Type.
    pub hook: HookType,
    /// Priority.
    pub priority: i32,
}

impl Loaded {
    fn info(&self) -> PluginInfo {
        let m = self.manifest.as_ref();
        let regs = self.registrations.load();
        let status = self.state.status();
        PluginInfo {
            name: self.name.clone(),
            version: m.map(|m| m.version.to_string()).unwrap_or_default(),
            description: m.map(|m| m.description.clone()).unwrap_or_default(),
            author: m.map(|m| m.author.clone()).unwrap_or_default(),
            kind: self.kind,
            allocator: self.plugin.allocator(),
            loaded: matches!(status, Status::Initialized | Status::Running),
            // Disabled by the operator since it loaded (the admin API, the CLI): not enabled now.
            enabled: self.enabled && self.state.disabled_by() != Some(DisabledBy::Operator),
            status,
            phase: self.state.phase().label(),
            load_time: self
                .state
                .loaded_at()
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            load_duration_ms: self.state.load_duration().as_secs_f64() * 1000.0,
            error_count: self.state.error_count(),
            last_error: self.state.last_error(),
            permissions: self.granted.iter().copied().collect(),
            hooks: regs
                .hooks
                .iter()
                .map(|(hook, priority)| HookInfo {
                    hook: *hook,
                    priority: *priority,
                })
                .collect(),
            routes: regs
                .routes
                .iter()
                .map(|r| format!("{} /plugins/{}{}", r.method, self.name, r.path))
                .collect(),
            subscriptions: regs.subscriptions.clone(),
            exports: regs.exports.clone(),
            hook_metrics: self.state.hook_metrics().into_iter().collect(),
            disabled_by: self.state.disabled_by(),
            health: self.state.health_report(),
            threshold: self.state.threshold_status(),
            supervision: self.state.supervision_status(),
            cpu: self.state.cpu_status(),
        }
    }

    fn health(&self, reported: Option<HealthReport>) -> PluginHealth {
        let (reported, checked_at) = match reported {
            Some(r) => (Some(r.health), Some(r.checked_at)),
            None => (None, None),
        };
        PluginHealth {
            status: self.state.status(),
            phase: self.state.phase().label(),
            disabled_by: self.state.disabled_by(),
            error_count: self.state.error_count(),
            last_error: self.state.last_error(),
            hook_metrics: self.state.hook_metrics().into_iter().collect(),
            route_metrics: self.state.routes().snapshot(),
            reported,
            checked_at,
            threshold: self.state.threshold_status(),
            supervision: self.state.supervision_status(),
            cpu: self.state.cpu_status(),
        }
    }
}

impl Host {
    /// Every plugin, in start order (failed ones included).
    pub fn list_plugins(&self) -> Vec<PluginInfo> {
        self.inner.plugins.read().iter().map(|p| p.info()).collect()
    }

    /// One plugin's info.
    pub fn plugin_info(&self, name: &str) -> Option<PluginInfo> {
        self.find(name).map(|p| p.info())
    }

    /// Whether a plugin is loaded (initialized or running).
    pub fn is_loaded(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|p| matches!(p.state.status(), Status::Initialized | Status::Running))
    }

    /// Each loaded plugin's present dependencies (the contract's `GetDependencyGraph`
    /// (docs/design.md#manager-api)).
    pub fn dependency_graph(&self) -> BTreeMap<String, Vec<String>> {
        let plugins = self.inner.plugins.read();
        crate::order::dependency_graph(plugins.iter().filter_map(|p| p.manifest.as_ref()))
    }

    /// A plugin's health (the contract's `GetPluginHealth` (docs/design.md#manager-api)): asks a
    /// running plugin for its own view now (within its call timeout) and stores the answer as the
    /// latest poll would.
    pub async fn plugin_health(&self, name: &str) -> Option<PluginHealth> {
        let p = self.find(name)?;
        if p.state.status() == Status::Running {
            let health = super::health::check(&p).await;
            p.state.set_health_report(health);
        }
        let reported = (p.state.status() == Status::Running)
            .then(|| p.state.health_report())
            .flatten();
        Some(p.health(reported))
    }

    /// Every plugin's health (the contract's `GetAllHealth` (docs/design.md#manager-api)), with
    /// each running plugin's answer to the latest health poll (`plugins.health_check_interval`).
    /// Calls no plugin.
    pub async fn all_health(&self) -> BTreeMap<String, PluginHealth> {
        self.health_snapshot()
    }

    /// [`Host::all_health`] without `async`: what is known now.
    pub fn health_snapshot(&self) -> BTreeMap<String, PluginHealth> {
        let plugins = self.inner.plugins.read().clone();
        plugins
            .iter()
            .map(|p| {
                let reported = (p.state.status() == Status::Running)
                    .then(|| p.state.health_report())
                    .flatten();
                (p.name.clone(), p.health(reported))
            })
            .collect()
    }

    /// One plugin's metrics (the contract's `GetPluginMetrics` (docs/design.md#manager-api)): load
    /// time and success, errors, per-hook and route counters, and the series it recorded about
    /// itself. The same numbers as `/metrics`, as a value.
    pub fn plugin_metrics(&self, name: &str) -> Option<PluginMetricsReport> {
        let p = self.find(name)?;
        let state = &p.state;
        Some(PluginMetricsReport {
            plugin: p.name.clone(),
            load_duration_ms: state.load_duration().as_secs_f64() * 1000.0,
            load_success: !matches!(state.status(), Status::Error),
            status: state.status(),
            error_count: state.error_count(),
            hooks: state.hook_metrics().into_iter().collect(),
            routes: state.routes().snapshot(),
            route_durations: state.routes().durations().snapshot().0,
            recorded: state.metrics().samples(),
        })
    }

    /// Every event subscription with its counters (delivered, dropped, failed, queued).
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.inner.bus.subscriptions()
    }

    /// The plugin object the host holds for `name` (native code, or the wasm adapter), to call
    /// it directly — the test harness (`plugd-test`) calls one hook this way. `None` when no
    /// plugin of that name is loaded. Calls made through it bypass the dispatcher: no gate, no
    /// counters, no failure policy.
    pub fn plugin(&self, name: &str) -> Option<Arc<dyn Plugin>> {
        self.find(name)
            .filter(|p| !is_absent(p))
            .map(|p| p.plugin.clone())
    }
}
