//! What a store write means, decided once for every engine: which records of a
//! message are new, duplicate or stale, what the sender is told, which audit events
//! are appended, and what a finished delivery attempt records. The engines only run
//! the SQL.

use serde_json::{Value, json};

use super::{
    AcceptResponse, CaseStanding, Completion, DeliveryResult, NewMessage, NewRecord, NotParty,
    RecordReceipt, StaleRecord,
};
use crate::event::{Event, EventKind};
use crate::hash::sha256_hex;
use crate::time::rfc3339;

/// What to do with a message, given the versions already stored for its records.
pub enum AcceptPlan {
    /// Refuse the whole body; append `event` only.
    Stale {
        stale: Vec<StaleRecord>,
        event: Event,
    },
    /// Refuse the whole body: records for cases the sender is not a party of.
    NotParty {
        records: Vec<NotParty>,
        event: Event,
    },
    /// Store it: `statuses[i]` is `accepted` or `duplicate` for record `i`.
    Store {
        statuses: Vec<&'static str>,
        response: AcceptResponse,
        response_json: String,
        received: Event,
    },
}

/// Decide a message. `stored[i]` is the version already accepted for record `i`'s
/// identity (None when there is none or the record has no version); `unchanged[i]`
/// says that the latest record stored under that identity has the same content
/// (looked up for pulled records without a version only).
///
/// In a pulled page, duplicates are not stored again (the overlap window reads the
/// same records at every poll); a page of nothing but duplicates stores nothing but
/// its cursor.
///
/// A pushed body with a stale record is refused whole (the sender can fix it); in a
/// pulled page a stale record is stored as `stale` and not delivered, so that one
/// old record on the other side cannot stop the source.
///
/// `standing[i]` is where the sender stands with record `i`'s case. A record for a
/// case it is not a party of (and its grants do not cover) refuses a pushed body
/// whole; in a pulled page it is left out as `not_party`.
pub fn accept(
    msg: &NewMessage,
    stored: &[Option<i64>],
    unchanged: &[bool],
    standing: &[CaseStanding],
) -> AcceptPlan {
    let mut statuses = Vec::with_capacity(msg.records.len());
    let mut stale = Vec::new();
    let pulled = msg.pull.is_some();
    let outsider = |i: usize| match standing.get(i) {
        Some(CaseStanding::Other { region, item_code }) => {
            !msg.grants.cover(region.as_deref(), item_code.as_deref())
        }
        _ => false,
    };
    let strangers: Vec<NotParty> = msg
        .records
        .iter()
        .enumerate()
        .filter(|(i, _)| outsider(*i))
        .map(|(_, r)| NotParty {
            index: r.index,
            case_no: r.case_no.clone(),
        })
        .collect();
    if !strangers.is_empty() && !pulled {
        let mut event = Event::new(msg.received_at_ms, EventKind::AuthorizationRefused);
        event.node = Some(msg.source.clone());
        event.message_id = Some(msg.id.clone());
        event.case_no = strangers.first().map(|s| s.case_no.clone());
        event.detail = json!({
            "status": 403,
            "code": "not_a_party",
            "message": "records for cases the node did not open, is not routed and is not granted by its config",
            "body_sha256": msg.body_sha256,
            "records": strangers,
        });
        return AcceptPlan::NotParty {
            records: strangers,
            event,
        };
    }
    // Records earlier in the same body count as stored.
    let mut seen: Vec<(&NewRecord, i64)> = Vec::new();
    for (i, (r, stored)) in msg.records.iter().zip(stored).enumerate() {
        if outsider(i) {
            statuses.push("not_party");
            continue;
        }
        let Some(v) = r.version else {
            let same = unchanged.get(i).copied().unwrap_or(false)
                || (pulled
                    && msg.records[..i].iter().any(|e| {
                        e.kind == r.kind && e.identity == r.identity && e.sha256 == r.sha256
                    }));
            statuses.push(if pulled && same {
                "duplicate"
            } else {
                "accepted"
            });
            continue;
        };
        let earlier = seen
            .iter()
            .filter(|(s, _)| s.kind == r.kind && s.identity == r.identity)
            .map(|(_, v)| *v)
            .max();
        match earlier.or(*stored) {
            Some(s) if s > v && pulled => statuses.push("stale"),
            Some(s) if s > v => stale.push(StaleRecord {
                index: r.index,
                version: v,
                accepted_version: s,
            }),
            Some(s) if s == v => statuses.push("duplicate"),
            _ => statuses.push("accepted"),
        }
        seen.push((r, v));
    }
    if !stale.is_empty() {
        let mut event = Event::new(msg.received_at_ms, EventKind::Rejected);
        event.node = Some(msg.source.clone());
        event.message_id = Some(msg.id.clone());
        event.detail = json!({
            "reason": "stale_version",
            "body_sha256": msg.body_sha256,
            "records": stale,
        });
        return AcceptPlan::Stale { stale, event };
    }
    let response = AcceptResponse {
        message_id: msg.id.clone(),
        records: msg
            .records
            .iter()
            .zip(&statuses)
            .map(|(r, s)| RecordReceipt {
                index: r.index,
                kind: r.kind,
                case_no: r.case_no.clone(),
                status: (*s).to_string(),
                destinations: if *s == "accepted" {
                    r.destinations.clone()
                } else {
                    Vec::new()
                },
                flags: r.flags.clone(),
            })
            .collect(),
    };
    // A struct of strings and numbers always serialises.
    let response_json = serde_json::to_string(&response).unwrap_or_default();
    let mut received = Event::new(msg.received_at_ms, EventKind::Received);
    received.node = Some(msg.source.clone());
    received.message_id = Some(msg.id.clone());
    received.detail = json!({
        "body_sha256": msg.body_sha256,
        "body_bytes": msg.body.len(),
        "records": msg.records.len(),
        "content_type": msg.content_type,
    });
    with_request(&mut received, msg);
    AcceptPlan::Store {
        statuses,
        response,
        response_json,
        received,
    }
}

