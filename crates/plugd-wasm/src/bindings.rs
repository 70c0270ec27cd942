//! Host bindings generated from the contract's WIT (this crate's copy of the repository's
//! `wit/`): one module per contract version this plugd loads. `v0_2` is the contract the host
//! implements; `v0_1` is served through the shim in `crate::v0_1`.

/// `plugd:plugin@0.2.0` (`wit/plugin.wit`): the current contract.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        // The crate's own copy of the repository's wit/ (a published crate holds its files; the
        // wit_copies test keeps it equal). Only the files at the top are this package; older
        // versions live in subdirectories.
        path: "wit",
        world: "plugin",
        exports: { default: async },
        // Imports that await: a service call runs another plugin's guest; storage, the cache,
        // the database, outbound HTTP and exec go to their backends within what is left of the
        // guest call's deadline (epochs do not interrupt host code).
        imports: {
            "plugd:plugin/services.call": async,
            "plugd:plugin/storage": async,
            "plugd:plugin/cache": async,
            "plugd:plugin/database.execute": async,
            "plugd:plugin/database.query": async,
            "plugd:plugin/database.transaction": async,
            "plugd:plugin/outbound": async,
            "plugd:plugin/exec": async,
        },
    });

    pub(crate) use plugd::plugin::types;
}

/// `plugd:plugin@0.1.0` (`wit/0.1.0/plugin.wit`), frozen: its imports are the shim's.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "wit/0.1.0",
        world: "plugin",
        exports: { default: async },
        imports: {
            "plugd:plugin/services.call": async,
            "plugd:plugin/storage": async,
            "plugd:plugin/cache": async,
            "plugd:plugin/database": async,
            "plugd:plugin/outbound": async,
            "plugd:plugin/exec": async,
        },
        with: {
            "plugd:plugin/http.exchange": plugd_core::Exchange,
        },
    });

    pub(crate) use plugd::plugin::types;
}

/// A component ready to instantiate, as the contract version it was built against.
pub(crate) enum Pre {
    V0_2(v0_2::PluginPre<crate::host::InstanceState>),
    V0_1(v0_1::PluginPre<crate::host::InstanceState>),
}

/// One instance's exports, as the contract version it was built against.
pub(crate) enum World {
    V0_2(v0_2::Plugin),
    V0_1(v0_1::Plugin),
}

impl Pre {
    /// The bindings of `pre`'s exports for `version` (checked by `contract::check`).
    pub(crate) fn new(
        version: crate::contract::Version,
        pre: wasmtime::component::InstancePre<crate::host::InstanceState>,
    ) -> wasmtime::Result<Pre> {
        Ok(match version {
            crate::contract::Version::V0_2 => Pre::V0_2(v0_2::PluginPre::new(pre)?),
            crate::contract::Version::V0_1 => Pre::V0_1(v0_1::PluginPre::new(pre)?),
        })
    }

    pub(crate) async fn instantiate(
        &self,
        store: &mut wasmtime::Store<crate::host::InstanceState>,
    ) -> wasmtime::Result<World> {
        Ok(match self {
            Pre::V0_2(pre) => World::V0_2(pre.instantiate_async(store).await?),
            Pre::V0_1(pre) => World::V0_1(pre.instantiate_async(store).await?),
        })
    }
}
