//! The durable store (layer 3; DESIGN.md section 5): messages, records, deliveries,
//! idempotency keys, record versions and audit events.
//!
//! [`Store`] is the one abstraction the rest of the gateway sees; each engine keeps
//! its SQL and transactions behind it. An accepted message — raw bytes, canonical
//! records, one delivery row per destination, the idempotency key and the audit
//! events — is written in ONE transaction before the sender hears `202`.

pub mod console;
use crate::tls::pg as pg_tls;
mod plan;
mod postgres;
pub mod sealed;
mod sqlite;
pub mod supervision;
mod types;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::config::Config;
use crate::event::{AuditRow, Event};
use crate::hash::HashAlg;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use types::*;

impl From<pg_tls::PgTlsError> for StoreError {
    fn from(e: pg_tls::PgTlsError) -> Self {
        StoreError::Tls(e.0)
    }
}

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

    /// The config's store URL, with relative paths resolved against its folder.
    pub fn from_config(config: &Config) -> Result<StoreUrl, StoreError> {
        Ok(StoreUrl::parse(config.gateway.store.get_ref())?.resolve(&config.base_dir()))
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
/// What the single writer reports per transaction: the jobs it committed together,
/// and the jobs that were waiting when it took them (those and any beyond the batch
/// limit) (`hallgate_store_commit_jobs`, `hallgate_store_writer_queue`).
fn observe_batch(jobs: usize, waiting: usize) {
    metrics::histogram!("hallgate_store_commit_jobs").record(jobs as f64);
    metrics::gauge!("hallgate_store_writer_queue").set(waiting as f64);
}

/// Most jobs a writer commits together.
const MAX_BATCH_JOBS: usize = 512;
/// Most records of messages a writer commits together (a message counts all its
/// records, any other job one). Bodies of 100 records made transactions of 6,400
/// records under load: 400 ms in which the delivery worker's finished attempts
/// waited (BENCHMARKS.md, issue 19, fifth part).
const MAX_BATCH_RECORDS: usize = 1024;
/// Most jobs a writer takes out of its channel ahead of running them.
const MAX_WAITING: usize = 4096;

/// A writer's job, as its queue sees it.
trait Queued {
    /// A delivery worker's finished attempts: run before anything else waiting, so
    /// that a surge of intake does not hold delivery behind it.
    fn first(&self) -> bool;
    /// The records it carries: a message's records; one for any other job.
    fn weight(&self) -> usize;
}

/// Jobs a writer took out of its channel and has not run yet. The next transaction
/// takes the delivery worker's jobs first, then the others in the order they came,
/// up to [`MAX_BATCH_JOBS`] jobs and [`MAX_BATCH_RECORDS`] records.
struct Waiting<J> {
    jobs: std::collections::VecDeque<J>,
}

impl<J: Queued> Waiting<J> {
    fn new() -> Self {
        Waiting {
            jobs: std::collections::VecDeque::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Add a job, and every job already in the channel (up to [`MAX_WAITING`]).
    fn fill(&mut self, first: Option<J>, rx: &mut tokio::sync::mpsc::Receiver<J>) {
        self.jobs.extend(first);
        while self.jobs.len() < MAX_WAITING {
            match rx.try_recv() {
                Ok(j) => self.jobs.push_back(j),
                Err(_) => break,
            }
        }
    }

    /// The next transaction's jobs; never empty while jobs wait.
    fn take(&mut self) -> Vec<J> {
        let mut batch = Vec::new();
        if self.jobs.iter().any(Queued::first) {
            let mut rest = std::collections::VecDeque::with_capacity(self.jobs.len());
            for j in self.jobs.drain(..) {
                if j.first() && batch.len() < MAX_BATCH_JOBS {
                    batch.push(j);
                } else {
                    rest.push_back(j);
                }
            }
            self.jobs = rest;
        }
        let mut records = 0;
        while batch.len() < MAX_BATCH_JOBS {
            let Some(w) = self.jobs.front().map(Queued::weight) else {
                break;
            };
            if records > 0 && records + w > MAX_BATCH_RECORDS {
                break;
            }
            records += w;
            batch.extend(self.jobs.pop_front());
        }
        batch
    }
}

pub fn check_url(url: &StoreUrl) -> Result<(), StoreError> {
    if let StoreUrl::Postgres(url) = url {
        pg_tls::Connector::new(&pg_tls::settings(url)?)?;
    }
    Ok(())
}

/// A boxed future, so that engines can be chosen at run time (`Arc<dyn Store>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store, whichever engine is behind it.
pub trait Store: Send + Sync {
    /// Store a message with its records, deliveries, idempotency key and audit
    /// events in one transaction (or answer a repeat / refuse stale versions).
    fn accept(&self, msg: NewMessage) -> StoreFuture<'_, AcceptOutcome>;
    /// Append an audit event on its own (a refused request, a config load, an export).
    fn audit(&self, event: Event) -> StoreFuture<'_, ()>;
    /// Record a token's `jti` for a node that takes each token once: `false` when the
    /// node's `jti` was seen before (kept until the token expires).
    fn claim_token(&self, token: TokenUse) -> StoreFuture<'_, bool>;
    /// After the events up to `through_seq` were written to an archive file: remove
    /// them from the live log, remember where the chain stands, and append `event`.
    fn archive_audit(
        &self,
        through_seq: i64,
        archive_sha256: String,
        event: Event,
    ) -> StoreFuture<'_, ()>;
    /// The chain's hash algorithm and what has been archived.
    fn audit_meta(&self) -> StoreFuture<'_, AuditMeta>;
    /// How many audit events match (paging fields ignored).
    fn audit_count(&self, filter: AuditFilter) -> StoreFuture<'_, i64>;
    /// Audit events in sequence order.
    fn audit_events(&self, filter: AuditFilter) -> StoreFuture<'_, Vec<AuditRow>>;
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
    /// Put a dead-lettered delivery back in the queue, audited with who asked.
    fn retry_dead(&self, id: i64, at_ms: i64, asked: Asked) -> StoreFuture<'_, DeliveryView>;
    /// Put those of these deliveries that are dead-lettered back in the queue, each
    /// with its `manually_retried` event; the ids it put back.
    fn retry_dead_many(&self, ids: Vec<i64>, at_ms: i64, asked: Asked)
    -> StoreFuture<'_, Vec<i64>>;
    /// A delivered delivery its consumer refused afterwards (a 前置库 flag `2`):
    /// dead-lettered with the consumer's reason and a `dead_lettered` event, so an
    /// operator sees it and may retry it. `false` when it is not delivered (already
    /// dead, or put back in the queue).
    fn consumer_refused(&self, id: i64, reason: String, at_ms: i64) -> StoreFuture<'_, bool>;
    /// Prove the store is writable (readiness).
    fn ping(&self) -> StoreFuture<'_, ()>;
    fn message(&self, id: &str) -> StoreFuture<'_, Option<MessageView>>;
    /// The bodies and records of these messages (those that exist), for audit
    /// verification to hash again.
    fn evidence(&self, message_ids: Vec<String>) -> StoreFuture<'_, Vec<Evidence>>;
    fn case(&self, case_no: &str) -> StoreFuture<'_, Vec<RecordView>>;
    /// Where `node` stands with a case: party, someone else's, or no such case.
    fn case_standing(&self, case_no: &str, node: &str) -> StoreFuture<'_, CaseStanding>;
    fn deliveries(&self, filter: DeliveryFilter) -> StoreFuture<'_, Vec<DeliveryView>>;
    /// Every delivery of the record that delivery `id` is for (a receipt reads the
    /// outcomes it reports here).
    fn record_deliveries(&self, id: i64) -> StoreFuture<'_, Vec<DeliveryView>>;
    fn queue_depths(&self) -> StoreFuture<'_, Vec<QueueDepth>>;
    /// Bytes of the canonical records waiting for `destination` (back-pressure).
    fn pending_bytes(&self, destination: &str) -> StoreFuture<'_, i64>;
    /// Cases matching a search, newest first (the console's 办件查询; read-only).
    fn search_cases(&self, q: console::CaseSearch) -> StoreFuture<'_, Vec<console::CaseSummary>>;
    /// The console's users and sessions ([`console`]).
    fn console(&self, op: console::ConsoleOp) -> StoreFuture<'_, console::ConsoleOut>;
    /// Supervision's timer, settlements and listings ([`supervision`]).
    fn supervision(&self, op: supervision::SvOp) -> StoreFuture<'_, supervision::SvOut>;
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
        event: Event,
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
    fn requeue(&self, ids: Vec<i64>, at_ms: i64, event: Event) -> StoreFuture<'_, usize>;
    /// Encryption at rest: data keys and the raw stored values (`store::sealed`).
    fn sealed(&self, op: SealOp) -> StoreFuture<'_, SealOut>;
    /// Pause or resume deliveries to a destination (every instance, across
    /// restarts), appending `event` in the same transaction.
    fn pause_destination(
        &self,
        destination: &str,
        paused: bool,
        event: Event,
    ) -> StoreFuture<'_, ()>;
    /// The destinations paused now.
    fn paused_destinations(&self) -> StoreFuture<'_, Vec<String>>;
}

/// How a store is set up when it is created.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Hash of the audit chain (fixed at creation).
    pub audit_hash: HashAlg,
    /// Keep raw request bodies as evidence (their hashes are always kept).
    pub retain_payloads: bool,
    /// How PostgreSQL lists this gateway's connections (`pg_stat_activity`), unless
    /// the URL names one.
    pub application_name: String,
}

impl StoreOptions {
    /// Store settings from `[gateway]` and `[audit]`.
    pub fn from_config(config: &Config) -> StoreOptions {
        StoreOptions {
            audit_hash: HashAlg::parse(&config.audit.hash).unwrap_or_default(),
            retain_payloads: config.audit.retain_payloads,
            application_name: format!("hallgate {}", config.gateway.id),
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            audit_hash: HashAlg::Sha256,
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

/// Open the store `config` names, with `[store] encrypt` applied (store::sealed):
/// what the gateway and every tool open.
pub async fn open_config(
    config: &Config,
    mode: OpenMode,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let engine = open(
        &StoreUrl::from_config(config)?,
        &StoreOptions::from_config(config),
        mode,
    )
    .await?;
    sealed::wrap(engine, config).await
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

#[cfg(test)]
mod tests {
    use super::{MAX_BATCH_JOBS, MAX_BATCH_RECORDS, Queued, Waiting};

    /// A stand-in job: (name, records, from the delivery worker).
    struct J(&'static str, usize, bool);

    impl Queued for J {
        fn first(&self) -> bool {
            self.2
        }
        fn weight(&self) -> usize {
            self.1
        }
    }

    fn waiting(jobs: Vec<J>) -> Waiting<J> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(jobs.len().max(1));
        for j in jobs {
            assert!(tx.try_send(j).is_ok());
        }
        let mut w = Waiting::new();
        w.fill(None, &mut rx);
        w
    }

    fn names(batch: &[J]) -> Vec<&'static str> {
        batch.iter().map(|j| j.0).collect()
    }

    #[test]
    fn the_delivery_workers_jobs_go_first_and_the_rest_keep_their_order() {
        let mut w = waiting(vec![
            J("a", 1, false),
            J("b", 1, false),
            J("x", 1, true),
            J("c", 1, false),
        ]);
        assert_eq!(names(&w.take()), ["x", "a", "b", "c"]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_transaction_takes_at_most_its_records() {
        // Bodies of 100 records: ten fit under the bound, the rest wait in order.
        let mut jobs: Vec<J> = (0..30).map(|_| J("m", 100, false)).collect();
        jobs.insert(25, J("x", 1, true));
        let mut w = waiting(jobs);
        let first = w.take();
        assert_eq!(first[0].0, "x");
        let records: usize = first.iter().map(|j| j.1).sum();
        assert!(records <= MAX_BATCH_RECORDS + 1, "{records}");
        assert_eq!(first.len(), 1 + MAX_BATCH_RECORDS / 100);
        assert_eq!(w.len(), 30 - MAX_BATCH_RECORDS / 100);
    }

    #[test]
    fn a_message_larger_than_the_bound_still_runs_alone() {
        let mut w = waiting(vec![
            J("big", 5 * MAX_BATCH_RECORDS, false),
            J("a", 1, false),
        ]);
        assert_eq!(names(&w.take()), ["big"]);
        assert_eq!(names(&w.take()), ["a"]);
        assert!(w.take().is_empty());
    }

    #[test]
    fn a_transaction_takes_at_most_its_jobs() {
        let mut w = waiting((0..MAX_BATCH_JOBS + 3).map(|_| J("p", 1, false)).collect());
        // One record each: the job bound (512) comes before the record bound (1,024).
        assert_eq!(w.take().len(), MAX_BATCH_JOBS);
        assert_eq!(w.take().len(), 3);
    }
}
