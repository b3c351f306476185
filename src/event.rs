//! Audit events and the hash chain over them (layer 1; DESIGN.md section 6).
//!
//! An event is written by the store in the same transaction as the state change it
//! records. Each stored event carries `hash = H(prev_hash || canonical bytes)`, where
//! the canonical bytes are the stored row as JSON with a fixed field order, so anyone
//! holding the rows can recompute the chain ([`Verifier`]). `H` is SHA-256, or SM3
//! (GB/T 32905) when the store was created with it ([`HashAlg`]). The tools that read
//! the chain back out of a store (verification, timelines, exports, archives) are in
//! `audit`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hash::HashAlg;

/// The first stored event that does not follow from the one before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit event {seq}: {reason}")]
pub struct Broken {
    pub seq: i64,
    pub reason: String,
}

/// What happened. The names are stable: auditors and exports use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ConfigLoaded,
    Received,
    Rejected,
    TokenRefused,
    AuthorizationRefused,
    Accepted,
    Routed,
    Attempted,
    Delivered,
    Retried,
    DeadLettered,
    ManuallyRetried,
    Exported,
    Archived,
    Checkpoint,
    /// A page pulled from a source (cursor before and after, counts, refusals).
    Pulled,
    /// An operator paused, resumed or rewound a pull source.
    SyncControlled,
    /// The item catalogue changed (items added, changed, withdrawn).
    CatalogueUpdated,
    /// A record accepted with a warning (an item code the catalogue does not hold).
    Flagged,
    /// A reconciliation ran (counts on each side, differences found).
    Reconciled,
    /// Deliveries put back in the queue by a reconciliation or a backfill.
    Requeued,
    /// A destination's backlog crossed its `max_backlog`, up (intake refused, pull
    /// sources paused) or back down.
    Backpressure,
    /// An operator paused or resumed deliveries to a destination.
    DestinationControlled,
    /// The configuration was reloaded, or a reload was refused (who asked, the files
    /// read with their SHA-256, what changed, or the problem).
    ConfigReloaded,
    /// A person logged in to the console, or was refused (who, from where, why).
    ConsoleLogin,
    /// A person logged out of the console (or the session was ended).
    ConsoleLogout,
    /// A console user was added, changed, disabled or given a new password.
    ConsoleUserChanged,
    /// Someone verified the audit chain from the console (who, and the result).
    ChainVerified,
    /// An auditor revealed a record's masked personal data (who, which, why).
    PersonalDataRevealed,
    /// A case's supervision state changed (on time, warning, overdue, suspended,
    /// finished on time or late): from, to, the deadline, and the alert sent.
    SupervisionChanged,
    /// A batch read from a 前置库 table: the table, the rows, keys read, refused and why.
    TableRead,
    /// 前置库 rows marked after their records were stored (or refused): how many of
    /// each flag, and the keys.
    TableMarked,
}

impl EventKind {
    pub const ALL: [EventKind; 32] = [
        EventKind::ConfigLoaded,
        EventKind::Received,
        EventKind::Rejected,
        EventKind::TokenRefused,
        EventKind::AuthorizationRefused,
        EventKind::Accepted,
        EventKind::Routed,
        EventKind::Attempted,
        EventKind::Delivered,
        EventKind::Retried,
        EventKind::DeadLettered,
        EventKind::ManuallyRetried,
        EventKind::Exported,
        EventKind::Archived,
        EventKind::Checkpoint,
        EventKind::Pulled,
        EventKind::SyncControlled,
        EventKind::CatalogueUpdated,
        EventKind::Flagged,
        EventKind::Reconciled,
        EventKind::Requeued,
        EventKind::Backpressure,
        EventKind::DestinationControlled,
        EventKind::ConfigReloaded,
        EventKind::ConsoleLogin,
        EventKind::ConsoleLogout,
        EventKind::ConsoleUserChanged,
        EventKind::ChainVerified,
        EventKind::PersonalDataRevealed,
        EventKind::SupervisionChanged,
        EventKind::TableRead,
        EventKind::TableMarked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ConfigLoaded => "config_loaded",
            EventKind::Received => "received",
            EventKind::Rejected => "rejected",
            EventKind::TokenRefused => "token_refused",
            EventKind::AuthorizationRefused => "authorization_refused",
            EventKind::Accepted => "accepted",
            EventKind::Routed => "routed",
            EventKind::Attempted => "attempted",
            EventKind::Delivered => "delivered",
            EventKind::Retried => "retried",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::ManuallyRetried => "manually_retried",
            EventKind::Exported => "exported",
            EventKind::Archived => "archived",
            EventKind::Checkpoint => "checkpoint",
            EventKind::Pulled => "pulled",
            EventKind::SyncControlled => "sync_controlled",
            EventKind::CatalogueUpdated => "catalogue_updated",
            EventKind::Flagged => "flagged",
            EventKind::Reconciled => "reconciled",
            EventKind::Requeued => "requeued",
            EventKind::Backpressure => "backpressure",
            EventKind::DestinationControlled => "destination_controlled",
            EventKind::ConfigReloaded => "config_reloaded",
            EventKind::ConsoleLogin => "console_login",
            EventKind::ConsoleLogout => "console_logout",
            EventKind::ConsoleUserChanged => "console_user_changed",
            EventKind::ChainVerified => "chain_verified",
            EventKind::PersonalDataRevealed => "personal_data_revealed",
            EventKind::SupervisionChanged => "supervision_changed",
            EventKind::TableRead => "table_read",
            EventKind::TableMarked => "table_marked",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One audit event before it is chained.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: i64,
    pub event: EventKind,
    pub node: Option<String>,
    pub case_no: Option<String>,
    pub kind: Option<String>,
    pub message_id: Option<String>,
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

/// An audit row as stored: the event and its chain hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub event: String,
    pub node: Option<String>,
    pub case_no: Option<String>,
    pub kind: Option<String>,
    pub message_id: Option<String>,
    pub delivery_id: Option<i64>,
    pub detail: Value,
    /// Hex of the chain hash.
    pub hash: String,
}

impl AuditRow {
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_bytes(&StoredEvent {
            seq: self.seq,
            at_ms: self.at_ms,
            event: &self.event,
            node: self.node.as_deref(),
            case_no: self.case_no.as_deref(),
            kind: self.kind.as_deref(),
            message_id: self.message_id.as_deref(),
            delivery_id: self.delivery_id,
            detail: &self.detail,
        })
    }
}

