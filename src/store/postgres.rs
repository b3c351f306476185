//! The PostgreSQL engine, for several gateway instances on one database (and for the
//! PostgreSQL-compatible databases government deployments must use).
//!
//! Like the SQLite engine, each instance sends its writes through one writer task
//! that commits them in batches (one transaction, a savepoint per job; a run of
//! messages of different cases shares one, see `accept`). A batch that
//! appends audit events first locks the single `audit_head` row, so the instances
//! extend one chain in turn, and every check that must hold across instances
//! (idempotency keys, versions) runs after that lock, on committed data. Deliveries
//! are leased with `FOR UPDATE SKIP LOCKED` and a lease expiry: no delivery is in
//! flight from two instances at once, and a dead instance's leases are taken over
//! when they expire.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::try_join;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Row, Statement, Transaction};

use crate::tls::pg::{Connector, SslMode};

mod accept;
mod rows;

use super::console::{
    self, CaseSearch, CaseSummary, ConsoleOp, ConsoleOut, ConsoleSession, ConsoleUser,
};
use super::supervision::{DueCase, SV_COLUMNS, SvCase, SvOp, SvOut};
use super::{
    AcceptOutcome, Asked, AuditFilter, AuditMeta, CaseStanding, CatalogueChange, CatalogueItem,
    Completion, DataKey, DeliveryFilter, DeliveryResult, DeliveryState, DeliveryView, Evidence,
    Exchange, Exchanged, LeaseRequest, LeasedDelivery, MessageView, NewMessage, OpenMode,
    PullAdvance, QueueDepth, RecordView, SealOp, SealOut, Store, StoreError, StoreFuture,
    StoreOptions, StoredRecord, SyncControl, SyncSource, TokenUse, plan,
};
use crate::event::{self, AuditRow, Event};
use crate::hash::HashAlg;
use crate::record::Kind;
use crate::time::rfc3339;

/// Versioned migrations, applied under an advisory lock so instances starting
/// together do not race.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    content_type TEXT,
    idempotency_key TEXT,
    body BYTEA NOT NULL,
    body_sha256 TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE TABLE idempotency (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE records (
    id BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    case_no TEXT NOT NULL,
    identity TEXT NOT NULL,
    version BIGINT,
    status TEXT NOT NULL,
    canonical TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX records_message ON records (message_id, idx);
CREATE INDEX records_case ON records (case_no, id);
CREATE TABLE record_versions (
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    identity TEXT NOT NULL,
    version BIGINT NOT NULL,
    record_id BIGINT NOT NULL,
    PRIMARY KEY (source, kind, identity)
);
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    record_id BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    record_idx BIGINT NOT NULL,
    destination TEXT NOT NULL,
    case_no TEXT NOT NULL,
    kind TEXT NOT NULL,
    ord_kind BIGINT NOT NULL,
    ord_step BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_status BIGINT,
    last_error TEXT,
    receipt TEXT,
    idem_key TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_case_order ON deliveries (destination, case_no, ord_kind, ord_step, id)
    WHERE state = 'pending';
CREATE INDEX deliveries_record ON deliveries (record_id);
CREATE INDEX deliveries_state ON deliveries (state, destination, id);
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    event TEXT NOT NULL,
    node TEXT,
    case_no TEXT,
    kind TEXT,
    message_id TEXT,
    delivery_id BIGINT,
    detail TEXT NOT NULL,
    hash BYTEA NOT NULL
);
CREATE INDEX audit_case ON audit (case_no, seq);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_node ON audit (node, seq);
CREATE INDEX audit_message ON audit (message_id);
CREATE TABLE audit_head (
    id INT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
CREATE TABLE audit_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
-- The queue changes fast: keep its statistics and dead rows in check, so the lease
-- query keeps its index plan from the first thousand deliveries on.
ALTER TABLE deliveries SET (autovacuum_analyze_threshold = 500, autovacuum_analyze_scale_factor = 0.02,
                            autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE records SET (autovacuum_analyze_threshold = 500, autovacuum_analyze_scale_factor = 0.05);
ANALYZE deliveries;
ANALYZE records;
"#,
    r#"
CREATE TABLE token_ids (
    node TEXT NOT NULL,
    jti TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    exp BIGINT NOT NULL,
    PRIMARY KEY (node, jti)
);
CREATE INDEX token_ids_exp ON token_ids (exp);
"#,
    r#"
CREATE TABLE sync_sources (
    node TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    pulled BIGINT NOT NULL DEFAULT 0,
    pages BIGINT NOT NULL DEFAULT 0,
    last_success BIGINT,
    last_error TEXT,
    last_error_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE TABLE catalogue (
    item_code TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    item TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
ALTER TABLE records ADD COLUMN flags TEXT;
CREATE INDEX records_identity ON records (source, kind, identity, id);
CREATE INDEX records_source_time ON records (source, received_at);
CREATE INDEX deliveries_dest_created ON deliveries (destination, created_at);
CREATE INDEX deliveries_dest_delivered ON deliveries (destination, delivered_at);
"#,
    r#"
CREATE TABLE cases (
    case_no TEXT PRIMARY KEY,
    opened_by TEXT NOT NULL,
    region TEXT,
    item_code TEXT,
    opened_at BIGINT NOT NULL
);
CREATE TABLE case_parties (
    case_no TEXT NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (case_no, node)
);
INSERT INTO cases (case_no, opened_by, region, item_code, opened_at)
    SELECT DISTINCT ON (case_no) case_no, source, canonical::jsonb ->> 'region',
           canonical::jsonb ->> 'item_code', received_at
    FROM records ORDER BY case_no, id
    ON CONFLICT DO NOTHING;
INSERT INTO case_parties (case_no, node) SELECT DISTINCT case_no, source FROM records ON CONFLICT DO NOTHING;
INSERT INTO case_parties (case_no, node) SELECT DISTINCT case_no, destination FROM deliveries ON CONFLICT DO NOTHING;
"#,
    // The lease reads due deliveries in (next_attempt_at, id) order: with `id` in the
    // index it stops after the rows it needs instead of sorting the whole backlog.
    r#"
CREATE INDEX deliveries_due_order ON deliveries (destination, next_attempt_at, id)
    WHERE state = 'pending';
DROP INDEX deliveries_due;
"#,
    // Encryption at rest: the data keys stored values are under (store::sealed).
    r#"
CREATE TABLE data_keys (
    id TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    check_value BYTEA NOT NULL,
    added_at BIGINT NOT NULL
);
"#,
    // The request that brought a message, sent on with its deliveries.
    r#"
ALTER TABLE messages ADD COLUMN request_id TEXT;
"#,
    // Destinations an operator paused.
    r#"
CREATE TABLE destination_controls (
    destination TEXT PRIMARY KEY,
    paused BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
    // The console's users and sessions.
    r#"
CREATE TABLE console_users (
    name TEXT PRIMARY KEY,
    roles TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT
);
CREATE TABLE console_sessions (
    id_sha256 TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    // The console's case search: by time, by opening node, by item.
    r#"
CREATE INDEX cases_opened ON cases (opened_at);
CREATE INDEX cases_node_opened ON cases (opened_by, opened_at);
CREATE INDEX cases_item_opened ON cases (item_code, opened_at);
CREATE INDEX records_case_kind ON records (case_no, kind);
"#,
    // Supervision (电子监察): facts per case, each case's state and next look.
    r#"
CREATE TABLE sv_cases (
    case_no TEXT PRIMARY KEY,
    state TEXT,
    transitions BIGINT NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0,
    item_code TEXT,
    item_name TEXT,
    dept_code TEXT,
    dept_name TEXT,
    region TEXT,
    accepted_at BIGINT,
    deadline BIGINT,
    finished_at BIGINT,
    promised_days DOUBLE PRECISION,
    used_days DOUBLE PRECISION,
    quality TEXT NOT NULL DEFAULT '',
    problem TEXT,
    late_steps TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL DEFAULT 0,
    due_at BIGINT,
    facts TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sv_cases_due ON sv_cases (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX sv_cases_state ON sv_cases (state, dept_code);
CREATE TABLE sv_lease (
    id INT PRIMARY KEY CHECK (id = 1),
    owner TEXT NOT NULL,
    until BIGINT NOT NULL
);
"#,
];

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Accept(Box<NewMessage>, Reply<AcceptOutcome>),
    Audit(Event, Reply<()>),
    ArchiveAudit(i64, String, Event, Reply<()>),
    /// Record finished attempts (leases run outside the writer).
    Exchange(Vec<Completion>, Reply<Exchange>),
    Release(String, Vec<i64>, Reply<()>),
    /// Ids, time, who asked, and whether a single id's refusal is the answer.
    RetryDead(Vec<i64>, i64, Asked, bool, Reply<Vec<i64>>),
    /// Delivery id, the consumer's reason, time.
    Refuse(i64, String, i64, Reply<bool>),
    Ping(Reply<()>),
    Close(Reply<()>),
    SyncTake(SyncTake, Reply<Option<SyncSource>>),
    SyncAdvance(PullAdvance, Reply<()>),
    SyncFailed(String, String, i64, Reply<()>),
    SyncControl(String, SyncControl, Event, Reply<SyncSource>),
    CatalogueReplace(String, Vec<CatalogueItem>, i64, Reply<CatalogueChange>),
    Requeue(Vec<i64>, i64, Event, Reply<usize>),
    Sealed(SealOp, Reply<SealOut>),
    PauseDestination(String, bool, Event, Reply<()>),
    Console(ConsoleOp, Reply<ConsoleOut>),
    Supervision(SvOp, Reply<SvOut>),
}

/// The arguments of [`Store::sync_take`].
struct SyncTake {
    node: String,
    owner: String,
    initial: String,
    now_ms: i64,
    until_ms: i64,
}

impl super::Queued for Job {
    fn first(&self) -> bool {
        matches!(self, Job::Exchange(..))
    }

    fn weight(&self) -> usize {
        match self {
            Job::Accept(m, _) => m.records.len().max(1),
            _ => 1,
        }
    }
}

impl Job {
    /// Whether the job may append audit events (and so needs the chain head).
    fn appends(&self) -> bool {
        match self {
            Job::Accept(..)
            | Job::Audit(..)
            | Job::ArchiveAudit(..)
            | Job::RetryDead(..)
            | Job::Refuse(..)
            | Job::SyncControl(..)
            | Job::CatalogueReplace(..)
            | Job::Requeue(..)
            | Job::PauseDestination(..)
            | Job::Console(..)
            | Job::Supervision(..) => true,
            Job::SyncAdvance(a, _) => !a.events.is_empty(),
            Job::Exchange(c, _) => !c.is_empty(),
            Job::Release(..)
            | Job::Ping(_)
            | Job::Close(_)
            | Job::SyncTake(..)
            | Job::SyncFailed(..)
            | Job::Sealed(..) => false,
        }
    }

    /// Answer the job with the error `e` makes, without running it.
    fn fail(self, e: impl Fn() -> StoreError) {
        match self {
            Job::Accept(_, r) => drop(r.send(Err(e()))),
            Job::Audit(_, r) => drop(r.send(Err(e()))),
            Job::ArchiveAudit(_, _, _, r) => drop(r.send(Err(e()))),
            Job::Exchange(_, r) => drop(r.send(Err(e()))),
            Job::Release(_, _, r) => drop(r.send(Err(e()))),
            Job::RetryDead(_, _, _, _, r) => drop(r.send(Err(e()))),
            Job::Refuse(_, _, _, r) => drop(r.send(Err(e()))),
            Job::Ping(r) | Job::Close(r) => drop(r.send(Err(e()))),
            Job::SyncTake(_, r) => drop(r.send(Err(e()))),
            Job::SyncAdvance(_, r) | Job::SyncFailed(_, _, _, r) => drop(r.send(Err(e()))),
            Job::SyncControl(_, _, _, r) => drop(r.send(Err(e()))),
            Job::CatalogueReplace(_, _, _, r) => drop(r.send(Err(e()))),
            Job::Requeue(_, _, _, r) => drop(r.send(Err(e()))),
            Job::Sealed(_, r) => drop(r.send(Err(e()))),
            Job::PauseDestination(_, _, _, r) => drop(r.send(Err(e()))),
            Job::Console(_, r) => drop(r.send(Err(e()))),
            Job::Supervision(_, r) => drop(r.send(Err(e()))),
        }
    }
}

/// PostgreSQL engine handle.
pub struct PostgresStore {
    tx: mpsc::Sender<Job>,
    /// The reading connection, replaced when it is found closed (a database restart,
    /// a network cut): the next read connects again.
    reader: std::sync::Mutex<Arc<Client>>,
    /// Held while the reader connects again, with when that last failed: reads that
    /// queued behind a failed attempt fail at once instead of each waiting out its
    /// own connect timeout.
    reconnecting: tokio::sync::Mutex<Option<std::time::Instant>>,
    link: Arc<Link>,
    alg: HashAlg,
}

/// How to connect (again).
struct Link {
    config: tokio_postgres::Config,
    tls: Connector,
    mode: SslMode,
}

impl Link {
    async fn connect(&self) -> Result<Client, StoreError> {
        connect(&self.config, &self.tls, self.mode).await
    }
}

/// A lost connection that could not be made again yet.
fn unavailable(e: StoreError) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL connection lost, reconnecting: {e}"))
}

async fn connect(
    config: &tokio_postgres::Config,
    tls: &Connector,
    mode: SslMode,
) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(tls.clone()).await.map_err(|e| {
        let reason = crate::observe::error_chain(&e);
        StoreError::Open {
            path: format!("{} (sslmode={})", describe(config), mode.as_str()),
            reason: format!("{reason}{}", crate::tls::pg::hint(&reason)),
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "PostgreSQL connection closed");
        }
    });
    // Plan every execution of a prepared statement with the tables as they are. A
    // generic plan made while the tables were empty kept a sequential scan of
    // `records` inside each delivery and version insert as the tables grew: one
    // instance fell from ~650 to ~130 records/s within a minute, until autovacuum
    // analysed (BENCHMARKS.md, issue 19). Servers before PostgreSQL 12 (and some
    // compatible ones) lack the setting; they keep their default.
    if let Err(e) = client
        .batch_execute("SET plan_cache_mode = force_custom_plan")
        .await
    {
        tracing::debug!(error = %e, "plan_cache_mode not set");
    }
    Ok(client)
}

/// Where a config points, without its password, for messages.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    format!(
        "postgres://{}@{host}:{}/{}",
        config.get_user().unwrap_or(""),
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().unwrap_or("")
    )
}

impl PostgresStore {
    /// Connect, migrate and start the writer. Several instances may open the same
    /// database; `mode` makes no difference here (there is no file to lock).
    pub(crate) async fn open(
        config: tokio_postgres::Config,
        tls: Connector,
        ssl_mode: SslMode,
        options: &StoreOptions,
        _mode: OpenMode,
    ) -> Result<PostgresStore, StoreError> {
        let mut writer = connect(&config, &tls, ssl_mode).await?;
        migrate(&mut writer).await?;
        let alg = {
            let tx = writer.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('hallgate-meta'))",
                &[],
            )
            .await?;
            let stored: Option<String> = tx
                .query_opt("SELECT value FROM audit_meta WHERE key = 'hash_alg'", &[])
                .await?
                .map(|r| r.get(0));
            let alg = match stored {
                Some(s) => {
                    let alg = HashAlg::parse(&s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    if alg != options.audit_hash {
                        return Err(StoreError::Corrupt(format!(
                            "the audit chain of this store uses {}, the config asks for {}; the hash of a chain cannot change",
                            alg.as_str(),
                            options.audit_hash.as_str()
                        )));
                    }
                    alg
                }
                None => {
                    tx.execute(
                        "INSERT INTO audit_meta (key, value) VALUES ('hash_alg', $1)",
                        &[&options.audit_hash.as_str()],
                    )
                    .await?;
                    options.audit_hash
                }
            };
            tx.commit().await?;
            alg
        };
        let reader = connect(&config, &tls, ssl_mode).await?;
        if tls.encrypted() {
            tracing::info!(store = %describe(&config), sslmode = ssl_mode.as_str(), "store connections are encrypted (TLS)");
        } else if ssl_mode == SslMode::Disable {
            tracing::info!(store = %describe(&config), "store connections are not encrypted (sslmode=disable)");
        } else {
            tracing::warn!(store = %describe(&config), sslmode = ssl_mode.as_str(), "store connections are NOT encrypted: the server offers no TLS (or this is a Unix socket)");
        }
        let (tx, rx) = mpsc::channel(8192);
        let link = Arc::new(Link {
            config,
            tls,
            mode: ssl_mode,
        });
        tokio::spawn(writer_loop(
            writer,
            link.clone(),
            rx,
            alg,
            options.retain_payloads,
        ));
        Ok(PostgresStore {
            tx,
            reader: std::sync::Mutex::new(Arc::new(reader)),
            reconnecting: tokio::sync::Mutex::new(None),
            link,
            alg,
        })
    }

    /// The reading connection; a closed one is replaced first.
    async fn reader(&self) -> Result<Arc<Client>, StoreError> {
        let current = || {
            self.reader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        let c = current();
        if !c.is_closed() {
            return Ok(c);
        }
        let mut last_failure = self.reconnecting.lock().await;
        let c = current();
        if !c.is_closed() {
            return Ok(c); // another read reconnected meanwhile
        }
        if last_failure.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return Err(StoreError::Unavailable(
                "PostgreSQL connection lost, reconnecting".into(),
            ));
        }
        let fresh = match self.link.connect().await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                *last_failure = Some(std::time::Instant::now());
                return Err(unavailable(e));
            }
        };
        *last_failure = None;
        *self.reader.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        tracing::info!(store = %describe(&self.link.config), "store reader reconnected");
        Ok(fresh)
    }

    fn submit<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Job) -> StoreFuture<'_, T> {
        let (reply, rx) = oneshot::channel();
        let job = make(reply);
        Box::pin(async move {
            self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // `CREATE … IF NOT EXISTS` notices ("already exists, skipping") are no news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('hallgate-migrate'))",
        &[],
    )
    .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY)")
        .await?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {applied} is newer than this gateway knows ({}); upgrade hallgate",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql).await?;
        let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&v])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Statements prepared once on the writer's connection: every query is then one