fn record_event(msg: &NewMessage, r: &NewRecord, kind: EventKind, detail: Value) -> Event {
    let mut e = Event::new(msg.received_at_ms, kind);
    e.node = Some(msg.source.clone());
    e.case_no = Some(r.case_no.clone());
    e.kind = Some(r.kind.as_str().into());
    e.message_id = Some(msg.id.clone());
    e.detail = detail;
    with_request(&mut e, msg);
    e
}

/// The request id of the message, on an event of its intake.
fn with_request(e: &mut Event, msg: &NewMessage) {
    if let (Some(id), Some(obj)) = (&msg.request_id, e.detail.as_object_mut()) {
        obj.insert("request_id".into(), id.clone().into());
    }
}

/// `token_refused` for a token whose `jti` another token already used.
pub fn replay_event(msg: &NewMessage) -> Event {
    let mut e = Event::new(msg.received_at_ms, EventKind::TokenRefused);
    e.node = Some(msg.source.clone());
    e.message_id = Some(msg.id.clone());
    e.detail = json!({
        "status": 401,
        "code": "token_replayed",
        "message": "token jti was already used by another token",
        "jti": msg.token.as_ref().map(|t| t.jti.clone()),
    });
    e
}

/// `accepted`, for every record of a stored message.
pub fn accepted_event(msg: &NewMessage, r: &NewRecord, status: &str) -> Event {
    record_event(
        msg,
        r,
        EventKind::Accepted,
        json!({
            "index": r.index,
            "label": r.label,
            "record_sha256": r.sha256,
            "version": r.version,
            "status": status,
        }),
    )
}

/// `flagged`, for an accepted record with warnings (the catalogue does not hold its
/// item code, or no longer holds it as valid).
pub fn flagged_event(msg: &NewMessage, r: &NewRecord) -> Event {
    record_event(
        msg,
        r,
        EventKind::Flagged,
        json!({ "index": r.index, "flags": r.flags }),
    )
}

/// `routed`, for every accepted (not duplicate) record.
pub fn routed_event(msg: &NewMessage, r: &NewRecord) -> Event {
    record_event(
        msg,
        r,
        EventKind::Routed,
        json!({ "index": r.index, "destinations": r.destinations }),
    )
}

/// The `Idempotency-Key` a destination sees for a record, stable across retries and
/// restarts.
pub fn delivery_key(msg: &NewMessage, r: &NewRecord, destination: &str) -> String {
    format!("hg-{}-{}-{}", msg.id, r.index, destination)
}

/// The delivery a completion was recorded for, as the store returned it.
pub struct Completed {
    pub destination: String,
    pub case_no: String,
    pub kind: String,
    pub message_id: String,
    /// Attempts including this one.
    pub attempts: i64,
    pub index: i64,
}

