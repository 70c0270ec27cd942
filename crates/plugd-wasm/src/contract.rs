//! The contract check: a component must export this plugd's `guest` interface, with every
//! function, before it is instantiated.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// The contract (WIT package) this runtime implements.
pub const CONTRACT: &str = "plugd:plugin@0.1.0";
/// The interface every plugin exports.
pub const GUEST_INTERFACE: &str = "plugd:plugin/guest@0.1.0";

/// Functions of `guest`, in WIT order.
const GUEST_FUNCTIONS: [&str; 15] = [
    "metadata",
    "init",
    "start",
    "stop",
    "cleanup",
    "on-config-change",
    "health-check",
    "on-hook",
    "handle-request",
    "on-request",
    "on-response",
    "on-event",
    "call-service",
    "on-tick",
    "run-command",
];

/// Check that `component` exports [`GUEST_INTERFACE`] with every function.
pub(crate) fn check(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let mut other_versions = Vec::new();
    let mut guest = None;
    for (name, item) in ty.exports(engine) {
        if name == GUEST_INTERFACE {
            guest = Some(item);
        } else if name.starts_with("plugd:plugin/guest") {
            other_versions.push(name.to_string());
        }
    }
    let Some(item) = guest else {
        if let Some(found) = other_versions.first() {
            let version = found.rsplit('@').next().unwrap_or("(none)");
            return Err(format!(
                "plugin was built against contract plugd:plugin@{version}, but this plugd supports {CONTRACT}; rebuild it with a guest SDK for {CONTRACT}"
            ));
        }
        return Err(format!(
            "plugin does not implement required interface: missing export {GUEST_INTERFACE} (is it a plugd plugin component?)"
        ));
    };
    let ComponentItem::ComponentInstance(instance) = item.ty else {
        return Err(format!(
            "plugin does not implement required interface: {GUEST_INTERFACE} is not an instance"
        ));
    };
    let present: Vec<String> = instance
        .exports(engine)
        .map(|(n, _)| n.to_string())
        .collect();
    for f in GUEST_FUNCTIONS {
        if !present.iter().any(|p| p == f) {
            return Err(format!(
                "plugin does not implement required interface: missing method {f}"
            ));
        }
    }
    Ok(())
}
