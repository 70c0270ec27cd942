//! Services plugins export to each other: typed `Arc`s between native plugins, and byte-level
//! calls (`call(plugin, service, method, payload)`) that work for every kind of plugin.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use crate::error::HostError;

type Typed = Arc<dyn Any + Send + Sync>;

/// The plugins that export services, as the container reaches them: the host implements this
/// over its plugin list (each call waits at the provider's reload gate and goes through the
/// guarded call), so the container never depends on how the host holds plugins.
#[async_trait]
pub(crate) trait Providers: Send + Sync {
    /// Call `method` of `service` exported by `plugin`; `caller` is another plugin.
    async fn call(
        &self,
        caller: &str,
        plugin: &str,
        service: &str,
        method: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, HostError>;

    /// Every service a running plugin exports: plugin, service name.
    fn exported(&self) -> Vec<(String, String)>;
}

/// No plugins: every call is "service not found".
struct NoProviders;

#[async_trait]
impl Providers for NoProviders {
    async fn call(
        &self,
        _: &str,
        plugin: &str,
        service: &str,
        _: &str,
        _: &[u8],
    ) -> Result<Vec<u8>, HostError> {
        Err(not_found(plugin, service))
    }

    fn exported(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The host's service container: what every plugin exported (docs/design.md#events-and-services).
pub struct Services {
    typed: RwLock<HashMap<(String, String), Typed>>,
    providers: Arc<dyn Providers>,
}

impl Default for Services {
    fn default() -> Self {
        Services::new(Arc::new(NoProviders))
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("typed", &self.typed.read().len())
            .finish()
    }
}

/// The contract's wording of a missing service (docs/design.md#errors).
pub(crate) fn not_found(plugin: &str, service: &str) -> HostError {
    HostError::NotFound(format!(
        "service not found: plugin '{plugin}' does not export '{service}'"
    ))
}

impl Services {
    pub(crate) fn new(providers: Arc<dyn Providers>) -> Services {
        Services {
            typed: RwLock::default(),
            providers,
        }
    }

    pub(crate) fn insert_typed(&self, plugin: &str, service: &str, value: Typed) {
        self.typed
            .write()
            .insert((plugin.to_string(), service.to_string()), value);
    }

    pub(crate) fn remove_plugin(&self, plugin: &str) {
        self.typed.write().retain(|(p, _), _| p != plugin);
    }

    /// A typed service a native plugin exported with [`InitContext::export_typed`].
    ///
    /// [`InitContext::export_typed`]: crate::InitContext::export_typed
    pub fn import<T: Any + Send + Sync>(
        &self,
        plugin: &str,
        service: &str,
    ) -> Result<Arc<T>, HostError> {
        let value = self
            .typed
            .read()
            .get(&(plugin.to_string(), service.to_string()))
            .cloned()
            .ok_or_else(|| not_found(plugin, service))?;
        value.downcast::<T>().map_err(|_| {
            HostError::Invalid(format!(
                "service '{service}' of plugin '{plugin}' is not a {}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// Call `method` of `service` exported by `plugin`, with a payload (JSON by convention).
    /// `caller` is passed to the service; a plugin cannot call its own services this way.
    pub async fn call(
        &self,
        caller: &str,
        plugin: &str,
        service: &str,
        method: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, HostError> {
        if caller == plugin {
            return Err(HostError::Invalid(format!(
                "plugin '{caller}' cannot call its own service '{service}' through the host"
            )));
        }
        self.providers
            .call(caller, plugin, service, method, payload)
            .await
    }

    /// Every exported service: plugin, service name.
    pub fn exported(&self) -> Vec<(String, String)> {
        let mut out = self.providers.exported();
        out.sort();
        out
    }
}
