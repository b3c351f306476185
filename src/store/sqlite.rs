//! The embedded SQLite engine: one file, WAL, `synchronous = FULL`, and group commit.
//!
//! All writes go through one writer thread. It takes the jobs waiting in its queue
//! (the delivery worker's first, up to a bound; see `super::Waiting`), runs them in
//! one transaction and commits once, so many concurrent requests share one fsync. A
//! batch of intake and delivery jobs runs without savepoints; if one of its jobs
//! fails, the transaction is rolled back and the batch runs again with each job in
//! its own savepoint, so a job that fails rolls back without disturbing the others
//! (as every other batch runs from the start). Reads use their own connection. A lock
//! file keeps a second gateway process off the same database.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::console::{
    self, CaseSearch, CaseSummary, ConsoleOp, ConsoleOut, ConsoleSession, ConsoleUser,
};
use super::supervision::{DueCase, SV_COLUMNS, SvCase, SvOp, SvOut};
use super::{
    AcceptOutcome, AcceptResponse, Asked, AuditFilter, AuditMeta, CaseStanding, CatalogueChange,
    CatalogueItem, Completion, DataKey, DeliveryFilter, DeliveryResult, DeliveryState,
    DeliveryView, Evidence, Exchange, Exchanged, LeaseRequest, LeasedDelivery, MessageView,
    NewMessage, OpenMode, PullAdvance, QueueDepth, RecordView, SealOp, SealOut, Store, StoreError,
    StoreFuture, StoreOptions, StoredRecord, SyncControl, SyncSource, TokenUse, plan,
};
use crate::event::{self, AuditRow, Event};
use crate::hash::{HashAlg, parse_hash};
use crate::record::Kind;
use crate::time::rfc3339;