/// round trip, and independent ones are pipelined.
struct Stmts {
    audit: Statement,
    idem_get: Statement,
    versions_get: Statement,
    latest_sha: Statement,
    token_get: Statement,
    token_put: Statement,
    token_expire: Statement,
    messages: Statement,
    idempotency: Statement,
    records: Statement,
    versions: Statement,
    deliveries: Statement,
    complete: Statement,
    cases_get: Statement,
    cases: Statement,
    parties: Statement,
    sv_intake: Statement,
}

/// Record finished attempts, one row each of the arrays: delivered, to be retried at
/// `next`, or dead. Only a pending delivery still leased to the completion's owner
/// is updated; a completion whose lease was lost is not recorded.
const COMPLETE: &str = "UPDATE deliveries d SET
         state = CASE u.r WHEN 'retry' THEN d.state ELSE u.r END,
         attempts = d.attempts + 1, last_status = u.status,
         receipt = CASE u.r WHEN 'delivered' THEN u.text ELSE d.receipt END,
         last_error = CASE u.r WHEN 'delivered' THEN NULL ELSE u.text END,
         next_attempt_at = CASE u.r WHEN 'retry' THEN u.next ELSE d.next_attempt_at END,
         lease_owner = NULL, lease_until = NULL,
         delivered_at = CASE u.r WHEN 'delivered' THEN u.at ELSE d.delivered_at END,
         updated_at = u.at
     FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[],
                 $7::BIGINT[]) AS u(id, owner, r, status, text, at, next)
     WHERE d.id = u.id AND d.lease_owner = u.owner AND d.state = 'pending'
     RETURNING d.destination, d.case_no, d.kind, d.message_id, d.attempts, d.record_idx, d.id";

