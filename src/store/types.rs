//! What goes in and out of the store: messages and their records, deliveries and
//! their attempts, the views the API shows, pull sources, the item catalogue, and
//! the filters of queries.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::hash::HashAlg;
use crate::record::Kind;

/// A verified token, as the store records it: its `jti` may belong to this token
/// only (the token check itself is in `auth::token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUse {
    pub node: String,
    pub jti: String,
    pub token_sha256: String,
    pub exp_ms: i64,
}

/// The cases a sender may add to without being a party of them: those its config
/// grants it by region or item-code prefix (`accept.regions`, `accept.item_codes`;
/// an empty list grants nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub regions: Vec<String>,
    pub item_codes: Vec<String>,
}

impl Grants {
    /// Whether a case of this region and item is granted.
    pub fn cover(&self, region: Option<&str>, item_code: Option<&str>) -> bool {
        let prefixed = |list: &[String], v: Option<&str>| {
            v.is_some_and(|v| list.iter().any(|p| v.starts_with(p.as_str())))
        };
        prefixed(&self.regions, region) || prefixed(&self.item_codes, item_code)
    }
}

/// Where a node stands with a case, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseStanding {
    /// There is no such case yet: the node opens it.
    New,
    /// The node opened it, sent records to it, or receives its records.
    Party,
    /// Someone else's case, of this region and item.
    Other {
        region: Option<String>,
        item_code: Option<String>,
    },
}

/// A record refused because its case belongs to others.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NotParty {
    pub index: usize,
    pub case_no: String,
}

/// One record of a message, checked and routed, ready to store.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub index: usize,
    pub kind: Kind,
    pub case_no: String,
    /// Identity for versions ([`crate::record::Record::identity`]).
    pub identity: String,
    pub version: Option<i64>,
    pub step_no: i64,
    /// How the audit timeline names the record (`process step 2`); no personal data.
    pub label: String,
    /// Canonical record as JSON.
    pub canonical: String,
    pub sha256: String,
    pub destinations: Vec<String>,
    /// Warnings the record was accepted with (`item_unknown`, `item_withdrawn`).
    pub flags: Vec<String>,
    /// The case's region and item, as this record gives them (kept with the case,
    /// for the grants of nodes that are not its parties).
    pub region: Option<String>,
    pub item_code: Option<String>,
    /// What supervision needs from the record (`crate::supervise::facts`), stored
    /// with it when supervision is on.
    pub fact: Option<super::supervision::IntakeFact>,
}

/// A message as received, with its records.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The verified token the sender used, when it used one: its `jti` may belong to
    /// this token only.
    pub token: Option<TokenUse>,
    pub id: String,
    pub source: String,
    pub received_at_ms: i64,
    pub content_type: Option<String>,
    /// The sender's `Idempotency-Key` (or one derived from record ids and versions).
    pub idempotency_key: Option<String>,
    pub body: Bytes,
    pub body_sha256: String,
    pub records: Vec<NewRecord>,
    /// For a page pulled from a source: the cursor it advances, in the same
    /// transaction as the records it covers.
    pub pull: Option<PullAdvance>,
    /// The cases the sender may add to without being their party.
    pub grants: Grants,
    /// The request that brought it (`X-Request-Id`, or one made up): on its audit
    /// events, and sent on to destinations with each delivery of its records.
    pub request_id: Option<String>,
}

