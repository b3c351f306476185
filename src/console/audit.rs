//! The console's audit page (留痕): the chain's state, a verification run now with
//! its progress and result (on failure, the first broken event), the signed
//! checkpoints with a download of each, and a masked export of a range as CSV or
//! JSONL. Each action is audited with the person who took it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::html::{Viewer, esc, page, table};
use super::pages::{forbidden, viewer_or_login};
use super::session::CsrfForm;
use super::session::csrf_ok;
use super::{Console, ConsoleError};
use crate::event::{Event, EventKind};
use crate::store::AuditFilter;
use crate::time::{now_ms, parse_time, rfc3339};

/// Events a console export takes at most (larger ranges: `hallgate audit export`).
pub const MAX_EXPORT: i64 = 200_000;

/// A finished verification: when, who asked, and what it found (Ok: intact).
type Finding = (i64, String, Result<String, String>);

/// The last verification the console ran, and the one running.
#[derive(Default)]
pub struct Verification {
    running: AtomicBool,
    checked: AtomicU64,
    total: AtomicU64,
    last: Mutex<Option<Finding>>,
}

pub(super) async fn audit_page(
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
    let store = &*c.app.store;
    let meta = store.audit_meta().await?;
    let mut body = format!(
        "<h3>链状态</h3><p>哈希算法 {}；当前日志最后序号 {}；已归档至 {}。</p>",
        esc(meta.alg.as_str()),
        meta.live_last_seq
            .map_or_else(|| "无".into(), |s| s.to_string()),
        meta.archived_through_seq
            .map_or_else(|| "无".into(), |s| s.to_string())
    );
    let ver = &c.verification;
    if ver.running.load(Ordering::Relaxed) {
        body.push_str(&format!(
            "<p class=\"ok\" data-refresh=\"1\" id=\"verify-progress\">正在校验：{} / {} 条事件</p>",
            ver.checked.load(Ordering::Relaxed),
            ver.total.load(Ordering::Relaxed)
        ));
    } else if let Some((at, by, outcome)) =
        ver.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    {
        let (class, text) = match outcome {
            Ok(t) => ("ok", t),
            Err(t) => ("error", t),
        };
        body.push_str(&format!(
            "<p class=\"{class}\" id=\"verify-result\">{}（{} 于 {} 校验）</p>",
            esc(&text),
            esc(&by),
            esc(&rfc3339(at))
        ));
    }
    body.push_str(&format!(
        "<form class=\"search\" method=\"post\" action=\"/console/audit/verify\">{}<button id=\"verify\">立即校验</button></form>",
        v.csrf_field()
    ));
    let checkpoints = store
        .audit_events(AuditFilter {
            event: Some("checkpoint".into()),
            limit: 1000,
            ..AuditFilter::default()
        })
        .await?;
    let rows: Vec<Vec<String>> = checkpoints
        .iter()
        .rev()
        .take(50)
        .map(|e| {
            let signed = e.detail.get("checkpoint").is_some();
            vec![
                e.detail["seq"].to_string(),
                short(e.detail["hash"].as_str().unwrap_or("")),
                short(e.detail["key_id"].as_str().unwrap_or("")),
                esc(&rfc3339(e.at_ms)),
                if signed {
                    format!("<a href=\"/console/audit/checkpoints/{}\">下载</a>", e.seq)
                } else {
                    "（签名在文件中）".into()
                },
            ]
        })
        .collect();
    body.push_str("<h3>签名检查点</h3>");
    body.push_str(&table(&["序号", "链哈希", "密钥", "时间", ""], &rows));
    body.push_str(
        "<h3>导出（已脱敏）</h3><form class=\"search\" method=\"get\" action=\"/console/audit/export\">\
<label>从<input name=\"from\" placeholder=\"2026-12-01\" required></label>\
<label>到<input name=\"to\" placeholder=\"2026-12-05\" required></label>\
<label>格式<select name=\"format\"><option value=\"csv\">CSV</option><option value=\"jsonl\">JSONL</option></select></label>\
<button>导出</button></form>",
    );
    Ok(Html(page("审计", Some(&v), &body)).into_response())
}

/// A long hex value's first 16 characters, the whole in its title.
fn short(hex: &str) -> String {
    let head: String = hex.chars().take(16).collect();
    format!("<span title=\"{}\">{}…</span>", esc(hex), esc(&head))
}

