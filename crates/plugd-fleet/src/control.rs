//! The fleet as the admin API sees it ([`plugd_server::FleetControl`]).

use serde_json::{Map, Value, json};

use plugd_server::{FleetControl, FleetRefusal};

use crate::{Fleet, FleetError};

fn refusal(e: FleetError) -> FleetRefusal {
    let status = match e {
        FleetError::Nats { .. } => 503,
        FleetError::Apply(_) => 422,
        FleetError::Refused(_) => 409,
    };
    FleetRefusal {
        status,
        message: e.to_string(),
    }
}

#[async_trait::async_trait]
impl FleetControl for Fleet {
    fn instance(&self) -> String {
        Fleet::instance(self).to_string()
    }

    async fn view(&self) -> Result<Value, FleetRefusal> {
        self.refresh().await.map_err(refusal)?;
        let instances = self.instances().await.map_err(refusal)?;
        Ok(json!({
            "fleet": self.name(),
            "instance": Fleet::instance(self),
            "instances": instances,
        }))
    }

    async fn announce_version(&self, plugin: &str) -> Result<(), FleetRefusal> {
        Fleet::announce_version(self, plugin)
            .await
            .map(|_| ())
            .map_err(refusal)
    }

    async fn announce_config(
        &self,
        plugin: &str,
        config: &Map<String, Value>,
    ) -> Result<(), FleetRefusal> {
        Fleet::announce_config(self, plugin, config)
            .await
            .map_err(refusal)
    }

    async fn start_rollout(&self, plugin: &str, version: &str) -> Result<Value, FleetRefusal> {
        let report = Fleet::start_rollout(self, plugin, version)
            .await
            .map_err(refusal)?;
        Ok(serde_json::to_value(report).expect("a rollout serializes"))
    }

    fn rollout(&self, id: u64) -> Option<Value> {
        Fleet::rollout(self, id).map(|r| serde_json::to_value(r).expect("a rollout serializes"))
    }

    fn rollouts(&self) -> Value {
        serde_json::to_value(Fleet::rollouts(self)).expect("rollouts serialize")
    }
}
