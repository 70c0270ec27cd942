//! A rollout: one plugin to a new version across the fleet, one instance at a time. After each
//! instance takes the new version and is healthy, its routes are watched for
//! `fleet.rollout.window`: the new version's error rate and p99 (on the instances that have it)
//! against the old version's (on the instances that do not yet, or, once none is left, as last
//! measured). When the new version is worse, or an instance fails to take it, every instance
//! that took it goes back to the old version.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::report::{InstanceReport, PluginReport, Window};
use crate::{Desired, Fleet, FleetError};

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Moving instances, or watching one.
    Running,
    /// Every instance runs the new version.
    Completed,
    /// The new version was worse, or did not load: every instance is back on the old one.
    RolledBack,
    /// Going back failed too: the instances named in the steps need an operator.
    Failed,
}

/// One thing a rollout did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutStep {
    /// When (RFC 3339, ms).
    pub at: String,
    /// The instance.
    pub instance: String,
    /// `apply`, `healthy`, `watch`, `rollback`.
    pub action: String,
    /// What happened, with the figures.
    pub detail: String,
    /// Whether it went well.
    pub ok: bool,
}

/// A rollout, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutReport {
    /// Its number on the instance that runs it.
    pub id: u64,
    /// The plugin.
    pub plugin: String,
    /// The version the fleet ran.
    pub from: String,
    /// The version it goes to.
    pub to: String,
    /// The instances, in the order they are moved.
    pub instances: Vec<String>,
    /// Where it is.
    pub state: RolloutState,
    /// Why it rolled back or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it did, in order.
    pub steps: Vec<RolloutStep>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Fleet {
    /// Start moving the fleet's `plugin` to `version`, one instance at a time (a task of its
    /// own; follow it with [`Fleet::rollout`]). Refused while another rollout runs on this
    /// instance, when `version` cannot be found (neither in this instance's plugins folder nor
    /// in the fleet's package store), or when a live instance does not hold the plugin.
    pub async fn start_rollout(
        &self,
        plugin: &str,
        version: &str,
    ) -> Result<RolloutReport, FleetError> {
        if version.parse::<semver::Version>().is_err() {
            return Err(FleetError::Refused(format!(
                "'{version}' is not a version (major.minor.patch)"
            )));
        }
        if self
            .inner
            .rollouts
            .lock()
            .iter()
            .any(|r| r.lock().state == RolloutState::Running)
        {
            return Err(FleetError::Refused(
                "a rollout is already running on this instance: wait for it to end".into(),
            ));
        }
        let from = self.running_version(plugin)?;
        if from == version {
            return Err(FleetError::Refused(format!(
                "{plugin} already runs {version} here"
            )));
        }
        let instances = self.instances().await?;
        if let Some(without) = instances.iter().find(|i| i.plugin(plugin).is_none()) {
            return Err(FleetError::Refused(format!(
                "instance {} does not hold plugin '{plugin}'",
                without.instance
            )));
        }
        self.publish_package(plugin, &from).await?;
        self.publish_package(plugin, version).await?;
        let report = Arc::new(Mutex::new(RolloutReport {
            id: self.next_rollout_id(),
            plugin: plugin.to_string(),
            from,
            to: version.to_string(),
            instances: instances.iter().map(|i| i.instance.clone()).collect(),
            state: RolloutState::Running,
            reason: None,
            steps: Vec::new(),
        }));
        self.inner.rollouts.lock().push(report.clone());
        let fleet = self.clone();
        let first = report.lock().clone();
        tokio::spawn(async move { fleet.run_rollout(report, instances).await });
        Ok(first)
    }

    /// A rollout started on this instance, as it is now.
    pub fn rollout(&self, id: u64) -> Option<RolloutReport> {
        self.inner
            .rollouts
            .lock()
            .iter()
            .find(|r| r.lock().id == id)
            .map(|r| r.lock().clone())
    }

    /// Every rollout started on this instance, the latest first.
    pub fn rollouts(&self) -> Vec<RolloutReport> {
        let mut all: Vec<RolloutReport> = self
            .inner
            .rollouts
            .lock()
            .iter()
            .map(|r| r.lock().clone())
            .collect();
        all.reverse();
        all
    }

    async fn run_rollout(&self, report: Arc<Mutex<RolloutReport>>, instances: Vec<InstanceReport>) {
        let (plugin, from, to) = {
            let r = report.lock();
            (r.plugin.clone(), r.from.clone(), r.to.clone())
        };
        let step = |instance: &str, action: &str, detail: String, ok: bool| {
            tracing::info!(%plugin, instance, action, ok, "{detail}");
            report.lock().steps.push(RolloutStep {
                at: now(),
                instance: instance.to_string(),
                action: action.to_string(),
                detail,
                ok,
            });
        };
        let settings = self.inner.options.rollout.clone();
        let start: BTreeMap<String, PluginReport> = instances
            .iter()
            .filter_map(|i| i.plugin(&plugin).map(|p| (i.instance.clone(), p.clone())))
            .collect();
        // The old version's figures when no instance runs it any more: all it served so far.
        let mut old_figures = start.values().fold(Window::default(), |mut w, p| {
            w.add(&Window::between(None, p));
            w
        });
        let mut moved: Vec<(String, PluginReport)> = Vec::new();
        let mut failure: Option<String> = None;
        for instance in instances.iter().map(|i| i.instance.clone()) {
            match self.command(&instance, &plugin, &to).await {
                Ok((was, now)) => step(&instance, "apply", format!("{was} -> {now}"), true),
                Err(e) => {
                    step(&instance, "apply", e.to_string(), false);
                    failure = Some(format!("{instance} did not take {to}: {e}"));
                    // It may have half-moved: it goes back with the others.
                    moved.push((instance.clone(), PluginReport::empty(&plugin)));
                    break;
                }
            }
            let taken = match self.wait_healthy(&instance, &plugin, &to).await {
                Ok(taken) => {
                    step(
                        &instance,
                        "healthy",
                        format!("runs {plugin} {to}, ready"),
                        true,
                    );
                    taken
                }
                Err(e) => {
                    step(&instance, "healthy", e.clone(), false);
                    failure = Some(e);
                    moved.push((instance.clone(), PluginReport::empty(&plugin)));
                    break;
                }
            };
            moved.push((instance.clone(), taken));
            tokio::time::sleep(settings.window).await;
            let now = match self.instances().await {
                Ok(now) => now,
                Err(e) => {
                    failure = Some(format!("the fleet could not be read: {e}"));
                    break;
                }
            };
            let mut new_w = Window::default();
            let mut old_w = Window::default();
            for i in &now {
                let Some(p) = i.plugin(&plugin) else { continue };
                match moved.iter().find(|(name, _)| *name == i.instance) {
                    Some((_, base)) => new_w.add(&Window::between(Some(base), p)),
                    None => old_w.add(&Window::between(start.get(&i.instance), p)),
                }
            }
            if old_w.requests > 0 {
                old_figures = old_w;
            }
            let figures = format!(
                "{to}: {} requests, error rate {:.3}, p99 {}; {from}: {} requests, error rate {:.3}, p99 {}",
                new_w.requests,
                new_w.error_rate(),
                ms(new_w.p99_ms()),
                old_figures.requests,
                old_figures.error_rate(),
                ms(old_figures.p99_ms()),
            );
            match judge(&new_w, &old_figures, &settings) {
                Ok(()) => step(&instance, "watch", figures, true),
                Err(why) => {
                    step(&instance, "watch", format!("{why} ({figures})"), false);
                    failure = Some(format!("{to} is worse than {from}: {why}"));
                    break;
                }
            }
        }
        let Some(reason) = failure else {
            if let Err(e) = self
                .put_desired(
                    &format!("version.{plugin}"),
                    Desired {
                        origin: self.inner.options.instance.clone(),
                        version: Some(to.clone()),
                        config: None,
                    },
                )
                .await
            {
                tracing::warn!(error = %e, "fleet: the completed rollout was not recorded for new instances");
            }
            report.lock().state = RolloutState::Completed;
            return;
        };
        let mut back_failed = Vec::new();
        for (instance, _) in moved.iter().rev() {
            let back = match self.command(instance, &plugin, &from).await {
                Ok(_) => self
                    .wait_healthy(instance, &plugin, &from)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e.to_string()),
            };
            match back {
                Ok(()) => step(instance, "rollback", format!("back on {from}"), true),
                Err(e) => {
                    step(instance, "rollback", e.clone(), false);
                    back_failed.push(instance.clone());
                }
            }
        }
        let mut r = report.lock();
        if back_failed.is_empty() {
            r.state = RolloutState::RolledBack;
            r.reason = Some(reason);
        } else {
            r.state = RolloutState::Failed;
            r.reason = Some(format!(
                "{reason}; and {} could not go back to {from}",
                back_failed.join(", ")
            ));
        }
    }

    /// Wait until `instance` reports `plugin` at `version`, running, and ready; its report of
    /// the plugin then.
    async fn wait_healthy(
        &self,
        instance: &str,
        plugin: &str,
        version: &str,
    ) -> Result<PluginReport, String> {
        let deadline = Instant::now() + self.inner.options.rollout.step_timeout;
        let poll = (self.inner.options.heartbeat / 2).max(Duration::from_millis(50));
        loop {
            if instance == self.inner.options.instance {
                // This instance's own report, fresh (no wait for the next heartbeat).
                let _ = self.beat().await;
            }
            let last = match self.instances().await {
                Ok(all) => match all.iter().find(|i| i.instance == instance) {
                    Some(i) => match i.plugin(plugin) {
                        Some(p) if p.version == version && p.status == "running" && i.ready => {
                            return Ok(p.clone());
                        }
                        Some(p) => format!(
                            "reports {plugin} {} {}{}",
                            p.version,
                            p.status,
                            if i.ready { "" } else { ", not ready" }
                        ),
                        None => format!("does not report {plugin}"),
                    },
                    None => "has no fresh report".to_string(),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "{instance} was not healthy on {plugin} {version} within {} (it {last})",
                    humantime::format_duration(self.inner.options.rollout.step_timeout)
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }
}

fn ms(p99: Option<f64>) -> String {
    p99.map_or("-".to_string(), |v| format!("{v}ms"))
}

/// Whether the new version's window is acceptable next to the old one's.
fn judge(
    new: &Window,
    old: &Window,
    settings: &plugd_manifest::RolloutSettings,
) -> Result<(), String> {
    if new.requests > 0 && new.error_rate() > old.error_rate() + settings.max_error_rate_increase {
        return Err(format!(
            "error rate {:.3} against {:.3} (more than +{})",
            new.error_rate(),
            old.error_rate(),
            settings.max_error_rate_increase
        ));
    }
    if new.requests >= settings.min_requests
        && old.requests >= settings.min_requests
        && let (Some(n), Some(o)) = (new.p99_ms(), old.p99_ms())
        && n > o * settings.max_p99_ratio
    {
        return Err(format!(
            "p99 {n}ms against {o}ms (more than {}x)",
            settings.max_p99_ratio
        ));
    }
    Ok(())
}

impl PluginReport {
    fn empty(plugin: &str) -> PluginReport {
        PluginReport {
            name: plugin.to_string(),
            version: String::new(),
            status: String::new(),
            requests: 0,
            errors: 0,
            route_durations: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(requests: u64, errors: u64, buckets: Vec<u64>) -> Window {
        Window {
            requests,
            errors,
            buckets,
        }
    }

    #[test]
    fn a_version_that_fails_more_is_worse() {
        let s = plugd_manifest::RolloutSettings::default();
        let old = window(100, 0, vec![100]);
        assert!(judge(&window(50, 0, vec![50]), &old, &s).is_ok());
        let err = judge(&window(50, 50, vec![50]), &old, &s).unwrap_err();
        assert!(err.starts_with("error rate 1.000 against 0.000"), "{err}");
        // One failure in a hundred is within +0.01.
        assert!(judge(&window(100, 1, vec![100]), &old, &s).is_ok());
    }

    #[test]
    fn a_slower_version_is_worse_once_both_windows_have_enough_requests() {
        let s = plugd_manifest::RolloutSettings::default();
        let old = window(100, 0, vec![100]);
        // Every request in the 10 ms bucket (index 7) against the 50 µs one.
        let slow = window(100, 0, vec![0, 0, 0, 0, 0, 0, 0, 100]);
        assert!(judge(&slow, &old, &s).unwrap_err().starts_with("p99"));
        let few = window(5, 0, vec![0, 0, 0, 0, 0, 0, 0, 5]);
        assert!(judge(&few, &old, &s).is_ok(), "too few requests to judge");
    }
}
