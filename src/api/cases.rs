//! `GET /v1/cases/{case_no}`: every record of a case (办件) with its deliveries
//! (personal data masked); a node reads a case it sent records of or receives
//! records of.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::access::{Peer, Reader, masked, reader, refuse_read};
use crate::intake::Refusal;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/cases/{case_no}", get(get_case))
}

async fn get_case(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(case_no): Path<String>,
) -> Result<Json<Value>, Refusal> {
    let who = reader(&state, &headers, &peer).await?;
    let records = state.store.case(&case_no).await?;
    if records.is_empty() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no records for that case",
        ));
    }
    // A node reads a case it sent records of or receives records of.
    if let Reader::Node(n) = &who
        && !records
            .iter()
            .any(|r| r.source == *n || r.deliveries.iter().any(|d| d.destination == *n))
    {
        let what = format!("node `{n}` neither sent nor receives records of this case");
        return Err(refuse_read(&state, n, what).await);
    }
    Ok(Json(
        json!({ "case_no": case_no, "records": masked(&records) }),
    ))
}
