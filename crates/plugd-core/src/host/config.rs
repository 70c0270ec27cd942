//! Plugins' config at run time: the error threshold, reading the config (secrets redacted for
//! people) and changing it live through the plugin's `on_config_change`.

use std::sync::Arc;

use plugd_manifest::ErrorThreshold;
use serde_json::{Map, Value};

use crate::call::{Call, guarded};
use crate::error::LoadError;
use crate::state::Status;

use super::Host;

/// Who gave a config: only the operator's host config file is expanded from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigFrom {
    HostConfigFile,
    Caller,
}

impl Host {
    /// The contract's `SetErrorThreshold` (docs/design.md#manager-api): replace a plugin's error
    /// threshold at run time (its window starts empty).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let dir = std::env::temp_dir().join(format!("plugd-doc-threshold-{}", std::process::id()));
    /// use plugd_core::Host;
    /// use plugd_manifest::{ErrorThreshold, ThresholdAction};
    /// use std::time::Duration;
    /// # let manifest = plugd_manifest::Manifest::from_str(
    /// #     "name: auth-plugin\nversion: 1.0.0\ndescription: d\nauthor: a\n",
    /// #     plugd_manifest::Format::Yaml, None).unwrap();
    /// # struct Auth;
    /// # impl plugd_core::Plugin for Auth {}
    /// let host = Host::builder().data_dir(&dir).native(manifest, Auth).build().unwrap();
    /// host.start().await.unwrap();
    /// host.set_error_threshold("auth-plugin", ErrorThreshold {
    ///     enabled: true,
    ///     max_errors: 100,
    ///     time_window: Duration::from_secs(300),
    ///     action: ThresholdAction::Disable,
    ///     reset_on_success: true,
    /// }).unwrap();
    /// let info = host.plugin_info("auth-plugin").unwrap();
    /// assert_eq!((info.threshold.max_errors, info.threshold.time_window.as_str()), (100, "5m"));
    /// host.shutdown().await;
    /// # });
    /// ```
    pub fn set_error_threshold(
        &self,
        name: &str,
        threshold: ErrorThreshold,
    ) -> Result<(), LoadError> {
        let p = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        if threshold.max_errors == 0 {
            return Err(LoadError::Invalid(format!(
                "error threshold of plugin '{name}': max_errors must be at least 1"
            )));
        }
        if threshold.time_window.is_zero() {
            return Err(LoadError::Invalid(format!(
                "error threshold of plugin '{name}': time_window must be longer than 0"
            )));
        }
        p.state.set_error_threshold(threshold);
        Ok(())
    }

    /// A plugin's config in force, secrets included: the plugin's own view. Anything shown to a
    /// person (the admin API, a dashboard, a log) should use [`Host::plugin_config_redacted`].
    pub fn plugin_config(&self, name: &str) -> Option<Arc<Map<String, Value>>> {
        self.find(name).map(|p| p.config.load_full())
    }

    /// A plugin's config in force with its `secret: true` values replaced by
    /// [`REDACTED`](plugd_manifest::REDACTED): what the admin API and the dashboard show.
    pub fn plugin_config_redacted(&self, name: &str) -> Option<Map<String, Value>> {
        let p = self.find(name)?;
        let config = p.config.load_full();
        Some(match &p.manifest {
            Some(m) => m.config.redact(&config),
            None => (*config).clone(),
        })
    }

    /// Change a plugin's config live: validate it against the manifest's schema, hand it to the
    /// plugin's `on_config_change`, and keep it only if the plugin accepts it.
    ///
    /// The config comes from outside the host config file (the admin API, the application): it
    /// is never expanded from the host's environment — a `${VAR}` is an error, `$${` a literal
    /// `${`. A secret key given as [`REDACTED`](plugd_manifest::REDACTED) (as
    /// [`Host::plugin_config_redacted`] shows it) keeps its current value.
    pub async fn update_plugin_config(
        &self,
        name: &str,
        config: &Map<String, Value>,
    ) -> Result<(), LoadError> {
        self.change_plugin_config(name, config, ConfigFrom::Caller)
            .await
    }

    /// [`Host::update_plugin_config`] with the config of the operator's host config file
    /// (`${VAR}` expanded), for a changed file applied live.
    pub(crate) async fn apply_plugin_config(
        &self,
        name: &str,
        config: &Map<String, Value>,
    ) -> Result<(), LoadError> {
        self.change_plugin_config(name, config, ConfigFrom::HostConfigFile)
            .await
    }

    async fn change_plugin_config(
        &self,
        name: &str,
        config: &Map<String, Value>,
        from: ConfigFrom,
    ) -> Result<(), LoadError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let p = self
            .find(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let manifest = p.manifest.as_ref().ok_or_else(|| {
            LoadError::Invalid(format!(
                "plugin '{name}' has no valid manifest; its config cannot change"
            ))
        })?;
        let validated = match from {
            ConfigFrom::HostConfigFile => manifest.config.validate(config),
            ConfigFrom::Caller => {
                let given = manifest.config.unredact(config, &p.config.load_full());
                manifest.config.validate_untrusted(&given)
            }
        }
        .map_err(|e| LoadError::Config {
            plugin: name.to_string(),
            message: e.to_string(),
        })?;
        if matches!(p.state.status(), Status::Running | Status::Initialized) {
            guarded(
                &p,
                Call::ConfigChange,
                p.plugin.on_config_change(&validated),
            )
            .await
            .map_err(|error| LoadError::ConfigRejected {
                plugin: name.to_string(),
                error,
            })?;
        }
        p.config.store(Arc::new(validated));
        tracing::info!(plugin = name, "config changed");
        Ok(())
    }
}
