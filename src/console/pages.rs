//! The console's pages: the overview (each destination's queue, the pull
//! sources) and deliveries (投递: filter, dead letters with reasons, and
//! for operators a retry of one or of all that match, after a confirmation). Every
//! change checks the session's CSRF token; an auditor's retry is refused with 403.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::html::{Viewer, esc, page, table};
use super::session::{self, csrf_ok};
use super::{Console, ConsoleError};
use crate::delivery::manual;
use crate::store::console::{ConsoleSession, ConsoleUser};
use crate::store::{Asked, DeliveryFilter, DeliveryState};
use crate::time::now_ms;

/// Rows a list shows at most.
const PAGE: usize = 200;

pub(super) fn forbidden(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(page(
            "不允许",
            None,
            &format!("<p class=\"error\">{}</p>", esc(message)),
        )),
    )
        .into_response()
}

/// The person behind the request, or the login page.
pub(super) async fn viewer_or_login(
    c: &Console,
    headers: &HeaderMap,
) -> Result<Result<(ConsoleUser, ConsoleSession), Response>, ConsoleError> {
    Ok(
        match session::current(&*c.app.store, &c.app.config.console, headers).await? {
            Some(who) => Ok(who),
            None => Err(Redirect::to("/console/login").into_response()),
        },
    )
}

macro_rules! viewer {
    ($c:expr, $headers:expr) => {
        match viewer_or_login(&$c, &$headers).await? {
            Ok(who) => who,
            Err(login) => return Ok(login),
        }
    };
}

/// Masked as the API masks (ID numbers, mobiles, case passwords), and people's
/// names too: a person applicant's and a contact's keep their first character.
pub(super) fn masked(v: &impl serde::Serialize) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    crate::record::mask_personal(&mut v);
    mask_names(&mut v);
    v
}

fn mask_names(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, inner) in map.iter_mut() {
                if let Value::Object(o) = inner
                    && (k == "contact"
                        || (k == "applicant"
                            && o.get("type").and_then(Value::as_str) != Some("legal")))
                    && let Some(Value::String(name)) = o.get_mut("name")
                {
                    *name = crate::record::mask_keep(name, 1, 0);
                }
                mask_names(inner);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_names),
        _ => {}
    }
}

pub(super) fn state_cell(s: DeliveryState) -> String {
    format!("<span class=\"state-{0}\">{0}</span>", s.as_str())
}

pub(super) async fn overview(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let (user, s) = viewer!(c, headers);
    let v = Viewer {
        user: &user,
        session: &s,
    };
    let store = &*c.app.store;
    let depths = store.queue_depths().await?;
    let paused = store.paused_destinations().await?;
    let now = now_ms();
    let rows: Vec<Vec<String>> = c
        .app
        .config
        .destinations()
        .map(|(id, _)| {
            let d = depths.iter().find(|d| d.destination == id);
            vec![
                esc(id),
                d.map_or(0, |d| d.pending).to_string(),
                d.map_or(0, |d| d.dead).to_string(),
                d.and_then(|d| d.oldest_pending_ms)
                    .map_or_else(String::new, |t| format!("{} 秒", (now - t).max(0) / 1000)),
                if paused.iter().any(|p| p == id) {
                    "已暂停"
                } else {
                    "投递中"
                }
                .to_string(),
            ]
        })
        .collect();
    let sources = store.sync_sources().await?;
    let sync: Vec<Vec<String>> = sources
        .iter()
        .map(|s| {
            vec![
                esc(&s.node),
                s.pulled.to_string(),
                s.last_success_ms
                    .map_or_else(String::new, |t| format!("{} 秒前", (now - t).max(0) / 1000)),
                esc(s.last_error.as_deref().unwrap_or("")),
                if s.paused { "已暂停" } else { "运行中" }.to_string(),
            ]
        })
        .collect();
    let body = format!(
        "{}<h3>投递队列</h3>{}<h3>同步来源</h3>{}",
        chart(),
        table(&["目的地", "待投递", "死信", "最早待投递", "状态"], &rows),
        table(&["来源", "已拉取", "上次成功", "最近错误", "状态"], &sync)
    );
    Ok(Html(page("概览", Some(&v), &body)).into_response())
}