/// Start a verification of the whole live chain (one at a time).
pub(super) async fn verify(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    let (user, s) = match viewer_or_login(&c, &headers).await? {
        Ok(who) => who,
        Err(_) => return Ok(forbidden("请先登录。")),
    };
    if !csrf_ok(&s, f.csrf.as_deref()) {
        return Ok(forbidden("缺少或错误的 CSRF 令牌：请从控制台页面操作。"));
    }
    if c.verification.running.swap(true, Ordering::SeqCst) {
        return Ok(Redirect::to("/console/audit").into_response());
    }
    let total = c.app.store.audit_meta().await?.live_last_seq.unwrap_or(0);
    c.verification.checked.store(0, Ordering::Relaxed);
    c.verification
        .total
        .store(u64::try_from(total).unwrap_or(0), Ordering::Relaxed);
    let console = c.clone();
    let by = format!("console user {}", user.name);
    tokio::spawn(async move {
        let ver = &console.verification;
        let result = crate::audit::verify_store(&*console.app.store, None, None, |n| {
            ver.checked.store(n, Ordering::Relaxed);
        })
        .await;
        let (ok, detail, text) = match &result {
            Ok((r, _)) => (
                true,
                json!({ "head_seq": r.head_seq, "head_hash": r.head_hash, "live": r.live }),
                format!(
                    "完整：{} 条事件，链头 {} ({}…)",
                    r.live,
                    r.head_seq,
                    r.head_hash.get(..16).unwrap_or("")
                ),
            ),
            Err(crate::audit::AuditError::Broken { seq, reason }) => (
                false,
                json!({ "broken_seq": seq, "reason": reason }),
                format!("链断裂：第一个不符的事件是 {seq}：{reason}"),
            ),
            Err(e) => (
                false,
                json!({ "error": e.to_string() }),
                format!("未能校验：{e}"),
            ),
        };
        let mut e = Event::new(now_ms(), EventKind::ChainVerified);
        e.detail = json!({ "by": by, "ok": ok, "result": detail });
        if let Err(err) = console.app.store.audit(e).await {
            tracing::error!(error = %err, "could not audit a verification");
        }
        *ver.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((now_ms(), by, if ok { Ok(text) } else { Err(text) }));
        ver.running.store(false, Ordering::SeqCst);
    });
    Ok(Redirect::to("/console/audit").into_response())
}

/// One signed checkpoint, as its file was written.
pub(super) async fn checkpoint(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(seq): Path<i64>,
) -> Result<Response, ConsoleError> {
    if let Err(login) = viewer_or_login(&c, &headers).await? {
        return Ok(login);
    }
    let rows = c
        .app
        .store
        .audit_events(AuditFilter {
            after_seq: Some(seq - 1),
            through_seq: Some(seq),
            event: Some("checkpoint".into()),
            limit: 1,
            ..AuditFilter::default()
        })
        .await?;
    let Some(cp) = rows.first().and_then(|e| e.detail.get("checkpoint")) else {
        return Ok((StatusCode::NOT_FOUND, Html(page("没有该检查点", None, ""))).into_response());
    };
    let text = serde_json::to_string_pretty(cp).unwrap_or_default() + "\n";
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"audit-checkpoint-{:012}.json\"",
                    cp["seq"].as_i64().unwrap_or(0)
                ),
            ),
        ],
        text,
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct ExportQuery {
    from: String,
    to: String,
    format: Option<String>,
}

/// A masked export of `[from, to)`, downloaded.
pub(super) async fn export(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ConsoleError> {
    let (user, _) = match viewer_or_login(&c, &headers).await? {
        Ok(who) => who,
        Err(login) => return Ok(login),
    };
    let (Some(from), Some(to)) = (parse_time(&q.from), parse_time(&q.to)) else {
        return Ok((
            StatusCode::BAD_REQUEST,
            Html(page(
                "导出",
                None,
                "<p class=\"error\">请填写日期，如 2026-12-01。</p>",
            )),
        )
            .into_response());
    };
    let filter = AuditFilter {
        from_ms: Some(from),
        to_ms: Some(to),
        limit: 1000,
        ..AuditFilter::default()
    };
    let store = &*c.app.store;
    if store.audit_count(filter.clone()).await? > MAX_EXPORT {
        return Ok((StatusCode::BAD_REQUEST, Html(page("导出", None, &format!("<p class=\"error\">超过 {MAX_EXPORT} 条事件：请缩小范围，或用 hallgate audit export。</p>")))).into_response());
    }
    let (format, ext, ctype) = match q.format.as_deref() {
        Some("jsonl") => (
            crate::audit::tools::Format::Jsonl,
            "jsonl",
            "application/x-ndjson",
        ),
        _ => (
            crate::audit::tools::Format::Csv,
            "csv",
            "text/csv; charset=utf-8",
        ),
    };
    let mut out = Vec::new();
    let by = format!("console user {}", user.name);
    let n =
        crate::audit::tools::export_by(store, filter, format, false, &mut out, Some(&by)).await?;
    tracing::info!(events = n, by = %by, "audit exported from the console");
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"audit-{}-{}.{ext}\"",
                    q.from
                        .chars()
                        .filter(char::is_ascii_alphanumeric)
                        .collect::<String>(),
                    q.to.chars()
                        .filter(char::is_ascii_alphanumeric)
                        .collect::<String>()
                ),
            ),
        ],
        out,
    )
        .into_response())
}
