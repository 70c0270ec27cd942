//! The lifecycle: load, initialize, start, stop, unload, and the one teardown sequence every
//! way a plugin's code ends goes through.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use plugd_manifest::{HookType, OnFailure, Permission, PluginEntry};

use crate::audit::Auditor;
use crate::call::{Call, guarded};
use crate::capabilities::{Capabilities, CapabilityOptions};
use crate::check::framework_error;
use crate::dispatch::DispatchTable;
use crate::error::{LoadError, PluginError};
use crate::events::Publisher;
use crate::loaded::{Loaded, is_absent};
use crate::loader::LoaderContext;
use crate::order::OrderError;
use crate::plugin::InitContext;
use crate::registrations::Registrations;
use crate::state::{DisabledBy, Phase, Status};

use super::Host;
use super::calls::start_timers;
use super::entries::{Candidate, check_frameworks, failed_dependency, order_candidates};

/// Why a plugin's code is torn down (see [`Host::teardown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Teardown {
    /// The host stops.
    Shutdown,
    /// It is unloaded: its services and cache namespace go too.
    Unload,
    /// A reload replaces it (or puts the previous version back): its services go.
    Replace,
    /// It stops serving but stays (a failed start, a disable, a supervised restart): errors are
    /// logged, not counted.
    Quiesce,
}

impl Host {
    /// Load every enabled plugin of the config and every native plugin; initialize and start them
    /// in dependency and priority order; run `startup` hooks.
    ///
    /// With `plugins.on_failure: continue` (the default) a plugin that fails goes to `error`, its
    /// dependents go to `error` with "dependency 'x' failed", and the rest run. With `abort` the
    /// first failure is returned (plugins already started are stopped again).
    pub async fn start(&self) -> Result<(), LoadError> {
        let abort = self.inner.config.plugins.on_failure == OnFailure::Abort;
        self.inner
            .stopping
            .store(false, std::sync::atomic::Ordering::Release);
        self.inner
            .bus
            .start_transport()
            .await
            .map_err(|source| LoadError::Backend {
                what: "the event transport",
                source,
            })?;
        self.load_all().await?;
        let result = async {
            self.init_pass(abort).await?;
            self.start_pass(abort).await
        }
        .await;
        if let Err(e) = result {
            let plugins = self.inner.plugins.read().clone();
            self.stop_plugins(&plugins).await;
            return Err(e);
        }
        self.ensure_supervisor();
        self.ensure_status_writer();
        if self.inner.config.plugins.hot_reload
            && let Err(e) = self.watch_for_changes()
        {
            tracing::error!(error = %e, "hot_reload is on, but the files cannot be watched");
        }
        Ok(())
    }