/// Records accepted and deliveries delivered per minute over the last hours (this
/// process, as `/metrics` counts them), as an SVG drawn on the server.
fn chart() -> String {
    let minutes = crate::observe::minutes::last();
    let (accepted, delivered): (u64, u64) = minutes
        .iter()
        .fold((0, 0), |(a, d), (_, x, y)| (a + x, d + y));
    let max = minutes
        .iter()
        .map(|(_, a, d)| (*a).max(*d))
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h) = (720.0_f64, 160.0_f64);
    let step = w / minutes.len().max(1) as f64;
    let line = |pick: fn(&(i64, u64, u64)) -> u64| {
        minutes
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "{:.1},{:.1}",
                    i as f64 * step,
                    h - pick(m) as f64 / max as f64 * (h - 10.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let hours = crate::observe::minutes::CHART_MINUTES / 60;
    format!(
        "<h3>最近 {hours} 小时（每分钟）</h3><p id=\"chart-totals\">受理 <b id=\"accepted-total\">{accepted}</b> 条记录，送达 <b id=\"delivered-total\">{delivered}</b> 次投递；每分钟最多 {max}。</p>\
<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"每分钟受理与送达\">\
<polyline class=\"accepted\" fill=\"none\" stroke=\"#0b3d91\" stroke-width=\"2\" points=\"{}\"/>\
<polyline class=\"delivered\" fill=\"none\" stroke=\"#12b76a\" stroke-width=\"2\" stroke-dasharray=\"4 2\" points=\"{}\"/></svg>\
<p class=\"legend\"><span class=\"accepted\">━ 受理</span> <span class=\"delivered\">┅ 送达</span></p>",
        line(|m| m.1),
        line(|m| m.2)
    )
}

#[derive(Deserialize)]
pub(super) struct DeliveryQuery {
    destination: Option<String>,
    state: Option<String>,
    done: Option<usize>,
}

pub(super) async fn deliveries(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<DeliveryQuery>,
) -> Result<Response, ConsoleError> {
    let (user, s) = viewer!(c, headers);
    let v = Viewer {
        user: &user,
        session: &s,
    };
    let destination = q.destination.filter(|d| !d.is_empty());
    let state = q.state.as_deref().and_then(DeliveryState::parse);
    let list = c
        .app
        .store
        .deliveries(DeliveryFilter {
            destination: destination.clone(),
            state,
            limit: PAGE,
            ..DeliveryFilter::default()
        })
        .await?;
    let options = |chosen: Option<&str>, all: &[&str]| {
        all.iter()
            .map(|o| {
                let sel = if chosen == Some(*o) { " selected" } else { "" };
                format!("<option value=\"{0}\"{sel}>{0}</option>", esc(o))
            })
            .collect::<String>()
    };
    let dests: Vec<&str> = c.app.config.destinations().map(|(id, _)| id).collect();
    let mut body = format!(
        "<form class=\"search\" method=\"get\" action=\"/console/deliveries\">\
<label>目的地<select name=\"destination\"><option value=\"\">全部</option>{}</select></label>\
<label>状态<select name=\"state\"><option value=\"\">全部</option>{}</select></label><button>筛选</button></form>",
        options(destination.as_deref(), &dests),
        options(
            state.map(DeliveryState::as_str),
            &["pending", "delivered", "dead"]
        )
    );
    if let Some(n) = q.done {
        body.push_str(&format!("<p class=\"ok\">已重新排队 {n} 条死信。</p>"));
    }
    let operator = v.is("operator");
    if operator && state == Some(DeliveryState::Dead) {
        body.push_str(&format!(
            "<form class=\"search\" method=\"post\" action=\"/console/deliveries/retry\" data-confirm=\"重新投递所有符合条件的死信？\">{}\
<input type=\"hidden\" name=\"destination\" value=\"{}\"><button id=\"retry-all\">全部重新投递</button></form>",
            v.csrf_field(),
            esc(destination.as_deref().unwrap_or(""))
        ));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let retry = if operator && d.state == DeliveryState::Dead {
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/console/deliveries/{}/retry\" data-confirm=\"重新投递这条死信？\">{}<button class=\"retry\">重新投递</button></form>",
                    d.id,
                    v.csrf_field()
                )
            } else {
                String::new()
            };
            vec![
                d.id.to_string(),
                esc(&d.case_no),
                esc(d.kind.as_str()),
                esc(&d.destination),
                state_cell(d.state),
                d.attempts.to_string(),
                esc(&crate::record::mask_text(d.last_error.as_deref().unwrap_or(""))),
                retry,
            ]
        })
        .collect();
    body.push_str(&table(
        &[
            "投递",
            "办件编号",
            "类型",
            "目的地",
            "状态",
            "次数",
            "原因",
            "",
        ],
        &rows,
    ));
    Ok(Html(page("投递", Some(&v), &body)).into_response())
}

