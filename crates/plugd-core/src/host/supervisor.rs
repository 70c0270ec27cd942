//! The supervisor task (see [`crate::supervise`] for its rules): restarts, threshold actions,
//! health polls; enabling and disabling plugins.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::LoadError;
use crate::loaded::{Loaded, is_absent};
use crate::state::{DisabledBy, Status};
use crate::supervise::Notice;

use super::{Host, Inner};
use crate::supervise::{ERROR_THRESHOLD_TOPIC, MAX_IDLE, rfc3339};
use std::sync::Weak;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::mpsc;

impl Host {
    /// Start the supervisor task if it is not running (needs a tokio runtime).
    pub(crate) fn ensure_supervisor(&self) {
        self.inner.supervising.store(true, Relaxed);
        let mut slot = self.inner.supervisor.lock();
        if slot.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let Some(receiver) = slot.receiver.take() else {
            return; // a previous task owned it and ended with the host
        };
        if tokio::runtime::Handle::try_current().is_err() {
            slot.receiver = Some(receiver);
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let stop = Arc::new(tokio::sync::Notify::new());
        slot.stop = stop.clone();
        slot.task = Some(tokio::spawn(run(weak, receiver, stop)));
    }

    /// Stop the supervisor task (shutdown: nothing is restarted while plugins stop).
    pub(crate) async fn stop_supervisor(&self) {
        self.inner.supervising.store(false, Relaxed);
        let (task, stop) = {
            let mut slot = self.inner.supervisor.lock();
            (slot.task.take(), slot.stop.clone())
        };
        let Some(task) = task else { return };
        stop.notify_one();
        if let Ok(Some(receiver)) = task.await {
            self.inner.supervisor.lock().receiver = Some(receiver);
        }
    }

    /// Look at every plugin: schedule, start or give up restarts; reset plugins that ran long
    /// enough. Returns when to look again.
    pub(crate) fn supervise(&self, now: Instant) -> Instant {
        let plugins = self.inner.plugins.read().clone();
        let mut next = now + MAX_IDLE;
        for p in &plugins {
            let status = p.state.status();
            let mut s = p.state.supervision.lock();
            if !s.config.enabled {
                continue;
            }
            match status {
                Status::Running => {
                    if let Some(since) = s.running_since {
                        let stable = since + s.config.backoff_max;
                        if now >= stable {
                            if s.attempts > 0 {
                                tracing::info!(plugin = %p.name, "plugin ran for {} after its restart: supervision starts over", humantime::format_duration(s.config.backoff_max));
                            }
                            s.clear();
                        } else {
                            next = next.min(stable);
                        }
                    }
                }
                Status::Error if !s.gave_up && !s.restarting && !p.state.disable_pending() => {
                    if let Some(dep) = self.missing_dependency(p, &plugins) {
                        if s.waiting_for.as_ref() != Some(&dep) {
                            tracing::info!(plugin = %p.name, dependency = %dep, "restart waits for dependency '{dep}' to run");
                        }
                        s.waiting_for = Some(dep);
                        continue;
                    }
                    s.waiting_for = None;
                    match s.next_attempt {
                        None => {
                            let delay = s.schedule(now);
                            tracing::info!(
                                plugin = %p.name,
                                attempt = s.attempts + 1,
                                max = s.config.max_restarts,
                                "plugin '{}' is in error: restart {} of {} in {}",
                                p.name,
                                s.attempts + 1,
                                s.config.max_restarts,
                                humantime::format_duration(delay)
                            );
                            next = next.min(now + delay);
                        }
                        Some((due, _)) if due <= now => {
                            s.restarting = true;
                            s.next_attempt = None;
                            drop(s);
                            let host = self.clone();
                            let p = p.clone();
                            tokio::spawn(async move { host.supervised_restart(p).await });
                        }
                        Some((due, _)) => next = next.min(due),
                    }
                }
                _ => {}
            }
        }
        next
    }

    /// The first required dependency of `p` that is not running.
    fn missing_dependency(&self, p: &Loaded, plugins: &[Arc<Loaded>]) -> Option<String> {
        let m = p.manifest.as_ref()?;
        m.dependencies
            .iter()
            .filter(|d| !d.optional)
            .find(|d| {
                !plugins
                    .iter()
                    .any(|q| q.name == d.name && q.state.status() == Status::Running)
            })
            .map(|d| d.name.clone())
    }

    /// One supervised attempt.
    async fn supervised_restart(&self, p: Arc<Loaded>) {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let p = self.find(&p.name).unwrap_or(p);
        let attempt = {
            let mut s = p.state.supervision.lock();
            if p.state.status() != Status::Error
                || p.state.disable_pending()
                || !self.inner.supervising.load(Relaxed)
            {
                s.restarting = false;
                return;
            }
            s.attempts += 1;
            s.restarts += 1;
            s.last_restart = Some(SystemTime::now());
            s.attempts
        };
        let max = p.state.supervision.lock().config.max_restarts;
        tracing::info!(plugin = %p.name, attempt, max, "restarting plugin '{}' (attempt {attempt} of {max})", p.name);
        let result = self.restart_plugin(&p).await;
        let p = self.find(&p.name).unwrap_or(p);
        let mut s = p.state.supervision.lock();
        s.restarting = false;
        match result {
            Ok(()) => {
                s.running_since = Some(Instant::now());
                s.next_attempt = None;
                tracing::info!(plugin = %p.name, attempt, "plugin '{}' restarted", p.name);
            }
            Err(e) => {
                drop(s);
                tracing::error!(plugin = %p.name, attempt, error = %e, "restart of plugin '{}' failed", p.name);
                p.state.fail(format!("restart {attempt}: {e}"));
                let mut s = p.state.supervision.lock();
                if s.attempts >= s.config.max_restarts {
                    s.gave_up = true;
                    s.next_attempt = None;
                    tracing::error!(plugin = %p.name, attempts = s.attempts, "gave up restarting plugin '{}' after {} failed attempts", p.name, s.attempts);
                } else {
                    let delay = s.schedule(Instant::now());
                    tracing::info!(plugin = %p.name, "next restart of plugin '{}' in {}", p.name, humantime::format_duration(delay));
                }
            }
        }
    }

    /// Bring a plugin that is not running back: stop and clean up what is left of it, then
    /// initialize and start it again; a plugin that never loaded is loaded from disk first.
    /// The caller holds the lifecycle lock.
    pub(crate) async fn restart_plugin(&self, p: &Arc<Loaded>) -> Result<(), LoadError> {
        let p = if is_absent(p) {
            self.quiesce(p).await;
            self.load_fresh(p).await?
        } else {
            self.quiesce(p).await;
            if p.state.loaded_at().is_none() {
                p.state.set_loaded(SystemTime::now(), Duration::ZERO);
            }
            p.clone()
        };
        p.state.quiesced.store(false, Relaxed);
        let none = HashSet::new();
        let result = async {
            self.init_one(&p, &none).await?;
            self.start_one(&p).await
        }
        .await;
        let plugins = self.inner.plugins.read().clone();
        self.publish(&plugins);
        if result.is_err() {
            // What init/start left behind is stopped before the next attempt.
            self.quiesce(&p).await;
        }
        result
    }

    /// Read and load a plugin that never loaded; its new record replaces the placeholder (the
    /// state, with its errors and supervision, carries over).
    async fn load_fresh(&self, p: &Arc<Loaded>) -> Result<Arc<Loaded>, LoadError> {
        let mut entry = self.entry_for(&p.name).ok_or_else(|| {
            LoadError::Invalid(format!(
                "plugin '{}' has no config entry to load it from",
                p.name
            ))
        })?;
        entry.enabled = true;
        let mut c = self.read_entry(&entry)?;
        if let Some(message) = c
            .loaded
            .manifest
            .as_ref()
            .and_then(crate::check::framework_error)
        {
            return Err(LoadError::Invalid(message));
        }
        c.loaded.state = p.state.clone();
        self.load_one(&mut c, &HashSet::new()).await?;
        let fresh = Arc::new(c.loaded);
        {
            let mut list = self.inner.plugins.write();
            match list.iter_mut().find(|q| Arc::ptr_eq(q, p)) {
                Some(slot) => *slot = fresh.clone(),
                None => list.push(fresh.clone()),
            }
        }
        Ok(fresh)
    }

    /// Stop a plugin's event delivery, timers and background tasks, then call its `stop` and
    /// `cleanup` (errors logged, not counted: the plugin is not serving).
    pub(crate) async fn quiesce(&self, p: &Loaded) {
        self.teardown(p, crate::host::Teardown::Quiesce, || {})
            .await;
        p.state.set_phase(crate::state::Phase::Idle);
    }

    /// Carry out a notice from a plugin.
    async fn handle_notice(&self, notice: Notice) {
        match notice {
            Notice::Failed => {}
            Notice::Disable(name) => {
                let _lifecycle = self.inner.lifecycle.lock().await;
                let Some(p) = self.find(&name) else { return };
                if !p.state.disable_pending() || p.state.disable_handled.swap(true, Relaxed) {
                    return; // enabled again meanwhile, or done
                }
                p.state.set_status(Status::Disabled);
                self.quiesce(&p).await;
                tracing::info!(
                    plugin = %name,
                    "Plugin {name} automatically disabled due to error threshold"
                );
            }
            Notice::Alert {
                plugin,
                errors,
                max,
                window,
            } => {
                let payload = serde_json::json!({
                    "plugin": plugin,
                    "errors": errors,
                    "max": max,
                    "window": humantime::format_duration(window).to_string(),
                    "at": rfc3339(SystemTime::now()),
                });
                let delivered = self.inner.bus.publish(crate::events::Event {
                    topic: ERROR_THRESHOLD_TOPIC.to_string(),
                    payload: payload.to_string().into(),
                    source: String::new(),
                    at: SystemTime::now(),
                });
                tracing::warn!(
                    plugin = %plugin,
                    topic = ERROR_THRESHOLD_TOPIC,
                    subscribers = delivered,
                    "Plugin {plugin} error threshold alert published on {ERROR_THRESHOLD_TOPIC}"
                );
            }
        }
    }

    /// Disable a plugin (the operator's call): it stops serving (routes 503, hooks skipped or
    /// 503 per its failure policy), its timers, tasks and subscriptions stop, `stop` and
    /// `cleanup` run, and supervision leaves it alone until [`Host::enable_plugin`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let dir = std::env::temp_dir().join(format!("plugd-doc-disable-{}", std::process::id()));
    /// use plugd_core::{Host, Status};
    /// let manifest = plugd_manifest::Manifest::from_str(
    ///     "name: quiet\nversion: 1.0.0\ndescription: d\nauthor: a\n",
    ///     plugd_manifest::Format::Yaml, None).unwrap();
    /// struct Quiet;
    /// impl plugd_core::Plugin for Quiet {}
    /// let host = Host::builder().data_dir(&dir).native(manifest, Quiet).build().unwrap();
    /// host.start().await.unwrap();
    /// host.disable_plugin("quiet").await.unwrap();
    /// assert_eq!(host.plugin_info("quiet").unwrap().status, Status::Disabled);
    /// host.enable_plugin("quiet").await.unwrap();
    /// assert_eq!(host.plugin_info("quiet").unwrap().status, Status::Running);
    /// host.shutdown().await;
    /// # });
    /// ```
    pub async fn disable_plugin(&self, name: &str) -> Result<(), LoadError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let p = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        p.state.set_disabled_by(Some(DisabledBy::Operator));
        p.state.set_status(Status::Disabled);
        self.quiesce(&p).await;
        p.state.supervision.lock().clear();
        tracing::info!(plugin = name, "plugin disabled");
        Ok(())
    }