    /// The contract's `LoadPluginsFromConfig` (docs/design.md#manager-api): read every enabled
    /// plugin of the host config (and every native plugin), check and order them, and load their
    /// code. Nothing is initialized yet. Under `on_failure: continue` a plugin that cannot load is
    /// listed with status `error`.
    pub async fn load_all(&self) -> Result<(), LoadError> {
        let abort = self.inner.config.plugins.on_failure == OnFailure::Abort;
        let mut candidates = Vec::new();
        let mut names = HashSet::new();
        // Listed (status `disabled`), never loaded.
        let mut disabled: Vec<Loaded> = Vec::new();
        let natives = std::mem::take(&mut *self.inner.natives.lock());
        let entries = self.entries(&natives);
        if self.inner.config.plugins.enabled {
            for entry in &entries {
                // A native plugin's entry gives it grants and config; it is not loaded from disk.
                if natives.iter().any(|n| n.manifest.name == entry.name) {
                    continue;
                }
                names.insert(entry.name.clone());
                if !entry.enabled {
                    disabled.push(self.disabled_entry(entry));
                    continue;
                }
                let candidate = match self.read_entry(entry) {
                    Ok(c) => c,
                    Err(e) if abort => return Err(e),
                    Err(e) => {
                        tracing::error!(plugin = %entry.name, error = %e, "plugin failed to load");
                        self.failed_entry(entry, &e)
                    }
                };
                candidates.push(candidate);
            }
        }
        for native in natives {
            if !names.insert(native.manifest.name.clone()) {
                return Err(LoadError::Duplicate(native.manifest.name.clone()));
            }
            let candidate = self.native_candidate(native)?;
            if candidate.loaded.enabled {
                candidates.push(candidate);
            } else {
                candidate
                    .loaded
                    .state
                    .set_disabled_by(Some(DisabledBy::Operator));
                candidate.loaded.state.set_status(Status::Disabled);
                disabled.push(candidate.loaded);
            }
        }

        check_frameworks(&mut candidates, abort)?;
        let order = order_candidates(&mut candidates, abort)?;
        let mut ordered: Vec<Candidate> = Vec::with_capacity(candidates.len());
        let mut slots: Vec<Option<Candidate>> = candidates.into_iter().map(Some).collect();
        for i in order {
            if let Some(c) = slots[i].take() {
                ordered.push(c);
            }
        }
        // Plugins that could not be ordered (already failed) go last, for display.
        ordered.extend(slots.into_iter().flatten());

        let mut failed: HashSet<String> = ordered
            .iter()
            .filter(|c| c.failure.is_some())
            .map(|c| c.loaded.name.clone())
            .collect();
        let mut loaded: Vec<Arc<Loaded>> = Vec::new();
        for mut c in ordered {
            if c.failure.is_none()
                && let Err(e) = self.load_one(&mut c, &failed).await
            {
                if abort {
                    return Err(e);
                }
                tracing::error!(plugin = %c.loaded.name, error = %e, "plugin failed to load");
                c.loaded.state.fail(e.to_string());
                failed.insert(c.loaded.name.clone());
            }
            loaded.push(Arc::new(c.loaded));
        }
        loaded.extend(disabled.into_iter().map(Arc::new));
        *self.inner.plugins.write() = loaded.clone();
        self.publish(&loaded);
        Ok(())
    }

    /// The contract's `InitializeAll` (docs/design.md#manager-api): initialize every loaded plugin
    /// in order, registering its hooks, routes, middleware, subscriptions, services and timers.
    /// Stops at the first failure and returns it; the plugins already initialized stay initialized.
    pub async fn initialize_all(&self) -> Result<(), LoadError> {
        self.init_pass(true).await
    }

    /// The contract's `StartAll` (docs/design.md#manager-api): start every initialized plugin in
    /// order, then run `startup` hooks. Stops at the first failure and returns it.
    pub async fn start_all(&self) -> Result<(), LoadError> {
        self.start_pass(true).await?;
        self.ensure_supervisor();
        self.ensure_status_writer();
        Ok(())
    }

