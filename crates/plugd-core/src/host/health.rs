//! Plugins' own health checks, polled every `plugins.health_check_interval`, and the host's
//! overall health (`GET /healthz`).
//!
//! A poll calls each running plugin's `health_check` with its call timeout (a timeout reads as
//! `unhealthy`), on a task of its own, one at a time per plugin. The answer is stored with its
//! time and shown; a plugin that reports itself unhealthy is never stopped for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::health::Health;
use crate::loaded::Loaded;
use crate::state::Status;

use super::Host;
use crate::health::health_label;
use crate::state::DisabledBy;
use serde::Serialize;
use std::sync::atomic::Ordering;

impl Host {
    /// Start a health check of every running plugin that has none in flight; each stores its
    /// answer when it comes.
    pub(crate) fn poll_health(&self) {
        let plugins: Vec<Arc<Loaded>> = self.inner.plugins.read().clone();
        for p in plugins {
            if p.state.status() != Status::Running
                || p.state.health_in_flight.swap(true, Ordering::AcqRel)
            {
                continue;
            }
            tokio::spawn(async move {
                let health = check(&p).await;
                if p.state.status() == Status::Running {
                    let before = p.state.health_report().map(|r| health_label(&r.health));
                    let now = health_label(&health);
                    // Log changes; a first answer only when it is bad news.
                    if before != Some(now) && (before.is_some() || now != "healthy") {
                        match &health {
                            Health::Healthy => {
                                tracing::info!(plugin = %p.name, "plugin reports itself healthy")
                            }
                            Health::Degraded(m) | Health::Unhealthy(m) => {
                                tracing::warn!(plugin = %p.name, health = now, message = %m, "plugin reports itself {now}: {m}")
                            }
                        }
                    }
                    p.state.set_health_report(health);
                }
                p.state.health_in_flight.store(false, Ordering::Release);
            });
        }
    }

    /// The host's overall health from what is known now (no plugin is called): the answer of
    /// `GET /healthz`.
    pub fn health_summary(&self) -> HealthSummary {
        let plugins: Vec<Arc<Loaded>> = self.inner.plugins.read().clone();
        let mut out = BTreeMap::new();
        for p in &plugins {
            let supervision = p.state.supervision_status();
            out.insert(
                p.name.clone(),
                PluginSummary {
                    status: p.state.status(),
                    disabled_by: p.state.disabled_by(),
                    health: (p.state.status() == Status::Running)
                        .then(|| p.state.health_report())
                        .flatten()
                        .map(|r| health_label(&r.health)),
                    error_count: p.state.error_count(),
                    errors_in_window: p.state.threshold_status().errors_in_window,
                    throttled: p.state.cpu_status().throttled,
                    restarting: supervision.restarting || supervision.next_attempt.is_some(),
                    gave_up: supervision.gave_up,
                },
            );
        }
        let degraded = out.values().any(PluginSummary::is_degraded);
        HealthSummary {
            status: if degraded { "degraded" } else { "ok" },
            plugins: out,
        }
    }
}

impl Host {
    /// Whether the host is ready for traffic (the answer of `GET /readyz`): it has started and
    /// is not shutting down, and every plugin not disabled by the operator is running. Not
    /// ready, the reasons say why. No plugin is called.
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// let host = plugd_core::Host::builder().build().unwrap();
    /// assert!(!host.readiness().ready, "not started yet");
    /// host.start().await.unwrap();
    /// assert!(host.readiness().ready);
    /// host.shutdown().await;
    /// assert_eq!(host.readiness().reasons, ["the host is shutting down"]);
    /// # });
    /// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
    /// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        if self.inner.stopping.load(Ordering::Acquire) {
            reasons.push("the host is shutting down".to_string());
        } else if !self.inner.supervising.load(Ordering::Acquire) {
            reasons.push("the host is starting".to_string());
        }
        let plugins: Vec<Arc<Loaded>> = self.inner.plugins.read().clone();
        if reasons.is_empty() {
            for p in &plugins {
                let status = p.state.status();
                let by = p.state.disabled_by();
                if status == Status::Running || by == Some(DisabledBy::Operator) {
                    continue;
                }
                reasons.push(match by {
                    Some(DisabledBy::ErrorThreshold) => {
                        format!("plugin '{}' is disabled by its error threshold", p.name)
                    }
                    _ => format!("plugin '{}' is {}", p.name, status.as_str()),
                });
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }
}

/// Whether the host is ready for traffic, from [`Host::readiness`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// Started, not shutting down, and every plugin not disabled by the operator running.
    pub ready: bool,
    /// Why not, one line each (`plugin 'auth' is error`); empty when ready.
    pub reasons: Vec<String>,
}

/// One plugin in the host's overall health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginSummary {
    /// Status.
    pub status: Status,
    /// Who disabled it, when disabled.
    pub disabled_by: Option<DisabledBy>,
    /// Its own last answer while it runs: `healthy`, `degraded` or `unhealthy` (none before the
    /// first poll).
    pub health: Option<&'static str>,
    /// Errors counted since it loaded.
    pub error_count: u64,
    /// Errors in its threshold's window (0 without a threshold).
    pub errors_in_window: u64,
    /// Throttled for its CPU budget now.
    pub throttled: bool,
    /// Supervision is trying to bring it back.
    pub restarting: bool,
    /// Supervision gave up on it.
    pub gave_up: bool,
}

impl PluginSummary {
    /// Whether this plugin makes the host `degraded`: it failed (error, or disabled by its
    /// threshold), reports itself degraded or unhealthy, or is throttled.
    pub fn is_degraded(&self) -> bool {
        self.status == Status::Error
            || self.disabled_by == Some(DisabledBy::ErrorThreshold)
            || matches!(self.health, Some("degraded" | "unhealthy"))
            || self.throttled
    }
}

/// The host's overall health: `ok` when no plugin is degraded (see
/// [`PluginSummary::is_degraded`]), else `degraded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthSummary {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// Every plugin.
    pub plugins: BTreeMap<String, PluginSummary>,
}

/// Ask one plugin for its health within its call timeout.
pub(crate) async fn check(p: &Loaded) -> Health {
    let asked = async { Ok(p.plugin.health_check().await) };
    crate::call::guarded(p, crate::call::Call::Health, asked)
        .await
        .unwrap_or_else(|e| Health::Unhealthy(e.to_string()))
}