impl Stmts {
    async fn prepare(c: &Client) -> Result<Stmts, StoreError> {
        Ok(Stmts {
            audit: c
                .prepare(
                    "INSERT INTO audit (seq, at, event, node, case_no, kind, message_id, delivery_id, detail, hash)
                     SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                                          $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::TEXT[], $10::BYTEA[])",
                )
                .await?,
            idem_get: c
                .prepare(
                    "SELECT m.response FROM idempotency i JOIN messages m ON m.id = i.message_id
                     WHERE i.source = $1 AND i.key = $2",
                )
                .await?,
            versions_get: c.prepare(rows::VERSIONS_GET).await?,
            cases_get: c.prepare(rows::CASES_GET).await?,
            token_get: c.prepare(rows::TOKEN_GET).await?,
            token_put: c.prepare(rows::TOKEN_PUT).await?,
            token_expire: c.prepare(rows::TOKEN_EXPIRE).await?,
            messages: c.prepare(rows::MESSAGES).await?,
            idempotency: c.prepare(rows::IDEMPOTENCY).await?,
            records: c.prepare(rows::RECORDS).await?,
            versions: c.prepare(rows::VERSIONS).await?,
            deliveries: c.prepare(rows::DELIVERIES).await?,
            cases: c.prepare(rows::CASES).await?,
            parties: c.prepare(rows::PARTIES).await?,
            sv_intake: c
                .prepare(&super::supervision::intake_sql('$'))
                .await?,
            latest_sha: c
                .prepare(
                    "SELECT sha256 FROM records WHERE source = $1 AND kind = $2 AND identity = $3
                     ORDER BY id DESC LIMIT 1",
                )
                .await?,
            complete: c.prepare(COMPLETE).await?,
        })
    }
}

/// The chain head while a batch holds the `audit_head` lock. Events are chained in
/// memory as they are pushed and written together when the job flushes.
struct Chain {
    alg: HashAlg,
    seq: i64,
    hash: [u8; 32],
    /// Whether this batch holds the `audit_head` lock (only then may it append).
    locked: bool,
    pending: Vec<(i64, [u8; 32], Event)>,
}