/// Versioned migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    content_type TEXT,
    idempotency_key TEXT,
    body BLOB NOT NULL,
    body_sha256 TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE TABLE idempotency (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE TABLE records (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    case_no TEXT NOT NULL,
    identity TEXT NOT NULL,
    version INTEGER,
    status TEXT NOT NULL,
    canonical TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX records_message ON records (message_id, idx);
CREATE INDEX records_case ON records (case_no, id);
CREATE TABLE record_versions (
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    identity TEXT NOT NULL,
    version INTEGER NOT NULL,
    record_id INTEGER NOT NULL,
    PRIMARY KEY (source, kind, identity)
) WITHOUT ROWID;
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    record_id INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    record_idx INTEGER NOT NULL,
    destination TEXT NOT NULL,
    case_no TEXT NOT NULL,
    kind TEXT NOT NULL,
    ord_kind INTEGER NOT NULL,
    ord_step INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    last_status INTEGER,
    last_error TEXT,
    receipt TEXT,
    idem_key TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_case_order ON deliveries (destination, case_no, ord_kind, ord_step, id)
    WHERE state = 'pending';
CREATE INDEX deliveries_record ON deliveries (record_id);
CREATE INDEX deliveries_state ON deliveries (state, destination, id);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    node TEXT,
    case_no TEXT,
    kind TEXT,
    message_id TEXT,
    delivery_id INTEGER,
    detail TEXT NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX audit_case ON audit (case_no, seq);
"#,
    r#"
CREATE TABLE audit_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_node ON audit (node, seq);
CREATE INDEX audit_message ON audit (message_id);
"#,
    r#"
CREATE TABLE token_ids (
    node TEXT NOT NULL,
    jti TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    exp INTEGER NOT NULL,
    PRIMARY KEY (node, jti)
) WITHOUT ROWID;
CREATE INDEX token_ids_exp ON token_ids (exp);
"#,
    r#"
CREATE TABLE sync_sources (
    node TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    pulled INTEGER NOT NULL DEFAULT 0,
    pages INTEGER NOT NULL DEFAULT 0,
    last_success INTEGER,
    last_error TEXT,
    last_error_at INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE catalogue (
    item_code TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    item TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
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
    opened_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE case_parties (
    case_no TEXT NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (case_no, node)
) WITHOUT ROWID;
INSERT OR IGNORE INTO cases (case_no, opened_by, region, item_code, opened_at)
    SELECT case_no, source, json_extract(canonical, '$.region'), json_extract(canonical, '$.item_code'), received_at
    FROM records ORDER BY id;
INSERT OR IGNORE INTO case_parties (case_no, node) SELECT DISTINCT case_no, source FROM records;
INSERT OR IGNORE INTO case_parties (case_no, node) SELECT DISTINCT case_no, destination FROM deliveries;
"#,
    // Encryption at rest: the data keys stored values are under (store::sealed).
    r#"
CREATE TABLE data_keys (
    id TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    check_value BLOB NOT NULL,
    added_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // The request that brought a message, sent on with its deliveries.
    r#"
ALTER TABLE messages ADD COLUMN request_id TEXT;
"#,
    // Destinations an operator paused.
    r#"
CREATE TABLE destination_controls (
    destination TEXT PRIMARY KEY,
    paused INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // The console's users and sessions.
    r#"
CREATE TABLE console_users (
    name TEXT PRIMARY KEY,
    roles TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER
) WITHOUT ROWID;
CREATE TABLE console_sessions (
    id_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    seen_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // The console's case search: by time, by opening node, by item.
    r#"
CREATE INDEX cases_opened ON cases (opened_at);
CREATE INDEX cases_node_opened ON cases (opened_by, opened_at);
CREATE INDEX cases_item_opened ON cases (item_code, opened_at);
CREATE INDEX records_case_kind ON records (case_no, kind);
"#,
    // Supervision (电子监察): facts per case, each case's state and next look. A rowid
    // table: its rows are wide (facts), and a WITHOUT ROWID b-tree keeps whole rows
    // in its interior pages (intake wrote a third as many rows a second into it).
    r#"
CREATE TABLE sv_cases (
    id INTEGER PRIMARY KEY,
    case_no TEXT NOT NULL UNIQUE,
    state TEXT,
    transitions INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    item_code TEXT,
    item_name TEXT,
    dept_code TEXT,
    dept_name TEXT,
    region TEXT,
    accepted_at INTEGER,
    deadline INTEGER,
    finished_at INTEGER,
    promised_days REAL,
    used_days REAL,
    quality TEXT NOT NULL DEFAULT '',
    problem TEXT,
    late_steps TEXT NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER,
    facts TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sv_cases_due ON sv_cases (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX sv_cases_state ON sv_cases (state, dept_code);
CREATE TABLE sv_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    owner TEXT NOT NULL,
    until INTEGER NOT NULL
);
"#,
];

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Accept(Box<NewMessage>, Reply<AcceptOutcome>),
    Audit(Event, Reply<()>),
    ArchiveAudit(i64, String, Event, Reply<()>),
    Exchange(Vec<Completion>, Option<LeaseRequest>, Reply<Exchange>),
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
    ClaimToken(TokenUse, Reply<bool>),
    Console(ConsoleOp, Reply<ConsoleOut>),
    Supervision(SvOp, Reply<SvOut>),
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

/// The arguments of [`Store::sync_take`].
struct SyncTake {
    node: String,
    owner: String,
    initial: String,
    now_ms: i64,
    until_ms: i64,
}

/// SQLite engine handle. Cheap to share; the writer thread owns the write connection.
pub struct SqliteStore {
    tx: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    alg: HashAlg,
    _lock: Option<File>,
}

impl SqliteStore {
    /// Open (creating folders, file and schema as needed) and start the writer.
    ///
    /// [`OpenMode::Serve`] is for the gateway: it takes the lock file, so a second
    /// gateway cannot run on the same file, and frees leases left by a crash.
    /// [`OpenMode::Tool`] is for the command-line tools (audit queries, exports,
    /// archives): no lock, leases untouched; its writes are serialised with the
    /// gateway's by SQLite, and the audit chain head is read inside each transaction.
    pub fn open(
        path: &Path,
        options: &StoreOptions,
        mode: OpenMode,
    ) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let open_err = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let lock_path = path.with_extension("lock");
        let lock = match mode {
            OpenMode::Serve => {
                let lock = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(|e| StoreError::Open {
                        path: lock_path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                if lock.try_lock().is_err() {
                    return Err(StoreError::Locked(lock_path.display().to_string()));
                }
                Some(lock)
            }
            OpenMode::Tool => {
                if !path.exists() {
                    return Err(open_err("no such store".into()));
                }
                None
            }
        };
        let mut conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = OFF;
             PRAGMA busy_timeout = 10000;
             PRAGMA cache_size = -16000;
             PRAGMA temp_store = MEMORY;",
        )?;
        migrate(&mut conn)?;
        let alg = match get_meta(&conn, "hash_alg")? {
            Some(stored) => {
                let alg =
                    HashAlg::parse(&stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if mode == OpenMode::Serve && alg != options.audit_hash {
                    return Err(StoreError::Corrupt(format!(
                        "the audit chain of this store uses {}, the config asks for {}; the hash of a chain cannot change",
                        alg.as_str(),
                        options.audit_hash.as_str()
                    )));
                }
                alg
            }
            None => {
                set_meta(&conn, "hash_alg", options.audit_hash.as_str())?;
                options.audit_hash
            }
        };
        if mode == OpenMode::Serve {
            // This process holds the lock: no lease held by anyone else can be live.
            conn.execute(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL,
                     next_attempt_at = MIN(next_attempt_at, ?1)
                 WHERE state = 'pending' AND lease_owner IS NOT NULL",
                [crate::time::now_ms()],
            )?;
            conn.execute(
                "UPDATE sync_sources SET lease_owner = NULL, lease_until = NULL",
                [],
            )?;
        }
        let chain = Chain::load(&conn, alg)?;
        let reader = Connection::open(path)?;
        reader.execute_batch(
            "PRAGMA query_only = ON; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -8000;",
        )?;
        let (tx, rx) = mpsc::channel(8192);
        let retain = options.retain_payloads;
        std::thread::Builder::new()
            .name("hallgate-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, chain, retain))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(SqliteStore {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_path_buf(),
            alg,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Job) -> StoreFuture<'_, T> {
        let (reply, rx) = oneshot::channel();
        let job = make(reply);
        Box::pin(async move {
            self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let reader = self.reader.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = reader
                    .lock()
                    .map_err(|_| StoreError::Corrupt("reader lock poisoned".into()))?;
                f(&conn)
            })
            .await
            .map_err(|_| StoreError::Closed)?
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {applied} is newer than this gateway knows ({}); upgrade hallgate",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM audit_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// The head of the audit chain. Read again inside every write transaction, so
/// several writers (the gateway and a command-line tool) extend one chain.
#[derive(Clone)]
struct Chain {
    alg: HashAlg,
    seq: i64,
    hash: [u8; 32],
}

impl Chain {
    fn load(conn: &Connection, alg: HashAlg) -> Result<Chain, StoreError> {
        let head: Option<(i64, Vec<u8>)> = conn
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (seq, hash) = match head {
            Some((seq, h)) => (
                seq,
                h.try_into()
                    .map_err(|_| StoreError::Corrupt(format!("audit event {seq}: bad hash")))?,
            ),
            // Every event archived: the chain goes on from the last archived one.
            None => match (
                get_meta(conn, "archived_through_seq")?,
                get_meta(conn, "archived_head_hash")?,
            ) {
                (Some(seq), Some(hash)) => (
                    seq.parse().map_err(|_| {
                        StoreError::Corrupt("audit_meta archived_through_seq".into())
                    })?,
                    parse_hash(&hash).ok_or_else(|| {
                        StoreError::Corrupt("audit_meta archived_head_hash".into())
                    })?,
                ),
                _ => (0, event::GENESIS),
            },
        };
        Ok(Chain { alg, seq, hash })
    }

    fn append(&mut self, conn: &Connection, e: &Event) -> Result<(), StoreError> {
        let seq = self.seq + 1;
        let hash = self.alg.chain(&self.hash, &e.canonical_bytes(seq));
        conn.prepare_cached(
            "INSERT INTO audit (seq, at, event, node, case_no, kind, message_id, delivery_id, detail, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            seq,
            e.at_ms,
            e.event.as_str(),
            e.node,
            e.case_no,
            e.kind,
            e.message_id,
            e.delivery_id,
            e.detail.to_string(),
            hash.as_slice()
        ])?;
        self.seq = seq;
        self.hash = hash;
        Ok(())
    }
}

type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    mut chain: Chain,
    retain_payloads: bool,
) {
    let mut closing: Option<Reply<()>> = None;
    let mut waiting = super::Waiting::new();
    while closing.is_none() {
        let first = if waiting.is_empty() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            Some(first)
        } else {
            None
        };
        waiting.fill(first, &mut rx);
        let jobs = waiting.take();
        super::observe_batch(jobs.len(), jobs.len() + waiting.len() + rx.len());
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for job in jobs {
                job.fail(&msg);
            }
            continue;
        }
        // Another process may have appended audit events since our last batch.
        match Chain::load(&conn, chain.alg) {
            Ok(c) => chain = c,
            Err(e) => {
                let msg = e.to_string();
                let _ = conn.execute_batch("ROLLBACK");
                for job in jobs {
                    job.fail(&msg);
                }
                continue;
            }
        }
        // The common batch (intake and delivery exchanges) runs first without a
        // savepoint per job: every page a job touches inside a savepoint is copied
        // to the sub-journal first, which took a third of the writer (perf,
        // BENCHMARKS.md issue 19). If any job fails, the whole transaction is rolled
        // back and the batch runs again with each job in its own savepoint, so a
        // failing job still fails alone.
        let jobs = match optimistic(&conn, &mut chain, jobs, retain_payloads) {
            Optimistic::Done(finishes) => {
                let commit = conn.execute_batch("COMMIT");
                finish(&conn, &mut chain, commit, finishes);
                continue;
            }
            Optimistic::Again(jobs) => jobs,
            Optimistic::Failed(jobs, msg) => {
                for job in jobs {
                    job.fail(&msg);
                }
                continue;
            }
        };
        let mut finishes: Vec<Finish> = Vec::with_capacity(jobs.len());
        for job in jobs {
            match job {
                Job::Close(reply) => closing = Some(reply),
                job => finishes.push(run_job(&conn, &mut chain, job, retain_payloads)),
            }
        }
        let commit = conn.execute_batch("COMMIT");
        finish(&conn, &mut chain, commit, finishes);
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    drop(conn);
    if let Some(reply) = closing {
        let _ = reply.send(Ok(()));
    }
}

/// After a batch's commit: on failure roll back and reload the chain head; then
/// answer every job (with the commit's error, if any).
fn finish(
    conn: &Connection,
    chain: &mut Chain,
    commit: rusqlite::Result<()>,
    finishes: Vec<Finish>,
) {
    let err = commit.as_ref().err().map(|e| e.to_string());
    if err.is_some() {
        let _ = conn.execute_batch("ROLLBACK");
        if let Ok(c) = Chain::load(conn, chain.alg) {
            *chain = c;
        }
    }
    for f in finishes {
        f(err.as_deref());
    }
}

/// What the savepoint-free pass over a batch did.
enum Optimistic {
    /// Every job ran; commit and answer.
    Done(Vec<Finish>),
    /// Not tried (a job that needs its own savepoint), or a job failed and the
    /// transaction was rolled back and begun again: run the jobs one savepoint each.
    Again(Vec<Job>),
    /// A job failed and a new transaction could not begin.
    Failed(Vec<Job>, String),
}

/// Run a batch of intake and exchange jobs without savepoints (see `writer_loop`).
/// The jobs are only borrowed, so that they can run again if one fails.
fn optimistic(conn: &Connection, chain: &mut Chain, jobs: Vec<Job>, retain: bool) -> Optimistic {
    if !jobs
        .iter()
        .all(|j| matches!(j, Job::Accept(..) | Job::Exchange(..) | Job::Ping(_)))
    {
        return Optimistic::Again(jobs);
    }
    let mut outs = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let out = match job {
            Job::Accept(msg, _) => accept(conn, chain, msg, retain).map(Borrowed::Accept),
            Job::Exchange(completions, lease_req, _) => {
                exchange_plain(conn, chain, completions, lease_req.as_ref()).map(Borrowed::Exchange)
            }
            _ => Ok(Borrowed::Ping),
        };
        match out {
            Ok(o) => outs.push(o),
            Err(e) => {
                tracing::debug!(error = %e, "a job failed in a batch without savepoints; the batch runs again, one savepoint each");
                let _ = conn.execute_batch("ROLLBACK");
                if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                    return Optimistic::Failed(jobs, e.to_string());
                }
                return match Chain::load(conn, chain.alg) {
                    Ok(c) => {
                        *chain = c;
                        Optimistic::Again(jobs)
                    }
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK");
                        Optimistic::Failed(jobs, e.to_string())
                    }
                };
            }
        }
    }
    let finishes = jobs
        .into_iter()
        .zip(outs)
        .map(|(job, out)| -> Finish {
            match (job, out) {
                (Job::Accept(_, reply), Borrowed::Accept(o)) => answer(reply, Ok(o)),
                (Job::Exchange(_, _, reply), Borrowed::Exchange(o)) => answer(reply, Ok(o)),
                (Job::Ping(reply), _) => answer(reply, Ok(())),
                (job, _) => {
                    job.fail("a batch answer went to the wrong job");
                    Box::new(|_| {})
                }
            }
        })
        .collect();
    Optimistic::Done(finishes)
}

/// A borrowed job's answer, sent after the commit.
enum Borrowed {
    Accept(AcceptOutcome),
    Exchange(Exchange),
    Ping,
}

/// Send a job's result once the batch is committed, or the commit's error.
fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Finish {
    Box::new(move |commit_err| {
        let _ = reply.send(match commit_err {
            Some(e) => Err(StoreError::Corrupt(format!("commit failed: {e}"))),
            None => result,
        });
    })
}

/// A delivery exchange without savepoints: record the completions, lease more.
fn exchange_plain(
    c: &Connection,
    ch: &mut Chain,
    completions: &[Completion],
    lease_req: Option<&LeaseRequest>,
) -> Result<Exchange, StoreError> {
    let mut out = Exchange::default();
    for done in completions.iter().cloned() {
        if complete(c, ch, done)? {
            out.recorded += 1;
        } else {
            out.lost += 1;
        }
    }
    if let Some(l) = lease_req {
        out.leased = lease(c, &l.destination, &l.owner, l.limit, l.now_ms, l.lease_ms)?;
    }
    Ok(out)
}

impl Job {
    fn fail(self, msg: &str) {
        let e = || StoreError::Corrupt(format!("cannot begin a transaction: {msg}"));
        match self {
            Job::Accept(_, r) => drop(r.send(Err(e()))),
            Job::Audit(_, r) => drop(r.send(Err(e()))),
            Job::ArchiveAudit(_, _, _, r) => drop(r.send(Err(e()))),
            Job::Exchange(_, _, r) => drop(r.send(Err(e()))),
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
            Job::ClaimToken(_, r) => drop(r.send(Err(e()))),
        }
    }
}

fn run_job(conn: &Connection, chain: &mut Chain, job: Job, retain_payloads: bool) -> Finish {
    match job {
        Job::Accept(msg, reply) => in_savepoint(conn, chain, reply, |c, ch| {
            accept(c, ch, &msg, retain_payloads)
        }),
        Job::Audit(e, reply) => in_savepoint(conn, chain, reply, |c, ch| ch.append(c, &e)),
        Job::ArchiveAudit(through, sha, e, reply) => in_savepoint(conn, chain, reply, |c, ch| {
            let hash: Vec<u8> =
                c.query_row("SELECT hash FROM audit WHERE seq = ?1", [through], |r| {
                    r.get(0)
                })?;
            c.execute("DELETE FROM audit WHERE seq <= ?1", [through])?;
            set_meta(c, "archived_through_seq", &through.to_string())?;
            set_meta(c, "archived_head_hash", &hex::encode(hash))?;
            set_meta(c, "last_archive_sha256", &sha)?;
            ch.append(c, &e)
        }),
        Job::Exchange(completions, lease_req, reply) => {
            in_savepoint(conn, chain, reply, |c, ch| {
                let mut out = Exchange::default();
                // All completions at once, in one savepoint: a savepoint each cost
                // half the writer's time (perf, BENCHMARKS.md issue 19). Only if one
                // fails are they undone and recorded one by one, each in its own.
                let mark = ch.clone();
                c.execute_batch("SAVEPOINT all_done")?;
                let mut all = Some(Exchange::default());
                for done in completions.iter().cloned() {
                    let Some(x) = all.as_mut() else {
                        break;
                    };
                    match complete(c, ch, done) {
                        Ok(true) => x.recorded += 1,
                        Ok(false) => x.lost += 1,
                        Err(_) => all = None,
                    }
                }
                let completions = match all {
                    Some(x) => {
                        c.execute_batch("RELEASE all_done")?;
                        out = x;
                        Vec::new()
                    }
                    None => {
                        *ch = mark;
                        c.execute_batch("ROLLBACK TO all_done; RELEASE all_done")?;
                        completions
                    }
                };
                for done in completions {
                    let id = done.id;
                    match nested(c, ch, |c, ch| complete(c, ch, done)) {
                        Ok(true) => out.recorded += 1,
                        Ok(false) => out.lost += 1,
                        Err(e) => {
                            tracing::error!(delivery = id, error = %e, "could not record a delivery attempt; it is sent again when its lease expires");
                            out.lost += 1;
                        }
                    }
                }
                if let Some(l) = lease_req {
                    out.leased = lease(c, &l.destination, &l.owner, l.limit, l.now_ms, l.lease_ms)?;
                }
                Ok(out)
            })
        }
        Job::Release(owner, ids, reply) => in_savepoint(conn, chain, reply, |c, _| {
            let mut stmt = c.prepare_cached(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL,
                     next_attempt_at = MIN(next_attempt_at, ?3)
                 WHERE id = ?1 AND lease_owner = ?2 AND state = 'pending'",
            )?;
            let now = crate::time::now_ms();
            for id in ids {
                stmt.execute(params![id, owner, now])?;
            }
            Ok(())
        }),
        Job::RetryDead(ids, at, asked, one, reply) => in_savepoint(conn, chain, reply, |c, ch| {
            // One id: its refusal (not dead, not found) is the answer; several: the
            // dead ones among them are put back.
            let mut done = Vec::new();
            for id in ids {
                match retry_dead(c, ch, id, at, &asked) {
                    Ok(id) => done.push(id),
                    Err(StoreError::NotDead(_) | StoreError::NotFound) if !one => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(done)
        }),
        Job::Refuse(id, reason, at, reply) => in_savepoint(conn, chain, reply, |c, ch| {
            let row = c
                .query_row(
                    "UPDATE deliveries SET state = 'dead', last_error = ?2, updated_at = ?3,
                         lease_owner = NULL, lease_until = NULL
                     WHERE id = ?1 AND state = 'delivered'
                     RETURNING destination, case_no, kind, message_id, attempts, record_idx",
                    params![id, reason, at],
                    completed_row,
                )
                .optional()?;
            let Some(done) = row else { return Ok(false) };
            ch.append(c, &plan::consumer_refused_event(at, id, &done, &reason))?;
            Ok(true)
        }),
        Job::Ping(reply) => in_savepoint(conn, chain, reply, |_, _| Ok(())),
        Job::ClaimToken(t, reply) => in_savepoint(conn, chain, reply, |c, _| {
            let n = c
                .prepare_cached(
                    "INSERT INTO token_ids (node, jti, token_sha256, exp) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![t.node, t.jti, t.token_sha256, t.exp_ms])?;
            Ok(n == 1)
        }),
        Job::Close(reply) => Box::new(move |_| drop(reply.send(Ok(())))),
        Job::SyncTake(t, reply) => in_savepoint(conn, chain, reply, |c, _| sync_take(c, &t)),
        Job::SyncAdvance(adv, reply) => {
            in_savepoint(conn, chain, reply, |c, ch| advance(c, ch, &adv, 0))
        }
        Job::SyncFailed(node, error, at, reply) => in_savepoint(conn, chain, reply, |c, _| {
            c.execute(
                "UPDATE sync_sources SET last_error = ?2, last_error_at = ?3, updated_at = ?3 WHERE node = ?1",
                params![node, error, at],
            )?;
            Ok(())
        }),
        Job::SyncControl(node, control, event, reply) => {
            in_savepoint(conn, chain, reply, |c, ch| {
                let at = event.at_ms;
                let row = match &control {
                    SyncControl::Pause => c.query_row(
                        &format!("UPDATE sync_sources SET paused = 1, lease_owner = NULL, lease_until = NULL, updated_at = ?2
                                  WHERE node = ?1 RETURNING {SYNC_COLUMNS}"),
                        params![node, at],
                        sync_row,
                    ),
                    SyncControl::Resume => c.query_row(
                        &format!("UPDATE sync_sources SET paused = 0, updated_at = ?2
                                  WHERE node = ?1 RETURNING {SYNC_COLUMNS}"),
                        params![node, at],
                        sync_row,
                    ),
                    SyncControl::Rewind(cursor) => c.query_row(
                        &format!("UPDATE sync_sources SET cursor = ?3, lease_owner = NULL, lease_until = NULL, updated_at = ?2
                                  WHERE node = ?1 RETURNING {SYNC_COLUMNS}"),
                        params![node, at, cursor],
                        sync_row,
                    ),
                }
                .optional()?
                .ok_or_else(|| StoreError::NoSource(node.clone()))?;
                ch.append(c, &event)?;
                Ok(row)
            })
        }
        Job::CatalogueReplace(source, items, at, reply) => {
            in_savepoint(conn, chain, reply, |c, ch| {
                let stored = read_catalogue(c)?;
                let (write, change) = plan::catalogue_change(&stored, items);
                let mut put = c.prepare_cached(
                    "INSERT INTO catalogue (item_code, source, item, status, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (item_code) DO UPDATE SET source = excluded.source, item = excluded.item,
                         status = excluded.status, updated_at = excluded.updated_at",
                )?;
                for item in &write {
                    let text = serde_json::to_string(item)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    put.execute(params![item.item_code, source, text, item.status, at])?;
                }
                if !write.is_empty() {
                    ch.append(c, &plan::catalogue_event(&source, at, &change))?;
                }
                Ok(change)
            })
        }
        Job::Requeue(ids, at, event, reply) => in_savepoint(conn, chain, reply, |c, ch| {
            let mut stmt = c.prepare_cached(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?2,
                     lease_owner = NULL, lease_until = NULL, delivered_at = NULL, updated_at = ?2
                 WHERE id = ?1 AND (state <> 'pending' OR lease_owner IS NULL)",
            )?;
            let mut n = 0;
            for id in ids {
                n += stmt.execute(params![id, at])?;
            }
            ch.append(c, &event)?;
            Ok(n)
        }),
        Job::Sealed(op, reply) => in_savepoint(conn, chain, reply, |c, _| sealed_op(c, op)),
        Job::Console(op, reply) => in_savepoint(conn, chain, reply, |c, ch| console_op(c, ch, op)),
        Job::Supervision(op, reply) => in_savepoint(conn, chain, reply, |c, ch| {
            supervision_write(c, ch, op, retain_payloads)
        }),
        Job::PauseDestination(dest, paused, event, reply) => {
            in_savepoint(conn, chain, reply, |c, ch| {
                c.execute(
                    "INSERT INTO destination_controls (destination, paused, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (destination) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
                    params![dest, paused, event.at_ms],
                )?;
                ch.append(c, &event)
            })
        }
    }
}

fn sv_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SvCase> {
    Ok(SvCase {
        case_no: r.get(0)?,
        state: r.get(1)?,
        transitions: r.get(2)?,
        version: r.get(3)?,
        item_code: r.get(4)?,
        item_name: r.get(5)?,
        dept_code: r.get(6)?,
        dept_name: r.get(7)?,
        region: r.get(8)?,
        accepted_ms: r.get(9)?,
        deadline_ms: r.get(10)?,
        finished_ms: r.get(11)?,
        promised_days: r.get(12)?,
        used_days: r.get(13)?,
        quality: r.get(14)?,
        problem: r.get(15)?,
        late_steps: r.get(16)?,
        updated_ms: r.get(17)?,
    })
}

/// Supervision's questions (`store::supervision`), on a reader.
fn supervision_read(c: &Connection, op: SvOp) -> Result<SvOut, StoreError> {
    Ok(match op {
        SvOp::Due { now_ms, limit } => {
            let mut cases = c.prepare_cached(&format!(
                "SELECT {SV_COLUMNS}, facts FROM sv_cases WHERE due_at IS NOT NULL AND due_at <= ?1
                 ORDER BY due_at LIMIT ?2"
            ))?;
            let rows = cases.query_map(params![now_ms, limit as i64], |r| {
                Ok(DueCase {
                    row: sv_row(r)?,
                    facts: super::supervision::fact_lines(&r.get::<_, String>(18)?),
                })
            })?;
            SvOut::Due(rows.collect::<Result<_, _>>()?)
        }
        SvOp::Cases(f) => {
            let states = format!(",{},", f.states.join(","));
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SV_COLUMNS} FROM sv_cases
                 WHERE (?1 = ',,' OR instr(?1, ',' || state || ',') > 0)
                   AND (?2 IS NULL OR dept_code = ?2)
                   AND (?3 IS NULL OR accepted_at >= ?3) AND (?4 IS NULL OR accepted_at < ?4)
                   AND (?5 IS NULL OR case_no > ?5)
                 ORDER BY case_no LIMIT ?6"
            ))?;
            let rows = stmt.query_map(
                params![
                    states,
                    f.dept_code,
                    f.accepted_from_ms,
                    f.accepted_to_ms,
                    f.after,
                    f.limit as i64
                ],
                sv_row,
            )?;
            SvOut::Cases(rows.collect::<Result<_, _>>()?)
        }
        SvOp::Counts => {
            let mut stmt = c.prepare_cached(
                "SELECT state, coalesce(dept_code, ''), count(*) FROM sv_cases
                 WHERE state IN ('on_time', 'warning', 'overdue', 'suspended')
                 GROUP BY state, dept_code",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            SvOut::Counts(rows.collect::<Result<_, _>>()?)
        }
        SvOp::Case(case_no) => SvOut::Case(
            c.query_row(
                &format!("SELECT {SV_COLUMNS} FROM sv_cases WHERE case_no = ?1"),
                [case_no],
                sv_row,
            )
            .optional()?
            .map(Box::new),
        ),
        SvOp::Lease { .. } | SvOp::Settle(_) => {
            return Err(StoreError::Corrupt(
                "a supervision change sent to a reader".into(),
            ));
        }
    })
}

/// Supervision's changes, in the writer: the timer's lease, and settlements, each
/// applied only if its case is as it was read.
fn supervision_write(
    c: &Connection,
    ch: &mut Chain,
    op: SvOp,
    retain_payloads: bool,
) -> Result<SvOut, StoreError> {
    match op {
        SvOp::Lease {
            owner,
            now_ms,
            until_ms,
        } => {
            let n = c.execute(
                "INSERT INTO sv_lease (id, owner, until) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, until = excluded.until
                 WHERE sv_lease.owner = excluded.owner OR sv_lease.until < ?3",
                params![owner, until_ms, now_ms],
            )?;
            Ok(SvOut::Leased(n == 1))
        }
        SvOp::Settle(list) => {
            let mut update = c.prepare_cached(
                "UPDATE sv_cases SET state = ?2, transitions = transitions + ?3, item_code = ?4,
                     item_name = ?5, dept_code = ?6, dept_name = ?7, region = ?8, accepted_at = ?9,
                     deadline = ?10, finished_at = ?11, promised_days = ?12, used_days = ?13,
                     quality = ?14, problem = ?15, late_steps = ?16, updated_at = ?17, due_at = ?18
                 WHERE case_no = ?1 AND version = ?19 AND transitions = ?20",
            )?;
            let mut applied = 0;
            for s in list {
                let r = &s.row;
                let n = update.execute(params![
                    r.case_no,
                    r.state,
                    i64::from(s.transition.is_some()),
                    r.item_code,
                    r.item_name,
                    r.dept_code,
                    r.dept_name,
                    r.region,
                    r.accepted_ms,
                    r.deadline_ms,
                    r.finished_ms,
                    r.promised_days,
                    r.used_days,
                    r.quality,
                    r.problem,
                    r.late_steps,
                    r.updated_ms,
                    s.due_ms,
                    r.version,
                    r.transitions
                ])?;
                if n == 0 {
                    continue;
                }
                applied += 1;
                if let Some(t) = s.transition {
                    if let Some(msg) = t.alert {
                        match accept(c, ch, &msg, retain_payloads)? {
                            AcceptOutcome::Accepted(_) | AcceptOutcome::Replayed(_) => {}
                            other => {
                                return Err(StoreError::Corrupt(format!(
                                    "an alert was not stored: {other:?}"
                                )));
                            }
                        }
                    }
                    ch.append(c, &t.event)?;
                }
            }
            Ok(SvOut::Settled(applied))
        }
        read => supervision_read(c, read),
    }
}

/// The console's users and sessions (`store::console`).
fn console_op(c: &Connection, ch: &mut Chain, op: ConsoleOp) -> Result<ConsoleOut, StoreError> {
    const USER: &str =
        "SELECT name, roles, password_hash, disabled, failures, locked_until FROM console_users";
    let user_row = |r: &rusqlite::Row<'_>| {
        Ok(ConsoleUser {
            name: r.get(0)?,
            roles: console::roles_of(&r.get::<_, String>(1)?),
            password_hash: r.get(2)?,
            disabled: r.get(3)?,
            failures: r.get(4)?,
            locked_until_ms: r.get(5)?,
        })
    };
    let session_row = |r: &rusqlite::Row<'_>| {
        Ok(ConsoleSession {
            id_sha256: r.get(0)?,
            user: r.get(1)?,
            csrf: r.get(2)?,
            created_ms: r.get(3)?,
            seen_ms: r.get(4)?,
            expires_ms: r.get(5)?,
        })
    };
    Ok(match op {
        ConsoleOp::User(name) => ConsoleOut::User(
            c.query_row(&format!("{USER} WHERE name = ?1"), [name], user_row)
                .optional()?,
        ),
        ConsoleOp::Users => {
            let mut stmt = c.prepare(&format!("{USER} ORDER BY name"))?;
            let rows = stmt.query_map([], user_row)?;
            ConsoleOut::Users(rows.collect::<Result<_, _>>()?)
        }
        ConsoleOp::PutUser(u, event) => {
            c.execute(
                "INSERT INTO console_users (name, roles, password_hash, disabled, failures, locked_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET roles = excluded.roles,
                     password_hash = excluded.password_hash, disabled = excluded.disabled,
                     failures = excluded.failures, locked_until = excluded.locked_until",
                params![
                    u.name,
                    console::roles_text(&u.roles),
                    u.password_hash,
                    u.disabled,
                    u.failures,
                    u.locked_until_ms
                ],
            )?;
            if u.disabled {
                c.execute("DELETE FROM console_sessions WHERE user = ?1", [&u.name])?;
            }
            ch.append(c, &event)?;
            ConsoleOut::Done
        }
        ConsoleOp::Attempt {
            user,
            ok,
            at_ms,
            lock_after,
            lock_ms,
            event,
        } => {
            if ok {
                c.execute(
                    "UPDATE console_users SET failures = 0, locked_until = NULL WHERE name = ?1",
                    [&user],
                )?;
            } else {
                c.execute(
                    "UPDATE console_users SET failures = failures + 1,
                         locked_until = CASE WHEN failures + 1 >= ?2 THEN ?3 ELSE locked_until END
                     WHERE name = ?1",
                    params![user, lock_after, at_ms + lock_ms],
                )?;
            }
            ch.append(c, &event)?;
            ConsoleOut::User(
                c.query_row(&format!("{USER} WHERE name = ?1"), [user], user_row)
                    .optional()?,
            )
        }
        ConsoleOp::Open(s) => {
            c.execute(
                "INSERT INTO console_sessions (id_sha256, user, csrf, created_at, seen_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![s.id_sha256, s.user, s.csrf, s.created_ms, s.seen_ms, s.expires_ms],
            )?;
            // Sessions long expired go as new ones come.
            c.execute(
                "DELETE FROM console_sessions WHERE expires_at < ?1",
                [s.created_ms - 86_400_000],
            )?;
            ConsoleOut::Session(Some(s))
        }
        ConsoleOp::Touch {
            id_sha256,
            at_ms,
            idle_ms,
            max_ms,
        } => ConsoleOut::Session(
            c.query_row(
                "UPDATE console_sessions SET seen_at = ?2, expires_at = min(?2 + ?3, created_at + ?4)
                 WHERE id_sha256 = ?1 AND expires_at > ?2
                   AND user IN (SELECT name FROM console_users WHERE disabled = 0)
                 RETURNING id_sha256, user, csrf, created_at, seen_at, expires_at",
                params![id_sha256, at_ms, idle_ms, max_ms],
                session_row,
            )
            .optional()?,
        ),
        ConsoleOp::Close(id, event) => {
            c.execute("DELETE FROM console_sessions WHERE id_sha256 = ?1", [id])?;
            ch.append(c, &event)?;
            ConsoleOut::Done
        }
    })
}

/// Data keys and raw stored values for encryption at rest (`store::sealed`).
fn sealed_op(c: &Connection, op: SealOp) -> Result<SealOut, StoreError> {
    Ok(match op {
        SealOp::Keys => {
            let mut stmt =
                c.prepare("SELECT id, alg, check_value FROM data_keys ORDER BY added_at, id")?;
            let rows = stmt.query_map([], |r| {
                Ok(DataKey {
                    id: r.get(0)?,
                    alg: r.get(1)?,
                    check: r.get(2)?,
                })
            })?;
            SealOut::Keys(rows.collect::<Result<_, _>>()?)
        }
        SealOp::SetKeys { add, forget } => {
            for k in add {
                c.execute(
                    "INSERT OR IGNORE INTO data_keys (id, alg, check_value, added_at) VALUES (?1, ?2, ?3, ?4)",
                    params![k.id, k.alg, k.check, crate::time::now_ms()],
                )?;
            }
            for id in forget {
                c.execute("DELETE FROM data_keys WHERE id = ?1", [id])?;
            }
            SealOut::Done
        }
        SealOp::Messages { after, limit } => {
            let mut stmt =
                c.prepare("SELECT id, body FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows =
                stmt.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            SealOut::Messages(rows.collect::<Result<_, _>>()?)
        }
        SealOp::Records { after, limit } => {
            let mut stmt =
                c.prepare("SELECT id, canonical FROM records WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                Ok((r.get(0)?, r.get::<_, String>(1)?.into_bytes()))
            })?;
            SealOut::Records(rows.collect::<Result<_, _>>()?)
        }
        SealOp::Reseal { messages, records } => {
            let mut n = 0;
            let mut stmt =
                c.prepare_cached("UPDATE messages SET body = ?3 WHERE id = ?1 AND body = ?2")?;
            for m in messages {
                n += stmt.execute(params![m.key, m.old, m.new])?;
            }
            let text = |b: Vec<u8>| {
                String::from_utf8(b)
                    .map_err(|_| StoreError::Corrupt("a sealed record is not text".into()))
            };
            let mut stmt = c.prepare_cached(
                "UPDATE records SET canonical = ?3 WHERE id = ?1 AND canonical = ?2",
            )?;
            for r in records {
                n += stmt.execute(params![r.key, text(r.old)?, text(r.new)?])?;
            }
            SealOut::Resealed(n)
        }
    })
}

const SYNC_COLUMNS: &str =
    "node, cursor, paused, pulled, pages, last_success, last_error, last_error_at,
    lease_owner, lease_until, updated_at";

fn sync_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SyncSource> {
    Ok(SyncSource {
        node: r.get(0)?,
        cursor: r.get(1)?,
        paused: r.get::<_, i64>(2)? != 0,
        pulled: r.get(3)?,
        pages: r.get(4)?,
        last_success_ms: r.get(5)?,
        last_error: r.get(6)?,
        last_error_ms: r.get(7)?,
        lease_owner: r.get(8)?,
        lease_until_ms: r.get(9)?,
        updated_ms: r.get(10)?,
    })
}

fn sync_take(c: &Connection, t: &SyncTake) -> Result<Option<SyncSource>, StoreError> {
    c.execute(
        "INSERT INTO sync_sources (node, cursor, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT (node) DO NOTHING",
        params![t.node, t.initial, t.now_ms],
    )?;
    let taken = c
        .query_row(
            &format!(
                "UPDATE sync_sources SET lease_owner = ?2, lease_until = ?3
                 WHERE node = ?1 AND paused = 0
                   AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until < ?4)
                 RETURNING {SYNC_COLUMNS}"
            ),
            params![t.node, t.owner, t.until_ms, t.now_ms],
            sync_row,
        )
        .optional()?;
    if taken.is_some() {
        return Ok(taken);
    }
    let row = c.query_row(
        &format!("SELECT {SYNC_COLUMNS} FROM sync_sources WHERE node = ?1"),
        [&t.node],
        sync_row,
    )?;
    Ok(row.paused.then_some(row))
}

/// Move a source's cursor, under its lease, and append the page's events.
fn advance(
    c: &Connection,
    chain: &mut Chain,
    adv: &PullAdvance,
    new_records: i64,
) -> Result<(), StoreError> {
    let n = c
        .prepare_cached(
            "UPDATE sync_sources SET cursor = ?3, pulled = pulled + ?4, pages = pages + 1,
                 last_success = ?5, last_error = NULL, last_error_at = NULL, lease_until = ?6, updated_at = ?5
             WHERE node = ?1 AND lease_owner = ?2 AND paused = 0",
        )?
        .execute(params![
            adv.node,
            adv.owner,
            adv.cursor,
            new_records,
            adv.at_ms,
            adv.lease_until_ms
        ])?;
    if n == 0 {
        return Err(StoreError::LeaseLost(adv.node.clone()));
    }
    for e in &adv.events {
        chain.append(c, e)?;
    }
    Ok(())
}

fn read_catalogue(c: &Connection) -> Result<Vec<CatalogueItem>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT item FROM catalogue ORDER BY item_code")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(
            serde_json::from_str(&row?)
                .map_err(|e| StoreError::Corrupt(format!("catalogue item: {e}")))?,
        );
    }
    Ok(out)
}

/// Run `f` in a nested savepoint: on failure its writes and chain advance are undone
/// and the enclosing job goes on.
fn nested<T>(
    conn: &Connection,
    chain: &mut Chain,
    f: impl FnOnce(&Connection, &mut Chain) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mark = chain.clone();
    conn.execute_batch("SAVEPOINT part")?;
    match f(conn, chain) {
        Ok(v) => {
            conn.execute_batch("RELEASE part")?;
            Ok(v)
        }
        Err(e) => {
            *chain = mark;
            let _ = conn.execute_batch("ROLLBACK TO part; RELEASE part");
            Err(e)
        }
    }
}

/// Run one job in its own savepoint; on failure undo its writes and chain advance.
/// The reply is sent only after the batch's commit.
fn in_savepoint<T: Send + 'static>(
    conn: &Connection,
    chain: &mut Chain,
    reply: Reply<T>,
    f: impl FnOnce(&Connection, &mut Chain) -> Result<T, StoreError>,
) -> Finish {
    let mark = chain.clone();
    let result = conn
        .execute_batch("SAVEPOINT job")
        .map_err(StoreError::from)
        .and_then(|()| f(conn, chain));
    let result = match result {
        Ok(v) => conn
            .execute_batch("RELEASE job")
            .map(|()| v)
            .map_err(StoreError::from),
        Err(e) => Err(e),
    };
    if result.is_err() {
        *chain = mark;
        let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
    }
    answer(reply, result)
}

fn accept(
    conn: &Connection,
    chain: &mut Chain,
    msg: &NewMessage,
    retain_payloads: bool,
) -> Result<AcceptOutcome, StoreError> {
    if let Some(key) = &msg.idempotency_key {
        let prior: Option<String> = conn
            .prepare_cached(
                "SELECT m.response FROM idempotency i JOIN messages m ON m.id = i.message_id
                 WHERE i.source = ?1 AND i.key = ?2",
            )?
            .query_row(params![msg.source, key], |r| r.get(0))
            .optional()?;
        if let Some(resp) = prior {
            let parsed: AcceptResponse = serde_json::from_str(&resp)
                .map_err(|e| StoreError::Corrupt(format!("stored response: {e}")))?;
            return Ok(AcceptOutcome::Replayed(parsed));
        }
    }
    if let Some(t) = &msg.token {
        let seen: Option<String> = conn
            .prepare_cached("SELECT token_sha256 FROM token_ids WHERE node = ?1 AND jti = ?2")?
            .query_row(params![t.node, t.jti], |r| r.get(0))
            .optional()?;
        match seen {
            Some(sha) if sha != t.token_sha256 => {
                chain.append(conn, &plan::replay_event(msg))?;
                return Ok(AcceptOutcome::TokenReplayed);
            }
            Some(_) => {}
            None => {
                conn.prepare_cached(
                    "INSERT INTO token_ids (node, jti, token_sha256, exp) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![t.node, t.jti, t.token_sha256, t.exp_ms])?;
                // Token ids are kept until their tokens can no longer be used.
                conn.prepare_cached("DELETE FROM token_ids WHERE exp < ?1")?
                    .execute(params![plan::token_ids_expired_before(
                        crate::time::now_ms()
                    )])?;
            }
        }
    }
    // Versions first: a stale record refuses the whole body before anything is written.
    let mut stored = Vec::with_capacity(msg.records.len());
    let mut unchanged = Vec::with_capacity(msg.records.len());
    {
        let mut get = conn.prepare_cached(
            "SELECT version FROM record_versions WHERE source = ?1 AND kind = ?2 AND identity = ?3",
        )?;
        let mut latest = conn.prepare_cached(
            "SELECT sha256 FROM records WHERE source = ?1 AND kind = ?2 AND identity = ?3
             ORDER BY id DESC LIMIT 1",
        )?;
        for r in &msg.records {
            stored.push(match r.version {
                None => None,
                Some(_) => get
                    .query_row(params![msg.source, r.kind.as_str(), r.identity], |row| {
                        row.get(0)
                    })
                    .optional()?,
            });
            unchanged.push(match (&msg.pull, r.version) {
                (Some(_), None) => latest
                    .query_row(params![msg.source, r.kind.as_str(), r.identity], |row| {
                        row.get::<_, String>(0)
                    })
                    .optional()?
                    .is_some_and(|sha| sha == r.sha256),
                _ => false,
            });
        }
    }
    let standing = standing(conn, msg)?;
    let (statuses, response, response_json, received) =
        match plan::accept(msg, &stored, &unchanged, &standing) {
            plan::AcceptPlan::Stale { stale, event } => {
                chain.append(conn, &event)?;
                return Ok(AcceptOutcome::Stale(stale));
            }
            plan::AcceptPlan::NotParty { records, event } => {
                chain.append(conn, &event)?;
                return Ok(AcceptOutcome::NotParty(records));
            }
            plan::AcceptPlan::Store {
                statuses,
                response,
                response_json,
                received,
            } => (statuses, response, response_json, received),
        };
    if let Some(adv) = &msg.pull {
        let new_records = statuses.iter().filter(|s| **s == "accepted").count() as i64;
        advance(conn, chain, adv, new_records)?;
        if !statuses.iter().any(|s| plan::stored(msg, s)) {
            return Ok(AcceptOutcome::Accepted(response));
        }
    }
    conn.prepare_cached(
        "INSERT INTO messages (id, source, received_at, content_type, idempotency_key, body, body_sha256, response, request_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        msg.id,
        msg.source,
        msg.received_at_ms,
        msg.content_type,
        msg.idempotency_key,
        if retain_payloads { msg.body.as_ref() } else { &[][..] },
        msg.body_sha256,
        response_json,
        msg.request_id
    ])?;
    if let Some(key) = &msg.idempotency_key {
        conn.prepare_cached(
            "INSERT INTO idempotency (source, key, message_id, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![msg.source, key, msg.id, msg.received_at_ms])?;
    }
    chain.append(conn, &received)?;
    let mut ins_record = conn.prepare_cached(
        "INSERT INTO records (message_id, idx, source, kind, case_no, identity, version, status, canonical, sha256, received_at, flags)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut upsert_version = conn.prepare_cached(
        "INSERT INTO record_versions (source, kind, identity, version, record_id) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (source, kind, identity) DO UPDATE SET version = excluded.version, record_id = excluded.record_id",
    )?;
    let mut ins_delivery = conn.prepare_cached(
        "INSERT INTO deliveries (record_id, message_id, record_idx, destination, case_no, kind, ord_kind, ord_step,
                                 state, attempts, next_attempt_at, idem_key, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?9, ?10, ?9, ?9)",
    )?;
    for (r, status) in msg.records.iter().zip(&statuses) {
        if !plan::stored(msg, status) {
            continue;
        }
        ins_record.execute(params![
            msg.id,
            r.index as i64,
            msg.source,
            r.kind.as_str(),
            r.case_no,
            r.identity,
            r.version,
            status,
            r.canonical,
            r.sha256,
            msg.received_at_ms,
            plan::flags_column(&r.flags)
        ])?;
        let record_id = conn.last_insert_rowid();
        chain.append(conn, &plan::accepted_event(msg, r, status))?;
        if *status != "accepted" {
            continue;
        }
        if !r.flags.is_empty() {
            chain.append(conn, &plan::flagged_event(msg, r))?;
        }
        if let Some(v) = r.version {
            upsert_version.execute(params![
                msg.source,
                r.kind.as_str(),
                r.identity,
                v,
                record_id
            ])?;
        }
        for dest in &r.destinations {
            ins_delivery.execute(params![
                record_id,
                msg.id,
                r.index as i64,
                dest,
                r.case_no,
                r.kind.as_str(),
                r.kind.rank(),
                r.step_no,
                msg.received_at_ms,
                plan::delivery_key(msg, r, dest)
            ])?;
        }
        chain.append(conn, &plan::routed_event(msg, r))?;
        if let Some(f) = &r.fact {
            let row = &f.row;
            conn.prepare_cached(&SV_INTAKE)?.execute(params![
                row.case_no,
                row.state,
                row.transitions,
                row.version,
                row.item_code,
                row.item_name,
                row.dept_code,
                row.dept_name,
                row.region,
                row.accepted_ms,
                row.deadline_ms,
                row.finished_ms,
                row.promised_days,
                row.used_days,
                row.quality,
                row.problem,
                row.late_steps,
                row.updated_ms,
                f.due_ms,
                super::supervision::fact_line(msg.received_at_ms, &f.fact)
            ])?;
        }
    }
    join_cases(conn, msg, &statuses, &standing)?;
    Ok(AcceptOutcome::Accepted(response))
}

/// How intake stores a record's supervision fact.
static SV_INTAKE: LazyLock<String> = LazyLock::new(|| super::supervision::intake_sql('?'));

/// Where the sender stands with the case of each record.
fn standing(conn: &Connection, msg: &NewMessage) -> Result<Vec<CaseStanding>, StoreError> {
    let mut case = conn.prepare_cached(
        "SELECT c.region, c.item_code,
                EXISTS (SELECT 1 FROM case_parties p WHERE p.case_no = c.case_no AND p.node = ?2)
         FROM cases c WHERE c.case_no = ?1",
    )?;
    let mut out: Vec<CaseStanding> = Vec::with_capacity(msg.records.len());
    for (i, r) in msg.records.iter().enumerate() {
        // A case named twice in one body is looked up once.
        if let Some(j) = msg.records[..i].iter().position(|e| e.case_no == r.case_no) {
            out.push(out[j].clone());
            continue;
        }
        let found = case
            .query_row(params![r.case_no, msg.source], |row| {
                Ok(if row.get::<_, bool>(2)? {
                    CaseStanding::Party
                } else {
                    CaseStanding::Other {
                        region: row.get(0)?,
                        item_code: row.get(1)?,
                    }
                })
            })
            .optional()?;
        out.push(found.unwrap_or(CaseStanding::New));
    }
    Ok(out)
}

/// Open the new cases of a stored message, and make its sender and the
/// destinations of its records parties of theirs.
fn join_cases(
    conn: &Connection,
    msg: &NewMessage,
    statuses: &[&str],
    standing: &[CaseStanding],
) -> Result<(), StoreError> {
    let mut open = conn.prepare_cached(
        "INSERT INTO cases (case_no, opened_by, region, item_code, opened_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (case_no) DO UPDATE SET region = coalesce(cases.region, excluded.region),
                                             item_code = coalesce(cases.item_code, excluded.item_code)",
    )?;
    let mut party = conn.prepare_cached(
        "INSERT INTO case_parties (case_no, node) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for ((r, status), st) in msg.records.iter().zip(statuses).zip(standing) {
        if !plan::stored(msg, status) {
            continue;
        }
        if *st != CaseStanding::Party {
            open.execute(params![
                r.case_no,
                msg.source,
                r.region,
                r.item_code,
                msg.received_at_ms
            ])?;
            party.execute(params![r.case_no, msg.source])?;
        }
        if *status == "accepted" {
            for d in &r.destinations {
                party.execute(params![r.case_no, d])?;
            }
        }
    }
    Ok(())
}

/// A leased delivery is not due again before its lease ends: `next_attempt_at` moves
/// to the lease's end, so the due index holds only the deliveries free to lease and
/// a lease stops after the rows it takes, however many are held. (Walking past the
/// held ones was a quarter of the gateway's time in a profile, BENCHMARKS.md.)
const LEASE_MARK: &str =
    "UPDATE deliveries SET lease_owner = ?2, lease_until = ?3, next_attempt_at = ?3 WHERE id = ?1";

fn lease(
    conn: &Connection,
    destination: &str,
    owner: &str,
    limit: usize,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Vec<LeasedDelivery>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.message_id, d.destination, d.case_no, d.kind, r.canonical, d.idem_key, d.attempts, d.created_at,
                (SELECT m.request_id FROM messages m WHERE m.id = d.message_id)
         FROM deliveries d JOIN records r ON r.id = d.record_id
         WHERE d.state = 'pending' AND d.destination = ?1 AND d.next_attempt_at <= ?2
           AND (d.lease_until IS NULL OR d.lease_until <= ?2)
           AND NOT EXISTS (
               SELECT 1 FROM deliveries e
               WHERE e.state = 'pending' AND e.destination = d.destination AND e.case_no = d.case_no
                 AND (e.ord_kind, e.ord_step, e.id) < (d.ord_kind, d.ord_step, d.id))
         ORDER BY d.next_attempt_at, d.id
         LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![destination, now_ms, limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, Option<String>>(9)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            id,
            message_id,
            destination,
            case_no,
            kind,
            canonical,
            key,
            attempts,
            created,
            request,
        ) = row?;
        out.push(LeasedDelivery {
            id,
            message_id,
            destination,
            case_no,
            kind: parse_kind(&kind)?,
            canonical,
            idempotency_key: key,
            request_id: request,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            created_at_ms: created,
        });
    }
    let mut mark = conn.prepare_cached(LEASE_MARK)?;
    for d in &out {
        mark.execute(params![d.id, owner, now_ms + lease_ms])?;
    }
    Ok(out)
}

