//! The admin API's view of the fleet: `GET /fleet` (the instances, their plugins' versions and
//! health), `POST /fleet/rollouts` (start `plugd rollout`), `GET /fleet/rollouts[/{id}]`; and the
//! port through which a reload or a config change made here is told to the other instances.
//!
//! The server knows no engine: a fleet (plugd-fleet's, on NATS JetStream) is handed in with
//! [`AdminToken::with_fleet`](crate::AdminToken::with_fleet) as a
//! [`FleetControl`](crate::FleetControl).

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use utoipa::ToSchema;

use crate::admin::{ApiError, AppState, json_error};
use crate::control::FleetRefusal;

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
    params(("id" = String, Path, description = "The rollout's number")),
    responses(
        (status = 200, description = "The rollout", body = Object),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No such rollout, or not in a fleet", body = ApiError),
    )
)]
pub(crate) async fn rollout(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let Some(fleet) = state.admin.fleet() else {
        return no_fleet();
    };
    match id.parse::<u64>().ok().and_then(|n| fleet.rollout(n)) {
        Some(v) => Json(v).into_response(),
        None => json_error(StatusCode::NOT_FOUND, format!("no rollout {id} here")),
    }
}