/// Columns a completion writes: status, text (receipt, error or reason), next attempt.
pub fn completion_columns(c: &Completion) -> (Option<i64>, &str, i64) {
    match &c.result {
        DeliveryResult::Delivered {
            status, receipt, ..
        } => (Some(i64::from(*status)), receipt.as_str(), 0),
        DeliveryResult::Retry {
            status,
            error,
            next_attempt_at_ms,
        } => (status.map(i64::from), error.as_str(), *next_attempt_at_ms),
        DeliveryResult::Dead { status, reason } => (status.map(i64::from), reason.as_str(), 0),
    }
}

/// `attempted` and the outcome event (`delivered`, `retried`, `dead_lettered`).
pub fn completion_events(c: &Completion, d: &Completed) -> [Event; 2] {
    let (status, _, _) = completion_columns(c);
    let base = |kind: EventKind, detail: Value| {
        let mut e = Event::new(c.at_ms, kind);
        e.node = Some(d.destination.clone());
        e.case_no = Some(d.case_no.clone());
        e.kind = Some(d.kind.clone());
        e.message_id = Some(d.message_id.clone());
        e.delivery_id = Some(c.id);
        e.detail = detail;
        e
    };
    let attempted = base(
        EventKind::Attempted,
        json!({
            "index": d.index,
            "attempt": d.attempts,
            "status": status,
            "duration_ms": c.duration_ms,
            "request_sha256": c.request_sha256,
        }),
    );
    let outcome = match &c.result {
        DeliveryResult::Delivered {
            receipt, duplicate, ..
        } => base(
            EventKind::Delivered,
            json!({
                "index": d.index,
                "attempt": d.attempts,
                "status": status,
                "duplicate": duplicate,
                "receipt_sha256": sha256_hex(receipt.as_bytes()),
                "duration_ms": c.duration_ms,
            }),
        ),
        DeliveryResult::Retry {
            error,
            next_attempt_at_ms,
            ..
        } => base(
            EventKind::Retried,
            json!({
                "index": d.index,
                "attempt": d.attempts,
                "status": status,
                "error": error,
                "next_attempt_at": rfc3339(*next_attempt_at_ms),
                "duration_ms": c.duration_ms,
            }),
        ),
        DeliveryResult::Dead { reason, .. } => base(
            EventKind::DeadLettered,
            json!({
                "index": d.index,
                "attempt": d.attempts,
                "status": status,
                "reason": reason,
                "duration_ms": c.duration_ms,
            }),
        ),
    };
    [attempted, outcome]
}

/// `manually_retried`, when an operator puts a dead letter back in the queue.
pub fn manual_retry_event(at_ms: i64, id: i64, d: &Completed, asked: &super::Asked) -> Event {
    let mut e = Event::new(at_ms, EventKind::ManuallyRetried);
    e.node = Some(d.destination.clone());
    e.case_no = Some(d.case_no.clone());
    e.kind = Some(d.kind.clone());
    e.message_id = Some(d.message_id.clone());
    e.delivery_id = Some(id);
    e.detail = json!({ "by": asked.by, "asked": asked.what });
    e
}

/// The event of a delivery its consumer refused after it was delivered.
pub fn consumer_refused_event(at_ms: i64, id: i64, d: &Completed, reason: &str) -> Event {
    let mut e = Event::new(at_ms, EventKind::DeadLettered);
    e.node = Some(d.destination.clone());
    e.case_no = Some(d.case_no.clone());
    e.kind = Some(d.kind.clone());
    e.message_id = Some(d.message_id.clone());
    e.delivery_id = Some(id);
    e.detail = json!({ "by": "consumer", "reason": reason });
    e
}

/// Token ids whose tokens expired before this time (ms) are pruned: an hour past
/// expiry, well beyond any configured clock skew, no such token verifies any more.
pub fn token_ids_expired_before(now_ms: i64) -> i64 {
    now_ms - 3_600_000
}

