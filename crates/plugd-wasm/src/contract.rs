//! The contract check: a component must export the `guest` interface of a contract version this
//! plugd supports, with every function, before it is instantiated.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// The contract (WIT package) this runtime implements; guests built today target it.
pub const CONTRACT: &str = "plugd:plugin@0.2.0";
/// The interface every plugin of [`CONTRACT`] exports.
pub const GUEST_INTERFACE: &str = "plugd:plugin/guest@0.2.0";
/// Every contract this runtime loads, newest first: [`CONTRACT`] natively, the older ones through
/// a shim (docs/authors/contract-versions.md).
pub const SUPPORTED_CONTRACTS: [&str; 2] = [CONTRACT, "plugd:plugin@0.1.0"];

/// The contract version a component was built against, among those this plugd loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// `plugd:plugin@0.2.0`.
    V0_2,
    /// `plugd:plugin@0.1.0`, served through the shim.
    V0_1,
}

impl Version {
    /// The `guest` interface a component of this version exports.
    fn guest(self) -> &'static str {
        match self {
            Version::V0_2 => GUEST_INTERFACE,
            Version::V0_1 => "plugd:plugin/guest@0.1.0",
        }
    }
}

/// Functions of `guest`, in WIT order (the same in every supported version).
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

/// The contract version `component` was built against: it must export the `guest` interface of a
/// supported version, with every function.
pub(crate) fn check(engine: &Engine, component: &Component) -> Result<Version, String> {
    let ty = component.component_type();
    let mut other_versions = Vec::new();
    let mut guest = None;
    for (name, item) in ty.exports(engine) {
        if let Some(v) = [Version::V0_2, Version::V0_1]
            .into_iter()
            .find(|v| v.guest() == name)
        {
            guest = Some((v, item));
        } else if name.starts_with("plugd:plugin/guest") {
            other_versions.push(name.to_string());
        }
    }
    let supported = SUPPORTED_CONTRACTS.join(" and ");
    let Some((version, item)) = guest else {
        if let Some(found) = other_versions.first() {
            let version = found.rsplit('@').next().unwrap_or("(none)");
            return Err(format!(
                "plugin was built against contract plugd:plugin@{version}, but this plugd supports {supported}; rebuild it with a guest SDK for {CONTRACT}"
            ));
        }
        return Err(format!(
            "plugin does not implement required interface: missing export {GUEST_INTERFACE} (is it a plugd plugin component? this plugd supports {supported})"
        ));
    };
    let ComponentItem::ComponentInstance(instance) = item.ty else {
        return Err(format!(
            "plugin does not implement required interface: {} is not an instance",
            version.guest()
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
    Ok(version)
}
