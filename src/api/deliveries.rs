//! `GET /v1/deliveries` (a node lists those made to it; operators all),
//! `GET /v1/deliveries/{id}` (one, with its attempts), `POST /v1/deliveries/{id}/retry`
//! and `POST /v1/deliveries/retry` (operators put dead letters back in the queue, one
//! or all that a filter selects; each audited with who asked).

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::access::{Peer, Reader, masked, reader, refuse_read};
use crate::delivery::manual;
use crate::intake::Refusal;
use crate::store::{Asked, DeliveryFilter, DeliveryState};
use crate::time::now_ms;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/deliveries/retry", post(retry_matching))
        .route("/v1/deliveries/{id}", get(show_delivery))
        .route("/v1/deliveries/{id}/retry", post(retry_delivery))
}

#[derive(Debug, Deserialize)]
pub(super) struct DeliveryQuery {
    state: Option<String>,
    destination: Option<String>,
    case_no: Option<String>,
    /// Created at or after this date or RFC 3339 time.
    since: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

fn bad_query(message: &str) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "bad_query", message)
}

/// `pending`, `leased` (pending, held by a worker now), `delivered` or `dead`.
fn state_filter(s: Option<&str>) -> Result<(Option<DeliveryState>, Option<bool>), Refusal> {
    match s {
        None | Some("") => Ok((None, None)),
        Some("leased") => Ok((Some(DeliveryState::Pending), Some(true))),
        Some(s) => DeliveryState::parse(s)
            .map(|st| (Some(st), None))
            .ok_or_else(|| bad_query("state must be pending, leased, delivered or dead")),
    }
}

fn since_ms(s: Option<&str>) -> Result<Option<i64>, Refusal> {
    s.filter(|s| !s.is_empty())
        .map(|s| {
            crate::time::parse_time(s)
                .ok_or_else(|| bad_query("since must be a date (2026-12-04) or an RFC 3339 time"))
        })
        .transpose()
}

#[utoipa::path(
    get, path = "/v1/deliveries", tag = "deliveries",
    params(("state" = Option<String>, Query, description = "pending, leased, delivered or dead"), ("destination" = Option<String>, Query), ("case_no" = Option<String>, Query), ("since" = Option<String>, Query), ("after" = Option<i64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "Deliveries, paged by id", body = DeliveryList), (status = 400, description = "A malformed query or body", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn list_deliveries(
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
    let (st, leased) = state_filter(q.state.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let items = state
        .store
        .deliveries(DeliveryFilter {
            state: st,
            destination: q.destination,
            case_no: q.case_no,
            since_ms: since_ms(q.since.as_deref())?,
            leased,
            after_id: q.after,
            limit,
        })
        .await?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(Json(json!({ "deliveries": items, "next_after": next })))
}

#[utoipa::path(
    post, path = "/v1/deliveries/{id}/retry", tag = "deliveries",
    params(("id" = i64, Path)),
    responses((status = 200, description = "Back in the queue", body = DeliveryAnswer), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody), (status = 409, description = "The delivery is not dead-lettered", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn retry_delivery(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, Refusal> {
    let who = operator(&state, &headers, &peer).await?;
    let asked = Asked {
        by: who.asked_by(),
        what: format!("retry delivery {id}"),
    };
    let view = state.store.retry_dead(id, now_ms(), asked).await?;
    state.wake.wake(&view.destination);
    Ok(Json(json!({ "delivery": view })))
}

/// Only operators (and auditors) act on deliveries; a node is refused, audited,
/// with the role it lacks named.
async fn operator(state: &AppState, headers: &HeaderMap, peer: &Peer) -> Result<Reader, Refusal> {
    let who = reader(state, headers, peer).await?;
    if let Reader::Node(n) = &who {
        let what = format!(
            "node `{n}` is not an operator: putting dead letters back needs roles = [\"operator\"]"
        );
        return Err(refuse_read(state, n, what).await);
    }
    Ok(who)
}

/// `GET /v1/deliveries/{id}`: one delivery with its attempts.
#[utoipa::path(
    get, path = "/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = i64, Path)),
    responses((status = 200, description = "One delivery with its steps", body = DeliveryHistoryDoc), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn show_delivery(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, Refusal> {
    let who = reader(&state, &headers, &peer).await?;
    let h = manual::history(&*state.store, id).await?;
    if let Reader::Node(n) = &who
        && h.delivery.destination != *n
    {
        let what = format!("node `{n}` may read only the deliveries made to it");
        return Err(refuse_read(&state, n, what).await);
    }
    Ok(Json(masked(&h)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryMatching {
    destination: String,
    /// Only `dead`: what a bulk retry puts back.
    #[serde(default = "dead")]
    state: String,
    since: Option<String>,
    case_no: Option<String>,
}

fn dead() -> String {
    "dead".into()
}

/// `POST /v1/deliveries/retry`: every dead letter a filter selects, back in the queue.
#[utoipa::path(
    post, path = "/v1/deliveries/retry", tag = "deliveries",
    request_body = RetryMatchingDoc,
    responses((status = 200, description = "How many dead letters matched and were put back", body = RetryAnswer), (status = 400, description = "A malformed query or body", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn retry_matching(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, Refusal> {
    let who = operator(&state, &headers, &peer).await?;
    let ask: RetryMatching = serde_json::from_slice(&body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body must be {{\"destination\": \"…\", \"state\": \"dead\", \"since\": \"…\"}}: {e}"),
        )
    })?;
    if ask.state != "dead" {
        return Err(bad_query(
            "a bulk retry puts back dead letters only: state must be dead",
        ));
    }
    let filter = DeliveryFilter {
        destination: Some(ask.destination.clone()),
        case_no: ask.case_no.clone(),
        since_ms: since_ms(ask.since.as_deref())?,
        ..DeliveryFilter::default()
    };
    let ids = manual::dead_matching(&*state.store, filter).await?;
    let asked = Asked {
        by: who.asked_by(),
        what: format!(
            "retry dead deliveries to {}{}{}",
            ask.destination,
            ask.since.map(|s| format!(" since {s}")).unwrap_or_default(),
            ask.case_no
                .map(|c| format!(" of case {c}"))
                .unwrap_or_default()
        ),
    };
    let retried = manual::retry(&*state.store, &ids, &asked).await?;
    state.wake.wake(&ask.destination);
    Ok(Json(
        json!({ "matched": ids.len(), "retried": retried, "limit": manual::MAX_BULK_RETRY }),
    ))
}
