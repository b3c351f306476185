//! Audit: the events, the hash chain that makes their log tamper-evident, and the
//! auditor's tools over it — verification, signed checkpoints, archives and the
//! case timeline (DESIGN.md section 6).
//!
//! An event is written by the store in the same transaction as the state change it
//! records. Each stored event carries `hash = H(prev_hash || canonical bytes)`, where
//! the canonical bytes are the stored row as JSON with a fixed field order, so anyone
//! holding the rows can recompute the chain. `H` is SHA-256, or SM3 (GB/T 32905) when
//! the store was created with it.

pub mod archive;
pub mod checkpoint;
pub mod timeline;
pub mod tools;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

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
}

impl EventKind {
    pub const ALL: [EventKind; 21] = [
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
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Why the audit log could not be used or does not hold.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit event {seq}: {reason}")]
    Broken { seq: i64, reason: String },
    #[error("unknown audit hash algorithm `{0}` (sha256 or sm3)")]
    UnknownAlg(String),
    /// The checkpoint does not match the log or was altered (a finding).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The checkpoint could not be checked (its file, the key given, an archived
    /// event without `--archives`): no finding either way.
    #[error("checkpoint not checked: {0}")]
    CheckpointUnchecked(String),
    #[error("archive {path}: {reason}")]
    Archive { path: String, reason: String },
    #[error("archive folder {path}: {reason}")]
    ArchiveFolder { path: String, reason: String },
    #[error("signing key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The chain's hash function, fixed when a store is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    #[default]
    Sha256,
    Sm3,
}

impl HashAlg {
    pub fn parse(s: &str) -> Result<HashAlg, AuditError> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Ok(HashAlg::Sha256),
            "sm3" => Ok(HashAlg::Sm3),
            _ => Err(AuditError::UnknownAlg(s.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sm3 => "sm3",
        }
    }

    /// The chain step: `H(prev || canonical)`.
    pub fn chain(self, prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
        match self {
            HashAlg::Sha256 => {
                let mut h = Sha256::new();
                h.update(prev);
                h.update(canonical);
                h.finalize().into()
            }
            HashAlg::Sm3 => {
                let mut h = sm3::Sm3::new();
                h.update(prev);
                h.update(canonical);
                h.finalize().into()
            }
        }
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

/// Hex SHA-256 of some bytes (bodies, records, receipts).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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
    pub fn push(&mut self, row: &AuditRow) -> Result<(), AuditError> {
        if row.seq != self.next_seq {
            let reason = if row.seq > self.next_seq {
                format!("missing: the next stored event is {}", row.seq)
            } else {
                format!("out of sequence: found event {} again", row.seq)
            };
            return Err(AuditError::Broken {
                seq: self.next_seq,
                reason,
            });
        }
        let h = self.alg.chain(&self.prev, &row.canonical_bytes());
        if hex::encode(h) != row.hash {
            return Err(AuditError::Broken {
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

/// Visit the audit rows a filter selects, in sequence order, page by page (the
/// filter's `limit` is the page size; 5000 when zero). `f` answers whether to go on.
pub async fn each_row(
    store: &dyn crate::store::Store,
    mut filter: crate::store::AuditFilter,
    mut f: impl FnMut(&AuditRow) -> Result<bool, AuditError>,
) -> Result<(), AuditError> {
    if filter.limit == 0 {
        filter.limit = 5000;
    }
    loop {
        let page = store.audit_events(filter.clone()).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        filter.after_seq = Some(last.seq);
        for row in &page {
            if !f(row)? {
                return Ok(());
            }
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub alg: HashAlg,
    /// Events checked in archive files.
    pub archived: u64,
    /// Events checked in the live log.
    pub live: u64,
    /// Events before the live log that were not checked (archives not given).
    pub trusted_through: Option<i64>,
    pub head_seq: i64,
    pub head_hash: String,
}

/// Walk the whole chain: the archives in `archives` (when given), then the live log,
/// as one chain. The first event that does not follow is named in the error. With
/// `watch`, the verified chain hash of that event is returned too (for checkpoints).
pub async fn verify_store(
    store: &dyn crate::store::Store,
    archives: Option<&std::path::Path>,
    watch: Option<i64>,
    mut on_progress: impl FnMut(u64),
) -> Result<(VerifyReport, Option<[u8; 32]>), AuditError> {
    let meta = store.audit_meta().await?;
    let (mut verifier, archived, trusted) = match (archives, meta.archived_through_seq) {
        (Some(dir), _) => {
            let (v, last_sha) = archive::verify_all(dir, Verifier::new(meta.alg).watch(watch))?;
            if let Some(expected) = &meta.last_archive_sha256
                && last_sha.as_ref() != Some(expected)
            {
                return Err(AuditError::Archive {
                    path: dir.display().to_string(),
                    reason: "the newest archive is not the one the store recorded".into(),
                });
            }
            let n = v.checked;
            (v, n, None)
        }
        (None, Some(through)) => {
            let hash = meta
                .archived_head_hash
                .as_deref()
                .and_then(parse_hash)
                .ok_or_else(|| AuditError::Broken {
                    seq: through,
                    reason: "archived head hash missing".into(),
                })?;
            (
                Verifier::resume(meta.alg, through, hash).watch(watch),
                0,
                Some(through),
            )
        }
        (None, None) => (Verifier::new(meta.alg).watch(watch), 0, None),
    };
    let filter = crate::store::AuditFilter {
        after_seq: Some(verifier.head().0),
        ..Default::default()
    };
    each_row(store, filter, |row| {
        verifier.push(row)?;
        if verifier.checked % 5000 == 0 {
            on_progress(verifier.checked);
        }
        Ok(true)
    })
    .await?;
    on_progress(verifier.checked);
    let (head_seq, head_hash) = verifier.head();
    Ok((
        VerifyReport {
            alg: meta.alg,
            archived,
            live: verifier.checked - archived,
            trusted_through: trusted,
            head_seq,
            head_hash: hex::encode(head_hash),
        },
        verifier.watched(),
    ))
}

/// Parse a hex chain hash.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
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

    fn verify(alg: HashAlg, rows: &[AuditRow]) -> Result<u64, AuditError> {
        let mut v = Verifier::new(alg);
        for r in rows {
            v.push(r)?;
        }
        Ok(v.checked)
    }

    fn broken_at(r: Result<u64, AuditError>) -> i64 {
        match r {
            Err(AuditError::Broken { seq, .. }) => seq,
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