fn parse_kind(s: &str) -> Result<Kind, StoreError> {
    Kind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown record kind `{s}`")))
}

fn complete(conn: &Connection, chain: &mut Chain, c: Completion) -> Result<bool, StoreError> {
    let sql = match &c.result {
        DeliveryResult::Delivered { .. } => {
            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, last_status = ?3,
                 receipt = ?4, last_error = NULL, lease_owner = NULL, lease_until = NULL,
                 delivered_at = ?5, updated_at = ?5
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'pending' AND ?6 = ?6
             RETURNING destination, case_no, kind, message_id, attempts, record_idx"
        }
        DeliveryResult::Retry { .. } => {
            "UPDATE deliveries SET attempts = attempts + 1, last_status = ?3, last_error = ?4,
                 next_attempt_at = ?6, lease_owner = NULL, lease_until = NULL, updated_at = ?5
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'pending'
             RETURNING destination, case_no, kind, message_id, attempts, record_idx"
        }
        DeliveryResult::Dead { .. } => {
            "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, last_status = ?3,
                 last_error = ?4, lease_owner = NULL, lease_until = NULL, updated_at = ?5
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'pending' AND ?6 = ?6
             RETURNING destination, case_no, kind, message_id, attempts, record_idx"
        }
    };
    let (status, text, next) = plan::completion_columns(&c);
    let done = conn
        .prepare_cached(sql)?
        .query_row(
            params![c.id, c.owner, status, text, c.at_ms, next],
            completed_row,
        )
        .optional()?;
    let Some(done) = done else {
        return Ok(false);
    };
    for e in plan::completion_events(&c, &done) {
        chain.append(conn, &e)?;
    }
    if !c.receipts.is_empty() && !matches!(c.result, DeliveryResult::Retry { .. }) {
        // The last delivery of a record settled: its sender's receipt, once.
        let senders = serde_json::to_string(&*c.receipts).unwrap_or_else(|_| "[]".into());
        conn.prepare_cached(plan::QUEUE_RECEIPT_SQLITE)?
            .execute(params![c.id, c.at_ms, senders])?;
    }
    Ok(true)
}

