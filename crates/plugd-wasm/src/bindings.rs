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