/// The hash before the first event.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Walks rows in sequence order and checks that each follows from the one before.
#[derive(Debug, Clone)]
pub struct Verifier {
    alg: HashAlg,
    prev: [u8; 32],
    next_seq: i64,
    pub checked: u64,
    /// A sequence number whose hash the caller wants (a checkpoint's).
    watch: Option<i64>,
    watched: Option<[u8; 32]>,
}

impl Verifier {
    /// Start at the beginning of the chain.
    pub fn new(alg: HashAlg) -> Verifier {
        Verifier::resume(alg, 0, GENESIS)
    }

    /// Start after event `seq` whose hash was `hash` (e.g. the last archived event).
    pub fn resume(alg: HashAlg, seq: i64, hash: [u8; 32]) -> Verifier {
        Verifier {
            alg,
            prev: hash,
            next_seq: seq + 1,
            checked: 0,
            watch: None,
            watched: None,
        }
    }

    /// Remember the chain hash of event `seq` when it passes.
    pub fn watch(mut self, seq: Option<i64>) -> Verifier {
        self.watch = seq;
        if seq == Some(self.next_seq - 1) {
            self.watched = Some(self.prev);
        }
        self
    }

    /// The chain hash of the watched event, once verified.
    pub fn watched(&self) -> Option<[u8; 32]> {
        self.watched
    }

    /// Check the next row; the first one that does not follow is named.
    pub fn push(&mut self, row: &AuditRow) -> Result<(), Broken> {
        if row.seq != self.next_seq {
            let reason = if row.seq > self.next_seq {
                format!("missing: the next stored event is {}", row.seq)
            } else {
                format!("out of sequence: found event {} again", row.seq)
            };
            return Err(Broken {
                seq: self.next_seq,
                reason,
            });
        }
        let h = self.alg.chain(&self.prev, &row.canonical_bytes());
        if hex::encode(h) != row.hash {
            return Err(Broken {
                seq: row.seq,
                reason: "stored hash does not match the event's content and its predecessor \
                         (the event was changed, inserted, moved, or one before it was)"
                    .into(),
            });
        }
        self.prev = h;
        self.next_seq += 1;
        self.checked += 1;
        if self.watch == Some(row.seq) {
            self.watched = Some(h);
        }
        Ok(())
    }

    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// Sequence number and hash of the last event checked.
    pub fn head(&self) -> (i64, [u8; 32]) {
        (self.next_seq - 1, self.prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(alg: HashAlg, n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let mut row = AuditRow {
                    seq,
                    at_ms: 1000 + seq,
                    event: "received".into(),
                    node: Some("a".into()),
                    case_no: Some(format!("case-{seq}")),
                    kind: None,
                    message_id: None,
                    delivery_id: None,
                    detail: serde_json::json!({"n": seq}),
                    hash: String::new(),
                };
                prev = alg.chain(&prev, &row.canonical_bytes());
                row.hash = hex::encode(prev);
                row
            })
            .collect()
    }

    fn verify(alg: HashAlg, rows: &[AuditRow]) -> Result<u64, Broken> {
        let mut v = Verifier::new(alg);
        for r in rows {
            v.push(r)?;
        }
        Ok(v.checked)
    }

    fn broken_at(r: Result<u64, Broken>) -> i64 {
        match r {
            Err(Broken { seq, .. }) => seq,
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn intact_chains_verify_with_either_hash() {
        for alg in [HashAlg::Sha256, HashAlg::Sm3] {
            assert_eq!(verify(alg, &rows(alg, 5)).unwrap(), 5);
        }
        assert_ne!(
            rows(HashAlg::Sha256, 1)[0].hash,
            rows(HashAlg::Sm3, 1)[0].hash
        );
    }

    #[test]
    fn change_delete_insert_swap_are_named() {
        let good = rows(HashAlg::Sha256, 6);
        let mut changed = good.clone();
        changed[2].detail = serde_json::json!({"n": 99});
        assert_eq!(broken_at(verify(HashAlg::Sha256, &changed)), 3);
        let mut deleted = good.clone();
        deleted.remove(3);
        assert_eq!(broken_at(verify(HashAlg::Sha256, &deleted)), 4);
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert_eq!(broken_at(verify(HashAlg::Sha256, &swapped)), 2);
        let mut inserted = good.clone();
        let mut forged = good[2].clone();
        forged.detail = serde_json::json!({"forged": true});
        inserted.insert(2, forged);
        for (i, r) in inserted.iter_mut().enumerate() {
            r.seq = i as i64 + 1;
        }
        assert_eq!(broken_at(verify(HashAlg::Sha256, &inserted)), 3);
    }
}