#[derive(Deserialize)]
pub(super) struct RetryForm {
    #[serde(rename = "_csrf")]
    csrf: Option<String>,
    destination: Option<String>,
}

/// The operator behind a change, or why not.
pub(super) async fn operator(
    c: &Console,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<Result<ConsoleUser, Response>, ConsoleError> {
    let Some((user, s)) = session::current(&*c.app.store, &c.app.config.console, headers).await?
    else {
        return Ok(Err(forbidden("请先登录。")));
    };
    if !csrf_ok(&s, csrf) {
        return Ok(Err(forbidden(
            "缺少或错误的 CSRF 令牌：请从控制台页面操作。",
        )));
    }
    if !user.roles.iter().any(|r| r == "operator") {
        return Ok(Err(forbidden("重新投递需要 operator（运维）角色。")));
    }
    Ok(Ok(user))
}

fn asked(user: &ConsoleUser, what: String) -> Asked {
    Asked {
        by: format!("console user {}", user.name),
        what,
    }
}

pub(super) async fn retry_one(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<RetryForm>,
) -> Result<Response, ConsoleError> {
    let user = match operator(&c, &headers, f.csrf.as_deref()).await? {
        Ok(u) => u,
        Err(refused) => return Ok(refused),
    };
    match c
        .app
        .store
        .retry_dead(id, now_ms(), asked(&user, format!("retry delivery {id}")))
        .await
    {
        Ok(view) => {
            c.app.wake.wake(&view.destination);
            Ok(Redirect::to("/console/deliveries?done=1").into_response())
        }
        Err(crate::store::StoreError::NotDead(_) | crate::store::StoreError::NotFound) => {
            Ok(Redirect::to("/console/deliveries?done=0").into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn retry_matching(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<RetryForm>,
) -> Result<Response, ConsoleError> {
    let user = match operator(&c, &headers, f.csrf.as_deref()).await? {
        Ok(u) => u,
        Err(refused) => return Ok(refused),
    };
    let destination = f.destination.filter(|d| !d.is_empty());
    let ids = manual::dead_matching(
        &*c.app.store,
        DeliveryFilter {
            destination: destination.clone(),
            ..DeliveryFilter::default()
        },
    )
    .await?;
    let what = format!(
        "retry every dead letter{}",
        destination
            .as_deref()
            .map(|d| format!(" to {d}"))
            .unwrap_or_default()
    );
    let done = manual::retry(&*c.app.store, &ids, &asked(&user, what)).await?;
    for (id, _) in c.app.config.destinations() {
        c.app.wake.wake(id);
    }
    Ok(Redirect::to(&format!("/console/deliveries?done={done}")).into_response())
}
