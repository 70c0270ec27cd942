//! Host bindings generated from `wit/plugin.wit`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    exports: { default: async },
    // A service call runs another plugin's guest: the only import that awaits.
    imports: { "plugd:plugin/services.call": async },
    with: {
        "plugd:plugin/http.exchange": plugd_core::Exchange,
    },
});

pub(crate) use plugd::plugin::types;
