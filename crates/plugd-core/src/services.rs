//! Services plugins export to each other: typed `Arc`s between native plugins, and byte-level
//! calls (`call(plugin, service, method, payload)`) that work for every kind of plugin.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{HostError, PluginError};
use crate::host::Loaded;
use crate::state::Status;

type Typed = Arc<dyn Any + Send + Sync>;

/// The host's service container: what every plugin exported (docs/design.md#events-and-services).
#[derive(Default)]
pub struct Services {
    typed: RwLock<HashMap<(String, String), Typed>>,
    plugins: Arc<RwLock<Vec<Arc<Loaded>>>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("typed", &self.typed.read().len())
            .finish()
    }
}

/// The contract's wording (docs/design.md#errors).
fn not_found(plugin: &str, service: &str) -> HostError {
    HostError::NotFound(format!(
        "service not found: plugin '{plugin}' does not export '{service}'"
    ))
}

impl Services {
    pub(crate) fn new(plugins: Arc<RwLock<Vec<Arc<Loaded>>>>) -> Services {
        Services {
            typed: RwLock::default(),
            plugins,
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
        // A call into a plugin that is being reloaded waits at its gate like a request does,
        // then goes to the version the reload left in place.
        let (target, _pass) = loop {
            let target = self
                .plugins
                .read()
                .iter()
                .find(|p| p.name == plugin)
                .cloned()
                .ok_or_else(|| not_found(plugin, service))?;
            if let Some(pass) = target.gate.try_enter_owned() {
                break (target, pass);
            }
            let gate = target.gate.clone();
            drop(
                gate.enter()
                    .await
                    .map_err(|e| HostError::Failed(e.to_string()))?,
            );
        };
        if !target
            .registrations
            .load()
            .exports
            .iter()
            .any(|e| e == service)
        {
            return Err(not_found(plugin, service));
        }
        if target.state.status() != Status::Running {
            return Err(HostError::Failed(format!(
                "plugin '{plugin}' is not running (status: {})",
                target.state.status()
            )));
        }
        if let Some(t) = target.state.throttled() {
            return Err(HostError::Failed(format!(
                "plugin '{plugin}' is throttled: used {}% CPU, budget {}%",
                t.used_percent, t.budget_percent
            )));
        }
        crate::call::guarded(
            &target,
            crate::call::Call::Service {
                service,
                method,
                caller,
            },
            target.plugin.call_service(service, method, payload, caller),
        )
        .await
        .map_err(|e| match e {
            PluginError::Timeout(m) => HostError::Failed(format!("{plugin}.{m}")),
            e => HostError::Failed(format!("{plugin}.{service}.{method}: {e}")),
        })
    }

    /// Every exported service: plugin, service name.
    pub fn exported(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .plugins
            .read()
            .iter()
            .filter(|p| p.state.status() == Status::Running)
            .flat_map(|p| {
                let name = p.name.clone();
                p.registrations
                    .load()
                    .exports
                    .iter()
                    .map(move |e| (name.clone(), e.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }
}
