//! Middleware registered and unregistered while a plugin runs ([`crate::Registrar`]): the
//! change is checked like one made in `init`, stored, and published as a new dispatch table in
//! one step under the host's publishing lock.

use std::sync::{Arc, Weak};

use plugd_manifest::Permission;

use crate::dispatch::DispatchTable;
use crate::error::HostError;
use crate::plugin::{Plugin, Registrar, RegistrationSink};
use crate::registrations::Registrations;
use crate::state::Status;

use super::{Host, Inner};

/// The host as a [`RegistrationSink`]. Weak: a plugin keeps its registrar, and the host keeps
/// the plugin.
struct HostSink(Weak<Inner>);

impl RegistrationSink for HostSink {
    fn change(
        &self,
        name: &str,
        code: &Weak<dyn Plugin>,
        change: &mut dyn FnMut(&mut Registrations) -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        let inner = self
            .0
            .upgrade()
            .ok_or_else(|| HostError::Unsupported("the host has shut down".into()))?;
        let host = Host { inner };
        let _publishing = host.inner.publishing.lock();
        let plugins = host.inner.plugins.read().clone();
        let p = plugins
            .iter()
            .find(|p| p.name == name && std::ptr::addr_eq(code.as_ptr(), Arc::as_ptr(&p.plugin)))
            .ok_or_else(|| {
                HostError::Denied(format!(
                    "plugin '{name}': this version no longer serves (it was reloaded or unloaded); registrations of a replaced version are refused"
                ))
            })?;
        let status = p.state.status();
        if !matches!(status, Status::Initialized | Status::Running) {
            return Err(HostError::Denied(format!(
                "plugin '{name}' is {}: run-time registrations need it initialized or running",
                status.as_str()
            )));
        }
        let before = p.registrations.load_full();
        let mut regs = Registrations::clone(&before);
        change(&mut regs)?;
        let declared = p
            .manifest
            .as_ref()
            .is_some_and(|m| m.permissions.contains(&Permission::Intercept));
        if let Some(why) = p.access.overreach(declared, &regs) {
            return Err(HostError::Denied(format!(
                "plugin '{name}': {why}, which needs the 'intercept' permission (a plugd addition): grant it in the host config with {}.permissions.intercept: true",
                host.entry_key(name)
            )));
        }
        p.registrations.store(Arc::new(regs));
        let (table, refused) = DispatchTable::build(&plugins);
        if let Some((_, why)) = refused.iter().find(|(r, _)| Arc::ptr_eq(r, p)) {
            p.registrations.store(before);
            return Err(HostError::Invalid(format!(
                "plugin '{name}': the change was refused: {why}"
            )));
        }
        host.inner.dispatcher.publish(table);
        tracing::info!(plugin = %name, "plugin changed its middleware; dispatch table published");
        Ok(())
    }
}

impl Host {
    /// The registrar of the plugin whose code is `code`: its run-time middleware changes come
    /// back to this host.
    pub(super) fn registrar_for(
        &self,
        name: &str,
        granted: &std::collections::BTreeSet<Permission>,
        code: &Arc<dyn Plugin>,
    ) -> Registrar {
        Registrar::new(
            name,
            granted,
            code,
            Arc::new(HostSink(Arc::downgrade(&self.inner))),
        )
    }
}