/// What the sender is told: stored with the message, so a repeat gets it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AcceptResponse {
    pub message_id: String,
    pub records: Vec<RecordReceipt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordReceipt {
    pub index: usize,
    /// application, material, process or result.
    #[schema(value_type = String)]
    pub kind: Kind,
    pub case_no: String,
    /// `accepted`, or `duplicate` when the same record and version was already
    /// accepted (nothing is delivered again).
    pub status: String,
    pub destinations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// A record refused because a newer version of it was already accepted.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StaleRecord {
    pub index: usize,
    pub version: i64,
    pub accepted_version: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AcceptOutcome {
    /// Stored now.
    Accepted(AcceptResponse),
    /// The same sender already sent this (same idempotency key): the first answer.
    Replayed(AcceptResponse),
    /// Refused whole; nothing stored but the audit event.
    Stale(Vec<StaleRecord>),
    /// The token's `jti` was already used by another token; nothing stored.
    TokenReplayed,
    /// Refused whole: records for cases the sender is not a party of; nothing stored
    /// but the audit event.
    NotParty(Vec<NotParty>),
}

/// A delivery handed to a worker.
#[derive(Debug, Clone)]
pub struct LeasedDelivery {
    pub id: i64,
    pub message_id: String,
    pub destination: String,
    pub case_no: String,
    pub kind: Kind,
    pub canonical: String,
    pub idempotency_key: String,
    /// The request that brought the record, if known.
    pub request_id: Option<String>,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at_ms: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum DeliveryResult {
    Delivered {
        status: u16,
        receipt: String,
        duplicate: bool,
    },
    Retry {
        status: Option<u16>,
        error: String,
        next_attempt_at_ms: i64,
    },
    Dead {
        status: Option<u16>,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub id: i64,
    pub owner: String,
    /// SHA-256 of the request body sent.
    pub request_sha256: String,
    pub at_ms: i64,
    pub duration_ms: i64,
    pub result: DeliveryResult,
    /// The sending nodes that get receipts (`receipt_url`): when this completion
    /// settles the last delivery of a record from one of them, its receipt is queued
    /// in the same transaction (to `receipt:NODE`).
    pub receipts: std::sync::Arc<[String]>,
}

/// What a worker asks to lease.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub destination: String,
    pub owner: String,
    pub limit: usize,
    pub now_ms: i64,
    pub lease_ms: i64,
}

/// The answer to [`Store::exchange`].
#[derive(Debug, Default)]
pub struct Exchange {
    /// Completions recorded.
    pub recorded: usize,
    /// Completions not recorded (lease lost or a write failed): the delivery is sent
    /// again once its lease expires.
    pub lost: usize,
    pub leased: Vec<LeasedDelivery>,
}

/// Delivery states as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" | "dead_lettered" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub message_id: String,
    pub record_index: usize,
    pub destination: String,
    pub case_no: String,
    /// application, material, process or result.
    #[schema(value_type = String)]
    pub kind: Kind,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub receipt: Option<String>,
    pub idempotency_key: String,
    pub created_at: String,
    pub updated_at: String,
    pub delivered_at: Option<String>,
    /// A pending delivery a worker holds: until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leased_until: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordView {
    pub message_id: String,
    pub index: usize,
    pub source: String,
    pub received_at: String,
    /// application, material, process or result.
    #[schema(value_type = String)]
    pub kind: Kind,
    pub case_no: String,
    pub status: String,
    pub version: Option<i64>,
    pub sha256: String,
    /// Warnings it was accepted with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// The canonical record (callers mask personal data before showing it).
    #[schema(value_type = Object)]
    pub record: Value,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: String,
    pub source: String,
    pub received_at: String,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub body_bytes: usize,
    pub body_sha256: String,
    #[schema(value_type = Object)]
    pub response: Value,
    pub records: Vec<RecordView>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub destination: Option<String>,
    pub case_no: Option<String>,
    /// Only deliveries created at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Some(true): only pending deliveries a worker holds a lease on now; Some(false):
    /// only those it does not.
    pub leased: Option<bool>,
    /// Only ids greater than this (paging).
    pub after_id: Option<i64>,
    pub limit: usize,
}

/// Queue figures for one destination.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueueDepth {
    pub destination: String,
    pub pending: i64,
    pub dead: i64,
    /// When the oldest pending delivery was created (ms since the epoch), if any.
    pub oldest_pending_ms: Option<i64>,
}

/// A pull source's durable state (DESIGN.md section 1, step 10).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SyncSource {
    pub node: String,
    /// The cursor as `crate::sync::Cursor` writes it (JSON text).
    pub cursor: String,
    pub paused: bool,
    /// Records stored from this source (new records, not duplicates).
    pub pulled: i64,
    /// Pages committed.
    pub pages: i64,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub updated_ms: i64,
}

/// A cursor advance, committed with the page it covers (or alone for an empty page).
#[derive(Debug, Clone)]
pub struct PullAdvance {
    pub node: String,
    /// The puller holding the source's lease: an advance by anyone else fails.
    pub owner: String,
    pub cursor: String,
    pub at_ms: i64,
    /// Keep the lease until then.
    pub lease_until_ms: i64,
    /// Audit events of the page (`pulled`, refusals), appended in the same transaction.
    pub events: Vec<Event>,
}

