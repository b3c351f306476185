//! The durable store (DESIGN.md section 5): messages, records, deliveries,
//! idempotency keys, record versions and audit events.
//!
//! [`Store`] is the one abstraction the rest of the gateway sees; each engine keeps
//! its SQL and transactions behind it. An accepted message — raw bytes, canonical
//! records, one delivery row per destination, the idempotency key and the audit
//! events — is written in ONE transaction before the sender hears `202`.

mod pg_tls;
mod plan;
mod postgres;
mod sqlite;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::Kind;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL `{0}` is not understood: use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    #[error("cannot open store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
    #[error(
        "store is locked by another running gateway ({0}); stop it first or use PostgreSQL for several instances"
    )]
    Locked(String),
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("PostgreSQL error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database cannot be reached or could not commit. Nothing was written,
    /// except when the connection broke during the commit itself (the message says
    /// so): send again with the same Idempotency-Key, which recognises a repeat.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store is shut down")]
    Closed,
    #[error("not found")]
    NotFound,
    #[error("delivery {0} is not dead-lettered; only dead-lettered deliveries can be retried")]
    NotDead(i64),
    #[error("pull source `{0}` is held by another puller or was paused or rewound meanwhile")]
    LeaseLost(String),
    #[error("no pull source `{0}` in the store (it has never been pulled)")]
    NoSource(String),
}

/// A parsed `gateway.store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// A libpq-style URL (`postgres://user@host:port/db`); the password comes from
    /// the environment (`PGPASSWORD`) or a file the config names, never the config.
    Postgres(String),
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_string()));
        }
        match url.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => Ok(StoreUrl::Sqlite(PathBuf::from(p))),
            _ => Err(StoreError::BadUrl(url.to_string())),
        }
    }

    /// Resolve a relative path (an SQLite file, a PostgreSQL `sslrootcert`) against
    /// the config file's folder.
    pub fn resolve(self, base: &Path) -> StoreUrl {
        match self {
            StoreUrl::Sqlite(p) if p.is_relative() => StoreUrl::Sqlite(base.join(p)),
            StoreUrl::Postgres(url) => StoreUrl::Postgres(pg_tls::resolve(&url, base)),
            other => other,
        }
    }
}

/// Check a store URL's settings without connecting (for `hallgate check`): the
/// PostgreSQL TLS options and the CA file they name.
pub fn check_url(url: &StoreUrl) -> Result<(), StoreError> {
    if let StoreUrl::Postgres(url) = url {
        pg_tls::Connector::new(&pg_tls::settings(url)?)?;
    }
    Ok(())
}

/// A boxed future, so that engines can be chosen at run time (`Arc<dyn Store>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

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
}

/// A message as received, with its records.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The verified token the sender used, when it used one: its `jti` may belong to
    /// this token only.
    pub token: Option<crate::auth::token::TokenUse>,
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
}

