//! `GET /v1/messages/{id}`: a message as received, with its records and their
//! deliveries (personal data masked); a node reads only the messages it sent.

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::AppState;
use super::access::{Peer, Reader, masked, reader, refuse_read};
use crate::intake::Refusal;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/messages/{id}", get(get_message))
}

#[utoipa::path(
    get, path = "/v1/messages/{id}", tag = "records",
    params(("id" = String, Path)),
    responses((status = 200, description = "A message with its records, personal data masked", body = MessageView), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn get_message(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Refusal> {
    let who = reader(&state, &headers, &peer).await?;
    match state.store.message(&id).await? {
        Some(m) => {
            if let Reader::Node(n) = &who
                && *n != m.source
            {
                let what = format!("node `{n}` may read only the messages it sent");
                return Err(refuse_read(&state, n, what).await);
            }
            Ok(Json(masked(&m)))
        }
        None => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no message with that id",
        )),
    }
}
