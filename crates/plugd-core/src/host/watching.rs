//! Live configuration: applying a changed host config without a restart, and the file watcher
//! that reloads changed plugins and the config when `plugins.hot_reload` is on.

use std::sync::Weak;

use std::path::PathBuf;
use std::sync::Arc;

use plugd_manifest::{HostConfig, PluginEntry};
use serde::Serialize;
use serde_json::Map;

use crate::error::LoadError;
use crate::state::Status;

use super::{Host, Inner};
use crate::watch::{Change, Watch};

/// What applying a new host config did, plugin by plugin.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigReloadReport {
    /// Plugins newly listed and loaded.
    pub loaded: Vec<String>,
    /// Plugins no longer listed, unloaded.
    pub unloaded: Vec<String>,
    /// Plugins turned on.
    pub enabled: Vec<String>,
    /// Plugins turned off.
    pub disabled: Vec<String>,
    /// Plugins reloaded because their grants, limits, path or policies changed.
    pub reloaded: Vec<String>,
    /// Plugins whose config changed live (`on_config_change`).
    pub reconfigured: Vec<String>,
    /// Changes refused, with why; the previous state of each of these plugins stays in force.
    #[cfg_attr(feature = "openapi", schema(schema_with = rejected_schema))]
    pub rejected: Vec<(String, String)>,
    /// Host-level settings that changed and need a restart to apply.
    pub restart_required: Vec<String>,
}

/// The schema of [`ConfigReloadReport::rejected`]: `[plugin, why]` pairs, each an array of
/// exactly two strings. Not the `prefixItems` tuple utoipa derives for `(String, String)`:
/// schemathesis rewrites that into the pre-3.1 `items: [..]` form and then rejects the document
/// (RELIABILITY.md, "Admin API conformance").
#[cfg(feature = "openapi")]
fn rejected_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, Type};
    let pair = ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String))
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some("`[plugin, why the change was refused]`"));
    ArrayBuilder::new()
        .items(ArrayItems::RefOrSchema(Box::new(pair.into())))
        .description(Some(
            "Changes refused, with why; the previous state of each of these plugins stays in force.",
        ))
        .build()
}

impl ConfigReloadReport {
    /// Whether every change was applied.
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty()
    }
}

/// Whether two entries differ in what needs the plugin rebuilt (not only its config).
fn needs_rebuild(old: &PluginEntry, new: &PluginEntry) -> bool {
    let mut a = old.clone();
    let mut b = new.clone();
    a.config = Map::new();
    b.config = Map::new();
    a.enabled = true;
    b.enabled = true;
    a != b
}

impl Host {
    /// Apply a changed host config (`plugd reload --config`, the watcher): list, enable and
    /// disable plugins, re-check and apply changed grants and limits (by reloading the plugin),
    /// and hand changed plugin configs to `on_config_change` after schema validation. A change
    /// that is refused leaves that plugin as it was and is reported; the others still apply.
    /// Host-level settings (listeners, data directory, global limits) need a restart; they are
    /// named in the report.
    pub async fn apply_config(&self, new: &HostConfig) -> ConfigReloadReport {
        let mut report = ConfigReloadReport::default();
        let current = &self.inner.config;
        if current.server != new.server {
            report.restart_required.push("server".into());
        }
        if current.admin != new.admin {
            report.restart_required.push("admin".into());
        }
        if current.data_dir != new.data_dir {
            report.restart_required.push("data_dir".into());
        }
        {
            let (mut a, mut b) = (current.plugins.clone(), new.plugins.clone());
            a.plugins.clear();
            b.plugins.clear();
            if a != b {
                report
                    .restart_required
                    .push("plugins (global settings)".into());
            }
        }
        for entry in &new.plugins.plugins {
            let name = entry.name.clone();
            let Some(p) = self.find(&name) else {
                if entry.enabled {
                    match self.load_plugin(entry).await {
                        Ok(()) => report.loaded.push(name),
                        Err(e) => report.rejected.push((name, e.to_string())),
                    }
                }
                continue;
            };
            let old = p.entry.read().clone();
            let Some(old) = old else {
                // A native plugin: only its config can change live.
                if let Err(e) = self.apply_plugin_config(&name, &entry.config).await {
                    report.rejected.push((name, e.to_string()));
                } else if self.plugin_config(&name).as_deref() != Some(&entry.config) {
                    report.reconfigured.push(name);
                }
                continue;
            };
            if &old == entry {
                continue;
            }
            if !entry.enabled {
                if p.state.status() != Status::Disabled {
                    match self.disable_plugin(&name).await {
                        Ok(()) => report.disabled.push(name.clone()),
                        Err(e) => report.rejected.push((name.clone(), e.to_string())),
                    }
                }
                *p.entry.write() = Some(entry.clone());
                continue;
            }
            if needs_rebuild(&old, entry) {
                let result = {
                    let _lifecycle = self.inner.lifecycle.lock().await;
                    self.reload_entry(entry).await
                };
                match result {
                    Ok(_) => {
                        if let Some(fresh) = self.find(&name) {
                            *fresh.entry.write() = Some(entry.clone());
                        }
                        report.reloaded.push(name);
                    }
                    Err(e) => report.rejected.push((name, e.to_string())),
                }
                continue;
            }
            let was_off = matches!(p.state.status(), Status::Disabled);
            if was_off {
                *p.entry.write() = Some(entry.clone());
                if let Err(e) = self.apply_plugin_config(&name, &entry.config).await {
                    report.rejected.push((name, e.to_string()));
                    continue;
                }
                match self.enable_plugin(&name).await {
                    Ok(()) => report.enabled.push(name),
                    Err(e) => report.rejected.push((name, e.to_string())),
                }
                continue;
            }
            if old.config != entry.config {
                match self.apply_plugin_config(&name, &entry.config).await {
                    Ok(()) => {
                        *p.entry.write() = Some(entry.clone());
                        report.reconfigured.push(name);
                    }
                    Err(e) => report.rejected.push((name, e.to_string())),
                }
            }
        }
        // Plugins the old file listed and the new one does not.
        for old in &current.plugins.plugins {
            if new.plugin(&old.name).is_none()
                && self.find(&old.name).is_some()
                && let Err(e) = self.unload_plugin(&old.name, false).await
            {
                report.rejected.push((old.name.clone(), e.to_string()));
            } else if new.plugin(&old.name).is_none() {
                report.unloaded.push(old.name.clone());
            }
        }
        tracing::info!(?report, "host config applied");
        report
    }