    /// Initialize every plugin loaded and not yet initialized; with `stop_at_first`, the first
    /// failure ends the pass, else failures are recorded and dependents fail too.
    pub(super) async fn init_pass(&self, stop_at_first: bool) -> Result<(), LoadError> {
        let plugins = self.inner.plugins.read().clone();
        let mut failed: HashSet<String> = plugins
            .iter()
            .filter(|p| p.state.status() == Status::Error)
            .map(|p| p.name.clone())
            .collect();
        let mut outcome = Ok(());
        for p in &plugins {
            if p.state.status() != Status::Loading {
                continue;
            }
            if let Err(e) = self.init_one(p, &failed).await {
                tracing::error!(plugin = %p.name, error = %e, "plugin failed to initialize");
                p.state.fail(e.to_string());
                failed.insert(p.name.clone());
                if stop_at_first {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.publish(&plugins);
        outcome
    }

    /// Start every initialized plugin; then `startup` hooks.
    pub(super) async fn start_pass(&self, stop_at_first: bool) -> Result<(), LoadError> {
        let plugins = self.inner.plugins.read().clone();
        for p in &plugins {
            if p.state.status() != Status::Initialized {
                continue;
            }
            if let Err(e) = self.start_one(p).await {
                tracing::error!(plugin = %p.name, error = %e, "plugin failed to start");
                p.state.fail(e.to_string());
                self.fail_dependents(&plugins, &p.name);
                if stop_at_first {
                    return Err(e);
                }
            }
        }
        self.inner
            .dispatcher
            .run_lifecycle_hook(HookType::Startup)
            .await;
        Ok(())
    }

    /// Start one initialized plugin and connect its subscriptions and timers.
    pub(crate) async fn start_one(&self, p: &Arc<Loaded>) -> Result<(), LoadError> {
        p.state.set_phase(Phase::Starting);
        let result = guarded(p, Call::Start, p.plugin.start()).await;
        p.state.set_phase(Phase::Idle);
        result.map_err(|error| LoadError::Start {
            plugin: p.name.clone(),
            error,
        })?;
        p.state.set_status(Status::Running);
        self.attach_subscriptions(p);
        start_timers(p);
        tracing::info!(plugin = %p.name, kind = p.kind, "plugin running");
        Ok(())
    }

    /// The contract's `LoadPlugin` (docs/design.md#manager-api), at run time: read and check one
    /// plugin, require its dependencies to be running in satisfying versions, then load, initialize
    /// and start it and route to it. A plugin that fails is not added.
    pub async fn load_plugin(&self, entry: &PluginEntry) -> Result<(), LoadError> {
        if self.find(&entry.name).is_some() {
            return Err(LoadError::Duplicate(entry.name.clone()));
        }
        let mut c = self.read_entry(entry)?;
        if let Some(message) = c.loaded.manifest.as_ref().and_then(framework_error) {
            return Err(LoadError::Invalid(message));
        }
        if let Some(m) = &c.loaded.manifest {
            let plugins = self.inner.plugins.read().clone();
            for dep in &m.dependencies {
                let found = plugins
                    .iter()
                    .find(|p| p.name == dep.name && p.state.status() == Status::Running);
                match found.and_then(|p| p.manifest.as_ref()) {
                    None if dep.optional => {}
                    None => {
                        return Err(LoadError::Invalid(
                            OrderError::Missing {
                                plugin: m.name.clone(),
                                dependency: dep.name.clone(),
                                requirement: dep.version_text.clone(),
                            }
                            .to_string(),
                        ));
                    }
                    Some(d) if !dep.version.matches(&d.version) => {
                        return Err(LoadError::Invalid(
                            OrderError::Version {
                                plugin: m.name.clone(),
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
        }
        let none = HashSet::new();
        self.load_one(&mut c, &none).await?;
        let p = Arc::new(c.loaded);
        if let Err(e) = self.init_one(&p, &none).await {
            self.stop_plugins(std::slice::from_ref(&p)).await;
            return Err(e);
        }
        let plugins = {
            let mut list = self.inner.plugins.write();
            list.push(p.clone());
            list.clone()
        };
        if let Err(e) = self.start_one(&p).await {
            self.inner.plugins.write().retain(|q| !Arc::ptr_eq(q, &p));
            self.stop_plugins(std::slice::from_ref(&p)).await;
            return Err(e);
        }
        self.publish(&plugins);
        self.ensure_supervisor();
        Ok(())
    }

    /// Mark every plugin that (transitively) depends on `failed` as failed too.
    pub(super) fn fail_dependents(&self, loaded: &[Arc<Loaded>], failed: &str) {
        let mut down: Vec<String> = vec![failed.to_string()];
        for p in loaded {
            let depends = p
                .manifest
                .as_ref()
                .is_some_and(|m| m.dependencies.iter().any(|d| down.contains(&d.name)));
            if depends && p.state.status() != Status::Error {
                let dep = p
                    .manifest
                    .as_ref()
                    .and_then(|m| m.dependencies.iter().find(|d| down.contains(&d.name)))
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                p.state
                    .fail(LoadError::Dependency { dependency: dep }.to_string());
                down.push(p.name.clone());
            }
        }
    }

    pub(super) fn publisher_for(&self, p: &Loaded) -> Publisher {
        let publishes = p
            .manifest
            .as_ref()
            .map(|m| m.events.publishes.clone())
            .unwrap_or_default();
        Publisher::new(self.inner.bus.clone(), &p.name, &publishes)
    }

    /// Load one candidate: its code, through the loader (compile, check the contract).
    pub(crate) async fn load_one(
        &self,
        c: &mut Candidate,
        failed: &HashSet<String>,
    ) -> Result<(), LoadError> {
        let started = Instant::now();
        let name = c.loaded.name.clone();
        if let Some(dep) = failed_dependency(&c.loaded, failed) {
            return Err(LoadError::Dependency { dependency: dep });
        }
        c.loaded.state.set_status(Status::Loading);
        let capabilities = Capabilities::open(CapabilityOptions {
            plugin: &name,
            granted: &c.loaded.granted,
            host: &self.inner.config,
            entry: c.entry.as_ref(),
            plugin_dir: c.dir.as_deref(),
            database: c.loaded.manifest.as_ref().map(|m| &m.database),
            http: self.inner.http.clone(),
            commands: self.inner.commands.clone(),
            auditor: Auditor::new(
                &name,
                Some(c.loaded.state.clone()),
                Some(self.inner.audit.clone()),
            ),
            sql: self.inner.sql.clone(),
        })
        .await
        .map_err(|message| LoadError::Runtime {
            plugin: name.clone(),
            source: message.into(),
        })?;
        c.loaded.capabilities = Some(capabilities.clone());
        if let (Some(dir), Some(entry), Some(manifest)) = (&c.dir, &c.entry, &c.loaded.manifest) {
            let loader = self
                .inner
                .loader
                .as_ref()
                .ok_or_else(|| LoadError::NoLoader(name.clone()))?;
            let config = c.loaded.config.load_full();
            let plugin = loader
                .load(LoaderContext {
                    dir,
                    manifest,
                    entry,
                    granted: &c.loaded.granted,
                    config: &config,
                    store: c.loaded.store.clone(),
                    host: &self.inner.config,
                    publisher: self.publisher_for(&c.loaded),
                    services: self.inner.services.clone(),
                    metrics: c.loaded.state.metrics().clone(),
                    cache: self.plugin_cache(&name),
                    audit: self.inner.audit.clone(),
                    capabilities,
                    state: c.loaded.state.clone(),
                    component: c.component.take(),
                })
                .await
                .map_err(|source| LoadError::Runtime {
                    plugin: name.clone(),
                    source,
                })?;
            c.loaded.kind = plugin.kind();
            c.loaded.plugin = plugin;
        }
        c.loaded
            .state
            .set_loaded(SystemTime::now(), started.elapsed());
        Ok(())
    }

    /// Initialize one loaded plugin: its manifest's registrations, then its `init`.
    pub(crate) async fn init_one(
        &self,
        p: &Loaded,
        failed: &HashSet<String>,
    ) -> Result<(), LoadError> {
        let started = Instant::now();
        let name = p.name.clone();
        if let Some(dep) = failed_dependency(p, failed) {
            return Err(LoadError::Dependency { dependency: dep });
        }
        let registration = |e: crate::HostError| LoadError::Registration {
            plugin: name.clone(),
            message: e.to_string(),
        };
        p.state.set_phase(Phase::Initializing);
        let config = p.config.load_full();
        let (subscribes, exports) = p
            .manifest
            .as_ref()
            .map(|m| {
                (
                    m.events.subscribes.clone(),
                    m.exports.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
                )
            })
            .unwrap_or_default();
        let mut regs = Registrations::default();
        if let Some(m) = &p.manifest {
            for h in &m.hooks {
                regs.add_hook(h.hook, h.priority).map_err(registration)?;
            }
        }
        for service in &exports {
            regs.add_export(&name, &exports, service)
                .map_err(registration)?;
        }
        for topic in &subscribes {
            regs.add_subscription(&name, &subscribes, topic)
                .map_err(registration)?;
        }
        let publisher = self.publisher_for(p);
        let mut ctx = InitContext::new(&name, &config, &p.granted, &p.store, &mut regs)
            .with_events(&subscribes, &publisher)
            .with_services(&exports, &self.inner.services)
            .with_tasks(&p.tasks)
            .with_metrics(p.state.metrics())
            .with_cache(self.plugin_cache(&name))
            .with_registrar(self.registrar_for(&name, &p.granted, &p.plugin))
            .with_log(p.state.log().clone());
        if let Some(capabilities) = &p.capabilities {
            ctx = ctx.with_capabilities(capabilities.clone());
        }
        let result = guarded(p, Call::Init, p.plugin.init(&mut ctx)).await;
        p.state.set_phase(Phase::Idle);
        result.map_err(|error| LoadError::Init {
            plugin: name.clone(),
            error,
        })?;
        let declared = p
            .manifest
            .as_ref()
            .is_some_and(|m| m.permissions.contains(&Permission::Intercept));
        if let Err(message) = crate::dispatch::check_routes(&name, &regs)
            .and_then(|()| self.inner.dispatcher.table().route_conflict(p, &regs))
        {
            return Err(LoadError::Registration {
                plugin: name.clone(),
                message,
            });
        }
        if let Some(why) = p.access.overreach(declared, &regs) {
            return Err(LoadError::Registration {
                plugin: name.clone(),
                message: format!(
                    "{why}, which needs the 'intercept' permission (a plugd addition): grant it in the host config with {}.permissions.intercept: true, and limit it with {0}.intercept.paths if it should see only some paths",
                    self.entry_key(&name)
                ),
            });
        }
        p.registrations.store(Arc::new(regs));
        p.state.set_status(Status::Initialized);
        let total = p.state.load_duration() + started.elapsed();
        p.state.set_loaded(SystemTime::now(), total);
        Ok(())
    }

    /// Build the dispatch table of `plugins` and swap it in. A plugin whose mount or routes
    /// conflict with an earlier plugin's is left out and put in `error` with the reason; the
    /// others are served.
    pub(crate) fn publish(&self, plugins: &[Arc<Loaded>]) {
        let _publishing = self.inner.publishing.lock();
        let (table, refused) = DispatchTable::build(plugins);
        self.inner.dispatcher.publish(table);
        for (p, why) in refused {
            if p.state.status() == Status::Error {
                continue;
            }
            let message = format!("its routes are not served: {why}");
            tracing::error!(plugin = %p.name, "{message}");
            p.state.fail(message);
        }
    }

    pub(super) async fn stop_plugins(&self, plugins: &[Arc<Loaded>]) {
        for p in plugins.iter().rev() {
            if !matches!(p.state.status(), Status::Running | Status::Initialized) {
                continue;
            }
            self.teardown(p, Teardown::Shutdown, || {}).await;
            p.state.set_status(Status::Stopped);
            p.state.set_phase(Phase::Idle);
            tracing::info!(plugin = %p.name, "plugin stopped");
        }
    }

    /// The one teardown of a plugin's code, whatever ends it (shutdown, unload, a reload that
    /// replaces it, a failed start or a disable): its event delivery, services (when it goes
    /// away), cache namespace (when it is unloaded), timers and background tasks are released,
    /// then `stop` and `cleanup` run once through the guarded call (deadline, span), with
    /// `between` run after `stop` (an unload unroutes the plugin there). Failures are recorded
    /// as the plugin's errors, except under [`Teardown::Quiesce`] (it is not serving: logged).
    pub(crate) async fn teardown(&self, p: &Loaded, how: Teardown, between: impl FnOnce()) {
        p.state.set_phase(Phase::Stopping);
        self.inner.bus.unsubscribe_all(&p.name);
        if matches!(how, Teardown::Unload | Teardown::Replace) {
            self.inner.services.remove_plugin(&p.name);
        }
        if how == Teardown::Unload
            && let Err(e) = self.plugin_cache(&p.name).clear().await
        {
            tracing::warn!(plugin = %p.name, error = %e, "could not forget the unloaded plugin's cache entries");
        }
        p.tasks.cancel_all().await;
        let code_ran = !is_absent(p) && p.state.loaded_at().is_some();
        if !code_ran
            || p.state
                .quiesced
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            between();
            return;
        }
        let report = |step: &str, e: PluginError| {
            if how == Teardown::Quiesce {
                tracing::debug!(plugin = %p.name, step, error = %e, "{step} failed");
            } else {
                tracing::warn!(plugin = %p.name, step, error = %e, "plugin {step} failed");
                p.state.record_error(format!("{step}: {e}"));
            }
        };
        if let Err(e) = guarded(p, Call::Stop, p.plugin.stop()).await {
            report("stop", e);
        }
        between();
        if let Err(e) = guarded(p, Call::Cleanup, p.plugin.cleanup()).await {
            report("cleanup", e);
        }
    }

    /// The contract's `StopAll` (docs/design.md#manager-api): run `shutdown` hooks, then stop and
    /// clean up every plugin in reverse start order, each within its deadline (forced past it).
    /// Failures are recorded on the plugins and never stop the others.
    pub async fn stop_all(&self) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.stop_watching();
        self.stop_supervisor().await;
        let _lifecycle = self.inner.lifecycle.lock().await;
        self.inner
            .dispatcher
            .run_lifecycle_hook(HookType::Shutdown)
            .await;
        let plugins = self.inner.plugins.read().clone();
        {
            let _publishing = self.inner.publishing.lock();
            self.inner.dispatcher.publish(DispatchTable::default());
        }
        self.stop_plugins(&plugins).await;
        // Disabled by a threshold just now, before the supervisor stopped them.
        for p in plugins
            .iter()
            .filter(|p| p.state.status() == Status::Disabled)
        {
            self.quiesce(p).await;
        }
        self.stop_status_writer().await;
    }

    /// [`Host::stop_all`], under the name a server uses.
    pub async fn shutdown(&self) {
        self.stop_all().await;
    }

    /// Unload a plugin, as the contract's six steps (docs/design.md#lifecycle): stop it, remove its
    /// hooks, subscriptions and middleware (with its routes, by republishing the dispatch table
    /// without it), clean it up, and remove it from the registry. Refused while running plugins
    /// depend on it, unless `force`; dependents are not unloaded.
    pub async fn unload_plugin(&self, name: &str, force: bool) -> Result<(), LoadError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let p = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let dependents: Vec<String> = self
            .inner
            .plugins
            .read()
            .iter()
            .filter(|d| d.state.status() == Status::Running)
            .filter(|d| {
                d.manifest
                    .as_ref()
                    .is_some_and(|m| m.dependencies.iter().any(|dep| dep.name == name))
            })
            .map(|d| d.name.clone())
            .collect();
        if !dependents.is_empty() && !force {
            return Err(LoadError::InUse {
                plugin: name.to_string(),
                dependents,
            });
        }
        let was_active = matches!(p.state.status(), Status::Running | Status::Initialized);
        if !was_active {
            // Nothing of its code runs: stop and cleanup are not called again.
            p.state
                .quiesced
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let unroute = || {
            let remaining: Vec<Arc<Loaded>> = {
                let mut plugins = self.inner.plugins.write();
                plugins.retain(|q| q.name != name);
                plugins.clone()
            };
            self.publish(&remaining);
        };
        self.teardown(&p, Teardown::Unload, unroute).await;
        p.state.set_status(Status::Unloaded);
        p.state.set_phase(Phase::Idle);
        tracing::info!(plugin = name, "plugin unloaded");
        Ok(())
    }
}
