//! Host bindings generated from `wit/plugin.wit` (this crate's copy of the repository's).

wasmtime::component::bindgen!({
    // The crate's own copy of the repository's wit/ (a published crate holds its files; the
    // wit_copies test keeps it equal).
    path: "wit",
    world: "plugin",
    exports: { default: async },
    // Imports that await: a service call runs another plugin's guest; storage, the cache, the
    // database, outbound HTTP and exec go to their backends within what is left of the guest
    // call's deadline (epochs do not interrupt host code).
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