    /// Read the host config file again (the one this host was started from) and apply it.
    pub async fn reload_config_file(&self) -> Result<ConfigReloadReport, LoadError> {
        let path = self.inner.config.source.clone().ok_or_else(|| {
            LoadError::Invalid("this host was not started from a config file".into())
        })?;
        let new = HostConfig::from_path(&path).map_err(|e| LoadError::Invalid(e.to_string()))?;
        Ok(self.apply_config(&new).await)
    }

    /// Watch every plugin folder and the config file; reload what changes, debounced by
    /// `plugins.reload_delay`. Runs until the host shuts down. Started by [`Host::start`] when
    /// `plugins.hot_reload` is on.
    pub fn watch_for_changes(&self) -> Result<(), crate::watch::WatchError> {
        let plugins: Vec<(String, PathBuf)> = self
            .inner
            .plugins
            .read()
            .iter()
            .filter_map(|p| {
                let entry = p.entry.read().clone()?;
                entry.path.is_dir().then_some((p.name.clone(), entry.path))
            })
            .collect();
        let config = self.inner.config.source.clone();
        let watcher = self.inner.watcher.as_deref().ok_or_else(|| {
            crate::watch::WatchError(
                "this host has no file watcher: set one with HostBuilder::watcher (the plugd façade's \"std\" feature does)".to_string(),
            )
        })?;
        let (watch, mut changes) = crate::watch::watch(
            watcher,
            &plugins,
            config.as_deref(),
            self.inner.config.plugins.reload_delay,
        )?;
        tracing::info!(
            plugins = plugins.len(),
            config = config.is_some(),
            "watching for changes"
        );
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let host = Host { inner };
                match change {
                    Change::Plugin(name) => match host.reload_plugin(&name).await {
                        Ok(o) => {
                            tracing::info!(plugin = %name, from = %o.from_version, to = %o.to_version, "reloaded after a file change")
                        }
                        Err(e) => {
                            tracing::error!(plugin = %name, error = %e, "reload after a file change failed")
                        }
                    },
                    Change::Config => match host.reload_config_file().await {
                        Ok(report) if report.is_clean() => {}
                        Ok(report) => {
                            tracing::error!(rejected = ?report.rejected, "some config changes were refused")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the changed config file was refused")
                        }
                    },
                }
            }
        });
        *self.inner.watching.lock() = Some((watch, task));
        Ok(())
    }

    /// Stop watching files.
    pub(crate) fn stop_watching(&self) {
        if let Some((watch, task)) = self.inner.watching.lock().take() {
            task.abort();
            drop::<Watch>(watch);
        }
    }
}