/// A delivery's `RETURNING destination, case_no, kind, message_id, attempts, record_idx`.
fn completed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<plan::Completed> {
    Ok(plan::Completed {
        destination: r.get(0)?,
        case_no: r.get(1)?,
        kind: r.get(2)?,
        message_id: r.get(3)?,
        attempts: r.get(4)?,
        index: r.get(5)?,
    })
}

fn retry_dead(
    conn: &Connection,
    chain: &mut Chain,
    id: i64,
    at_ms: i64,
    asked: &Asked,
) -> Result<i64, StoreError> {
    let row = conn
        .query_row(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?2,
                 lease_owner = NULL, lease_until = NULL, updated_at = ?2
             WHERE id = ?1 AND state = 'dead'
             RETURNING destination, case_no, kind, message_id, attempts, record_idx",
            params![id, at_ms],
            completed_row,
        )
        .optional()?;
    let Some(done) = row else {
        let exists: Option<i64> = conn
            .query_row("SELECT id FROM deliveries WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        return Err(match exists {
            Some(_) => StoreError::NotDead(id),
            None => StoreError::NotFound,
        });
    };
    chain.append(conn, &plan::manual_retry_event(at_ms, id, &done, asked))?;
    Ok(id)
}

const DELIVERY_COLUMNS: &str = "id, message_id, record_idx, destination, case_no, kind, state, attempts,
    next_attempt_at, last_status, last_error, receipt, idem_key, created_at, updated_at, delivered_at,
    lease_until";

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryView> {
    let state: String = r.get(6)?;
    let kind: String = r.get(5)?;
    let state = DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending);
    Ok(DeliveryView {
        id: r.get(0)?,
        message_id: r.get(1)?,
        record_index: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
        destination: r.get(3)?,
        case_no: r.get(4)?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Application),
        state,
        attempts: r.get::<_, i64>(7)?.try_into().unwrap_or(0),
        next_attempt_at: (state == DeliveryState::Pending).then(|| rfc3339(r.get(8).unwrap_or(0))),
        last_status: r
            .get::<_, Option<i64>>(9)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(10)?,
        receipt: r.get(11)?,
        idempotency_key: r.get(12)?,
        created_at: rfc3339(r.get(13)?),
        updated_at: rfc3339(r.get(14)?),
        delivered_at: r.get::<_, Option<i64>>(15)?.map(rfc3339),
        leased_until: r
            .get::<_, Option<i64>>(16)?
            .filter(|until| state == DeliveryState::Pending && *until > crate::time::now_ms())
            .map(rfc3339),
    })
}

