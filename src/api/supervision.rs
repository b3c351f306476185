//! `GET /v1/supervision/cases`, `/v1/supervision/cases/{case_no}` and
//! `/v1/supervision/report` (电子监察): the red and yellow lists and the efficiency
//! report, for auditors. The same answers as `hallgate supervise`.

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::access::{Peer, audit_scope};
use crate::intake::Refusal;
use crate::store::supervision::{SvFilter, SvOp, SvOut};
use crate::supervise::report::{self, By};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/supervision/cases", get(list_cases))
        .route("/v1/supervision/cases/{case_no}", get(show_case))
        .route("/v1/supervision/report", get(show_report))
}

/// Only auditors read supervision: it spans every node's cases.
async fn auditor(state: &AppState, headers: &HeaderMap, peer: &Peer) -> Result<(), Refusal> {
    match audit_scope(state, headers, peer, None).await? {
        None => Ok(()),
        Some(node) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("node `{node}` is not an auditor; supervision spans every node's cases"),
        )),
    }
}

fn bad(message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "bad_query", message)
}

fn enabled(state: &AppState) -> Result<crate::supervise::Calendar, Refusal> {
    if !state.config.supervision.enabled {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_enabled",
            "supervision is not enabled: set [supervision] enabled = true",
        ));
    }
    crate::supervise::calendar(&state.config)
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "calendar", e.to_string()))
}

#[derive(Debug, Deserialize)]
pub(super) struct CasesQuery {
    state: Option<String>,
    dept: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/v1/supervision/cases", tag = "supervision",
    params(("state" = Option<String>, Query, description = "overdue, warning, suspended, on_time, finished_on_time or finished_late; several separated by commas; default: overdue,warning"), ("dept" = Option<String>, Query, description = "Department code (统一社会信用代码)"), ("after" = Option<String>, Query, description = "Case number to page after"), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "Cases with their deadlines and the working days left (negative: past)", body = Object), (status = 400, description = "A malformed query or body", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn list_cases(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<CasesQuery>,
) -> Result<Json<Value>, Refusal> {
    auditor(&state, &headers, &peer).await?;
    let cal = enabled(&state)?;
    let states: Vec<String> = q
        .state
        .as_deref()
        .unwrap_or("overdue,warning")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(s) = states
        .iter()
        .find(|s| crate::supervise::State::parse(s).is_none())
    {
        return Err(bad(format!(
            "state `{s}`: overdue, warning, suspended, on_time, finished_on_time or finished_late"
        )));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let SvOut::Cases(rows) = state
        .store
        .supervision(SvOp::Cases(SvFilter {
            states,
            dept_code: q.dept,
            after: q.after,
            limit,
            ..SvFilter::default()
        }))
        .await?
    else {
        return Err(bad("unexpected answer".to_string()));
    };
    let now = state.config.supervision.clock.now_ms();
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.case_no.clone()))
        .flatten();
    let cases: Vec<Value> = rows
        .iter()
        .map(|r| crate::supervise::view(&cal, r, now))
        .collect();
    Ok(Json(json!({ "cases": cases, "next_after": next })))
}

#[utoipa::path(
    get, path = "/v1/supervision/cases/{case_no}", tag = "supervision",
    params(("case_no" = String, Path)),
    responses((status = 200, description = "The case's supervision: state, deadline, working days, data-quality codes", body = Object), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn show_case(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(case_no): Path<String>,
) -> Result<Json<Value>, Refusal> {
    auditor(&state, &headers, &peer).await?;
    let cal = enabled(&state)?;
    match state.store.supervision(SvOp::Case(case_no)).await? {
        SvOut::Case(Some(r)) => Ok(Json(crate::supervise::view(
            &cal,
            &r,
            state.config.supervision.clock.now_ms(),
        ))),
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no supervised case with this number",
        )),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ReportQuery {
    from: String,
    to: String,
    by: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/supervision/report", tag = "supervision",
    params(("from" = String, Query, description = "Date or RFC 3339 time: cases accepted from"), ("to" = String, Query, description = "…until (exclusive; a date means its start)"), ("by" = Option<String>, Query, description = "dept (default), item or region")),
    responses((status = 200, description = "Per group: received, finished, on time, working days used and promised (mean, p90), overdue still open, data-quality failures by code", body = Object), (status = 400, description = "A malformed query or body", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn show_report(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Result<Json<Value>, Refusal> {
    auditor(&state, &headers, &peer).await?;
    enabled(&state)?;
    let time = |t: &str, name: &str| {
        crate::time::parse_time(t)
            .ok_or_else(|| bad(format!("{name}: `{t}` is not a date or RFC 3339 time")))
    };
    let (from, to) = (time(&q.from, "from")?, time(&q.to, "to")?);
    let by_text = q.by.as_deref().unwrap_or("dept");
    let by =
        By::parse(by_text).ok_or_else(|| bad(format!("by `{by_text}`: dept, item or region")))?;
    let rows = report::report(state.store.as_ref(), by, from, to, |_| {})
        .await
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "report", e.to_string()))?;
    Ok(Json(json!({
        "from": crate::time::rfc3339(from),
        "to": crate::time::rfc3339(to),
        "by": by_text,
        "rows": rows,
    })))
}
