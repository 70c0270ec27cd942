//! Hot reload: swap a plugin for a new version without dropping a request, and roll back when
//! the new version fails to load, initialize or start, or crashes within the grace period.
//!
//! The sequence (docs/design.md#hot-reload):
//! 1. read, validate and compile the new version, and check its dependencies both ways, while
//!    the running version keeps serving;
//! 2. close the plugin's [`Gate`]: new calls into it wait (`block`) or are refused (`reject`);
//!    calls already inside finish;
//! 3. stop and clean up the running version; remove its subscriptions, services and timers;
//! 4. initialize and start the new version, route to it;
//! 5. open the gate;
//! 6. on a failure in 3–4, bring the previous version back (it is still in memory) and open the
//!    gate; when even that fails the plugin ends in `error` (its routes answer 503) and
//!    supervision takes over.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use plugd_manifest::ReloadSettings;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugd_manifest::PluginEntry;
use serde::Serialize;

use crate::check::framework_error;
use crate::error::LoadError;
use crate::loaded::Loaded;
use crate::order::OrderError;
use crate::state::{Phase, Status};

use super::Host;
use crate::gate::Gate;

/// How long a reload waits for the calls inside the gate past their own deadline.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How often the grace-period watch looks at the new version's errors.
const GRACE_POLL: Duration = Duration::from_millis(100);

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReloadOutcome {
    /// The plugin.
    pub plugin: String,
    /// The version that was running.
    pub from_version: String,
    /// The version now running.
    pub to_version: String,
    /// `code` (a new version was loaded) or `restart` (a native plugin: stop, cleanup, init,
    /// start, same code).
    pub kind: &'static str,
    /// From the request to the gate opening again.
    pub duration_ms: f64,
    /// Requests that waited for the swap and were then served.
    pub queued: usize,
}

/// The host's reload bookkeeping.
#[derive(Default)]
pub(crate) struct Reloads {
    /// The gate of every plugin name, shared by all its versions.
    gates: parking_lot::Mutex<HashMap<String, Arc<Gate>>>,
    /// The version a reload replaced, kept in memory for the grace period.
    previous: parking_lot::Mutex<HashMap<String, Arc<Loaded>>>,
    /// Reload counters per plugin name (touched by reloads and scrapes only).
    counters: parking_lot::Mutex<std::collections::BTreeMap<String, ReloadCounters>>,
}

/// The reload counters of one plugin name.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ReloadCounters {
    /// Reloads that swapped the new version in.
    pub succeeded: u64,
    /// Reloads that failed (the previous version served again, or the plugin ended in error).
    pub failed: u64,
    /// Rollbacks: after a failed swap, or at the end of a crash in the grace period.
    pub rolled_back: u64,
    /// How long the last successful reload took, in milliseconds.
    pub last_duration_ms: f64,
}

#[derive(Clone, Copy)]
enum Count {
    Succeeded(Duration),
    Failed,
    RolledBack,
}

/// Which way a swap goes, for the log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Swap {
    /// A requested reload.
    Forward,
    /// Back to the previous version after the new one crashed within the grace period.
    GraceRollback,
}