fn records_where(
    conn: &Connection,
    clause: &str,
    arg: &str,
) -> Result<Vec<RecordView>, StoreError> {
    let sql = format!(
        "SELECT id, message_id, idx, source, received_at, kind, case_no, status, version, sha256, canonical, flags
         FROM records WHERE {clause} ORDER BY received_at, id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([arg], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            RecordView {
                message_id: r.get(1)?,
                index: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                source: r.get(3)?,
                received_at: rfc3339(r.get(4)?),
                kind: Kind::parse(&r.get::<_, String>(5)?).unwrap_or(Kind::Application),
                case_no: r.get(6)?,
                status: r.get(7)?,
                version: r.get(8)?,
                sha256: r.get(9)?,
                flags: plan::parse_flags(r.get::<_, Option<String>>(11)?.as_deref()),
                record: serde_json::from_str(&r.get::<_, String>(10)?).unwrap_or(Value::Null),
                deliveries: Vec::new(),
            },
        ))
    })?;
    let mut deliveries = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE record_id = ?1 ORDER BY id"
    ))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, mut view) = row?;
        view.deliveries = deliveries
            .query_map([id], delivery_row)?
            .collect::<Result<_, _>>()?;
        out.push(view);
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn accept(&self, msg: NewMessage) -> StoreFuture<'_, AcceptOutcome> {
        self.submit(|r| Job::Accept(Box::new(msg), r))
    }

    fn audit(&self, event: Event) -> StoreFuture<'_, ()> {
        self.submit(|r| Job::Audit(event, r))
    }

    fn claim_token(&self, token: TokenUse) -> StoreFuture<'_, bool> {
        self.submit(|r| Job::ClaimToken(token, r))
    }

    fn archive_audit(
        &self,
        through_seq: i64,
        archive_sha256: String,
        event: Event,
    ) -> StoreFuture<'_, ()> {
        self.submit(|r| Job::ArchiveAudit(through_seq, archive_sha256, event, r))
    }

    fn exchange(
        &self,
        completions: Vec<Completion>,
        lease: Option<LeaseRequest>,
    ) -> StoreFuture<'_, Exchange> {
        self.submit(|r| Job::Exchange(completions, lease, r))
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
            self.read(move |c| {
                c.query_row(
                    &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"),
                    [id],
                    delivery_row,
                )
                .map_err(StoreError::from)
            })
            .await
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.submit(Job::Ping)
    }

    fn message(&self, id: &str) -> StoreFuture<'_, Option<MessageView>> {
        let id = id.to_string();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT id, source, received_at, content_type, idempotency_key, length(body), body_sha256, response
                     FROM messages WHERE id = ?1",
                    [&id],
                    |r| {
                        Ok(MessageView {
                            id: r.get(0)?,
                            source: r.get(1)?,
                            received_at: rfc3339(r.get(2)?),
                            content_type: r.get(3)?,
                            idempotency_key: r.get(4)?,
                            body_bytes: r.get::<_, i64>(5)?.try_into().unwrap_or(0),
                            body_sha256: r.get(6)?,
                            response: serde_json::from_str(&r.get::<_, String>(7)?)
                                .unwrap_or(Value::Null),
                            records: Vec::new(),
                        })
                    },
                )
                .optional()?;
            match row {
                None => Ok(None),
                Some(mut m) => {
                    m.records = records_where(c, "message_id = ?1", &id)?;
                    Ok(Some(m))
                }
            }
        })
    }

    fn case(&self, case_no: &str) -> StoreFuture<'_, Vec<RecordView>> {
        let case_no = case_no.to_string();
        self.read(move |c| records_where(c, "case_no = ?1", &case_no))
    }

    fn evidence(&self, ids: Vec<String>) -> StoreFuture<'_, Vec<Evidence>> {
        self.read(move |c| {
            let mut out: Vec<Evidence> = Vec::with_capacity(ids.len());
            // Read as bytes whatever their storage class: an edit in the file may
            // have turned a blob into text or the other way round, and that must be
            // a mismatch named like any other, not a read error.
            let mut message = c.prepare_cached(
                "SELECT CAST(body AS BLOB), CAST(body_sha256 AS BLOB) FROM messages WHERE id = ?1",
            )?;
            let mut records = c.prepare_cached(
                "SELECT idx, CAST(canonical AS BLOB), CAST(sha256 AS BLOB) FROM records
                 WHERE message_id = ?1 ORDER BY idx",
            )?;
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            for id in ids {
                let Some((body, body_sha256)) = message
                    .query_row([&id], |r| {
                        Ok((
                            r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(),
                            text(r.get::<_, Option<Vec<u8>>>(1)?.unwrap_or_default()),
                        ))
                    })
                    .optional()?
                else {
                    continue;
                };
                let records = records
                    .query_map([&id], |r| {
                        Ok(StoredRecord {
                            index: r.get::<_, i64>(0)?.try_into().unwrap_or(usize::MAX),
                            canonical: r.get::<_, Option<Vec<u8>>>(1)?.unwrap_or_default(),
                            sha256: text(r.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default()),
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                out.push(Evidence {
                    message_id: id,
                    body: body.into(),
                    body_sha256,
                    records,
                });
            }
            Ok(out)
        })
    }

    fn case_standing(&self, case_no: &str, node: &str) -> StoreFuture<'_, CaseStanding> {
        let (case_no, node) = (case_no.to_string(), node.to_string());
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT c.region, c.item_code,
                        EXISTS (SELECT 1 FROM case_parties p WHERE p.case_no = c.case_no AND p.node = ?2)
                 FROM cases c WHERE c.case_no = ?1",
            )?
            .query_row(params![case_no, node], |row| {
                Ok(if row.get::<_, bool>(2)? {
                    CaseStanding::Party
                } else {
                    CaseStanding::Other {
                        region: row.get(0)?,
                        item_code: row.get(1)?,
                    }
                })
            })
            .optional()?
            .unwrap_or(CaseStanding::New))
        })
    }

    fn deliveries(&self, f: DeliveryFilter) -> StoreFuture<'_, Vec<DeliveryView>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR destination = ?2)
                   AND (?3 IS NULL OR case_no = ?3) AND id > ?4 AND created_at >= ?6
                   AND (?7 IS NULL OR (state = 'pending' AND coalesce(lease_until, 0) > ?8) = ?7)
                 ORDER BY id LIMIT ?5"
            ))?;
            let rows = stmt.query_map(
                params![
                    f.state.map(DeliveryState::as_str),
                    f.destination,
                    f.case_no,
                    f.after_id.unwrap_or(0),
                    f.limit as i64,
                    f.since_ms.unwrap_or(0),
                    f.leased,
                    crate::time::now_ms()
                ],
                delivery_row,
            )?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)
        })
    }

    fn record_deliveries(&self, id: i64) -> StoreFuture<'_, Vec<DeliveryView>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries
                 WHERE record_id = (SELECT record_id FROM deliveries WHERE id = ?1) ORDER BY id"
            ))?;
            let rows = stmt.query_map([id], delivery_row)?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)
        })
    }

    fn queue_depths(&self) -> StoreFuture<'_, Vec<QueueDepth>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT destination,
                        sum(state = 'pending'), sum(state = 'dead'),
                        min(CASE WHEN state = 'pending' THEN created_at END)
                 FROM deliveries INDEXED BY deliveries_state
                 WHERE state IN ('pending', 'dead') GROUP BY destination ORDER BY destination",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(QueueDepth {
                    destination: r.get(0)?,
                    pending: r.get(1)?,
                    dead: r.get(2)?,
                    oldest_pending_ms: r.get(3)?,
                })
            })?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)
        })
    }

    fn pending_bytes(&self, destination: &str) -> StoreFuture<'_, i64> {
        let destination = destination.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT coalesce(sum(length(CAST(r.canonical AS BLOB))), 0)
                 FROM deliveries d JOIN records r ON r.id = d.record_id
                 WHERE d.state = 'pending' AND d.destination = ?1",
            )?
            .query_row([destination], |r| r.get(0))?)
        })
    }

    fn audit_meta(&self) -> StoreFuture<'_, AuditMeta> {
        let alg = self.alg;
        self.read(move |c| {
            let through = get_meta(c, "archived_through_seq")?.and_then(|v| v.parse().ok());
            let head = get_meta(c, "archived_head_hash")?;
            let (live_first, live_last): (Option<i64>, Option<i64>) =
                c.query_row("SELECT min(seq), max(seq) FROM audit", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            Ok(AuditMeta {
                alg,
                archived_through_seq: through,
                archived_head_hash: head,
                last_archive_sha256: get_meta(c, "last_archive_sha256")?,
                live_first_seq: live_first,
                live_last_seq: live_last,
            })
        })
    }

    fn audit_count(&self, f: AuditFilter) -> StoreFuture<'_, i64> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT count(*) FROM audit
                 WHERE (?1 IS NULL OR case_no = ?1) AND (?2 IS NULL OR node = ?2)
                   AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR event = ?4)
                   AND (?5 IS NULL OR at >= ?5) AND (?6 IS NULL OR at < ?6)",
            )?
            .query_row(
                params![f.case_no, f.node, f.kind, f.event, f.from_ms, f.to_ms],
                |r| r.get(0),
            )
            .map_err(StoreError::from)
        })
    }

    fn audit_events(&self, f: AuditFilter) -> StoreFuture<'_, Vec<AuditRow>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, at, event, node, case_no, kind, message_id, delivery_id, detail, hash
                 FROM audit
                 WHERE seq > ?1 AND (?2 IS NULL OR seq <= ?2)
                   AND (?3 IS NULL OR case_no = ?3) AND (?4 IS NULL OR node = ?4)
                   AND (?5 IS NULL OR kind = ?5) AND (?6 IS NULL OR event = ?6)
                   AND (?7 IS NULL OR at >= ?7) AND (?8 IS NULL OR at < ?8)
                   AND (?9 IS NULL OR message_id = ?9)
                 ORDER BY seq LIMIT ?10",
            )?;
            let rows = stmt.query_map(
                params![
                    f.after_seq.unwrap_or(0),
                    f.through_seq,
                    f.case_no,
                    f.node,
                    f.kind,
                    f.event,
                    f.from_ms,
                    f.to_ms,
                    f.message_id,
                    f.limit as i64
                ],
                |r| {
                    let detail: String = r.get(8)?;
                    let hash: Vec<u8> = r.get(9)?;
                    Ok(AuditRow {
                        seq: r.get(0)?,
                        at_ms: r.get(1)?,
                        event: r.get(2)?,
                        node: r.get(3)?,
                        case_no: r.get(4)?,
                        kind: r.get(5)?,
                        message_id: r.get(6)?,
                        delivery_id: r.get(7)?,
                        // A detail that is not JSON no longer matches its hash:
                        // verification names it.
                        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                        hash: hex::encode(hash),
                    })
                },
            )?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)
        })
    }

    fn sync_sources(&self) -> StoreFuture<'_, Vec<SyncSource>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {SYNC_COLUMNS} FROM sync_sources ORDER BY node"
            ))?;
            let rows = stmt.query_map([], sync_row)?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)
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
        self.read(read_catalogue)
    }

    fn exchanged(&self, node: &str, from_ms: i64, to_ms: i64) -> StoreFuture<'_, Vec<Exchanged>> {
        let node = node.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT d.id, d.kind, d.case_no, r.identity, r.version, json_extract(r.canonical, '$.op'),
                        COALESCE(d.delivered_at, d.created_at), d.created_at, d.state
                 FROM deliveries d JOIN records r ON r.id = d.record_id
                 WHERE d.destination = ?1
                   AND ((d.created_at BETWEEN ?2 AND ?3) OR (d.delivered_at BETWEEN ?2 AND ?3))
                 UNION ALL
                 SELECT NULL, kind, case_no, identity, version, json_extract(canonical, '$.op'),
                        received_at, received_at, NULL
                 FROM records WHERE source = ?1 AND status = 'accepted' AND received_at BETWEEN ?2 AND ?3",
            )?;
            let rows = stmt.query_map(params![node, from_ms, to_ms], |r| {
                let delivery_id: Option<i64> = r.get(0)?;
                Ok(Exchanged {
                    direction: if delivery_id.is_some() { "delivered" } else { "pulled" },
                    kind: Kind::parse(&r.get::<_, String>(1)?).unwrap_or(Kind::Application),
                    case_no: r.get(2)?,
                    identity: r.get(3)?,
                    version: r.get(4)?,
                    op: r.get::<_, Option<String>>(5)?.unwrap_or_else(|| "upsert".into()),
                    at_ms: r.get(6)?,
                    received_ms: r.get(7)?,
                    delivery_id,
                    state: r
                        .get::<_, Option<String>>(8)?
                        .and_then(|s| DeliveryState::parse(&s)),
                })
            })?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)
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
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT c.case_no, c.opened_by, c.region, c.item_code, c.opened_at FROM cases c
                 WHERE (?1 IS NULL OR c.opened_by = ?1) AND (?2 IS NULL OR c.item_code = ?2)
                   AND c.opened_at >= ?3 AND c.opened_at < ?4
                   AND (?5 IS NULL OR EXISTS (SELECT 1 FROM records r WHERE r.case_no = c.case_no AND r.kind = ?5))
                 ORDER BY c.opened_at DESC LIMIT ?6",
            )?;
            let rows = stmt.query_map(
                params![
                    q.node,
                    q.item_code,
                    q.from_ms.unwrap_or(i64::MIN),
                    q.to_ms.unwrap_or(i64::MAX),
                    q.kind,
                    q.limit as i64
                ],
                |r| {
                    Ok(CaseSummary {
                        case_no: r.get(0)?,
                        opened_by: r.get(1)?,
                        region: r.get(2)?,
                        item_code: r.get(3)?,
                        opened_ms: r.get(4)?,
                    })
                },
            )?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)
        })
    }

    fn console(&self, op: ConsoleOp) -> StoreFuture<'_, ConsoleOut> {
        self.submit(|r| Job::Console(op, r))
    }

    fn supervision(&self, op: SvOp) -> StoreFuture<'_, SvOut> {
        match op {
            SvOp::Lease { .. } | SvOp::Settle(_) => self.submit(|r| Job::Supervision(op, r)),
            read => self.read(move |c| supervision_read(c, read)),
        }
    }

    fn paused_destinations(&self) -> StoreFuture<'_, Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT destination FROM destination_controls WHERE paused = 1 ORDER BY destination",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.submit(Job::Close)
    }
}
