//! How a plugin directory becomes a [`Plugin`]: the [`Loader`] a runtime (wasm) implements and
//! what it is given for each plugin.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use plugd_manifest::{HostConfig, Manifest, Permission, PluginEntry};
use serde_json::{Map, Value};

use crate::audit::AuditLog;
use crate::cache::PluginCache;
use crate::capabilities::Capabilities;
use crate::error::BoxError;
use crate::events::Publisher;
use crate::kv::PluginStore;
use crate::plugin::Plugin;
use crate::services::Services;
use crate::state::PluginState;

/// What a [`Loader`] is given to prepare one plugin.
#[derive(Debug)]
pub struct LoaderContext<'a> {
    /// The plugin's directory.
    pub dir: &'a Path,
    /// Its manifest.
    pub manifest: &'a Manifest,
    /// Its entry in the host config.
    pub entry: &'a PluginEntry,
    /// The effective permissions.
    pub granted: &'a BTreeSet<Permission>,
    /// The validated config.
    pub config: &'a Map<String, Value>,
    /// Its storage.
    pub store: PluginStore,
    /// The host config.
    pub host: &'a HostConfig,
    /// The plugin's event publisher.
    pub publisher: Publisher,
    /// The host's services.
    pub services: Arc<Services>,
    /// Where the plugin's own metrics go.
    pub metrics: Arc<crate::PluginMetrics>,
    /// Its namespace of the cache (for the `cache` capability).
    pub cache: PluginCache,
    /// Where denied calls are recorded.
    pub audit: Arc<AuditLog>,
    /// Its gated capabilities (database, network, exec, config, filesystem), opened per its
    /// grants; denials are counted against it and audited.
    pub capabilities: Capabilities,
    /// Its live state: a denied host call counts against it here.
    pub state: Arc<PluginState>,
    /// The component's bytes as the package check verified them, for a folder installed from
    /// a package ([`plugd_pkg::check_for_load`]); `None` otherwise. A loader compiles these
    /// rather than reading the file again, which may have been changed since the check.
    pub component: Option<Arc<[u8]>>,
}

/// Turns a plugin directory into a [`Plugin`]: the wasm runtime is one.
#[async_trait]
pub trait Loader: Send + Sync + 'static {
    /// Prepare the plugin (compile, check its contract). Runs before `init`, off the request path.
    /// The error is the loader's own, boxed; the host reports it as [`LoadError::Runtime`]
    /// (`failed to load plugin '<name>': <error>`).
    async fn load(&self, ctx: LoaderContext<'_>) -> Result<Arc<dyn Plugin>, BoxError>;

    /// Add the loader's own series (a wasm engine's pool, say) to `/metrics`, in the
    /// Prometheus text format.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
}
