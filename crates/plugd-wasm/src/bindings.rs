//! Host bindings generated from `wit/plugin.wit`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    exports: { default: async },
    with: {
        "plugd:plugin/http.exchange": plugd_core::Exchange,
    },
});

pub(crate) use plugd::plugin::types;
