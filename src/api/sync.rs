//! `GET /v1/sync`: the pull sources and the item catalogue (operators and auditors).

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::AppState;
use super::access::{Peer, Reader, reader, refuse_read};
use crate::intake::Refusal;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/sync", get(sync_status))
}

/// `GET /v1/sync`: every pull source's cursor, lag, last success and error, and the
/// item catalogue's size (operators and auditors only).
#[utoipa::path(
    get, path = "/v1/sync", tag = "sync",
    responses((status = 200, description = "Pull sources and their cursors", body = SyncList), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn sync_status(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, Refusal> {
    if let Reader::Node(n) = reader(&state, &headers, &peer).await? {
        let what = format!("node `{n}` may not read the sync status (operators and auditors only)");
        return Err(refuse_read(&state, &n, what).await);
    }
    Ok(Json(
        crate::sync::status(&state.config, &*state.store).await?,
    ))
}
