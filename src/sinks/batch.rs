//! Batched delivery over HTTP: several records in one request to a destination with
//! `batch`.
//!
//! - The body is the records as a list: a JSON array of canonical records, or the
//!   list the destination's mapping renders (`RECORDS/RECORD…`, `{"param":
//!   {"baseInfo": […]}}`). Records of kinds with different mappings go in separate
//!   requests.
//! - Each record keeps its own Idempotency-Key: they are listed, in the records'
//!   order, in `X-Hallgate-Idempotency-Keys`; `Idempotency-Key` names the batch (a
//!   hash of its records' keys) and `X-Hallgate-Batch` gives its size.
//! - The answer is read per record from the list at `batch.results` in its JSON
//!   (`{"results": [{"status": 200, …}, {"status": 422, "msg": …}]}`) when it holds
//!   one entry per record; otherwise the status answers for the whole batch.
//! - A batch refused as a whole is split in halves and each half sent again, down to
//!   single records, so one bad record is dead-lettered alone and the good ones are
//!   delivered. Retries (5xx, timeouts) apply to the whole batch, as they would to
//!   each record.

use std::time::Instant;

use serde_json::Value;

use super::http::{
    HttpSink, MAX_RECEIPT, Posted, Verdict, answered, attempt, classify, dead, snippet, unanswered,
};
use super::{Attempt, Outcome};
use crate::hash::sha256_hex;
use crate::record::Kind;
use crate::store::LeasedDelivery;

/// How a batch request was answered.
enum Answer {
    /// One outcome per record (the destination listed them), and the bytes sent.
    PerRecord(Vec<Outcome>, String),
    /// One outcome for the whole batch.
    Whole(Attempt),
}

impl HttpSink {
    pub(super) async fn attempt_batch(&self, ds: &[LeasedDelivery]) -> Vec<Attempt> {
        let mut out: Vec<Option<Attempt>> = vec![None; ds.len()];
        // Records rendered by one mapping (or canonical JSON) go together.
        let mut groups: Vec<(Option<Kind>, Vec<usize>)> = Vec::new();
        for (i, d) in ds.iter().enumerate() {
            let key = self
                .render
                .as_ref()
                .and_then(|s| s.for_render(d.kind))
                .map(|_| d.kind);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        for (_, group) in groups {
            // Halves of a refused batch are sent again, the first half first.
            let mut todo = vec![group];
            while let Some(part) = todo.pop() {
                let records: Vec<&LeasedDelivery> = part.iter().map(|i| &ds[*i]).collect();
                match self.request(&records).await {
                    Answer::PerRecord(outcomes, sha) => {
                        for (i, o) in part.iter().zip(outcomes) {
                            out[*i] = Some(Attempt {
                                outcome: o,
                                request_sha256: sha.clone(),
                            });
                        }
                    }
                    Answer::Whole(a)
                        if matches!(a.outcome, Outcome::Dead { .. }) && part.len() > 1 =>
                    {
                        let (first, second) = part.split_at(part.len() / 2);
                        todo.push(second.to_vec());
                        todo.push(first.to_vec());
                    }
                    Answer::Whole(a) => {
                        for i in &part {
                            out[*i] = Some(a.clone());
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|a| a.unwrap_or_else(|| attempt(dead("not sent".into()), &[])))
            .collect()
    }

    /// One request with `records` as a list.
    async fn request(&self, records: &[&LeasedDelivery]) -> Answer {
        let started = Instant::now();
        let Some(first) = records.first() else {
            return Answer::PerRecord(Vec::new(), String::new());
        };
        let mapping = self.render.as_ref().and_then(|s| s.for_render(first.kind));
        let (body, content_type) = match mapping {
            None => {
                let mut body = Vec::with_capacity(
                    records.iter().map(|d| d.canonical.len() + 1).sum::<usize>() + 2,
                );
                body.push(b'[');
                for (i, d) in records.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(d.canonical.as_bytes());
                }
                body.push(b']');
                (body, self.content_type.clone())
            }
            Some(m) => {
                let values: Result<Vec<Value>, String> = records
                    .iter()
                    .map(|d| serde_json::from_str(&d.canonical).map_err(|e| e.to_string()))
                    .collect();
                match values.and_then(|v| crate::mapping::render(m, &v).map_err(|e| e.to_string()))
                {
                    Ok(b) => (b, m.content_type()),
                    Err(e) => {
                        let reason = format!("cannot render with {}: {e}", m.file);
                        return Answer::Whole(attempt(dead(reason), &[]));
                    }
                }
            }
        };
        let body = bytes::Bytes::from(body);
        let keys: Vec<&str> = records.iter().map(|d| d.idempotency_key.as_str()).collect();
        // Each record's request, in the order of the keys.
        let requests: Vec<&str> = records
            .iter()
            .map(|d| d.request_id.as_deref().unwrap_or("-"))
            .collect();
        let headers = [
            (
                "Idempotency-Key",
                format!("batch-{}", &sha256_hex(keys.join("\n").as_bytes())[..32]),
            ),
            ("X-Hallgate-Idempotency-Keys", keys.join(", ")),
            ("X-Hallgate-Request-Ids", requests.join(", ")),
            ("X-Hallgate-Batch", records.len().to_string()),
        ];
        let sha = sha256_hex(&body);
        let (status, retry_after, received) = match self.post(&body, &content_type, &headers).await
        {
            Posted::Answered {
                status,
                retry_after_ms,
                body,
            } => (status, retry_after_ms, body),
            Posted::Unsigned(reason) => return Answer::Whole(attempt(dead(reason), &body)),
            Posted::Failed(e) => return Answer::Whole(attempt(unanswered(&e, started), &body)),
        };
        // Per-record answers: a list with one entry per record, in their order.
        if let Ok(v) = serde_json::from_slice::<Value>(&received)
            && let Some(list) = at(&v, &self.results).and_then(Value::as_array)
            && list.len() == records.len()
            && classify(status) != Verdict::Retry
        {
            let outcomes = list
                .iter()
                .map(|item| {
                    let code = item
                        .get("status")
                        .and_then(|s| s.as_u64().or_else(|| s.as_str()?.parse().ok()))
                        .and_then(|s| u16::try_from(s).ok())
                        .and_then(|s| reqwest::StatusCode::from_u16(s).ok())
                        .unwrap_or(status);
                    let text = item.to_string();
                    answered(code, text, retry_after)
                })
                .collect();
            return Answer::PerRecord(outcomes, sha);
        }
        let text =
            String::from_utf8_lossy(&received[..received.len().min(MAX_RECEIPT)]).into_owned();
        let outcome = answered(status, text, retry_after);
        if let Outcome::Dead { reason, .. } = &outcome {
            tracing::info!(records = records.len(), reason = %snippet(reason), "batch refused as a whole; sending its halves");
        }
        Answer::Whole(attempt(outcome, &body))
    }
}

/// The value at a `/`-separated key path (`results`, `data/results`).
fn at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('/')
        .filter(|k| !k.is_empty())
        .try_fold(v, |v, k| v.get(k))
}
