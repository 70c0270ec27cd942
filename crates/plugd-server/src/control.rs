//! The port through which the admin API reaches the fleet this instance belongs to (plugd-fleet's
//! `Fleet` implements it); the server itself knows no engine.

use serde_json::{Map, Value};

/// Why the fleet refused or failed a call: the status the admin API answers and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRefusal {
    /// 409 for a request that cannot be done now (a rollout running, an unknown version),
    /// 503 when the fleet's server does not answer.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

/// What the admin API asks of the fleet this instance belongs to.
#[async_trait::async_trait]
pub trait FleetControl: Send + Sync + 'static {
    /// This instance's name in the fleet.
    fn instance(&self) -> String;
    /// The fleet: `{ "fleet", "instance", "instances": [ { instance, advertise, ready, degraded,
    /// plugins: [ { name, version, status, requests, errors } ] } ] }`.
    async fn view(&self) -> Result<Value, FleetRefusal>;
    /// A plugin was reloaded here: its version goes to every other instance.
    async fn announce_version(&self, plugin: &str) -> Result<(), FleetRefusal>;
    /// A plugin's config was changed here (as given): every other instance applies it.
    async fn announce_config(
        &self,
        plugin: &str,
        config: &Map<String, Value>,
    ) -> Result<(), FleetRefusal>;
    /// Start moving the fleet's `plugin` to `version`; the rollout as it starts.
    async fn start_rollout(&self, plugin: &str, version: &str) -> Result<Value, FleetRefusal>;
    /// A rollout started here, as it is now.
    fn rollout(&self, id: u64) -> Option<Value>;
    /// Every rollout started here, the latest first.
    fn rollouts(&self) -> Value;
}
