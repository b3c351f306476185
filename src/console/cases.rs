//! The console's cases (办件): a search by case number, or by the opening node,
//! item code, a kind of record it holds and the date it was opened (newest first,
//! at most [`FOUND`]); and a case's page: its records (masked), their deliveries
//! with receipts or reasons, and the case's audit timeline (全程留痕). An auditor
//! may reveal one record's masked fields with a stated reason, audited first.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::html::{Viewer, esc, page, table};
use super::pages::{forbidden, masked, state_cell, viewer_or_login};
use super::{Console, ConsoleError};
use crate::event::{Event, EventKind};
use crate::store::AuditFilter;
use crate::store::console::CaseSearch;
use crate::time::{now_ms, parse_time, rfc3339};
use serde_json::json;

/// Cases a search lists at most.
const FOUND: usize = 100;

#[derive(Deserialize)]
pub(super) struct CaseQuery {
    case_no: Option<String>,
    node: Option<String>,
    item_code: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// A query value, trimmed, empty as none, at most 64 characters.
fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(|s| s.trim().chars().take(64).collect::<String>())
        .filter(|s| !s.is_empty())
}

pub(super) async fn cases(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<CaseQuery>,
) -> Result<Response, ConsoleError> {
    let (user, s) = match viewer_or_login(&c, &headers).await? {
        Ok(who) => who,
        Err(login) => return Ok(login),
    };
    let v = Viewer {
        user: &user,
        session: &s,
    };
    let case_no = given(&q.case_no).unwrap_or_default();
    let (node, item_code, kind) = (given(&q.node), given(&q.item_code), given(&q.kind));
    let (from, to) = (given(&q.from), given(&q.to));
    let field = |v: &Option<String>| esc(v.as_deref().unwrap_or(""));
    let kinds = ["application", "material", "process", "result"]
        .iter()
        .map(|k| {
            let sel = if kind.as_deref() == Some(*k) {
                " selected"
            } else {
                ""
            };
            format!("<option value=\"{k}\"{sel}>{k}</option>")
        })
        .collect::<String>();
    let mut body = format!(
        "<form class=\"search\" method=\"get\" action=\"/console/cases\">\
<label>办件编号<input name=\"case_no\" value=\"{}\"></label>\
<label>节点<input name=\"node\" value=\"{}\"></label>\
<label>事项编码<input name=\"item_code\" value=\"{}\"></label>\
<label>记录类型<select name=\"kind\"><option value=\"\">全部</option>{kinds}</select></label>\
<label>从<input name=\"from\" value=\"{}\" placeholder=\"2026-12-01\"></label>\
<label>到<input name=\"to\" value=\"{}\" placeholder=\"2026-12-05\"></label>\
<button>查询</button></form>",
        esc(&case_no),
        field(&node),
        field(&item_code),
        field(&from),
        field(&to)
    );
    let searching = case_no.is_empty()
        && (node.is_some()
            || item_code.is_some()
            || kind.is_some()
            || from.is_some()
            || to.is_some());
    if searching {
        let found = c
            .app
            .store
            .search_cases(CaseSearch {
                node,
                item_code,
                kind,
                from_ms: from.as_deref().and_then(parse_time),
                to_ms: to.as_deref().and_then(parse_time),
                limit: FOUND,
            })
            .await?;
        let rows: Vec<Vec<String>> = found
            .iter()
            .map(|f| {
                let link = percent_encoding::utf8_percent_encode(
                    &f.case_no,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                vec![
                    format!(
                        "<a class=\"case\" href=\"/console/cases?case_no={}\">{}</a>",
                        esc(&link),
                        esc(&f.case_no)
                    ),
                    esc(&f.opened_by),
                    esc(f.item_code.as_deref().unwrap_or("")),
                    esc(f.region.as_deref().unwrap_or("")),
                    esc(&rfc3339(f.opened_ms)),
                ]
            })
            .collect();
        body.push_str(&format!(
            "<h3>找到 {} 件（最多显示 {FOUND} 件，最新在前）</h3>",
            found.len()
        ));
        body.push_str(&table(
            &["办件编号", "受理节点", "事项编码", "行政区划", "受理时间"],
            &rows,
        ));
    }
    if !case_no.is_empty() {
        body.push_str(&case_body(&c, &v, &case_no, None).await?);
    }
    Ok(Html(page("办件", Some(&v), &body)).into_response())
}

/// A case's records, deliveries and timeline; the record `reveal` names (message id,
/// index) unmasked.
async fn case_body(
    c: &Console,
    v: &Viewer<'_>,
    case_no: &str,
    reveal: Option<(&str, usize)>,
) -> Result<String, ConsoleError> {
    let mut body = String::new();
    let records = c.app.store.case(case_no).await?;
    if records.is_empty() {
        body.push_str(&format!(
            "<p class=\"error\">没有办件 {}。</p>",
            esc(case_no)
        ));
    } else {
        body.push_str(&format!("<h3>办件 {} 的记录</h3>", esc(case_no)));
        for r in &records {
            // Revealed in this answer only, to the auditor who gave a reason.
            let whole = reveal == Some((r.message_id.as_str(), r.index));
            let shown = if whole {
                r.record.clone()
            } else {
                masked(&r.record)
            };
            body.push_str(&format!(
                "<h3>{} · 来自 {} · {}</h3><pre class=\"record{}\">{}</pre>",
                esc(r.kind.as_str()),
                esc(&r.source),
                esc(&r.received_at),
                if whole { " revealed" } else { "" },
                esc(&serde_json::to_string_pretty(&shown).unwrap_or_default())
            ));
            if v.is("auditor") && !whole {
                body.push_str(&format!(
                    "<form class=\"search reveal\" method=\"post\" action=\"/console/cases/reveal\">{}\
<input type=\"hidden\" name=\"case_no\" value=\"{}\"><input type=\"hidden\" name=\"message_id\" value=\"{}\">\
<input type=\"hidden\" name=\"index\" value=\"{}\"><label>查看完整信息的理由<input name=\"reason\" required maxlength=\"200\"></label>\
<button class=\"reveal\">显示完整信息</button></form>",
                    v.csrf_field(),
                    esc(case_no),
                    esc(&r.message_id),
                    r.index
                ));
            }
            let rows: Vec<Vec<String>> = r
                .deliveries
                .iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        esc(&d.destination),
                        state_cell(d.state),
                        d.attempts.to_string(),
                        d.last_status.map_or_else(String::new, |s| s.to_string()),
                        esc(d.delivered_at.as_deref().unwrap_or("")),
                        esc(&crate::record::mask_text(
                            d.receipt
                                .as_deref()
                                .or(d.last_error.as_deref())
                                .unwrap_or(""),
                        )),
                    ]
                })
                .collect();
            body.push_str(&table(
                &[
                    "投递",
                    "目的地",
                    "状态",
                    "次数",
                    "状态码",
                    "送达时间",
                    "回执或原因",
                ],
                &rows,
            ));
        }
        let events = c
            .app
            .store
            .audit_events(AuditFilter {
                case_no: Some(case_no.to_string()),
                limit: 1000,
                ..AuditFilter::default()
            })
            .await?;
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    esc(&rfc3339(e.at_ms)),
                    esc(&e.event),
                    esc(e.node.as_deref().unwrap_or("")),
                    esc(&masked(&e.detail).to_string()),
                ]
            })
            .collect();
        body.push_str("<h3>全程留痕</h3>");
        body.push_str(&table(&["序号", "时间", "事件", "节点", "详情"], &rows));
    }
    Ok(body)
}

