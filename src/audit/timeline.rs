//! The case as an auditor reads it: every event about a case (办件), in time order,
//! each told in one line — who sent what, where it was routed, every attempt, every
//! receipt.

use serde::Serialize;
use serde_json::Value;

use crate::event::AuditRow;
use crate::store::{AuditFilter, Store};
use crate::time::rfc3339;

/// One line of a timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub seq: i64,
    pub at: String,
    pub event: String,
    pub node: Option<String>,
    pub kind: Option<String>,
    pub message_id: Option<String>,
    pub delivery_id: Option<i64>,
    /// The event told in words.
    pub summary: String,
    pub detail: Value,
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

/// Tell one event in words. `name` gives a node's display name; `label` the
/// record's name in the timeline (`process step 2`), when known.
pub fn summary(row: &AuditRow, name: &dyn Fn(&str) -> String, label: Option<&str>) -> String {
    let d = &row.detail;
    let node = row.node.as_deref().unwrap_or("-");
    let who = match name(node) {
        n if n.is_empty() => node.to_string(),
        n => format!("{node} {n}"),
    };
    let kind = label.or(row.kind.as_deref()).unwrap_or("record");
    let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let num = |k: &str| d.get(k).and_then(Value::as_i64);
    let status = num("status").map_or_else(|| "no answer".to_string(), |s| format!("HTTP {s}"));
    match row.event.as_str() {
        "received" => format!(
            "message {} received from {who}: {} record(s), {} bytes, body sha256 {}",
            short(row.message_id.as_deref().unwrap_or("")),
            num("records").unwrap_or(0),
            num("body_bytes").unwrap_or(0),
            short(&text("body_sha256"))
        ),
        "accepted" => {
            let version = num("version")
                .map(|v| format!(" version {v}"))
                .unwrap_or_default();
            if text("status") == "duplicate" {
                format!("{kind}{version} is a duplicate of one already accepted; not sent again")
            } else {
                format!(
                    "{kind}{version} accepted, record sha256 {}",
                    short(&text("record_sha256"))
                )
            }
        }
        "routed" => {
            let to: Vec<&str> = d
                .get("destinations")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("{kind} routed to {}", to.join(", "))
        }
        "attempted" => format!(
            "{kind} sent to {who}: {status} in {} ms (attempt {})",
            num("duration_ms").unwrap_or(0),
            num("attempt").unwrap_or(0)
        ),
        "delivered" => {
            let dup = if d.get("duplicate").and_then(Value::as_bool) == Some(true) {
                " (they already had it)"
            } else {
                ""
            };
            format!(
                "{kind} delivered to {who}{dup}; receipt sha256 {}",
                short(&text("receipt_sha256"))
            )
        }
        "retried" => format!(
            "{kind} to {who} will be retried at {}: {}",
            text("next_attempt_at"),
            text("error")
        ),
        "dead_lettered" => format!("{kind} to {who} dead-lettered: {}", text("reason")),
        "manually_retried" => match d.get("by").and_then(Value::as_str) {
            Some(by) => format!("{kind} to {who} put back in the queue by {by}"),
            None => format!("{kind} to {who} put back in the queue by an operator"),
        },
        "supervision_changed" => {
            let sent: Vec<&str> = d
                .get("alert_to")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let alert = if sent.is_empty() {
                String::new()
            } else {
                format!("; alert to {}", sent.join(", "))
            };
            format!(
                "supervision: {} → {} at {} (deadline {}){alert}",
                d.get("from").and_then(Value::as_str).unwrap_or("new"),
                text("to"),
                text("at"),
                d.get("deadline").and_then(Value::as_str).unwrap_or("none")
            )
        }
        "rejected" | "authorization_refused" | "token_refused" => format!(
            "request from {who} refused ({}): {}",
            text("code"),
            text("message")
        ),
        other => format!(
            "{other} {}",
            if d.is_null() {
                String::new()
            } else {
                d.to_string()
            }
        ),
    }
}

/// The timeline of a case from its audit rows (already in sequence order).
pub fn build(rows: &[AuditRow], name: &dyn Fn(&str) -> String) -> Vec<Step> {
    // Labels of records by (message, index), from their `accepted` events.
    let mut labels = std::collections::HashMap::new();
    for r in rows.iter().filter(|r| r.event == "accepted") {
        if let (Some(m), Some(i), Some(l)) = (
            r.message_id.as_deref(),
            r.detail.get("index").and_then(Value::as_i64),
            r.detail.get("label").and_then(Value::as_str),
        ) {
            labels.insert((m.to_string(), i), l.to_string());
        }
    }
    rows.iter()
        .map(|r| {
            let label = r
                .message_id
                .as_ref()
                .zip(r.detail.get("index").and_then(Value::as_i64))
                .and_then(|(m, i)| labels.get(&(m.clone(), i)))
                .map(String::as_str);
            (r, label)
        })
        .map(|(r, label)| Step {
            seq: r.seq,
            at: rfc3339(r.at_ms),
            event: r.event.clone(),
            node: r.node.clone(),
            kind: r.kind.clone(),
            message_id: r.message_id.clone(),
            delivery_id: r.delivery_id,
            summary: summary(r, name, label),
            detail: r.detail.clone(),
        })
        .collect()
}

/// The timeline as text for a terminal.
pub fn render(case_no: &str, steps: &[Step]) -> String {
    let mut out = format!("办件 {case_no}: {} event(s)\n", steps.len());
    let mut last_day = String::new();
    for s in steps {
        let (day, time) = s.at.split_once('T').unwrap_or((&s.at, ""));
        if day != last_day {
            out.push_str(&format!("{day}\n"));
            last_day = day.to_string();
        }
        let time = time.get(..12).unwrap_or(time);
        out.push_str(&format!(
            "  {time}  #{:<6} {:<16} {}\n",
            s.seq, s.event, s.summary
        ));
    }
    out
}

/// Every audit event about a case, in sequence order: the events naming the case and
/// the `received` events of the messages that carried its records. With `node`, only
/// events naming that node.
pub async fn case_rows(
    store: &dyn Store,
    case_no: &str,
    node: Option<String>,
) -> Result<Vec<AuditRow>, super::AuditError> {
    let mut rows = Vec::new();
    let filter = AuditFilter {
        case_no: Some(case_no.to_string()),
        node: node.clone(),
        ..Default::default()
    };
    super::each_row(store, filter, |r| {
        rows.push(r.clone());
        Ok(true)
    })
    .await?;
    let mut messages: Vec<String> = rows.iter().filter_map(|r| r.message_id.clone()).collect();
    messages.sort();
    messages.dedup();
    for m in messages {
        let received = store
            .audit_events(AuditFilter {
                message_id: Some(m),
                event: Some("received".into()),
                node: node.clone(),
                limit: 10,
                ..Default::default()
            })
            .await?;
        rows.extend(received);
    }
    rows.sort_by_key(|r| r.seq);
    rows.dedup_by_key(|r| r.seq);
    Ok(rows)
}
