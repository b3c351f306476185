//! The console's sync page (同步): each pull source with its cursor, lag, records
//! pulled and last error, and for operators pause and resume (audited with the
//! person, as `hallgate sync pause|resume` is with the command-line user).

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::html::{Viewer, esc, page, table};
use super::pages::{forbidden, operator, viewer_or_login};
use super::session::CsrfForm;
use super::{Console, ConsoleError};
use crate::time::{now_ms, rfc3339};

pub(super) async fn sync_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let (user, s) = match viewer_or_login(&c, &headers).await? {
        Ok(who) => who,
        Err(login) => return Ok(login),
    };
    let v = Viewer {
        user: &user,
        session: &s,
    };
    let now = now_ms();
    let sources = c.app.store.sync_sources().await?;
    let rows: Vec<Vec<String>> = sources
        .iter()
        .map(|src| {
            let action = if v.is("operator") {
                let (what, label) = if src.paused { ("resume", "恢复") } else { ("pause", "暂停") };
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/console/sync/{}/{what}\" data-confirm=\"{label}同步来源 {}？\">{}<button class=\"sync-{what}\">{label}</button></form>",
                    esc(&src.node),
                    esc(&src.node),
                    v.csrf_field()
                )
            } else {
                String::new()
            };
            vec![
                esc(&src.node),
                esc(&crate::sync::describe(&src.cursor)),
                src.last_success_ms
                    .map_or_else(|| "从未".into(), |t| format!("{} 秒", (now - t).max(0) / 1000)),
                src.pulled.to_string(),
                esc(&crate::record::mask_text(src.last_error.as_deref().unwrap_or(""))),
                src.last_error_ms.map_or_else(String::new, |t| esc(&rfc3339(t))),
                if src.paused { "已暂停" } else { "运行中" }.to_string(),
                action,
            ]
        })
        .collect();
    let body = table(
        &[
            "来源",
            "游标",
            "距上次成功",
            "已拉取",
            "最近错误",
            "错误时间",
            "状态",
            "",
        ],
        &rows,
    );
    Ok(Html(page("同步", Some(&v), &body)).into_response())
}

pub(super) async fn control(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path((node, action)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    let user = match operator(&c, &headers, f.csrf.as_deref()).await? {
        Ok(u) => u,
        Err(refused) => return Ok(refused),
    };
    if !["pause", "resume"].contains(&action.as_str()) {
        return Ok(forbidden("只能暂停或恢复。"));
    }
    let by = format!("console user {}", user.name);
    if let Err(e) =
        crate::sync::control_by(&c.app.config, &*c.app.store, &node, &action, None, &by).await
    {
        return Ok(forbidden(&e.to_string()));
    }
    Ok(Redirect::to("/console/sync").into_response())
}
