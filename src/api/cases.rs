//! `GET /v1/cases/{case_no}`: every record of a case (办件) with its deliveries
//! (personal data masked); a node reads a case it sent records of or receives
//! records of.

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::access::{Peer, Reader, masked, reader, refuse_read};
use crate::intake::Refusal;
use crate::store::CaseStanding;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/cases/{case_no}", get(get_case))
}

#[utoipa::path(
    get, path = "/v1/cases/{case_no}", tag = "records",
    params(("case_no" = String, Path)),
    responses((status = 200, description = "The case's records and deliveries, personal data masked", body = CaseAnswer), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn get_case(
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
    // A node reads a case it is a party of: it opened it, sent records to it, or
    // receives its records; or one its config grants it by region or item.
    if let Reader::Node(n) = &who {
        let party = match state.store.case_standing(&case_no, n).await? {
            CaseStanding::Party => true,
            CaseStanding::Other { region, item_code } => crate::intake::grants(&state.config, n)
                .cover(region.as_deref(), item_code.as_deref()),
            CaseStanding::New => false,
        };
        if !party {
            let what = format!(
                "node `{n}` neither sent nor receives records of this case, and its config grants it neither the case's region nor its item"
            );
            return Err(refuse_read(&state, n, what).await);
        }
    }
    Ok(Json(
        json!({ "case_no": case_no, "records": masked(&records) }),
    ))
}
