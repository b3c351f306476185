//! Audit events and the hash chain that makes the log tamper-evident (DESIGN.md
//! section 6).
//!
//! An event is written by the store in the same transaction as the state change it
//! records. Each stored event carries `hash = SHA-256(prev_hash || canonical bytes)`,
//! where the canonical bytes are the event's JSON with a fixed field order, so anyone
//! holding the rows can recompute the chain.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What happened. The names are stable: auditors and exports use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ConfigLoaded,
    Received,
    Rejected,
    Accepted,
    Routed,
    Delivered,
    Retried,
    DeadLettered,
    ManuallyRetried,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ConfigLoaded => "config_loaded",
            EventKind::Received => "received",
            EventKind::Rejected => "rejected",
            EventKind::Accepted => "accepted",
            EventKind::Routed => "routed",
            EventKind::Delivered => "delivered",
            EventKind::Retried => "retried",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::ManuallyRetried => "manually_retried",
        }
    }
}

/// Why the audit chain could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit event {seq}: stored hash does not match its content or predecessor")]
    Mismatch { seq: i64 },
}

/// One audit event before it is chained.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: i64,
    pub event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_no: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<i64>,
    /// Event-specific facts: hashes of the bytes involved, status codes, reasons.
    /// Never raw personal data.
    pub detail: Value,
}

impl Event {
    pub fn new(at_ms: i64, event: EventKind) -> Event {
        Event {
            at_ms,
            event,
            node: None,
            case_no: None,
            kind: None,
            message_id: None,
            delivery_id: None,
            detail: Value::Null,
        }
    }

    /// The bytes that are hashed (see [`canonical_bytes`]).
    pub fn canonical_bytes(&self, seq: i64) -> Vec<u8> {
        canonical_bytes(&StoredEvent {
            seq,
            at_ms: self.at_ms,
            event: self.event.as_str(),
            node: self.node.as_deref(),
            case_no: self.case_no.as_deref(),
            kind: self.kind.as_deref(),
            message_id: self.message_id.as_deref(),
            delivery_id: self.delivery_id,
            detail: &self.detail,
        })
    }
}

/// An event as stored, borrowed from a row: what the hash covers.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent<'a> {
    pub seq: i64,
    pub at_ms: i64,
    pub event: &'a str,
    pub node: Option<&'a str>,
    pub case_no: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub delivery_id: Option<i64>,
    pub detail: &'a Value,
}

/// The bytes that are hashed: the stored event as JSON with a fixed field order
/// (object keys inside `detail` sorted), so a verifier can rebuild them from a row.
pub fn canonical_bytes(e: &StoredEvent<'_>) -> Vec<u8> {
    // Serialising strings, integers and JSON values cannot fail.
    serde_json::to_vec(e).unwrap_or_default()
}

/// The chain step: `SHA-256(prev || canonical)`.
pub fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

/// Hex SHA-256 of some bytes (bodies, records, receipts).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The hash before the first event.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Recompute a chain from stored `(seq, canonical bytes, stored hash)` rows in order;
/// the first row whose hash does not follow is named.
pub fn verify_chain<I>(rows: I) -> Result<u64, AuditError>
where
    I: IntoIterator<Item = (i64, Vec<u8>, [u8; 32])>,
{
    let mut prev = GENESIS;
    let mut count = 0;
    for (seq, canonical, stored) in rows {
        let h = chain_hash(&prev, &canonical);
        if h != stored {
            return Err(AuditError::Mismatch { seq });
        }
        prev = h;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_detects_a_changed_event() {
        let events: Vec<Event> = (0..3)
            .map(|i| {
                let mut e = Event::new(1000 + i, EventKind::Received);
                e.case_no = Some(format!("case-{i}"));
                e
            })
            .collect();
        let mut prev = GENESIS;
        let mut rows = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let bytes = e.canonical_bytes(i as i64 + 1);
            prev = chain_hash(&prev, &bytes);
            rows.push((i as i64 + 1, bytes, prev));
        }
        assert_eq!(verify_chain(rows.clone()).unwrap(), 3);
        rows[1].1 = Event::new(1, EventKind::Rejected).canonical_bytes(2);
        assert!(matches!(
            verify_chain(rows),
            Err(AuditError::Mismatch { seq: 2 })
        ));
    }
}