#[derive(Deserialize)]
pub(super) struct RevealForm {
    #[serde(rename = "_csrf")]
    csrf: Option<String>,
    case_no: String,
    message_id: String,
    index: usize,
    reason: String,
}

/// An auditor reveals one record's masked fields, stating why; audited with the
/// person and the reason before anything is shown.
pub(super) async fn reveal(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<RevealForm>,
) -> Result<Response, ConsoleError> {
    let Some((user, s)) =
        super::session::current(&*c.app.store, &c.app.config.console, &headers).await?
    else {
        return Ok(forbidden("请先登录。"));
    };
    if !super::session::csrf_ok(&s, f.csrf.as_deref()) {
        return Ok(forbidden("缺少或错误的 CSRF 令牌：请从控制台页面操作。"));
    }
    if !user.roles.iter().any(|r| r == "auditor") {
        return Ok(forbidden("查看完整信息需要 auditor（审计）角色。"));
    }
    let reason: String = f.reason.trim().chars().take(200).collect();
    if reason.is_empty() {
        return Ok(forbidden("请说明查看完整信息的理由。"));
    }
    let mut e = Event::new(now_ms(), EventKind::PersonalDataRevealed);
    e.case_no = Some(f.case_no.clone());
    e.message_id = Some(f.message_id.clone());
    e.detail = json!({
        "by": format!("console user {}", user.name),
        "index": f.index,
        "reason": crate::record::mask_text(&reason),
    });
    c.app.store.audit(e).await?;
    let v = Viewer {
        user: &user,
        session: &s,
    };
    let body = case_body(&c, &v, &f.case_no, Some((&f.message_id, f.index))).await?;
    Ok(Html(page("办件", Some(&v), &body)).into_response())
}
