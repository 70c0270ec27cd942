//! The admin API's view of the fleet: `GET /fleet` (the instances, their plugins' versions and
//! health), `POST /fleet/rollouts` (start `plugd rollout`), `GET /fleet/rollouts[/{id}]`; and the
//! port through which a reload or a config change made here is told to the other instances.
//!
//! The server knows no engine: a fleet (plugd-fleet's, on NATS JetStream) is handed in with
//! [`AdminToken::with_fleet`](crate::AdminToken::with_fleet) as a [`FleetControl`].

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::admin::{ApiError, AppState, json_error};

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

fn no_fleet() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "this instance is not in a fleet (fleet.enabled: false)",
    )
}

fn refused(r: FleetRefusal) -> Response {
    json_error(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        r.message,
    )
}

/// The fleet: every live instance, the versions of its plugins, its health.
#[utoipa::path(
    get, path = "/fleet", tag = "fleet",
    responses(
        (status = 200, description = "The instances of the fleet", body = Object),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "This instance is not in a fleet", body = ApiError),
        (status = 503, description = "The fleet's server does not answer", body = ApiError),
    )
)]
pub(crate) async fn view(State(state): State<AppState>) -> Response {
    let Some(fleet) = state.admin.fleet() else {
        return no_fleet();
    };
    match fleet.view().await {
        Ok(v) => Json(v).into_response(),
        Err(r) => refused(r),
    }
}

/// `POST /fleet/rollouts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutBody {
    /// The plugin.
    plugin: String,
    /// The version to move the fleet to: installed or kept in this instance's plugins folder,
    /// or already in the fleet's package store.
    #[schema(example = "1.2.0")]
    version: String,
}

/// Move the fleet's plugin to a version one instance at a time, watching each instance's error
/// rate and p99 against the old version's, and roll every instance back when the new one is
/// worse. Answers at once; follow it at `GET /fleet/rollouts/{id}`.
#[utoipa::path(
    post, path = "/fleet/rollouts", tag = "fleet",
    request_body = RolloutBody,
    responses(
        (status = 202, description = "The rollout, started", body = Object),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "This instance is not in a fleet", body = ApiError),
        (status = 409, description = "It cannot start: a rollout is running, the version is not found, an instance lacks the plugin", body = ApiError),
        (status = 503, description = "The fleet's server does not answer", body = ApiError),
    )
)]
pub(crate) async fn start_rollout(
    State(state): State<AppState>,
    body: Result<Json<RolloutBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(fleet) = state.admin.fleet() else {
        return no_fleet();
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return crate::admin::bad_body(e),
    };
    match fleet.start_rollout(&body.plugin, &body.version).await {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(r) => refused(r),
    }
}

/// Every rollout started on this instance, the latest first.
#[utoipa::path(
    get, path = "/fleet/rollouts", tag = "fleet",
    responses(
        (status = 200, description = "The rollouts", body = Object),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "This instance is not in a fleet", body = ApiError),
    )
)]
pub(crate) async fn rollouts(State(state): State<AppState>) -> Response {
    match state.admin.fleet() {
        Some(fleet) => Json(fleet.rollouts()).into_response(),
        None => no_fleet(),
    }
}

/// One rollout started on this instance: its state and every step so far.
#[utoipa::path(
    get, path = "/fleet/rollouts/{id}", tag = "fleet",
    params(("id" = u64, Path, description = "The rollout's number")),
    responses(
        (status = 200, description = "The rollout", body = Object),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No such rollout, or not in a fleet", body = ApiError),
    )
)]
pub(crate) async fn rollout(State(state): State<AppState>, UrlPath(id): UrlPath<u64>) -> Response {
    let Some(fleet) = state.admin.fleet() else {
        return no_fleet();
    };
    match fleet.rollout(id) {
        Some(v) => Json(v).into_response(),
        None => json_error(StatusCode::NOT_FOUND, format!("no rollout {id} here")),
    }
}

/// After a reload or a config change through this instance's admin API: tell the fleet. A
/// failure is logged, not the caller's: the change is in force here.
pub(crate) async fn announce_version(state: &AppState, plugin: &str) {
    if let Some(fleet) = state.admin.fleet()
        && let Err(e) = fleet.announce_version(plugin).await
    {
        tracing::error!(plugin, error = %e.message, "the reload was not told to the fleet: the other instances keep their version");
    }
}

/// See [`announce_version`].
pub(crate) async fn announce_config(state: &AppState, plugin: &str, config: &Map<String, Value>) {
    if let Some(fleet) = state.admin.fleet()
        && let Err(e) = fleet.announce_config(plugin, config).await
    {
        tracing::error!(plugin, error = %e.message, "the config change was not told to the fleet: the other instances keep theirs");
    }
}