impl Host {
    /// The gate of a plugin name (made on first use).
    pub(crate) fn gate(&self, name: &str) -> Arc<Gate> {
        self.inner
            .reloads
            .gates
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Gate::new(name)))
            .clone()
    }

    /// Reload a plugin with the host's reload settings (the contract's `ReloadPlugin`
    /// (docs/design.md#manager-api)): a wasm plugin's new version is read from its folder; a native
    /// plugin is stopped, cleaned up, initialized and started again with its current config (its
    /// code cannot change).
    ///
    /// On failure the previous version keeps serving and the error says what failed.
    pub async fn reload_plugin(&self, name: &str) -> Result<ReloadOutcome, LoadError> {
        let settings = self.inner.config.plugins.reload.clone();
        self.reload_plugin_with(name, settings).await
    }

    /// [`Host::reload_plugin`] with other queue settings (the contract's `ReloadPluginWithConfig`
    /// (docs/design.md#manager-api)).
    pub async fn reload_plugin_with(
        &self,
        name: &str,
        settings: ReloadSettings,
    ) -> Result<ReloadOutcome, LoadError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let old = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let entry = old.entry.read().clone();
        match entry {
            Some(entry) => self.reload_code(&old, &entry, &settings).await,
            None => self.restart_in_place(&old, &settings).await,
        }
    }

    /// Reload a plugin from a changed config entry (new grants, limits or path): the same
    /// sequence as a code reload, without the `hot_reload` capability check (the code may be
    /// the same; what it is allowed to do changed). The caller holds the lifecycle lock.
    pub(crate) async fn reload_entry(
        &self,
        entry: &PluginEntry,
    ) -> Result<ReloadOutcome, LoadError> {
        let old = self
            .find(&entry.name)
            .ok_or_else(|| LoadError::UnknownPlugin(entry.name.clone()))?;
        let settings = self.inner.config.plugins.reload.clone();
        self.swap_in_entry(&old, entry, &settings).await
    }

    async fn reload_code(
        &self,
        old: &Arc<Loaded>,
        entry: &PluginEntry,
        settings: &ReloadSettings,
    ) -> Result<ReloadOutcome, LoadError> {
        let name = old.name.as_str();
        if old.state.status() == Status::Disabled {
            return Err(LoadError::Invalid(format!(
                "plugin '{name}' is disabled: enable it instead of reloading it"
            )));
        }
        if let Some(m) = &old.manifest
            && !m.has_capability("hot_reload")
        {
            return Err(LoadError::NotReloadable(name.to_string()));
        }
        self.swap_in_entry(old, entry, settings).await
    }

    /// Prepare the version an entry names and swap it in for `old`.
    async fn swap_in_entry(
        &self,
        old: &Arc<Loaded>,
        entry: &PluginEntry,
        settings: &ReloadSettings,
    ) -> Result<ReloadOutcome, LoadError> {
        let started = Instant::now();
        let name = old.name.clone();
        let old_version = version_of(old);
        tracing::info!(plugin = %name, from = %old_version, "reloading plugin");
        let prepared = self.prepare(old, entry).await;
        let new = match prepared {
            Ok(new) => new,
            Err(e) => {
                self.count(&name, Count::Failed);
                tracing::error!(plugin = %name, error = %e, "Plugin reload failed: {name}: {e}; the running version v{old_version} was not touched");
                return Err(LoadError::Reload {
                    plugin: name,
                    message: e.to_string(),
                    restored: true,
                });
            }
        };
        let to_version = version_of(&new);
        let queued = self.swap(old, &new, settings, Swap::Forward).await?;
        let took = started.elapsed();
        self.count(&name, Count::Succeeded(took));
        tracing::info!(plugin = %name, from = %old_version, to = %to_version, took_ms = took.as_secs_f64() * 1000.0, queued, "plugin reloaded");
        self.watch_grace_period(old.clone(), new.clone());
        Ok(ReloadOutcome {
            plugin: name,
            from_version: old_version,
            to_version,
            kind: "code",
            duration_ms: took.as_secs_f64() * 1000.0,
            queued,
        })
    }

    /// Step 1: read, check and compile the new version; the running one is not touched.
    async fn prepare(
        &self,
        old: &Arc<Loaded>,
        entry: &PluginEntry,
    ) -> Result<Arc<Loaded>, LoadError> {
        let mut c = self.read_entry(entry)?;
        let manifest = c
            .loaded
            .manifest
            .clone()
            .ok_or_else(|| LoadError::Invalid("the new version has no manifest".into()))?;
        if let Some(message) = framework_error(&manifest) {
            return Err(LoadError::Invalid(message));
        }
        let plugins = self.inner.plugins.read().clone();
        // Its own dependencies must still be running in satisfying versions …
        for dep in &manifest.dependencies {
            let found = plugins
                .iter()
                .find(|p| p.name == dep.name && p.state.status() == Status::Running)
                .and_then(|p| p.manifest.as_ref());
            match found {
                None if dep.optional => {}
                None => {
                    return Err(LoadError::Invalid(
                        OrderError::Missing {
                            plugin: manifest.name.clone(),
                            dependency: dep.name.clone(),
                            requirement: dep.version_text.clone(),
                        }
                        .to_string(),
                    ));
                }
                Some(d) if !dep.version.matches(&d.version) => {
                    return Err(LoadError::Invalid(
                        OrderError::Version {
                            plugin: manifest.name.clone(),
                            dependency: dep.name.clone(),
                            requirement: dep.version_text.clone(),
                            found: d.version.to_string(),
                        }
                        .to_string(),
                    ));
                }
                Some(_) => {}
            }
        }
        // … the plugins that depend on it must accept the new version (they are not reloaded
        // with it) …
        for p in plugins.iter().filter(|p| !Arc::ptr_eq(p, old)) {
            let Some(m) = &p.manifest else { continue };
            if let Some(dep) = m.dependencies.iter().find(|d| d.name == old.name)
                && !dep.version.matches(&manifest.version)
            {
                return Err(LoadError::Invalid(
                    OrderError::Version {
                        plugin: p.name.clone(),
                        dependency: old.name.clone(),
                        requirement: dep.version_text.clone(),
                        found: manifest.version.to_string(),
                    }
                    .to_string(),
                ));
            }
        }
        // … and its new `dependencies`, `before` and `after` must not close a cycle.
        if let Err(e @ OrderError::Cycle(_)) = self.resolve_with(&manifest) {
            return Err(LoadError::Invalid(e.to_string()));
        }
        self.load_one(&mut c, &HashSet::new()).await?;
        Ok(Arc::new(c.loaded))
    }

    /// A native plugin: stop, cleanup, init, start, with the gate closed meanwhile.
    async fn restart_in_place(
        &self,
        p: &Arc<Loaded>,
        settings: &ReloadSettings,
    ) -> Result<ReloadOutcome, LoadError> {
        let started = Instant::now();
        if p.state.status() == Status::Disabled {
            return Err(LoadError::Invalid(format!(
                "plugin '{}' is disabled: enable it instead of reloading it",
                p.name
            )));
        }
        let gate = p.gate.clone();
        p.state.set_phase(Phase::Reloading);
        gate.close(settings);
        self.drain(p, &gate).await;
        self.detach(p).await;
        let result = self.bring_up(p).await;
        let queued = gate.queued();
        gate.open();
        let version = version_of(p);
        match result {
            Ok(()) => {
                self.count(&p.name, Count::Succeeded(started.elapsed()));
                Ok(ReloadOutcome {
                    plugin: p.name.clone(),
                    from_version: version.clone(),
                    to_version: version,
                    kind: "restart",
                    duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                    queued,
                })
            }
            Err(e) => {
                self.count(&p.name, Count::Failed);
                p.state.fail(format!("restart failed: {e}"));
                self.republish();
                tracing::error!(plugin = %p.name, error = %e, "native plugin failed to restart; it is now in error");
                Err(LoadError::Reload {
                    plugin: p.name.clone(),
                    message: e.to_string(),
                    restored: false,
                })
            }
        }
    }

    /// Steps 2–6. Returns how many requests waited.
    async fn swap(
        &self,
        old: &Arc<Loaded>,
        new: &Arc<Loaded>,
        settings: &ReloadSettings,
        direction: Swap,
    ) -> Result<usize, LoadError> {
        let name = old.name.clone();
        let gate = old.gate.clone();
        let old_was_up = matches!(old.state.status(), Status::Running | Status::Initialized);
        old.state.set_phase(Phase::Reloading);
        gate.close(settings);
        self.drain(old, &gate).await;
        self.detach(old).await;
        let up = self.bring_up(new).await;
        let Err(error) = up else {
            let queued = gate.queued();
            gate.open();
            if direction == Swap::Forward {
                self.inner.reloads.previous.lock().insert(name, old.clone());
            }
            return Ok(queued);
        };

        // Roll back: the previous version is still in memory.
        let (old_version, new_version) = (version_of(old), version_of(new));
        let what = stage_error(&error);
        tracing::error!(plugin = %name, error = %error, "Plugin reload failed: {name} v{new_version}: {what}");
        tracing::info!(plugin = %name, "Rolling back to previous version: {name} v{old_version}");
        self.count(&name, Count::Failed);
        self.count(&name, Count::RolledBack);
        self.detach(new).await;
        let restored = if !old_was_up {
            // It was not running before (it had failed): it goes back to that.
            old.state
                .fail(format!("reload to v{new_version} failed: {error}"));
            self.replace(old);
            self.republish();
            false
        } else {
            match self.bring_up(old).await {
                Ok(()) => {
                    tracing::info!(plugin = %name, "Previous version restored successfully");
                    true
                }
                Err(e) => {
                    let message = format!(
                        "the previous version v{old_version} failed to come back after a failed reload: {e}"
                    );
                    tracing::error!(plugin = %name, error = %e, "{message}; the plugin is in error, its routes answer 503 and supervision takes over");
                    old.state.fail(message);
                    self.replace(old);
                    self.republish();
                    false
                }
            }
        };
        let queued = gate.queued();
        tracing::info!(plugin = %name, "Processing {queued} queued requests");
        gate.open();
        Err(LoadError::Reload {
            plugin: name,
            message: format!("v{new_version}: {error}"),
            restored,
        })
    }

    /// Wait for the calls inside the gate; they all have deadlines.
    async fn drain(&self, p: &Loaded, gate: &Gate) {
        let limit = p.limits.longest() + DRAIN_GRACE;
        if !gate.drain(limit).await {
            tracing::warn!(plugin = %p.name, inflight = gate.inflight(), "calls still inside after their deadline; reloading anyway");
        }
    }

    /// Stop a version and release what it holds: subscriptions, services, timers.
    async fn detach(&self, p: &Arc<Loaded>) {
        if matches!(p.state.status(), Status::Running | Status::Initialized) {
            self.teardown(p, crate::host::Teardown::Replace, || {})
                .await;
            p.state.set_status(Status::Stopped);
            p.state.set_phase(crate::state::Phase::Idle);
            tracing::info!(plugin = %p.name, "plugin stopped");
        }
    }

    /// Initialize and start a version, and route to it.
    async fn bring_up(&self, p: &Arc<Loaded>) -> Result<(), LoadError> {
        p.state.quiesced.store(false, Ordering::Relaxed);
        self.init_one(p, &HashSet::new()).await?;
        self.replace(p);
        self.start_one(p).await?;
        self.republish();
        Ok(())
    }

    /// Put `p` in the plugin list in place of the version with its name.
    fn replace(&self, p: &Arc<Loaded>) {
        let mut plugins = self.inner.plugins.write();
        match plugins.iter_mut().find(|q| q.name == p.name) {
            Some(slot) => *slot = p.clone(),
            None => plugins.push(p.clone()),
        }
    }

    /// Rebuild the dispatch table from the plugin list.
    fn republish(&self) {
        let plugins = self.inner.plugins.read().clone();
        self.publish(&plugins);
    }

    /// Step 7: while the grace period lasts, a new version that crashes
    /// `reload.rollback_on_crashes` times is replaced by the previous one (when the operator
    /// turned that on). Only crashes count — traps, never errors a client can provoke — so a
    /// flood of requests the new version rightly refuses cannot roll a fix back. Afterwards the
    /// previous version is dropped (its memory is returned once no request holds it).
    fn watch_grace_period(&self, old: Arc<Loaded>, new: Arc<Loaded>) {
        let reload = &self.inner.config.plugins.reload;
        let grace = reload.grace_period;
        let max_crashes = reload.rollback_on_crashes.map(|n| u64::from(n.max(1)));
        let baseline = new.state.crash_count();
        let host = self.clone();
        let name = new.name.clone();
        drop(old);
        tokio::spawn(async move {
            let deadline = Instant::now() + grace;
            loop {
                tokio::time::sleep(GRACE_POLL.min(grace)).await;
                // Another reload (or an unload) replaced it: that one watches now.
                if !host.find(&name).is_some_and(|p| Arc::ptr_eq(&p, &new)) {
                    return;
                }
                let crashes = new.state.crash_count().saturating_sub(baseline);
                if let Some(max) = max_crashes
                    && crashes >= max
                {
                    tracing::error!(plugin = %name, crashes, max, "the new version v{} crashed {crashes} times within the grace period (reload.rollback_on_crashes)", version_of(&new));
                    if let Err(e) = host.rollback_plugin(&name).await {
                        tracing::error!(plugin = %name, error = %e, "grace-period rollback failed");
                    }
                    return;
                }
                if Instant::now() >= deadline {
                    let released = host.inner.reloads.previous.lock().remove(&name);
                    if let Some(prev) = released {
                        tracing::info!(plugin = %name, version = %version_of(&new), previous = %version_of(&prev), "reload confirmed after the grace period; the previous version is released");
                    }
                    return;
                }
            }
        });
    }

    /// Go back to the version the last reload replaced, while it is still kept (the grace
    /// period). Used automatically when a new version crashes within the grace period.
    pub async fn rollback_plugin(&self, name: &str) -> Result<ReloadOutcome, LoadError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let started = Instant::now();
        let current = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let previous = self
            .inner
            .reloads
            .previous
            .lock()
            .remove(name)
            .ok_or_else(|| {
                LoadError::Invalid(format!(
                    "plugin '{name}' has no previous version in memory (none was replaced, or its grace period ended)"
                ))
            })?;
        let (from, to) = (version_of(&current), version_of(&previous));
        tracing::info!(plugin = %name, "Rolling back to previous version: {name} v{to}");
        let settings = self.inner.config.plugins.reload.clone();
        let queued = self
            .swap(&current, &previous, &settings, Swap::GraceRollback)
            .await?;
        self.count(name, Count::RolledBack);
        tracing::info!(plugin = %name, "Previous version restored successfully");
        tracing::info!(plugin = %name, "Processing {queued} queued requests");
        Ok(ReloadOutcome {
            plugin: name.to_string(),
            from_version: from,
            to_version: to,
            kind: "rollback",
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            queued,
        })
    }

    /// Whether a previous version of the plugin is kept in memory (a grace period runs).
    pub fn has_previous_version(&self, name: &str) -> bool {
        self.inner.reloads.previous.lock().contains_key(name)
    }

    fn count(&self, name: &str, what: Count) {
        let mut counters = self.inner.reloads.counters.lock();
        let c = counters.entry(name.to_string()).or_default();
        match what {
            Count::Succeeded(took) => {
                c.succeeded += 1;
                c.last_duration_ms = took.as_secs_f64() * 1000.0;
            }
            Count::Failed => c.failed += 1,
            Count::RolledBack => c.rolled_back += 1,
        }
    }

    /// Reload counters of every plugin that was ever reloaded (metrics
    /// `plugd_plugin_reloads_total{result}` and `plugd_plugin_reload_duration_seconds`).
    pub fn reload_stats(&self) -> std::collections::BTreeMap<String, ReloadCounters> {
        self.inner.reloads.counters.lock().clone()
    }
}

/// A failed bring-up in the contract's words: `initialization error: <cause>` or `start error:
/// <cause>`; any other failure as it is.
fn stage_error(error: &LoadError) -> String {
    match error {
        LoadError::Init { error, .. } => format!("initialization error: {error}"),
        LoadError::Start { error, .. } => format!("start error: {error}"),
        other => other.to_string(),
    }
}

fn version_of(p: &Loaded) -> String {
    p.manifest
        .as_ref()
        .map(|m| m.version.to_string())
        .unwrap_or_else(|| "?".into())
}