/// What the sender is told: stored with the message, so a repeat gets it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptResponse {
    pub message_id: String,
    pub records: Vec<RecordReceipt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordReceipt {
    pub index: usize,
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub message_id: String,
    pub record_index: usize,
    pub destination: String,
    pub case_no: String,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordView {
    pub message_id: String,
    pub index: usize,
    pub source: String,
    pub received_at: String,
    pub kind: Kind,
    pub case_no: String,
    pub status: String,
    pub version: Option<i64>,
    pub sha256: String,
    /// Warnings it was accepted with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// The canonical record (callers mask personal data before showing it).
    pub record: Value,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub id: String,
    pub source: String,
    pub received_at: String,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub body_bytes: usize,
    pub body_sha256: String,
    pub response: Value,
    pub records: Vec<RecordView>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub destination: Option<String>,
    pub case_no: Option<String>,
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
}

/// A pull source's durable state (DESIGN.md section 1, step 10).
#[derive(Debug, Clone, Serialize, PartialEq)]
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
    pub events: Vec<crate::audit::Event>,
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

/// The store, whichever engine is behind it.
pub trait Store: Send + Sync {
    /// Store a message with its records, deliveries, idempotency key and audit
    /// events in one transaction (or answer a repeat / refuse stale versions).
    fn accept(&self, msg: NewMessage) -> StoreFuture<'_, AcceptOutcome>;
    /// Append an audit event on its own (a refused request, a config load, an export).
    fn audit(&self, event: crate::audit::Event) -> StoreFuture<'_, ()>;
    /// After the events up to `through_seq` were written to an archive file: remove
    /// them from the live log, remember where the chain stands, and append `event`.
    fn archive_audit(
        &self,
        through_seq: i64,
        archive_sha256: String,
        event: crate::audit::Event,
    ) -> StoreFuture<'_, ()>;
    /// The chain's hash algorithm and what has been archived.
    fn audit_meta(&self) -> StoreFuture<'_, AuditMeta>;
    /// How many audit events match (paging fields ignored).
    fn audit_count(&self, filter: AuditFilter) -> StoreFuture<'_, i64>;
    /// Audit events in sequence order.
    fn audit_events(&self, filter: AuditFilter) -> StoreFuture<'_, Vec<crate::audit::AuditRow>>;
    /// One round trip of a delivery worker: record how finished attempts ended, then
    /// lease up to `limit` due deliveries of one destination — for each case only its
    /// next delivery in order, and none that another worker holds.
    fn exchange(
        &self,
        completions: Vec<Completion>,
        lease: Option<LeaseRequest>,
    ) -> StoreFuture<'_, Exchange>;
    /// Give leased deliveries back (shutdown) so they are due again at once.
    fn release(&self, owner: &str, ids: Vec<i64>) -> StoreFuture<'_, ()>;
    /// Put a dead-lettered delivery back in the queue.
    fn retry_dead(&self, id: i64, at_ms: i64) -> StoreFuture<'_, DeliveryView>;
    /// Prove the store is writable (readiness).
    fn ping(&self) -> StoreFuture<'_, ()>;
    fn message(&self, id: &str) -> StoreFuture<'_, Option<MessageView>>;
    fn case(&self, case_no: &str) -> StoreFuture<'_, Vec<RecordView>>;
    fn deliveries(&self, filter: DeliveryFilter) -> StoreFuture<'_, Vec<DeliveryView>>;
    fn queue_depths(&self) -> StoreFuture<'_, Vec<QueueDepth>>;
    /// Flush and stop accepting work.
    fn close(&self) -> StoreFuture<'_, ()>;

    /// Every pull source's state.
    fn sync_sources(&self) -> StoreFuture<'_, Vec<SyncSource>>;
    /// Take (or keep) a source's lease, creating the source at `initial_cursor` the
    /// first time. None: another puller holds it. A paused source is returned without
    /// a lease.
    fn sync_take(
        &self,
        node: &str,
        owner: &str,
        initial_cursor: String,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> StoreFuture<'_, Option<SyncSource>>;
    /// Advance a cursor without a message (an empty page).
    fn sync_advance(&self, advance: PullAdvance) -> StoreFuture<'_, ()>;
    /// Note a failed pull (the cursor stays).
    fn sync_failed(&self, node: &str, error: String, at_ms: i64) -> StoreFuture<'_, ()>;
    /// Pause, resume or rewind a source; clears its lease so a running puller
    /// notices at its next commit. The event is appended in the same transaction.
    fn sync_control(
        &self,
        node: &str,
        control: SyncControl,
        event: crate::audit::Event,
    ) -> StoreFuture<'_, SyncSource>;
    /// Replace the catalogue from `source` with `items`; items no longer listed are
    /// withdrawn. Appends a `catalogue_updated` event when anything changed.
    fn catalogue_replace(
        &self,
        source: &str,
        items: Vec<CatalogueItem>,
        at_ms: i64,
    ) -> StoreFuture<'_, CatalogueChange>;
    fn catalogue(&self) -> StoreFuture<'_, Vec<CatalogueItem>>;
    /// Records delivered to `node` (delivery created or delivered in the range) and
    /// records pulled from it (received in the range); times in ms, inclusive.
    fn exchanged(&self, node: &str, from_ms: i64, to_ms: i64) -> StoreFuture<'_, Vec<Exchanged>>;
    /// Put deliveries back in the queue (due now, attempts counted from zero again),
    /// whatever their state except one a worker is sending right now, and append
    /// `event` in the same transaction. Returns how many changed.
    fn requeue(
        &self,
        ids: Vec<i64>,
        at_ms: i64,
        event: crate::audit::Event,
    ) -> StoreFuture<'_, usize>;
}

/// How a store is set up when it is created.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Hash of the audit chain (fixed at creation).
    pub audit_hash: crate::audit::HashAlg,
    /// Keep raw request bodies as evidence (their hashes are always kept).
    pub retain_payloads: bool,
    /// How PostgreSQL lists this gateway's connections (`pg_stat_activity`), unless
    /// the URL names one.
    pub application_name: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            audit_hash: crate::audit::HashAlg::Sha256,
            retain_payloads: true,
            application_name: "hallgate".into(),
        }
    }
}

/// Who opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The gateway: exclusive for the SQLite engine.
    Serve,
    /// A command-line tool beside a running gateway.
    Tool,
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
    pub alg: crate::audit::HashAlg,
    pub archived_through_seq: Option<i64>,
    pub archived_head_hash: Option<String>,
    pub last_archive_sha256: Option<String>,
    pub live_first_seq: Option<i64>,
    pub live_last_seq: Option<i64>,
}

/// Open the store a URL names. For PostgreSQL the password, when one is needed,
/// comes from `PGPASSWORD`, never from the config.
pub async fn open(
    url: &StoreUrl,
    options: &StoreOptions,
    mode: OpenMode,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => Ok(std::sync::Arc::new(SqliteStore::open(path, options, mode)?)),
        StoreUrl::Postgres(url) => {
            let tls = pg_tls::settings(url)?;
            let connector = pg_tls::Connector::new(&tls)?;
            let mut config: tokio_postgres::Config = tls
                .url
                .parse()
                .map_err(|e: tokio_postgres::Error| StoreError::BadUrl(format!("{e}")))?;
            if config.get_password().is_none()
                && let Ok(pw) = std::env::var("PGPASSWORD")
            {
                config.password(pw);
            }
            if config.get_application_name().is_none() {
                config.application_name(&options.application_name);
            }
            // An unreachable server must fail a request (503) in seconds, not after
            // the system's connect timeout; a silently cut connection is noticed by
            // TCP keepalives within a minute. The URL may set its own.
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(std::time::Duration::from_secs(10));
            }
            if !url.contains("keepalives_idle") {
                config.keepalives_idle(std::time::Duration::from_secs(30));
            }
            if !url.contains("tcp_user_timeout") {
                config.tcp_user_timeout(std::time::Duration::from_secs(60));
            }
            Ok(std::sync::Arc::new(
                PostgresStore::open(config, connector, tls.mode, options, mode).await?,
            ))
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Render stored milliseconds as RFC 3339 in China Standard Time (+08:00).
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts
            .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
        Err(_) => ms.to_string(),
    }
}
