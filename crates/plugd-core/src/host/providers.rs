//! The service container's view of the host's plugins ([`Providers`]): a call waits at the
//! provider's reload gate, then goes through the guarded call like any other.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use crate::error::{HostError, PluginError};
use crate::loaded::Loaded;
use crate::services::{Providers, not_found};
use crate::state::Status;

/// The host's plugin list, in start order.
pub(super) struct PluginList(pub(super) Arc<RwLock<Vec<Arc<Loaded>>>>);

#[async_trait]
impl Providers for PluginList {
    async fn call(
        &self,
        caller: &str,
        plugin: &str,
        service: &str,
        method: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, HostError> {
        // A call into a plugin that is being reloaded waits at its gate like a request does,
        // then goes to the version the reload left in place.
        let (target, _pass) = loop {
            let target = self
                .0
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

    fn exported(&self) -> Vec<(String, String)> {
        self.0
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
            .collect()
    }
}