/// What an operator does to a pull source.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncControl {
    Pause,
    Resume,
    /// Set the cursor (records pulled again are deduplicated by identity and version).
    Rewind(String),
}

/// One item of the item catalogue (事项目录).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogueItem {
    /// 事项编码 / 实施编码.
    pub item_code: String,
    pub item_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `YYYY-MM-DD`, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<String>,
    /// `active` or `withdrawn`.
    #[serde(default = "active")]
    pub status: String,
}

fn active() -> String {
    "active".into()
}

/// How a catalogue refresh changed the stored catalogue.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CatalogueChange {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    /// Withdrawn by the source, or no longer listed.
    pub withdrawn: Vec<String>,
    pub total: usize,
}

/// A record exchanged with a node: delivered to it, or pulled from it.
#[derive(Debug, Clone, Serialize)]
pub struct Exchanged {
    /// `delivered` (we sent it) or `pulled` (it came from them).
    pub direction: &'static str,
    pub kind: Kind,
    pub case_no: String,
    pub identity: String,
    pub version: Option<i64>,
    /// `op` of the canonical record (`upsert` when absent).
    pub op: String,
    /// When it was exchanged: delivered_at, or received_at for a pull (ms).
    pub at_ms: i64,
    /// When the record was received by the gateway (ms).
    pub received_ms: i64,
    pub delivery_id: Option<i64>,
    pub state: Option<DeliveryState>,
}

/// Which audit events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after_seq: Option<i64>,
    pub through_seq: Option<i64>,
    pub case_no: Option<String>,
    pub node: Option<String>,
    pub kind: Option<String>,
    pub event: Option<String>,
    pub message_id: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: usize,
}

/// Where the audit chain stands.
#[derive(Debug, Clone, Serialize)]
pub struct AuditMeta {
    pub alg: HashAlg,
    pub archived_through_seq: Option<i64>,
    pub archived_head_hash: Option<String>,
    pub last_archive_sha256: Option<String>,
    pub live_first_seq: Option<i64>,
    pub live_last_seq: Option<i64>,
}

/// What the store holds of a message, for verification to hash again.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub message_id: String,
    /// The body as kept (empty when payloads are not retained).
    pub body: Bytes,
    /// The body hash as stored beside it.
    pub body_sha256: String,
    pub records: Vec<StoredRecord>,
}

/// A stored record of a message: its place, canonical text (as the bytes stored, which
/// an edit may have left as no text at all) and stored hash.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub index: usize,
    pub canonical: Vec<u8>,
    pub sha256: String,
}

/// A data key the store has values under: its id, algorithm, and a check value (a
/// fixed text encrypted under it) that tells a wrong key from the right one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKey {
    pub id: String,
    pub alg: String,
    pub check: Vec<u8>,
}

/// A stored value to replace, if it is still `old` (rotation runs beside intake).
#[derive(Debug, Clone)]
pub struct Reseal<K> {
    pub key: K,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}

/// The store's side of encryption at rest (`store::sealed`): the data keys it has
/// values under, and the raw stored payloads and records, page by page, for rotation.
#[derive(Debug, Clone)]
pub enum SealOp {
    /// The registered data keys.
    Keys,
    /// Register keys (kept if already there) and forget others.
    SetKeys {
        add: Vec<DataKey>,
        forget: Vec<String>,
    },
    /// Message bodies as stored, by id after `after`.
    Messages { after: String, limit: usize },
    /// Canonical records as stored, by id after `after`.
    Records { after: i64, limit: usize },
    /// Replace stored values that are unchanged since they were read.
    Reseal {
        messages: Vec<Reseal<String>>,
        records: Vec<Reseal<i64>>,
    },
}

/// What a [`SealOp`] answers.
#[derive(Debug, Clone)]
pub enum SealOut {
    Keys(Vec<DataKey>),
    Done,
    Messages(Vec<(String, Vec<u8>)>),
    Records(Vec<(i64, Vec<u8>)>),
    /// How many values were replaced.
    Resealed(usize),
}

/// Who asked for an operator action and what they asked for, as its audit event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// `node ops-center`, `cli root@host`, …
    pub by: String,
    /// The request in words: `retry delivery 42`, `retry dead deliveries to city`.
    pub what: String,
}