impl Chain {
    async fn lock(tx: &Transaction<'_>, alg: HashAlg) -> Result<Chain, StoreError> {
        let row = tx
            .query_one(
                "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await?;
        let hash: Vec<u8> = row.get(1);
        Ok(Chain {
            alg,
            seq: row.get(0),
            hash: hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit_head: bad hash".into()))?,
            locked: true,
            pending: Vec::new(),
        })
    }

    fn unlocked() -> Chain {
        Chain {
            alg: HashAlg::Sha256,
            seq: 0,
            hash: event::GENESIS,
            locked: false,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, e: Event) -> Result<(), StoreError> {
        if !self.locked {
            return Err(StoreError::Corrupt(
                "audit append without the chain head lock".into(),
            ));
        }
        let seq = self.seq + 1;
        let hash = self.alg.chain(&self.hash, &e.canonical_bytes(seq));
        self.pending.push((seq, hash, e));
        self.seq = seq;
        self.hash = hash;
        Ok(())
    }

    /// Write the pushed events in one statement (arrays of their columns): a
    /// statement per event cost a send and a wake-up each on the server.
    async fn flush(&mut self, tx: &Transaction<'_>, st: &Stmts) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let mut seq = Vec::with_capacity(pending.len());
        let mut at = Vec::with_capacity(pending.len());
        let mut event = Vec::with_capacity(pending.len());
        let mut node = Vec::with_capacity(pending.len());
        let mut case_no = Vec::with_capacity(pending.len());
        let mut kind = Vec::with_capacity(pending.len());
        let mut message_id = Vec::with_capacity(pending.len());
        let mut delivery_id = Vec::with_capacity(pending.len());
        let mut detail = Vec::with_capacity(pending.len());
        let mut hash: Vec<&[u8]> = Vec::with_capacity(pending.len());
        for (s, h, e) in &pending {
            seq.push(*s);
            at.push(e.at_ms);
            event.push(e.event.as_str());
            node.push(e.node.as_deref());
            case_no.push(e.case_no.as_deref());
            kind.push(e.kind.as_deref());
            message_id.push(e.message_id.as_deref());
            delivery_id.push(e.delivery_id);
            detail.push(e.detail.to_string());
            hash.push(h.as_slice());
        }
        tx.execute(
            &st.audit,
            &[
                &seq,
                &at,
                &event,
                &node,
                &case_no,
                &kind,
                &message_id,
                &delivery_id,
                &detail,
                &hash,
            ],
        )
        .await?;
        Ok(())
    }

    async fn save(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        tx.execute(
            "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
            &[&self.seq, &self.hash.as_slice()],
        )
        .await?;
        Ok(())
    }

    fn mark(&self) -> (i64, [u8; 32]) {
        (self.seq, self.hash)
    }

    fn reset(&mut self, mark: (i64, [u8; 32])) {
        (self.seq, self.hash) = mark;
        self.pending.clear();
    }
}

type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

fn finish<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Finish {
    Box::new(move |commit_err| {
        let out = match commit_err {
            Some(e) => Err(StoreError::Unavailable(format!(
                "commit failed, it may or may not have been written: {e}"
            ))),
            None => result,
        };
        let _ = reply.send(out);
    })
}

async fn writer_loop(
    mut client: Client,
    link: Arc<Link>,
    mut rx: mpsc::Receiver<Job>,
    alg: HashAlg,
    retain: bool,
) {
    let mut st = loop {
        match Stmts::prepare(&client).await {
            Ok(st) => break st,
            Err(e) => {
                tracing::error!(error = %e, "cannot prepare statements; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if client.is_closed()
                    && let Ok(c) = link.connect().await
                {
                    client = c;
                }
            }
        }
    };
    let mut closing: Option<Reply<()>> = None;
    // Failed reconnections in a row, for the wait before the next one.
    let mut failures = 0u32;
    let mut waiting = super::Waiting::new();
    while closing.is_none() {
        let first = if waiting.is_empty() {
            let Some(first) = rx.recv().await else { break };
            Some(first)
        } else {
            None
        };
        waiting.fill(first, &mut rx);
        let jobs = waiting.take();
        super::observe_batch(jobs.len(), jobs.len() + waiting.len() + rx.len());
        // The connection died (a database restart, a network cut): connect again
        // before this batch. Until that works, batches fail as unavailable (the
        // sender gets 503 and retries; nothing was written) and a close is honoured.
        if client.is_closed() {
            let fresh = match link.connect().await {
                Ok(c) => Stmts::prepare(&c).await.map(|s| (c, s)),
                Err(e) => Err(e),
            };
            match fresh {
                Ok((c, s)) => {
                    client = c;
                    st = s;
                    failures = 0;
                    tracing::info!(store = %describe(&link.config), "store writer reconnected");
                }
                Err(e) => {
                    let msg = format!("PostgreSQL connection lost, reconnecting: {e}");
                    tracing::warn!(error = %msg, "store writer cannot reconnect yet");
                    for job in jobs {
                        match job {
                            Job::Close(reply) => closing = Some(reply),
                            other => other.fail(|| StoreError::Unavailable(msg.clone())),
                        }
                    }
                    failures = failures.saturating_add(1);
                    let wait = 200u64.saturating_mul(1 << failures.min(5)).min(5_000);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    continue;
                }
            }
        }
        let tx = match client.transaction().await {
            Ok(tx) => tx,
            Err(e) => {
                let msg = format!("cannot begin a transaction: {e}");
                for job in jobs {
                    job.fail(|| StoreError::Unavailable(msg.clone()));
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut chain = None;
        if jobs.iter().any(Job::appends) {
            match Chain::lock(&tx, alg).await {
                Ok(c) => chain = Some(c),
                Err(e) => {
                    // A broken chain head is corruption, not an outage.
                    let corrupt = matches!(e, StoreError::Corrupt(_));
                    let msg = format!("cannot lock the audit chain: {e}");
                    drop(tx);
                    for job in jobs {
                        job.fail(|| {
                            if corrupt {
                                StoreError::Corrupt(msg.clone())
                            } else {
                                StoreError::Unavailable(msg.clone())
                            }
                        });
                    }
                    continue;
                }
            }
        }
        let mut finishes: Vec<Finish> = Vec::with_capacity(jobs.len());
        let mut tx = tx;
        let mut jobs = jobs.into_iter().peekable();
        while let Some(job) = jobs.next() {
            match job {
                Job::Close(reply) => closing = Some(reply),
                // A run of messages that touch different cases is accepted together.
                Job::Accept(msg, reply) => {
                    let mut claims = accept::Claims::default();
                    if !claims.take(&msg) {
                        let job = Job::Accept(msg, reply);
                        finishes.push(run_job(&mut tx, &st, chain.as_mut(), job, retain).await);
                        continue;
                    }
                    let mut group = vec![(msg, reply)];
                    while group.len() < accept::MAX_GROUP
                        && matches!(jobs.peek(), Some(Job::Accept(m, _)) if claims.take(m))
                    {
                        if let Some(Job::Accept(m, r)) = jobs.next() {
                            group.push((m, r));
                        }
                    }
                    let done = run_group(&mut tx, &st, chain.as_mut(), group, retain).await;
                    finishes.extend(done);
                }
                job => finishes.push(run_job(&mut tx, &st, chain.as_mut(), job, retain).await),
            }
        }
        let saved = match &chain {
            Some(c) => c.save(&tx).await,
            None => Ok(()),
        };
        let result = match saved {
            Ok(()) => tx.commit().await.map_err(StoreError::from),
            Err(e) => Err(e),
        };
        let err = result.err().map(|e| e.to_string());
        for f in finishes {
            f(err.as_deref());
        }
    }
    if let Some(reply) = closing {
        let _ = reply.send(Ok(()));
    }
}

/// Accept messages [`accept::Claims`] found disjoint, together in one savepoint. If
/// that fails, it is undone and each message is accepted again in its own savepoint,
/// so only a bad message fails.
async fn run_group(
    tx: &mut Transaction<'_>,
    st: &Stmts,
    chain: Option<&mut Chain>,
    group: Vec<(Box<NewMessage>, Reply<AcceptOutcome>)>,
    retain: bool,
) -> Vec<Finish> {
    let mut no_chain = Chain::unlocked();
    let chain = chain.unwrap_or(&mut no_chain);
    if group.len() == 1 {
        return one_by_one(tx, st, chain, group, retain).await;
    }
    let mark = chain.mark();
    let result = {
        let sp: &Transaction<'_> = &*tx;
        let msgs: Vec<&NewMessage> = group.iter().map(|(m, _)| &**m).collect();
        let savepoint = async {
            sp.batch_execute("SAVEPOINT grp")
                .await
                .map_err(StoreError::from)
        };
        let body = accept::group(sp, st, &mut *chain, &msgs, retain);
        match try_join(savepoint, body).await {
            Ok(((), out)) => {
                let release = async {
                    sp.batch_execute("RELEASE SAVEPOINT grp")
                        .await
                        .map_err(StoreError::from)
                };
                try_join(chain.flush(sp, st), release).await.map(|_| out)
            }
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(outcomes) => group
            .into_iter()
            .zip(outcomes)
            .map(|((_, reply), o)| finish(reply, Ok(o)))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, messages = group.len(), "accepting a group failed; accepting its messages one by one");
            chain.reset(mark);
            let _ = tx
                .batch_execute("ROLLBACK TO SAVEPOINT grp; RELEASE SAVEPOINT grp")
                .await;
            one_by_one(tx, st, chain, group, retain).await
        }
    }
}

/// Accept messages each in its own savepoint.
async fn one_by_one(
    tx: &mut Transaction<'_>,
    st: &Stmts,
    chain: &mut Chain,
    group: Vec<(Box<NewMessage>, Reply<AcceptOutcome>)>,
    retain: bool,
) -> Vec<Finish> {
    let mut out = Vec::with_capacity(group.len());
    for (m, r) in group {
        out.push(run_job(tx, st, Some(&mut *chain), Job::Accept(m, r), retain).await);
    }
    out
}

/// Run one job in a savepoint; on failure its writes and chain advance are undone.
async fn run_job(
    tx: &mut Transaction<'_>,
    st: &Stmts,
    chain: Option<&mut Chain>,
    job: Job,
    retain: bool,
) -> Finish {
    let mut no_chain = Chain::unlocked();
    let chain = chain.unwrap_or(&mut no_chain);
    let mark = chain.mark();
    // SAVEPOINT goes out pipelined with the job's first statements, RELEASE with
    // its audit rows: a job costs as few round trips as its own dependencies allow.
    macro_rules! in_savepoint {
        ($reply:expr, |$sp:ident, $ch:ident| $body:expr) => {{
            let $sp: &Transaction<'_> = &*tx;
            let result = {
                let savepoint = async {
                    $sp.batch_execute("SAVEPOINT job")
                        .await
                        .map_err(StoreError::from)
                };
                let $ch = &mut *chain;
                let body = async { $body };
                try_join(savepoint, body).await.map(|((), v)| v)
            };
            let result = match result {
                Ok(v) => {
                    let release = async {
                        $sp.batch_execute("RELEASE SAVEPOINT job")
                            .await
                            .map_err(StoreError::from)
                    };
                    try_join(chain.flush($sp, st), release).await.map(|_| v)
                }
                Err(e) => Err(e),
            };
            if result.is_err() {
                chain.reset(mark);
                let _ = $sp
                    .batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
                    .await;
            }
            finish($reply, result)
        }};
    }
    match job {
        Job::Accept(msg, reply) => {
            in_savepoint!(reply, |sp, ch| accept::one(sp, st, ch, &msg, retain).await)
        }
        Job::Audit(e, reply) => in_savepoint!(reply, |_sp, ch| ch.push(e)),
        Job::ArchiveAudit(through, sha, e, reply) => {
            in_savepoint!(reply, |sp, ch| archive(sp, ch, through, &sha, e).await)
        }
        Job::Exchange(completions, reply) => {
            in_savepoint!(reply, |sp, ch| exchange(sp, st, ch, completions).await)
        }
        Job::Release(owner, ids, reply) => in_savepoint!(reply, |sp, _ch| {
            sp.execute(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL,
                     next_attempt_at = LEAST(next_attempt_at, $3)
                 WHERE id = ANY($1) AND lease_owner = $2 AND state = 'pending'",
                &[&ids, &owner, &crate::time::now_ms()],
            )
            .await
            .map(|_| ())
            .map_err(StoreError::from)
        }),
        Job::RetryDead(ids, at, asked, one, reply) => in_savepoint!(reply, |sp, ch| {
            // One id: its refusal (not dead, not found) is the answer; several: the
            // dead ones among them are put back.
            let mut done = Vec::new();
            for id in ids {
                match retry_dead(sp, ch, id, at, &asked).await {
                    Ok(id) => done.push(id),
                    Err(StoreError::NotDead(_) | StoreError::NotFound) if !one => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(done)
        }),
        Job::Refuse(id, reason, at, reply) => in_savepoint!(reply, |sp, ch| {
            let row = sp
                .query_opt(
                    "UPDATE deliveries SET state = 'dead', last_error = $2, updated_at = $3,
                         lease_owner = NULL, lease_until = NULL
                     WHERE id = $1 AND state = 'delivered'
                     RETURNING destination, case_no, kind, message_id, attempts, record_idx",
                    &[&id, &reason, &at],
                )
                .await?;
            let Some(row) = row else { return Ok(false) };
            ch.push(plan::consumer_refused_event(
                at,
                id,
                &completed(&row),
                &reason,
            ))?;
            Ok(true)
        }),
        Job::Ping(reply) => in_savepoint!(reply, |sp, _ch| sp
            .execute("SELECT 1", &[])
            .await
            .map(|_| ())
            .map_err(StoreError::from)),
        Job::Close(reply) => finish(reply, Ok(())),
        Job::SyncTake(t, reply) => in_savepoint!(reply, |sp, _ch| sync_take(sp, &t).await),
        Job::SyncAdvance(adv, reply) => {
            in_savepoint!(reply, |sp, ch| advance(sp, ch, &adv, 0).await)
        }
        Job::SyncFailed(node, error, at, reply) => in_savepoint!(reply, |sp, _ch| {
            sp
            .execute(
                "UPDATE sync_sources SET last_error = $2, last_error_at = $3, updated_at = $3 WHERE node = $1",
                &[&node, &error, &at],
            )
            .await
            .map(|_| ())
            .map_err(StoreError::from)
        }),
        Job::SyncControl(node, control, event, reply) => {
            in_savepoint!(reply, |sp, ch| sync_control(sp, ch, &node, &control, event)
                .await)
        }
        Job::CatalogueReplace(source, items, at, reply) => {
            in_savepoint!(reply, |sp, ch| catalogue_replace(
                sp, ch, &source, items, at
            )
            .await)
        }
        Job::Requeue(ids, at, event, reply) => in_savepoint!(reply, |sp, ch| {
            let n = sp
                .execute(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $2,
                         lease_owner = NULL, lease_until = NULL, delivered_at = NULL, updated_at = $2
                     WHERE id = ANY($1) AND (state <> 'pending' OR lease_owner IS NULL)",
                    &[&ids, &at],
                )
                .await?;
            ch.push(event)?;
            Ok(usize::try_from(n).unwrap_or(0))
        }),
        Job::Sealed(op, reply) => in_savepoint!(reply, |sp, _ch| sealed_op(sp, op).await),
        Job::Console(op, reply) => in_savepoint!(reply, |sp, ch| console_op(sp, ch, op).await),
        Job::Supervision(op, reply) => in_savepoint!(reply, |sp, ch| {
            supervision_write(sp, st, ch, op, retain).await
        }),
        Job::PauseDestination(dest, paused, event, reply) => in_savepoint!(reply, |sp, ch| {
            sp.execute(
                "INSERT INTO destination_controls (destination, paused, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (destination) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
                &[&dest, &paused, &event.at_ms],
            )
            .await?;
            ch.push(event)
        }),
    }
}

fn sv_row(r: &tokio_postgres::Row) -> SvCase {
    SvCase {
        case_no: r.get(0),
        state: r.get(1),
        transitions: r.get(2),
        version: r.get(3),
        item_code: r.get(4),
        item_name: r.get(5),
        dept_code: r.get(6),
        dept_name: r.get(7),
        region: r.get(8),
        accepted_ms: r.get(9),
        deadline_ms: r.get(10),
        finished_ms: r.get(11),
        promised_days: r.get(12),
        used_days: r.get(13),
        quality: r.get(14),
        problem: r.get(15),
        late_steps: r.get(16),
        updated_ms: r.get(17),
    }
}

/// Supervision's questions (`store::supervision`).
async fn supervision_read(c: &Client, op: SvOp) -> Result<SvOut, StoreError> {
    Ok(match op {
        SvOp::Due { now_ms, limit } => SvOut::Due(
            c.query(
                &format!(
                    "SELECT {SV_COLUMNS}, facts FROM sv_cases WHERE due_at IS NOT NULL AND due_at <= $1
                     ORDER BY due_at LIMIT $2"
                ),
                &[&now_ms, &(limit as i64)],
            )
            .await?
            .iter()
            .map(|r| DueCase {
                row: sv_row(r),
                facts: super::supervision::fact_lines(r.get(18)),
            })
            .collect(),
        ),
        SvOp::Cases(f) => {
            let limit = f.limit as i64;
            SvOut::Cases(
                c.query(
                    &format!(
                        "SELECT {SV_COLUMNS} FROM sv_cases
                         WHERE (cardinality($1::text[]) = 0 OR state = ANY($1))
                           AND ($2::text IS NULL OR dept_code = $2)
                           AND ($3::bigint IS NULL OR accepted_at >= $3)
                           AND ($4::bigint IS NULL OR accepted_at < $4)
                           AND ($5::text IS NULL OR case_no > $5)
                         ORDER BY case_no LIMIT $6"
                    ),
                    &[
                        &f.states,
                        &f.dept_code,
                        &f.accepted_from_ms,
                        &f.accepted_to_ms,
                        &f.after,
                        &limit,
                    ],
                )
                .await?
                .iter()
                .map(sv_row)
                .collect(),
            )
        }
        SvOp::Counts => SvOut::Counts(
            c.query(
                "SELECT state, coalesce(dept_code, ''), count(*) FROM sv_cases
                 WHERE state IN ('on_time', 'warning', 'overdue', 'suspended')
                 GROUP BY state, dept_code",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
        ),
        SvOp::Case(case_no) => SvOut::Case(
            c.query_opt(
                &format!("SELECT {SV_COLUMNS} FROM sv_cases WHERE case_no = $1"),
                &[&case_no],
            )
            .await?
            .as_ref()
            .map(|r| Box::new(sv_row(r))),
        ),
        SvOp::Lease { .. } | SvOp::Settle(_) => {
            return Err(StoreError::Corrupt(
                "a supervision change sent to a reader".into(),
            ));
        }
    })
}

/// Supervision's changes, in the writer: the timer's lease, and settlements, each
/// applied only if its case is as it was read (the row's lock makes a second
/// instance's settlement of the same look find it changed).
async fn supervision_write(
    tx: &Transaction<'_>,
    st: &Stmts,
    ch: &mut Chain,
    op: SvOp,
    retain: bool,
) -> Result<SvOut, StoreError> {
    match op {
        SvOp::Lease {
            owner,
            now_ms,
            until_ms,
        } => {
            let n = tx
                .execute(
                    "INSERT INTO sv_lease (id, owner, until) VALUES (1, $1, $2)
                     ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, until = excluded.until
                     WHERE sv_lease.owner = excluded.owner OR sv_lease.until < $3",
                    &[&owner, &until_ms, &now_ms],
                )
                .await?;
            Ok(SvOut::Leased(n == 1))
        }
        SvOp::Settle(list) => {
            let mut applied = 0;
            for s in list {
                let r = &s.row;
                let bump = i64::from(s.transition.is_some());
                let n = tx
                    .execute(
                        "UPDATE sv_cases SET state = $2, transitions = transitions + $3, item_code = $4,
                             item_name = $5, dept_code = $6, dept_name = $7, region = $8, accepted_at = $9,
                             deadline = $10, finished_at = $11, promised_days = $12, used_days = $13,
                             quality = $14, problem = $15, late_steps = $16, updated_at = $17, due_at = $18
                         WHERE case_no = $1 AND version = $19 AND transitions = $20",
                        &[
                            &r.case_no,
                            &r.state,
                            &bump,
                            &r.item_code,
                            &r.item_name,
                            &r.dept_code,
                            &r.dept_name,
                            &r.region,
                            &r.accepted_ms,
                            &r.deadline_ms,
                            &r.finished_ms,
                            &r.promised_days,
                            &r.used_days,
                            &r.quality,
                            &r.problem,
                            &r.late_steps,
                            &r.updated_ms,
                            &s.due_ms,
                            &r.version,
                            &r.transitions,
                        ],
                    )
                    .await?;
                if n == 0 {
                    continue;
                }
                applied += 1;
                if let Some(t) = s.transition {
                    if let Some(msg) = t.alert {
                        match accept::one(tx, st, ch, &msg, retain).await? {
                            AcceptOutcome::Accepted(_) | AcceptOutcome::Replayed(_) => {}
                            other => {
                                return Err(StoreError::Corrupt(format!(
                                    "an alert was not stored: {other:?}"
                                )));
                            }
                        }
                    }
                    ch.push(t.event)?;
                }
            }
            Ok(SvOut::Settled(applied))
        }
        read => Err(StoreError::Corrupt(format!(
            "a supervision question sent to the writer: {read:?}"
        ))),
    }
}

/// The console's users and sessions (`store::console`).
async fn console_op(
    sp: &Transaction<'_>,
    ch: &mut Chain,
    op: ConsoleOp,
) -> Result<ConsoleOut, StoreError> {
    const USER: &str =
        "SELECT name, roles, password_hash, disabled, failures, locked_until FROM console_users";
    let user_row = |r: &tokio_postgres::Row| ConsoleUser {
        name: r.get(0),
        roles: console::roles_of(r.get(1)),
        password_hash: r.get(2),
        disabled: r.get(3),
        failures: r.get(4),
        locked_until_ms: r.get(5),
    };
    let session_row = |r: &tokio_postgres::Row| ConsoleSession {
        id_sha256: r.get(0),
        user: r.get(1),
        csrf: r.get(2),
        created_ms: r.get(3),
        seen_ms: r.get(4),
        expires_ms: r.get(5),
    };
    let user = |name: String| async move {
        Ok::<_, StoreError>(
            sp.query_opt(&format!("{USER} WHERE name = $1"), &[&name])
                .await?
                .as_ref()
                .map(user_row),
        )
    };
    Ok(match op {
        ConsoleOp::User(name) => ConsoleOut::User(user(name).await?),
        ConsoleOp::Users => ConsoleOut::Users(
            sp.query(&format!("{USER} ORDER BY name"), &[])
                .await?
                .iter()
                .map(user_row)
                .collect(),
        ),
        ConsoleOp::PutUser(u, event) => {
            sp.execute(
                "INSERT INTO console_users (name, roles, password_hash, disabled, failures, locked_until)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET roles = excluded.roles,
                     password_hash = excluded.password_hash, disabled = excluded.disabled,
                     failures = excluded.failures, locked_until = excluded.locked_until",
                &[
                    &u.name,
                    &console::roles_text(&u.roles),
                    &u.password_hash,
                    &u.disabled,
                    &u.failures,
                    &u.locked_until_ms,
                ],
            )
            .await?;
            if u.disabled {
                sp.execute("DELETE FROM console_sessions WHERE \"user\" = $1", &[&u.name])
                    .await?;
            }
            ch.push(event)?;
            ConsoleOut::Done
        }
        ConsoleOp::Attempt {
            user: name,
            ok,
            at_ms,
            lock_after,
            lock_ms,
            event,
        } => {
            if ok {
                sp.execute(
                    "UPDATE console_users SET failures = 0, locked_until = NULL WHERE name = $1",
                    &[&name],
                )
                .await?;
            } else {
                sp.execute(
                    "UPDATE console_users SET failures = failures + 1,
                         locked_until = CASE WHEN failures + 1 >= $2 THEN $3 ELSE locked_until END
                     WHERE name = $1",
                    &[&name, &lock_after, &(at_ms + lock_ms)],
                )
                .await?;
            }
            ch.push(event)?;
            ConsoleOut::User(user(name).await?)
        }
        ConsoleOp::Open(s) => {
            sp.execute(
                "INSERT INTO console_sessions (id_sha256, \"user\", csrf, created_at, seen_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&s.id_sha256, &s.user, &s.csrf, &s.created_ms, &s.seen_ms, &s.expires_ms],
            )
            .await?;
            sp.execute(
                "DELETE FROM console_sessions WHERE expires_at < $1",
                &[&(s.created_ms - 86_400_000)],
            )
            .await?;
            ConsoleOut::Session(Some(s))
        }
        ConsoleOp::Touch {
            id_sha256,
            at_ms,
            idle_ms,
            max_ms,
        } => ConsoleOut::Session(
            sp.query_opt(
                "UPDATE console_sessions SET seen_at = $2, expires_at = least($2 + $3, created_at + $4)
                 WHERE id_sha256 = $1 AND expires_at > $2
                   AND \"user\" IN (SELECT name FROM console_users WHERE NOT disabled)
                 RETURNING id_sha256, \"user\", csrf, created_at, seen_at, expires_at",
                &[&id_sha256, &at_ms, &idle_ms, &max_ms],
            )
            .await?
            .as_ref()
            .map(session_row),
        ),
        ConsoleOp::Close(id, event) => {
            sp.execute("DELETE FROM console_sessions WHERE id_sha256 = $1", &[&id])
                .await?;
            ch.push(event)?;
            ConsoleOut::Done
        }
    })
}

/// Data keys and raw stored values for encryption at rest (`store::sealed`).
async fn sealed_op(sp: &Transaction<'_>, op: SealOp) -> Result<SealOut, StoreError> {
    Ok(match op {
        SealOp::Keys => SealOut::Keys(
            sp.query(
                "SELECT id, alg, check_value FROM data_keys ORDER BY added_at, id",
                &[],
            )
            .await?
            .iter()
            .map(|r| DataKey {
                id: r.get(0),
                alg: r.get(1),
                check: r.get(2),
            })
            .collect(),
        ),
        SealOp::SetKeys { add, forget } => {
            for k in add {
                sp.execute(
                    "INSERT INTO data_keys (id, alg, check_value, added_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO NOTHING",
                    &[&k.id, &k.alg, &k.check, &crate::time::now_ms()],
                )
                .await?;
            }
            sp.execute("DELETE FROM data_keys WHERE id = ANY($1)", &[&forget])
                .await?;
            SealOut::Done
        }
        SealOp::Messages { after, limit } => SealOut::Messages(
            sp.query(
                "SELECT id, body FROM messages WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &(limit as i64)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        ),
        SealOp::Records { after, limit } => SealOut::Records(
            sp.query(
                "SELECT id, canonical FROM records WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &(limit as i64)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get::<_, String>(1).into_bytes()))
            .collect(),
        ),
        SealOp::Reseal { messages, records } => {
            let mut n = 0;
            for m in messages {
                n += sp
                    .execute(
                        "UPDATE messages SET body = $3 WHERE id = $1 AND body = $2",
                        &[&m.key, &m.old, &m.new],
                    )
                    .await?;
            }
            let text = |b: Vec<u8>| {
                String::from_utf8(b)
                    .map_err(|_| StoreError::Corrupt("a sealed record is not text".into()))
            };
            for r in records {
                n += sp
                    .execute(
                        "UPDATE records SET canonical = $3 WHERE id = $1 AND canonical = $2",
                        &[&r.key, &text(r.old)?, &text(r.new)?],
                    )
                    .await?;
            }
            SealOut::Resealed(usize::try_from(n).unwrap_or(0))
        }
    })
}

const SYNC_COLUMNS: &str =
    "node, cursor, paused, pulled, pages, last_success, last_error, last_error_at,
    lease_owner, lease_until, updated_at";

fn sync_row(r: &Row) -> SyncSource {
    SyncSource {
        node: r.get(0),
        cursor: r.get(1),
        paused: r.get(2),
        pulled: r.get(3),
        pages: r.get(4),
        last_success_ms: r.get(5),
        last_error: r.get(6),
        last_error_ms: r.get(7),
        lease_owner: r.get(8),
        lease_until_ms: r.get(9),
        updated_ms: r.get(10),
    }
}

async fn sync_take(tx: &Transaction<'_>, t: &SyncTake) -> Result<Option<SyncSource>, StoreError> {
    tx.execute(
        "INSERT INTO sync_sources (node, cursor, updated_at) VALUES ($1, $2, $3) ON CONFLICT (node) DO NOTHING",
        &[&t.node, &t.initial, &t.now_ms],
    )
    .await?;
    let taken = tx
        .query_opt(
            &format!(
                "UPDATE sync_sources SET lease_owner = $2, lease_until = $3
                 WHERE node = $1 AND NOT paused
                   AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $4)
                 RETURNING {SYNC_COLUMNS}"
            ),
            &[&t.node, &t.owner, &t.until_ms, &t.now_ms],
        )
        .await?;
    if let Some(row) = taken {
        return Ok(Some(sync_row(&row)));
    }
    let row = tx
        .query_one(
            &format!("SELECT {SYNC_COLUMNS} FROM sync_sources WHERE node = $1"),
            &[&t.node],
        )
        .await?;
    let row = sync_row(&row);
    Ok(row.paused.then_some(row))
}

/// Move a source's cursor, under its lease, and queue the page's events.
async fn advance(
    tx: &Transaction<'_>,
    chain: &mut Chain,
    adv: &PullAdvance,
    new_records: i64,
) -> Result<(), StoreError> {
    let n = tx
        .execute(
            "UPDATE sync_sources SET cursor = $3, pulled = pulled + $4, pages = pages + 1,
                 last_success = $5, last_error = NULL, last_error_at = NULL, lease_until = $6, updated_at = $5
             WHERE node = $1 AND lease_owner = $2 AND NOT paused",
            &[
                &adv.node,
                &adv.owner,
                &adv.cursor,
                &new_records,
                &adv.at_ms,
                &adv.lease_until_ms,
            ],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::LeaseLost(adv.node.clone()));
    }
    for e in &adv.events {
        chain.push(e.clone())?;
    }
    Ok(())
}

async fn sync_control(
    tx: &Transaction<'_>,
    chain: &mut Chain,
    node: &str,
    control: &SyncControl,
    event: Event,
) -> Result<SyncSource, StoreError> {
    let at = event.at_ms;
    let row = match control {
        SyncControl::Pause => {
            tx.query_opt(
                &format!(
                    "UPDATE sync_sources SET paused = TRUE, lease_owner = NULL, lease_until = NULL, updated_at = $2
                     WHERE node = $1 RETURNING {SYNC_COLUMNS}"
                ),
                &[&node, &at],
            )
            .await?
        }
        SyncControl::Resume => {
            tx.query_opt(
                &format!(
                    "UPDATE sync_sources SET paused = FALSE, updated_at = $2 WHERE node = $1 RETURNING {SYNC_COLUMNS}"
                ),
                &[&node, &at],
            )
            .await?
        }
        SyncControl::Rewind(cursor) => {
            tx.query_opt(
                &format!(
                    "UPDATE sync_sources SET cursor = $3, lease_owner = NULL, lease_until = NULL, updated_at = $2
                     WHERE node = $1 RETURNING {SYNC_COLUMNS}"
                ),
                &[&node, &at, cursor],
            )
            .await?
        }
    };
    let row = row.ok_or_else(|| StoreError::NoSource(node.to_string()))?;
    chain.push(event)?;
    Ok(sync_row(&row))
}

async fn read_catalogue(c: &Client) -> Result<Vec<CatalogueItem>, StoreError> {
    let rows = c
        .query("SELECT item FROM catalogue ORDER BY item_code", &[])
        .await?;
    rows.iter()
        .map(|r| {
            serde_json::from_str(r.get::<_, &str>(0))
                .map_err(|e| StoreError::Corrupt(format!("catalogue item: {e}")))
        })
        .collect()
}

async fn catalogue_replace(
    tx: &Transaction<'_>,
    chain: &mut Chain,
    source: &str,
    items: Vec<CatalogueItem>,
    at: i64,
) -> Result<CatalogueChange, StoreError> {
    // One refresh at a time across instances.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('hallgate-catalogue'))",
        &[],
    )
    .await?;
    let stored = read_catalogue(tx.client()).await?;
    let (write, change) = plan::catalogue_change(&stored, items);
    for item in &write {
        let text = serde_json::to_string(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO catalogue (item_code, source, item, status, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (item_code) DO UPDATE SET source = excluded.source, item = excluded.item,
                 status = excluded.status, updated_at = excluded.updated_at",
            &[&item.item_code, &source, &text, &item.status, &at],
        )
        .await?;
    }
    if !write.is_empty() {
        chain.push(plan::catalogue_event(source, at, &change))?;
    }
    Ok(change)
}

async fn archive(
    tx: &Transaction<'_>,
    chain: &mut Chain,
    through: i64,
    sha: &str,
    e: Event,
) -> Result<(), StoreError> {
    let row = tx
        .query_one("SELECT hash FROM audit WHERE seq = $1", &[&through])
        .await?;
    let hash: Vec<u8> = row.get(0);
    tx.execute("DELETE FROM audit WHERE seq <= $1", &[&through])
        .await?;
    for (k, v) in [
        ("archived_through_seq", through.to_string()),
        ("archived_head_hash", hex::encode(hash)),
        ("last_archive_sha256", sha.to_string()),
    ] {
        tx.execute(
            "INSERT INTO audit_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&k, &v],
        )
        .await?;
    }
    chain.push(e)
}

/// Record finished attempts (pipelined). A failed write fails the whole exchange: none
/// of its attempts is recorded and each is sent again after its lease.
async fn exchange(
    tx: &Transaction<'_>,
    st: &Stmts,
    chain: &mut Chain,
    completions: Vec<Completion>,
) -> Result<Exchange, StoreError> {
    let mut out = Exchange::default();
    let n = completions.len();
    let (mut id, mut owner, mut result) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut status, mut text, mut at, mut next) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for c in &completions {
        let (s, t, x) = plan::completion_columns(c);
        id.push(c.id);
        owner.push(c.owner.as_str());
        result.push(match &c.result {
            DeliveryResult::Delivered { .. } => "delivered",
            DeliveryResult::Retry { .. } => "retry",
            DeliveryResult::Dead { .. } => "dead",
        });
        status.push(s);
        text.push(t);
        at.push(c.at_ms);
        next.push(x);
    }
    let mut updated: HashMap<i64, Row> = HashMap::new();
    if n > 0 {
        for row in tx
            .query(
                &st.complete,
                &[&id, &owner, &result, &status, &text, &at, &next],
            )
            .await?
        {
            updated.insert(row.get(6), row);
        }
    }
    // A delivery named twice is recorded once, for its first completion.
    let rows = completions.iter().map(|c| updated.remove(&c.id));
    let mut settled = Vec::new();
    for (c, row) in completions.iter().zip(rows) {
        match row {
            Some(row) => {
                for e in plan::completion_events(c, &completed(&row)) {
                    chain.push(e)?;
                }
                out.recorded += 1;
                if !c.receipts.is_empty() && !matches!(c.result, DeliveryResult::Retry { .. }) {
                    settled.push(c.id);
                }
            }
            None => out.lost += 1,
        }
    }
    if let (false, Some(c)) = (settled.is_empty(), completions.first()) {
        // The last delivery of a record settled: its sender's receipt, once.
        let senders: Vec<&str> = c.receipts.iter().map(String::as_str).collect();
        tx.query(plan::LOCK_RECEIPT_RECORDS_PG, &[&settled, &senders])
            .await?;
        tx.execute(plan::QUEUE_RECEIPTS_PG, &[&settled, &c.at_ms, &senders])
            .await?;
    }
    Ok(out)
}

/// Lease due deliveries in one statement (its own transaction): outside the writer's
/// batches, so a slow lease never holds up intake.
///
/// A delivery is due when it is the first pending one of its case (per-case order).
/// That is asked as a scalar subquery with `LIMIT 1`, which PostgreSQL always runs as
/// one index probe per candidate. Written as `NOT EXISTS` (an earlier pending one),
/// the planner was free to turn it into an anti-join, and with statistics taken while
/// the backlog was small it chose a nested loop that probed on `destination` alone:
/// every candidate against every pending row, 16.8 s for one lease over 6,220 pending
/// deliveries (BENCHMARKS.md, issue 19), against 20 ms this way.
///
/// A leased delivery is not due again before its lease ends: `next_attempt_at` moves
/// to the lease's end, so the due index holds only the deliveries free to lease and
/// the scan stops after the rows it takes, however many this instance holds.
async fn lease(tx: &Client, l: &LeaseRequest) -> Result<Vec<LeasedDelivery>, StoreError> {
    let limit = l.limit as i64;
    let until = l.now_ms + l.lease_ms;
    let rows = tx
        .query(
            "WITH due AS (
                 SELECT d.id, d.next_attempt_at FROM deliveries d
                 WHERE d.state = 'pending' AND d.destination = $1 AND d.next_attempt_at <= $2
                   AND (d.lease_until IS NULL OR d.lease_until <= $2)
                   AND d.id = (
                       SELECT e.id FROM deliveries e
                       WHERE e.state = 'pending' AND e.destination = d.destination AND e.case_no = d.case_no
                       ORDER BY e.ord_kind, e.ord_step, e.id
                       LIMIT 1)
                 ORDER BY d.next_attempt_at, d.id
                 LIMIT $3
                 FOR UPDATE OF d SKIP LOCKED)
             UPDATE deliveries u SET lease_owner = $4, lease_until = $5, next_attempt_at = $5
             FROM due WHERE u.id = due.id
             RETURNING u.id, u.message_id, u.destination, u.case_no, u.kind,
                       (SELECT r.canonical FROM records r WHERE r.id = u.record_id),
                       u.idem_key, u.attempts, u.created_at, due.next_attempt_at,
                       (SELECT m.request_id FROM messages m WHERE m.id = u.message_id)",
            &[&l.destination, &l.now_ms, &limit, &l.owner, &until],
        )
        .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok((
                r.get::<_, i64>(9),
                LeasedDelivery {
                    id: r.get(0),
                    message_id: r.get(1),
                    destination: r.get(2),
                    case_no: r.get(3),
                    kind: parse_kind(r.get(4))?,
                    canonical: r.get(5),
                    idempotency_key: r.get(6),
                    request_id: r.get(10),
                    attempts: u32::try_from(r.get::<_, i64>(7)).unwrap_or(u32::MAX),
                    created_at_ms: r.get(8),
                },
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    out.sort_by_key(|(due, d)| (*due, d.id));
    Ok(out.into_iter().map(|(_, d)| d).collect())
}

fn parse_kind(s: &str) -> Result<Kind, StoreError> {
    Kind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown record kind `{s}`")))
}

fn completed(r: &Row) -> plan::Completed {
    plan::Completed {
        destination: r.get(0),
        case_no: r.get(1),
        kind: r.get(2),
        message_id: r.get(3),
        attempts: r.get(4),
        index: r.get(5),
    }
}

async fn retry_dead(
    tx: &Transaction<'_>,
    chain: &mut Chain,
    id: i64,
    at_ms: i64,
    asked: &Asked,
) -> Result<i64, StoreError> {
    let row = tx
        .query_opt(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $2,
                 lease_owner = NULL, lease_until = NULL, updated_at = $2
             WHERE id = $1 AND state = 'dead'
             RETURNING destination, case_no, kind, message_id, attempts, record_idx",
            &[&id, &at_ms],
        )
        .await?;
    let Some(row) = row else {
        let exists = tx
            .query_opt("SELECT id FROM deliveries WHERE id = $1", &[&id])
            .await?;
        return Err(match exists {
            Some(_) => StoreError::NotDead(id),
            None => StoreError::NotFound,
        });
    };
    chain.push(plan::manual_retry_event(at_ms, id, &completed(&row), asked))?;
    Ok(id)
}

const DELIVERY_COLUMNS: &str = "id, message_id, record_idx, destination, case_no, kind, state, attempts,
    next_attempt_at, last_status, last_error, receipt, idem_key, created_at, updated_at, delivered_at,
    lease_until";

fn delivery_row(r: &Row) -> DeliveryView {
    let state = DeliveryState::parse(r.get(6)).unwrap_or(DeliveryState::Pending);
    DeliveryView {
        id: r.get(0),
        message_id: r.get(1),
        record_index: usize::try_from(r.get::<_, i64>(2)).unwrap_or(0),
        destination: r.get(3),
        case_no: r.get(4),
        kind: Kind::parse(r.get(5)).unwrap_or(Kind::Application),
        state,
        attempts: u32::try_from(r.get::<_, i64>(7)).unwrap_or(0),
        next_attempt_at: (state == DeliveryState::Pending).then(|| rfc3339(r.get(8))),
        last_status: r
            .get::<_, Option<i64>>(9)
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(10),
        receipt: r.get(11),
        idempotency_key: r.get(12),
        created_at: rfc3339(r.get(13)),
        updated_at: rfc3339(r.get(14)),
        delivered_at: r.get::<_, Option<i64>>(15).map(rfc3339),
        leased_until: r
            .get::<_, Option<i64>>(16)
            .filter(|until| state == DeliveryState::Pending && *until > crate::time::now_ms())
            .map(rfc3339),
    }
}

async fn records_where(c: &Client, clause: &str, arg: &str) -> Result<Vec<RecordView>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT id, message_id, idx, source, received_at, kind, case_no, status, version, sha256, canonical, flags
                 FROM records WHERE {clause} ORDER BY received_at, id"
            ),
            &[&arg],
        )
        .await?;
    let deliveries = c
        .prepare(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE record_id = $1 ORDER BY id"
        ))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.get(0);
        let canonical: String = r.get(10);
        out.push(RecordView {
            message_id: r.get(1),
            index: usize::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            source: r.get(3),
            received_at: rfc3339(r.get(4)),
            kind: Kind::parse(r.get(5)).unwrap_or(Kind::Application),
            case_no: r.get(6),
            status: r.get(7),
            version: r.get(8),
            sha256: r.get(9),
            flags: plan::parse_flags(r.get::<_, Option<&str>>(11)),
            record: serde_json::from_str(&canonical).unwrap_or(Value::Null),
            deliveries: c
                .query(&deliveries, &[&id])
                .await?
                .iter()
                .map(delivery_row)
                .collect(),
        });
    }
    Ok(out)
}

impl Store for PostgresStore {
    fn accept(&self, msg: NewMessage) -> StoreFuture<'_, AcceptOutcome> {
        self.submit(|r| Job::Accept(Box::new(msg), r))
    }

    fn audit(&self, event: Event) -> StoreFuture<'_, ()> {
        self.submit(|r| Job::Audit(event, r))
    }

    fn claim_token(&self, token: TokenUse) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let c = self.reader().await?;
            // One statement: atomic across instances (the key is (node, jti)).
            let n = c
                .execute(
                    "INSERT INTO token_ids (node, jti, token_sha256, exp) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&token.node, &token.jti, &token.token_sha256, &token.exp_ms],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn archive_audit(
        &self,
        through_seq: i64,
        archive_sha256: String,
        event: Event,
    ) -> StoreFuture<'_, ()> {
        self.submit(|r| Job::ArchiveAudit(through_seq, archive_sha256, event, r))
    }

    fn audit_meta(&self) -> StoreFuture<'_, AuditMeta> {
        Box::pin(async move {
            let c = self.reader().await?;
            let c: &Client = &c;
            let meta = |k: &'static str| async move {
                c.query_opt("SELECT value FROM audit_meta WHERE key = $1", &[&k])
                    .await
                    .map(|r| r.map(|r| r.get::<_, String>(0)))
            };
            let through = meta("archived_through_seq")
                .await?
                .and_then(|v| v.parse().ok());
            let head = meta("archived_head_hash").await?;
            let last = meta("last_archive_sha256").await?;
            let row = c
                .query_one("SELECT min(seq), max(seq) FROM audit", &[])
                .await?;
            Ok(AuditMeta {
                alg: self.alg,
                archived_through_seq: through,
                archived_head_hash: head,
                last_archive_sha256: last,
                live_first_seq: row.get(0),
                live_last_seq: row.get(1),
            })
        })
    }

    fn audit_count(&self, f: AuditFilter) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let row = self
                .reader()
                .await?
                .query_one(
                    "SELECT count(*) FROM audit
                     WHERE ($1::text IS NULL OR case_no = $1) AND ($2::text IS NULL OR node = $2)
                       AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR event = $4)
                       AND ($5::bigint IS NULL OR at >= $5) AND ($6::bigint IS NULL OR at < $6)",
                    &[&f.case_no, &f.node, &f.kind, &f.event, &f.from_ms, &f.to_ms],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    fn audit_events(&self, f: AuditFilter) -> StoreFuture<'_, Vec<AuditRow>> {
        Box::pin(async move {
            let after = f.after_seq.unwrap_or(0);
            let limit = f.limit as i64;
            let rows = self
                .reader()
                .await?
                .query(
                    "SELECT seq, at, event, node, case_no, kind, message_id, delivery_id, detail, hash
                     FROM audit
                     WHERE seq > $1 AND ($2::bigint IS NULL OR seq <= $2)
                       AND ($3::text IS NULL OR case_no = $3) AND ($4::text IS NULL OR node = $4)
                       AND ($5::text IS NULL OR kind = $5) AND ($6::text IS NULL OR event = $6)
                       AND ($7::bigint IS NULL OR at >= $7) AND ($8::bigint IS NULL OR at < $8)
                       AND ($9::text IS NULL OR message_id = $9)
                     ORDER BY seq LIMIT $10",
                    &[
                        &after,
                        &f.through_seq,
                        &f.case_no,
                        &f.node,
                        &f.kind,
                        &f.event,
                        &f.from_ms,
                        &f.to_ms,
                        &f.message_id,
                        &limit,
                    ],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let detail: String = r.get(8);
                    let hash: Vec<u8> = r.get(9);
                    AuditRow {
                        seq: r.get(0),
                        at_ms: r.get(1),
                        event: r.get(2),
                        node: r.get(3),
                        case_no: r.get(4),
                        kind: r.get(5),
                        message_id: r.get(6),
                        delivery_id: r.get(7),
                        // A detail that is not JSON no longer matches its hash:
                        // verification names it.
                        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                        hash: hex::encode(hash),
                    }
                })
                .collect())
        })
    }

    fn exchange(
        &self,
        completions: Vec<Completion>,
        lease: Option<LeaseRequest>,
    ) -> StoreFuture<'_, Exchange> {
        Box::pin(async move {
            // Record first (the next record of a case becomes due only once its
            // predecessor's outcome is committed), then lease.
            let mut out = if completions.is_empty() {
                Exchange::default()
            } else {
                self.submit(|r| Job::Exchange(completions, r)).await?
            };
            if let Some(l) = lease {
                out.leased = self::lease(&*self.reader().await?, &l).await?;
            }
            Ok(out)
        })
    }

    fn release(&self, owner: &str, ids: Vec<i64>) -> StoreFuture<'_, ()> {
        let owner = owner.to_string();
        self.submit(|r| Job::Release(owner, ids, r))
    }

    fn retry_dead_many(
        &self,
        ids: Vec<i64>,
        at_ms: i64,
        asked: Asked,
    ) -> StoreFuture<'_, Vec<i64>> {
        self.submit(|r| Job::RetryDead(ids, at_ms, asked, false, r))
    }

    fn consumer_refused(&self, id: i64, reason: String, at_ms: i64) -> StoreFuture<'_, bool> {
        self.submit(|r| Job::Refuse(id, reason, at_ms, r))
    }

    fn retry_dead(&self, id: i64, at_ms: i64, asked: Asked) -> StoreFuture<'_, DeliveryView> {
        Box::pin(async move {
            self.submit(|r| Job::RetryDead(vec![id], at_ms, asked, true, r))
                .await?;
            let row = self
                .reader()
                .await?
                .query_one(
                    &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"),
                    &[&id],
                )
                .await?;
            Ok(delivery_row(&row))
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.submit(Job::Ping)
    }

    fn message(&self, id: &str) -> StoreFuture<'_, Option<MessageView>> {
        let id = id.to_string();
        Box::pin(async move {
            let c = self.reader().await?;
            let c: &Client = &c;
            let Some(r) = c
                .query_opt(
                    "SELECT id, source, received_at, content_type, idempotency_key, length(body), body_sha256, response
                     FROM messages WHERE id = $1",
                    &[&id],
                )
                .await?
            else {
                return Ok(None);
            };
            let response: String = r.get(7);
            Ok(Some(MessageView {
                id: r.get(0),
                source: r.get(1),
                received_at: rfc3339(r.get(2)),
                content_type: r.get(3),
                idempotency_key: r.get(4),
                body_bytes: usize::try_from(r.get::<_, i32>(5)).unwrap_or(0),
                body_sha256: r.get(6),
                response: serde_json::from_str(&response).unwrap_or(Value::Null),
                records: records_where(c, "message_id = $1", &id).await?,
            }))
        })
    }

    fn case(&self, case_no: &str) -> StoreFuture<'_, Vec<RecordView>> {
        let case_no = case_no.to_string();
        Box::pin(
            async move { records_where(&*self.reader().await?, "case_no = $1", &case_no).await },
        )
    }

    fn evidence(&self, ids: Vec<String>) -> StoreFuture<'_, Vec<Evidence>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let messages = c
                .query(
                    "SELECT id, body, body_sha256 FROM messages WHERE id = ANY($1)",
                    &[&ids],
                )
                .await?;
            let records = c
                .query(
                    "SELECT message_id, idx, canonical, sha256 FROM records WHERE message_id = ANY($1)
                     ORDER BY message_id, idx",
                    &[&ids],
                )
                .await?;
            let mut by_message: std::collections::HashMap<String, Vec<StoredRecord>> =
                std::collections::HashMap::new();
            for r in records {
                by_message.entry(r.get(0)).or_default().push(StoredRecord {
                    index: r.get::<_, i64>(1).try_into().unwrap_or(usize::MAX),
                    canonical: r.get::<_, String>(2).into_bytes(),
                    sha256: r.get(3),
                });
            }
            Ok(messages
                .into_iter()
                .map(|m| {
                    let id: String = m.get(0);
                    let records = by_message.remove(&id).unwrap_or_default();
                    Evidence {
                        message_id: id,
                        body: bytes::Bytes::from(m.get::<_, Vec<u8>>(1)),
                        body_sha256: m.get(2),
                        records,
                    }
                })
                .collect())
        })
    }

    fn case_standing(&self, case_no: &str, node: &str) -> StoreFuture<'_, CaseStanding> {
        let (case_no, node) = (case_no.to_string(), node.to_string());
        Box::pin(async move {
            let c = self.reader().await?;
            let row = c
                .query_opt(
                    "SELECT c.region, c.item_code,
                            EXISTS (SELECT 1 FROM case_parties p WHERE p.case_no = c.case_no AND p.node = $2)
                     FROM cases c WHERE c.case_no = $1",
                    &[&case_no, &node],
                )
                .await?;
            Ok(match row {
                None => CaseStanding::New,
                Some(row) if row.get::<_, bool>(2) => CaseStanding::Party,
                Some(row) => CaseStanding::Other {
                    region: row.get(0),
                    item_code: row.get(1),
                },
            })
        })
    }

    fn deliveries(&self, f: DeliveryFilter) -> StoreFuture<'_, Vec<DeliveryView>> {
        Box::pin(async move {
            let state = f.state.map(DeliveryState::as_str);
            let now_ms = crate::time::now_ms();
            let after = f.after_id.unwrap_or(0);
            let limit = f.limit as i64;
            let rows = self
                .reader()
                .await?
                .query(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries
                         WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR destination = $2)
                           AND ($3::text IS NULL OR case_no = $3) AND id > $4 AND created_at >= $6
                           AND ($7::boolean IS NULL
                                OR (state = 'pending' AND coalesce(lease_until, 0) > $8) = $7)
                         ORDER BY id LIMIT $5"
                    ),
                    &[
                        &state,
                        &f.destination,
                        &f.case_no,
                        &after,
                        &limit,
                        &f.since_ms.unwrap_or(0),
                        &f.leased,
                        &now_ms,
                    ],
                )
                .await?;
            Ok(rows.iter().map(delivery_row).collect())
        })
    }

    fn record_deliveries(&self, id: i64) -> StoreFuture<'_, Vec<DeliveryView>> {
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries
                         WHERE record_id = (SELECT record_id FROM deliveries WHERE id = $1) ORDER BY id"
                    ),
                    &[&id],
                )
                .await?;
            Ok(rows.iter().map(delivery_row).collect())
        })
    }

    fn queue_depths(&self) -> StoreFuture<'_, Vec<QueueDepth>> {
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    "SELECT destination,
                            count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead'),
                            min(created_at) FILTER (WHERE state = 'pending')
                     FROM deliveries WHERE state IN ('pending', 'dead') GROUP BY destination ORDER BY destination",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| QueueDepth {
                    destination: r.get(0),
                    pending: r.get(1),
                    dead: r.get(2),
                    oldest_pending_ms: r.get(3),
                })
                .collect())
        })
    }

    fn pending_bytes(&self, destination: &str) -> StoreFuture<'_, i64> {
        let destination = destination.to_string();
        Box::pin(async move {
            let row = self
                .reader()
                .await?
                .query_one(
                    "SELECT coalesce(sum(octet_length(r.canonical)), 0)::BIGINT
                     FROM deliveries d JOIN records r ON r.id = d.record_id
                     WHERE d.state = 'pending' AND d.destination = $1",
                    &[&destination],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    fn sync_sources(&self) -> StoreFuture<'_, Vec<SyncSource>> {
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    &format!("SELECT {SYNC_COLUMNS} FROM sync_sources ORDER BY node"),
                    &[],
                )
                .await?;
            Ok(rows.iter().map(sync_row).collect())
        })
    }

    fn sync_take(
        &self,
        node: &str,
        owner: &str,
        initial_cursor: String,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> StoreFuture<'_, Option<SyncSource>> {
        let take = SyncTake {
            node: node.to_string(),
            owner: owner.to_string(),
            initial: initial_cursor,
            now_ms,
            until_ms: lease_until_ms,
        };
        self.submit(|r| Job::SyncTake(take, r))
    }

    fn sync_advance(&self, advance: PullAdvance) -> StoreFuture<'_, ()> {
        self.submit(|r| Job::SyncAdvance(advance, r))
    }

    fn sync_failed(&self, node: &str, error: String, at_ms: i64) -> StoreFuture<'_, ()> {
        let node = node.to_string();
        self.submit(|r| Job::SyncFailed(node, error, at_ms, r))
    }

    fn sync_control(
        &self,
        node: &str,
        control: SyncControl,
        event: Event,
    ) -> StoreFuture<'_, SyncSource> {
        let node = node.to_string();
        self.submit(|r| Job::SyncControl(node, control, event, r))
    }

    fn catalogue_replace(
        &self,
        source: &str,
        items: Vec<CatalogueItem>,
        at_ms: i64,
    ) -> StoreFuture<'_, CatalogueChange> {
        let source = source.to_string();
        self.submit(|r| Job::CatalogueReplace(source, items, at_ms, r))
    }

    fn catalogue(&self) -> StoreFuture<'_, Vec<CatalogueItem>> {
        Box::pin(async move { read_catalogue(&*self.reader().await?).await })
    }

    fn exchanged(&self, node: &str, from_ms: i64, to_ms: i64) -> StoreFuture<'_, Vec<Exchanged>> {
        let node = node.to_string();
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    "SELECT d.id, d.kind, d.case_no, r.identity, r.version, r.canonical::jsonb ->> 'op',
                            COALESCE(d.delivered_at, d.created_at), d.created_at, d.state
                     FROM deliveries d JOIN records r ON r.id = d.record_id
                     WHERE d.destination = $1
                       AND ((d.created_at BETWEEN $2 AND $3) OR (d.delivered_at BETWEEN $2 AND $3))
                     UNION ALL
                     SELECT NULL, kind, case_no, identity, version, canonical::jsonb ->> 'op',
                            received_at, received_at, NULL
                     FROM records WHERE source = $1 AND status = 'accepted' AND received_at BETWEEN $2 AND $3",
                    &[&node, &from_ms, &to_ms],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let delivery_id: Option<i64> = r.get(0);
                    Exchanged {
                        direction: if delivery_id.is_some() {
                            "delivered"
                        } else {
                            "pulled"
                        },
                        kind: Kind::parse(r.get(1)).unwrap_or(Kind::Application),
                        case_no: r.get(2),
                        identity: r.get(3),
                        version: r.get(4),
                        op: r
                            .get::<_, Option<String>>(5)
                            .unwrap_or_else(|| "upsert".into()),
                        at_ms: r.get(6),
                        received_ms: r.get(7),
                        delivery_id,
                        state: r.get::<_, Option<&str>>(8).and_then(DeliveryState::parse),
                    }
                })
                .collect())
        })
    }

    fn requeue(&self, ids: Vec<i64>, at_ms: i64, event: Event) -> StoreFuture<'_, usize> {
        self.submit(|r| Job::Requeue(ids, at_ms, event, r))
    }

    fn sealed(&self, op: SealOp) -> StoreFuture<'_, SealOut> {
        self.submit(|r| Job::Sealed(op, r))
    }

    fn pause_destination(
        &self,
        destination: &str,
        paused: bool,
        event: Event,
    ) -> StoreFuture<'_, ()> {
        let dest = destination.to_string();
        self.submit(|r| Job::PauseDestination(dest, paused, event, r))
    }

    fn search_cases(&self, q: CaseSearch) -> StoreFuture<'_, Vec<CaseSummary>> {
        Box::pin(async move {
            let limit = q.limit as i64;
            let rows = self
                .reader()
                .await?
                .query(
                    "SELECT c.case_no, c.opened_by, c.region, c.item_code, c.opened_at FROM cases c
                     WHERE ($1::text IS NULL OR c.opened_by = $1) AND ($2::text IS NULL OR c.item_code = $2)
                       AND c.opened_at >= $3 AND c.opened_at < $4
                       AND ($5::text IS NULL OR EXISTS
                            (SELECT 1 FROM records r WHERE r.case_no = c.case_no AND r.kind = $5))
                     ORDER BY c.opened_at DESC LIMIT $6",
                    &[
                        &q.node,
                        &q.item_code,
                        &q.from_ms.unwrap_or(i64::MIN),
                        &q.to_ms.unwrap_or(i64::MAX),
                        &q.kind,
                        &limit,
                    ],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| CaseSummary {
                    case_no: r.get(0),
                    opened_by: r.get(1),
                    region: r.get(2),
                    item_code: r.get(3),
                    opened_ms: r.get(4),
                })
                .collect())
        })
    }

    fn console(&self, op: ConsoleOp) -> StoreFuture<'_, ConsoleOut> {
        self.submit(|r| Job::Console(op, r))
    }

    fn supervision(&self, op: SvOp) -> StoreFuture<'_, SvOut> {
        match op {
            SvOp::Lease { .. } | SvOp::Settle(_) => self.submit(|r| Job::Supervision(op, r)),
            read => Box::pin(async move { supervision_read(&*self.reader().await?, read).await }),
        }
    }

    fn paused_destinations(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            Ok(self
                .reader()
                .await?
                .query(
                    "SELECT destination FROM destination_controls WHERE paused ORDER BY destination",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.submit(Job::Close)
    }
}