    /// Enable a disabled plugin again (by the operator or by its threshold), or give one that
    /// supervision gave up on a new start: its threshold window and supervision start over, and
    /// it is initialized and started (loaded from disk first if it never loaded).
    pub async fn enable_plugin(&self, name: &str) -> Result<(), LoadError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let p = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let status = p.state.status();
        if !matches!(status, Status::Disabled | Status::Error | Status::Stopped) {
            return Err(LoadError::Invalid(format!(
                "plugin '{name}' is {status}: only a disabled, failed or stopped plugin can be enabled"
            )));
        }
        p.state.set_disabled_by(None);
        p.state.reset_threshold();
        p.state.supervision.lock().clear();
        match self.restart_plugin(&p).await {
            Ok(()) => {
                tracing::info!(plugin = name, "plugin enabled");
                Ok(())
            }
            Err(e) => {
                let p = self.find(name).unwrap_or(p);
                p.state.fail(e.to_string());
                Err(e)
            }
        }
    }
}

/// The supervisor loop; gives the receiver back when told to stop.
async fn run(
    weak: Weak<Inner>,
    mut notices: mpsc::Receiver<Notice>,
    stop: Arc<tokio::sync::Notify>,
) -> Option<mpsc::Receiver<Notice>> {
    let mut next_health = Instant::now();
    loop {
        let wake = {
            let inner = weak.upgrade()?;
            let host = Host { inner };
            let now = Instant::now();
            let interval = host.inner.config.plugins.health_check_interval;
            if !interval.is_zero() && now >= next_health {
                host.poll_health();
                next_health = now + interval;
            }
            let mut wake = host.supervise(now);
            if !interval.is_zero() {
                wake = wake.min(next_health);
            }
            wake
        };
        tokio::select! {
            _ = stop.notified() => return Some(notices),
            notice = notices.recv() => {
                let notice = notice?;
                let inner = weak.upgrade()?;
                let host = Host { inner };
                host.handle_notice(notice).await;
                while let Ok(more) = notices.try_recv() {
                    host.handle_notice(more).await;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}
