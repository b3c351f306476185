//! `GET /v1/destinations` (each destination: paused or not, its queue) and
//! `POST /v1/destinations/{id}/pause|resume` (operators stop and restart deliveries
//! to one destination, on every instance, audited with who asked).

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::access::{Peer, Reader, reader, refuse_read};
use crate::delivery::manual;
use crate::intake::Refusal;
use crate::store::Asked;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/destinations", get(list))
        .route("/v1/destinations/{id}/pause", post(pause))
        .route("/v1/destinations/{id}/resume", post(resume))
}

#[utoipa::path(
    get, path = "/v1/destinations", tag = "deliveries",
    responses((status = 200, description = "Each destination: paused or not, its queue", body = DestinationList), (status = 401, description = "No valid credentials", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, Refusal> {
    let who = reader(&state, &headers, &peer).await?;
    let paused = state.store.paused_destinations().await?;
    let depths = state.store.queue_depths().await?;
    let list: Vec<Value> = state
        .config
        .destinations()
        .filter(|(id, _)| match &who {
            Reader::Node(n) => n == id,
            Reader::All(_) => true,
        })
        .map(|(id, _)| {
            let d = depths.iter().find(|d| d.destination == id);
            json!({
                "destination": id,
                "paused": paused.iter().any(|p| p == id),
                "pending": d.map_or(0, |d| d.pending),
                "dead": d.map_or(0, |d| d.dead),
            })
        })
        .collect();
    Ok(Json(json!({ "destinations": list })))
}

#[utoipa::path(
    post, path = "/v1/destinations/{id}/pause", tag = "deliveries",
    params(("id" = String, Path)),
    responses((status = 200, description = "Paused", body = DestinationControl), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn pause(
    state: State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    id: Path<String>,
) -> Result<Json<Value>, Refusal> {
    control(state, peer, headers, id, true).await
}

#[utoipa::path(
    post, path = "/v1/destinations/{id}/resume", tag = "deliveries",
    params(("id" = String, Path)),
    responses((status = 200, description = "Resumed", body = DestinationControl), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn resume(
    state: State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    id: Path<String>,
) -> Result<Json<Value>, Refusal> {
    control(state, peer, headers, id, false).await
}

async fn control(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    paused: bool,
) -> Result<Json<Value>, Refusal> {
    let who = reader(&state, &headers, &peer).await?;
    let action = if paused { "pause" } else { "resume" };
    if let Reader::Node(n) = &who {
        let what = format!(
            "node `{n}` is not an operator: to {action} a destination needs roles = [\"operator\"]"
        );
        return Err(refuse_read(&state, n, what).await);
    }
    if !state.config.destinations().any(|(d, _)| d == id) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no destination `{}` in the config",
                id.chars().take(64).collect::<String>()
            ),
        ));
    }
    let asked = Asked {
        by: who.asked_by(),
        what: format!("{action} deliveries to {id}"),
    };
    manual::pause(&*state.store, &id, paused, &asked).await?;
    if !paused {
        state.wake.wake(&id);
    }
    Ok(Json(json!({ "destination": id, "paused": paused })))
}
