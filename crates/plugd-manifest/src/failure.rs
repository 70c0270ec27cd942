//! [`FailurePolicy`]: what the requests a plugin guards get when its hooks cannot run, as the
//! host config and the manifest both write it.

use serde::{Deserialize, Serialize};

/// `failure_policy` of a plugin: what the requests it guards get when its hook or middleware
/// cannot run (it is not running, is disabled, throttled, timed out, failed, or its instance
/// pool is full). Written `fail_open` / `open` or `fail_closed` / `closed`, in the host config
/// or in the plugin's manifest; the stricter of the two applies.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Skip its hooks and middleware: the request goes on without them.
    #[default]
    #[serde(alias = "open")]
    FailOpen,
    /// Answer 503 instead of letting the request through; its routes answer 503 too.
    #[serde(alias = "closed")]
    FailClosed,
}

impl schemars::JsonSchema for FailurePolicy {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FailurePolicy".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "What the requests a plugin guards get when its hooks cannot run: fail_open (or open) skips them, fail_closed (or closed) answers 503.",
            "type": "string",
            "enum": ["fail_open", "open", "fail_closed", "closed"]
        })
    }
}