/// The outcome of comparing a fresh catalogue with the stored one: what to write and
/// what changed.
pub fn catalogue_change(
    stored: &[super::CatalogueItem],
    fresh: Vec<super::CatalogueItem>,
) -> (Vec<super::CatalogueItem>, super::CatalogueChange) {
    use std::collections::BTreeMap;
    let old: BTreeMap<&str, &super::CatalogueItem> =
        stored.iter().map(|i| (i.item_code.as_str(), i)).collect();
    let mut change = super::CatalogueChange::default();
    let mut write = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    for item in fresh {
        listed.insert(item.item_code.clone());
        match old.get(item.item_code.as_str()) {
            Some(o) if **o == item => continue,
            Some(o) => {
                if item.status == "withdrawn" && o.status != "withdrawn" {
                    change.withdrawn.push(item.item_code.clone());
                } else {
                    change.changed.push(item.item_code.clone());
                }
            }
            None => change.added.push(item.item_code.clone()),
        }
        write.push(item);
    }
    for o in stored {
        if !listed.contains(&o.item_code) && o.status != "withdrawn" {
            change.withdrawn.push(o.item_code.clone());
            write.push(super::CatalogueItem {
                status: "withdrawn".into(),
                ..o.clone()
            });
        }
    }
    change.total = listed.len();
    (write, change)
}

/// `catalogue_updated`, when a refresh changed anything.
pub fn catalogue_event(source: &str, at_ms: i64, change: &super::CatalogueChange) -> Event {
    let mut e = Event::new(at_ms, EventKind::CatalogueUpdated);
    e.node = Some(source.to_string());
    e.detail = json!(change);
    e
}

/// How a record's flags are stored: comma-separated, NULL when there are none.
pub fn flags_column(flags: &[String]) -> Option<String> {
    (!flags.is_empty()).then(|| flags.join(","))
}

pub fn parse_flags(column: Option<&str>) -> Vec<String> {
    column
        .map(|s| {
            s.split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a record of `msg` with this status is written (pulled duplicates are not).
pub fn stored(msg: &NewMessage, status: &str) -> bool {
    status != "not_party" && (msg.pull.is_none() || status != "duplicate")
}

/// Queue the receipt of the record delivery ?1 is for, at ?2, when its sender is
/// one of the JSON list ?3 and none of its deliveries is pending any more (SQLite;
/// one writer, so the check and the insert see the same state). Once per record:
/// the key is the record's.
pub const QUEUE_RECEIPT_SQLITE: &str = "
INSERT OR IGNORE INTO deliveries (record_id, message_id, record_idx, destination, case_no, kind,
    ord_kind, ord_step, state, attempts, next_attempt_at, idem_key, created_at, updated_at)
SELECT d.record_id, d.message_id, d.record_idx, 'receipt:' || r.source, d.case_no, d.kind,
    d.ord_kind, d.ord_step, 'pending', 0, ?2, 'receipt-' || d.message_id || '-' || d.record_idx, ?2, ?2
FROM deliveries d JOIN records r ON r.id = d.record_id
WHERE d.id = ?1 AND d.destination NOT LIKE 'receipt:%'
  AND r.source IN (SELECT value FROM json_each(?3))
  AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.record_id = d.record_id
                  AND o.state = 'pending' AND o.destination NOT LIKE 'receipt:%')";

/// The same for PostgreSQL, for the settled deliveries $1 at $2, senders $3. The
/// records are locked first (in id order), so that two instances settling the last
/// two deliveries of one record at once cannot each see the other's as pending: the
/// second waits, and its check then sees the first one's commit.
pub const LOCK_RECEIPT_RECORDS_PG: &str = "
SELECT r.id FROM records r
WHERE r.id IN (SELECT d.record_id FROM deliveries d WHERE d.id = ANY($1::bigint[])) AND r.source = ANY($2::text[])
ORDER BY r.id FOR UPDATE OF r";

pub const QUEUE_RECEIPTS_PG: &str = "
INSERT INTO deliveries (record_id, message_id, record_idx, destination, case_no, kind,
    ord_kind, ord_step, state, attempts, next_attempt_at, idem_key, created_at, updated_at)
SELECT DISTINCT ON (d.record_id) d.record_id, d.message_id, d.record_idx, 'receipt:' || r.source,
    d.case_no, d.kind, d.ord_kind, d.ord_step, 'pending', 0, $2::bigint,
    'receipt-' || d.message_id || '-' || d.record_idx, $2::bigint, $2::bigint
FROM deliveries d JOIN records r ON r.id = d.record_id
WHERE d.id = ANY($1::bigint[]) AND d.destination NOT LIKE 'receipt:%' AND r.source = ANY($3::text[])
  AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.record_id = d.record_id
                  AND o.state = 'pending' AND o.destination NOT LIKE 'receipt:%')
ORDER BY d.record_id
ON CONFLICT (idem_key) DO NOTHING";
