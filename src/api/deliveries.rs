//! `GET /v1/deliveries` (a node lists those made to it; operators all) and
//! `POST /v1/deliveries/{id}/retry` (operators put a dead letter back in the queue).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::access::{Peer, Reader, reader, refuse_read};
use crate::intake::Refusal;
use crate::store::{DeliveryFilter, DeliveryState};
use crate::time::now_ms;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/deliveries/{id}/retry", post(retry_delivery))
}

#[derive(Debug, Deserialize)]
struct DeliveryQuery {
    state: Option<String>,
    destination: Option<String>,
    case_no: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

async fn list_deliveries(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Query(mut q): Query<DeliveryQuery>,
) -> Result<Json<Value>, Refusal> {
    // A node lists only the deliveries made to it.
    if let Reader::Node(n) = reader(&state, &headers, &peer).await? {
        if q.destination.as_ref().is_some_and(|d| *d != n) {
            let what = format!("node `{n}` may list only the deliveries made to it");
            return Err(refuse_read(&state, &n, what).await);
        }
        q.destination = Some(n);
    }
    let st = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "state must be pending, delivered or dead",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let items = state
        .store
        .deliveries(DeliveryFilter {
            state: st,
            destination: q.destination,
            case_no: q.case_no,
            after_id: q.after,
            limit,
        })
        .await?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(Json(json!({ "deliveries": items, "next_after": next })))
}

async fn retry_delivery(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, Refusal> {
    if let Reader::Node(n) = reader(&state, &headers, &peer).await? {
        let what = format!("node `{n}` is not an operator: only operators put dead letters back");
        return Err(refuse_read(&state, &n, what).await);
    }
    let view = state.store.retry_dead(id, now_ms()).await?;
    state.wake.wake(&view.destination);
    Ok(Json(json!({ "delivery": view })))
}
