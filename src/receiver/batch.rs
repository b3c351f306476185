//! A simulated platform taking a batch: several records in one request
//! (`X-Hallgate-Batch`), each with its own Idempotency-Key (listed in order in
//! `X-Hallgate-Idempotency-Keys`), answered per record (`{"results": […]}`) or, when
//! the script says so, for the whole batch. Each record is kept as an arrival of its
//! own, with the request's body and headers.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Arrival, Inner, header_list};

pub(super) async fn receive(
    name: &str,
    inner: &Arc<Mutex<Inner>>,
    headers: &HeaderMap,
    raw: &[u8],
) -> Response {
    let arrived = std::time::Instant::now();
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let keys: Vec<String> = header("x-hallgate-idempotency-keys")
        .split(',')
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    // Canonical JSON (a list), or the platform's own dialect read with its mappings.
    let records: Vec<Value> = match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Array(items)) => items,
        _ => {
            let set = lock(inner).mappings.clone();
            let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
            set.and_then(|s| {
                s.decode(raw, ct, None, &crate::mapping::Limits::default())
                    .ok()
            })
            .map(|d| {
                d.into_iter()
                    .filter_map(|d| d.result.ok().map(|v| v.to_value()))
                    .collect()
            })
            .unwrap_or_default()
        }
    };
    if records.is_empty() || records.len() != keys.len() {
        let answer = json!({"code": "400", "msg": format!("{} 条数据, {} 个 Idempotency-Key", records.len(), keys.len())});
        return (StatusCode::BAD_REQUEST, axum::Json(answer)).into_response();
    }
    let delay = {
        let mut g = lock(inner);
        g.started += 1;
        g.script.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // The lock is held in this block only: never across an await.
    let (whole, results, script) = {
        let mut g = lock(inner);
        let script = g.script.clone();
        // Each record's own answer.
        let mut statuses = Vec::with_capacity(records.len());
        for (key, r) in keys.iter().zip(&records) {
            let case = r.get("case_no").and_then(Value::as_str).unwrap_or("");
            let attempt = {
                let n = g.attempts.entry(key.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let status =
                if attempt <= script.fail_first || script.fail_cases.iter().any(|c| c == case) {
                    script.fail_status
                } else if script.refuse_cases.iter().any(|c| c == case) {
                    422
                } else if g.acknowledged.contains(key) {
                    409
                } else {
                    script.status
                };
            statuses.push(status);
        }
        // Without per-record answers, the worst answer is the batch's.
        let whole = if script.batch_results {
            None
        } else if statuses.contains(&422) {
            Some(422)
        } else {
            statuses
                .iter()
                .copied()
                .find(|s| !(200..300).contains(s) && *s != 409)
        };
        let mut results = Vec::with_capacity(records.len());
        for ((key, r), own) in keys.iter().zip(&records).zip(&statuses) {
            let status = whole.unwrap_or(*own);
            let entry = if (200..300).contains(&status) {
                g.acknowledged.insert(key.clone());
                g.accepted_total += 1;
                json!({"status": status, "code": "0", "receipt_no": format!("{}-{:06}", name, g.accepted_total)})
            } else if status == 409 {
                json!({"status": 409, "code": "409", "msg": "重复数据，已接收"})
            } else if status == 422 {
                json!({"status": 422, "code": "422", "msg": "数据校验不通过"})
            } else {
                json!({"status": status, "code": status.to_string(), "msg": "系统繁忙，请稍后重试"})
            };
            results.push(entry);
            g.keep(Arrival {
                idempotency_key: key.clone(),
                kind: r
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                case_no: r
                    .get("case_no")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                body: r.clone(),
                raw: raw.to_vec(),
                status,
                at: arrived,
                headers: header_list(headers),
                at_ms: crate::time::now_ms(),
            });
        }
        (whole, results, script)
    };
    if !script.delay_after.is_zero() {
        tokio::time::sleep(script.delay_after).await;
    }
    let (code, answer) = match whole {
        None => (
            200,
            json!({"code": "0", "msg": "批量接收", "results": results}),
        ),
        Some(s) => (s, json!({"code": s.to_string(), "msg": "批量数据未接收"})),
    };
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(answer)).into_response()
}

fn lock(inner: &Arc<Mutex<Inner>>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}
