//! The console's supervision page (电子监察): the red list (超期) and the yellow list
//! (预警) with the working days past or left, and the efficiency report by department
//! over a range with a chart of each department's on-time rate. For auditors and
//! operators; read-only. No personal data is on it (supervision keeps none).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::html::{Viewer, esc, page, table};
use super::pages::{forbidden, viewer_or_login};
use super::{Console, ConsoleError};
use crate::store::supervision::{SvCase, SvFilter, SvOp, SvOut};
use crate::supervise::report::{self, By, Row};

/// Cases shown per list.
const LIST: usize = 200;

#[derive(Debug, Deserialize, Default)]
pub(super) struct Range {
    from: Option<String>,
    to: Option<String>,
}

pub(super) async fn supervision_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<Range>,
) -> Result<Response, ConsoleError> {
    let (user, s) = match viewer_or_login(&c, &headers).await? {
        Ok(who) => who,
        Err(login) => return Ok(login),
    };
    let v = Viewer {
        user: &user,
        session: &s,
    };
    if !(v.is("auditor") || v.is("operator")) {
        return Ok(forbidden("电子监察页面仅审计员和运维人员可见。"));
    }
    let config = &c.app.config;
    if !config.supervision.enabled {
        let body = "<p>电子监察未启用：在配置中设置 <code>[supervision] enabled = true</code>（见 docs/supervision.md）。</p>";
        return Ok(Html(page("电子监察", Some(&v), body)).into_response());
    }
    let now = config.supervision.clock.now_ms();
    let cal = crate::supervise::calendar(config).unwrap_or_default();
    let list = |state: &str| SvFilter {
        states: vec![state.to_string()],
        limit: LIST,
        ..SvFilter::default()
    };
    let mut body = String::new();
    for (state, title, class) in [
        ("overdue", "超期办件（红牌）", "red"),
        ("warning", "预警办件（黄牌）", "yellow"),
    ] {
        let SvOut::Cases(rows) = c.app.store.supervision(SvOp::Cases(list(state))).await? else {
            continue;
        };
        let _ = write!(
            body,
            "<h3 class=\"sv-{class}\">{title} <span class=\"count\">{}</span></h3>",
            if rows.len() == LIST {
                format!("前 {LIST} 件")
            } else {
                format!("{} 件", rows.len())
            }
        );
        body.push_str(&table(
            &[
                "办件编号",
                "事项",
                "部门",
                "受理时间",
                "承诺期限",
                "剩余工作日",
            ],
            &rows
                .iter()
                .map(|r| case_row(&cal, r, now))
                .collect::<Vec<_>>(),
        ));
    }
    // The report: this month by the supervision clock unless a range is asked for.
    let month_start = crate::time::rfc3339(now)
        .get(..7)
        .map(|m| format!("{m}-01"))
        .unwrap_or_default();
    let from_text = q.from.clone().unwrap_or(month_start);
    let to_text =
        q.to.clone()
            .unwrap_or_else(|| crate::time::rfc3339(now + 86_400_000)[..10].to_string());
    let _ = write!(
        body,
        "<h3>效能统计（按部门）</h3><form class=\"filters\" method=\"get\" action=\"/console/supervision\">\
<label>受理自 <input name=\"from\" value=\"{}\"></label><label>至 <input name=\"to\" value=\"{}\"></label><button>统计</button></form>",
        esc(&from_text),
        esc(&to_text)
    );
    match (
        crate::time::parse_time(&from_text),
        crate::time::parse_time(&to_text),
    ) {
        (Some(from), Some(to)) => {
            match report::report(c.app.store.as_ref(), By::Dept, from, to, |_| {}).await {
                Ok(rows) => {
                    body.push_str(&chart(&rows));
                    body.push_str(&report_table(&rows));
                }
                Err(e) => {
                    let _ = write!(body, "<p class=\"error\">{}</p>", esc(&e.to_string()));
                }
            }
        }
        _ => body.push_str("<p class=\"error\">日期格式：2026-03-01</p>"),
    }
    Ok(Html(page("电子监察", Some(&v), &body)).into_response())
}

fn case_row(cal: &crate::supervise::Calendar, r: &SvCase, now: i64) -> Vec<String> {
    let view = crate::supervise::view(cal, r, now);
    let text = |k: &str| view[k].as_str().unwrap_or("").to_string();
    vec![
        format!(
            "<a href=\"/console/cases?case_no={}\">{}</a>",
            esc(&r.case_no),
            esc(&r.case_no)
        ),
        esc(r
            .item_name
            .as_deref()
            .or(r.item_code.as_deref())
            .unwrap_or("-")),
        esc(r
            .dept_name
            .as_deref()
            .or(r.dept_code.as_deref())
            .unwrap_or("-")),
        esc(text("accepted_at").get(..16).unwrap_or("-")),
        esc(text("deadline").get(..16).unwrap_or("-")),
        view["days_left"]
            .as_f64()
            .map_or_else(|| "-".into(), |d| format!("{d:.2}")),
    ]
}

fn report_table(rows: &[Row]) -> String {
    table(
        &[
            "部门",
            "受理",
            "办结",
            "按时办结",
            "按时率",
            "平均用时（工作日）",
            "用时P90",
            "平均承诺",
            "超期未办结",
            "数据质量问题",
        ],
        &rows
            .iter()
            .map(|r| {
                let quality: Vec<String> =
                    r.quality.iter().map(|(c, n)| format!("{c}×{n}")).collect();
                vec![
                    esc(if r.name.is_empty() { &r.code } else { &r.name }),
                    r.received.to_string(),
                    r.finished.to_string(),
                    r.finished_on_time.to_string(),
                    format!("{:.0}%", r.on_time_rate * 100.0),
                    r.used_days_mean.to_string(),
                    r.used_days_p90.to_string(),
                    r.promised_days_mean.to_string(),
                    r.overdue_open.to_string(),
                    esc(&quality.join(" ")),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// One bar per department: its on-time rate, with finished and overdue counts.
fn chart(rows: &[Row]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let (label_w, bar_w, row_h) = (220, 400, 26);
    let h = rows.len() * row_h + 10;
    let mut out = format!(
        "<svg class=\"chart sv-chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"各部门按时办结率\">",
        w = label_w + bar_w + 160
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 5 + i * row_h;
        let width = (r.on_time_rate * bar_w as f64).round() as usize;
        let name = if r.name.is_empty() { &r.code } else { &r.name };
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>\
<rect x=\"{label_w}\" y=\"{y}\" width=\"{bar_w}\" height=\"18\" fill=\"#eef2f6\"/>\
<rect class=\"on-time\" x=\"{label_w}\" y=\"{y}\" width=\"{width}\" height=\"18\" fill=\"#12b76a\"/>\
<text x=\"{}\" y=\"{}\" font-size=\"12\">{:.0}% · 办结 {} · 超期 {}</text>",
            y + 14,
            esc(name),
            label_w + bar_w + 6,
            y + 14,
            r.on_time_rate * 100.0,
            r.finished,
            r.overdue_open
        );
    }
    out.push_str("</svg>");
    out
}
