//! `GET /v1/audit` (events, filtered) and `GET /v1/cases/{case_no}/timeline` (a case
//! as an auditor reads it). Auditors see everything; other nodes only the events that
//! name them. Personal data is masked.

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
use crate::record::mask_personal;
use crate::time::{parse_time, rfc3339};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/audit", get(audit_query))
        .route("/v1/cases/{case_no}/timeline", get(case_timeline))
}

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    case_no: Option<String>,
    node: Option<String>,
    kind: Option<String>,
    event: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(("case_no" = Option<String>, Query), ("node" = Option<String>, Query), ("kind" = Option<String>, Query), ("event" = Option<String>, Query), ("from" = Option<String>, Query, description = "Date or RFC 3339 time"), ("to" = Option<String>, Query), ("after" = Option<i64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "Audit events, personal data masked", body = AuditList), (status = 400, description = "A malformed query or body", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn audit_query(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, Refusal> {
    let node = audit_scope(&state, &headers, &peer, q.node).await?;
    let time = |v: &Option<String>, name: &str| -> Result<Option<i64>, Refusal> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => parse_time(t).map(Some).ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    format!("{name}: `{t}` is not a date or RFC 3339 time"),
                )
            }),
        }
    };
    if let Some(e) = q.event.as_deref()
        && crate::event::EventKind::parse(e).is_none()
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("unknown event `{e}`"),
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .store
        .audit_events(crate::store::AuditFilter {
            after_seq: q.after,
            case_no: q.case_no,
            node,
            kind: q.kind,
            event: q.event,
            from_ms: time(&q.from, "from")?,
            to_ms: time(&q.to, "to")?,
            limit,
            ..Default::default()
        })
        .await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    let events: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.insert("at".into(), Value::String(rfc3339(r.at_ms)));
            }
            mask_personal(&mut v);
            v
        })
        .collect();
    Ok(Json(json!({ "events": events, "next_after": next })))
}

#[utoipa::path(
    get, path = "/v1/cases/{case_no}/timeline", tag = "audit",
    params(("case_no" = String, Path)),
    responses((status = 200, description = "The case's audit timeline (全程留痕)", body = Object), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 404, description = "No such item", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn case_timeline(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(case_no): Path<String>,
) -> Result<Json<Value>, Refusal> {
    let node = audit_scope(&state, &headers, &peer, None).await?;
    let rows = crate::audit::timeline::case_rows(state.store.as_ref(), &case_no, node).await?;
    if rows.is_empty() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no events for that case",
        ));
    }
    let config = state.config.clone();
    let name = move |id: &str| config.node(id).map(|n| n.name.clone()).unwrap_or_default();
    let steps = crate::audit::timeline::build(&rows, &name);
    let mut v = json!({
        "case_no": case_no,
        "text": crate::audit::timeline::render(&case_no, &steps),
        "steps": steps,
    });
    mask_personal(&mut v);
    Ok(Json(v))
}
