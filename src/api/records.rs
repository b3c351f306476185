//! `POST /v1/records` and `POST /v1/records/{kind}`: record intake, the HTTP source
//! ([`crate::sources::http`]), which answers `202 Accepted` only after the store has
//! committed.

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;

use super::access::{Peer, peer_of};
use super::{AppState, RequestId};
use crate::intake::Refusal;
use crate::record::Kind;
use crate::sources::http::Push;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/records", post(post_records_any))
        .route("/v1/records/{kind}", post(post_records_kind))
}

/// `?partial=true`: store the valid records of a body and report the rest, instead
/// of refusing the whole body.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct IntakeQuery {
    #[serde(default)]
    partial: bool,
}

#[utoipa::path(
    post, path = "/v1/records", tag = "records",
    params(("partial" = Option<bool>, Query, description = "Store the valid records and report the rest"), ("Idempotency-Key" = Option<String>, Header), ("X-Request-Id" = Option<String>, Header)),
    request_body(content = Object, description = "Canonical JSON (an object, an array, JSON lines) or the sender's own dialect through its mappings", content_type = "application/json"),
    responses((status = 202, description = "Durably accepted", body = AcceptResponse), (status = 400, description = "A malformed query or body", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 408, description = "The body did not arrive in time (min_body_bytes_per_second)", body = ErrorBody), (status = 413, description = "Body over max_body_bytes", body = ErrorBody), (status = 415, description = "Unsupported content type", body = ErrorBody), (status = 422, description = "Invalid records: which record, field and rule", body = ErrorBody), (status = 429, description = "Over a rate or the refusal budget; Retry-After says when", body = ErrorBody), (status = 503, description = "Overloaded, a destination backlog full, or the store unavailable; Retry-After says when", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn post_records_any(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    id: Option<axum::Extension<RequestId>>,
    Query(q): Query<IntakeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    state
        .push
        .receive(Push {
            kind: None,
            partial: q.partial,
            headers: &headers,
            peer: peer_of(&peer),
            body,
            request_id: id.map(|i| i.0.0),
        })
        .await
}

#[utoipa::path(
    post, path = "/v1/records/{kind}", tag = "records",
    params(("kind" = String, Path, description = "application, material, process or result"), ("partial" = Option<bool>, Query), ("Idempotency-Key" = Option<String>, Header), ("X-Request-Id" = Option<String>, Header)),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 202, description = "Durably accepted", body = AcceptResponse), (status = 400, description = "A malformed query or body", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "Unknown record kind", body = ErrorBody), (status = 408, description = "The body did not arrive in time (min_body_bytes_per_second)", body = ErrorBody), (status = 413, description = "Body over max_body_bytes", body = ErrorBody), (status = 415, description = "Unsupported content type", body = ErrorBody), (status = 422, description = "Invalid records", body = ErrorBody), (status = 429, description = "Over a rate or the refusal budget; Retry-After says when", body = ErrorBody), (status = 503, description = "Overloaded, a destination backlog full, or the store unavailable; Retry-After says when", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn post_records_kind(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    id: Option<axum::Extension<RequestId>>,
    Path(kind): Path<String>,
    Query(q): Query<IntakeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let kind = Kind::parse(&kind).ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_kind",
            "record kinds are application, material, process and result",
        )
    })?;
    state
        .push
        .receive(Push {
            kind: Some(kind),
            partial: q.partial,
            headers: &headers,
            peer: peer_of(&peer),
            body,
            request_id: id.map(|i| i.0.0),
        })
        .await
}
