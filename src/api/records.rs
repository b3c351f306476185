//! `POST /v1/records` and `POST /v1/records/{kind}`: record intake, the HTTP source
//! ([`crate::sources::http`]), which answers `202 Accepted` only after the store has
//! committed.

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
struct IntakeQuery {
    #[serde(default)]
    partial: bool,
}

async fn post_records_any(
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

async fn post_records_kind(
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
