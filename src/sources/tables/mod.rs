//! The table source: a node's 前置库 exchange tables (`[[nodes.ID.tables.source]]`)
//! read batch by batch. Each pending row becomes a JSON object of its columns
//! (`frontdb::cell`), and a batch goes through the same decode (the node's mapping
//! of the table's kind), validation, catalogue, authorisation and routing as a
//! pushed body ([`Intake::admit`]), then into the store with its audit event in one
//! transaction. Only after that commit are the rows marked in the 前置库: `done`
//! (`1`) for a stored or already-stored record, `failed` (`2`) with the field, rule
//! and message (masked, cut to the error column's length) for a refused one.
//!
//! A crash between the commit and the marks leaves the rows pending; they are read
//! again, recognised as already stored (same record, same content or version), and
//! marked then. A row its producer rewrote is a new version and is stored and
//! delivered again; an older version than one stored is refused. One gateway reads
//! a table at a time: a lease in the store, as pull sources take (named
//! `NODE/TABLE`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Source, SourceFuture};
use crate::config::TableSettings;
use crate::event::{Event, EventKind};
use crate::frontdb::{self, FrontDb, FrontDbError, Mark, MarkWrite, cell};
use crate::hash::sha256_hex;
use crate::intake::{Admission, Intake};
use crate::record::mask_text;
use crate::store::{AcceptOutcome, NewMessage, PullAdvance, StoreError};
use crate::time::now_ms;

mod cursor;
mod prepare;
mod rows;
pub use prepare::{Prepared, prepare};
pub mod status;

/// How long a reader holds a table without committing before another may take it.
const LEASE_MS: i64 = 30_000;
/// How often the pending rows of each table are counted for `/metrics`.
const COUNT_EVERY: Duration = Duration::from_secs(10);

/// Why reading a table failed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("前置库 of node `{node}`: {source}")]
    Db {
        node: String,
        #[source]
        source: FrontDbError,
    },
    /// The tables or columns the config names are not in the database.
    #[error("前置库 of node `{node}` does not match the config:\n  {}", problems.join("\n  "))]
    Shape { node: String, problems: Vec<String> },
    #[error("node `{0}` has no [nodes.{0}.tables]")]
    NotConfigured(String),
    #[error("table `{table}`: the batch was refused: {reason}")]
    Refused { table: String, reason: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub rows: usize,
    /// Records stored now (not already stored).
    pub new: usize,
    pub done: u64,
    pub failed: u64,
    /// The batch was full: more may be waiting.
    pub more: bool,
}

/// One node's table source: its 前置库 and the tables read from it.
pub struct TableReader {
    intake: Arc<Intake>,
    db: Arc<dyn FrontDb>,
    node: String,
    owner: String,
    zone: i32,
    tables: Option<Vec<Prepared>>,
}

impl TableReader {
    /// Connect (lazily) to the node's 前置库.
    pub fn new(intake: Arc<Intake>, node: &str, owner: &str) -> Result<TableReader, TableError> {
        let settings = settings(&intake, node)?;
        let db_err = |source| TableError::Db {
            node: node.to_string(),
            source,
        };
        let password = frontdb::password(settings, &intake.config.base_dir()).map_err(db_err)?;
        let db = frontdb::open(settings, password, &intake.config.base_dir()).map_err(db_err)?;
        let zone = settings
            .zone_seconds()
            .map_err(|e| db_err(FrontDbError::Query(e)))?;
        Ok(TableReader {
            intake,
            db,
            node: node.to_string(),
            owner: owner.to_string(),
            zone,
            tables: None,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Read the tables' shapes and check them against the config.
    pub async fn prepare(&mut self) -> Result<&[Prepared], TableError> {
        let settings = settings(&self.intake, &self.node)?;
        let tables = prepare(&self.node, settings, &*self.db).await?;
        Ok(self.tables.insert(tables))
    }

    /// Read until `shutdown`: each table in turn, again at once while a batch was
    /// full, else after the shortest interval; back off on errors.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        // Pending rows are counted (a COUNT(*) per table) at most this often.
        let mut counted: Option<std::time::Instant> = None;
        loop {
            let round = self.round(&shutdown).await;
            self.publish_health(round.is_ok());
            if round.is_ok() && counted.is_none_or(|t| t.elapsed() >= COUNT_EVERY) {
                counted = Some(std::time::Instant::now());
                match self.pending_counts().await {
                    Ok(counts) => {
                        for (table, n) in counts {
                            metrics::gauge!("hallgate_table_pending_rows", "table" => format!("{}/{table}", self.node))
                                .set(n as f64);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(node = %self.node, error = %mask_text(&e.to_string()), "cannot count pending rows")
                    }
                }
            }
            let wait = match round {
                Ok(true) => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(false) => {
                    failures = 0;
                    self.interval()
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let text = mask_text(&e.to_string());
                    tracing::warn!(node = %self.node, error = %text, failures, "前置库 read failed; backing off");
                    metrics::counter!("hallgate_table_errors_total", "node" => self.node.clone())
                        .increment(1);
                    if let Some(tables) = &self.tables {
                        for t in tables {
                            if let Err(err) = self
                                .intake
                                .store
                                .sync_failed(&t.name, text.clone(), now_ms())
                                .await
                            {
                                tracing::error!(source = %t.name, error = %err, "could not record a table failure");
                            }
                        }
                    }
                    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6)))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// `hallgate_table_failing` and, after a good round, the time of the last success.
    fn publish_health(&self, ok: bool) {
        for t in self.tables.as_deref().unwrap_or_default() {
            let labels = [("table", t.name.clone())];
            metrics::gauge!("hallgate_table_failing", &labels).set(if ok { 0.0 } else { 1.0 });
            if ok {
                metrics::gauge!("hallgate_table_last_success_timestamp_seconds", &labels)
                    .set(now_ms() as f64 / 1000.0);
            }
        }
    }

    fn interval(&self) -> Duration {
        let ms = settings(&self.intake, &self.node)
            .ok()
            .and_then(|s| s.source.iter().map(|t| t.interval_ms).min())
            .unwrap_or(2_000);
        Duration::from_millis(ms)
    }

    /// One batch from each table, in the configured order; whether any was full.
    pub async fn round(&mut self, shutdown: &CancellationToken) -> Result<bool, TableError> {
        if self.tables.is_none() {
            self.prepare().await?;
        }
        let tables = self.tables.clone().unwrap_or_default();
        let mut more = false;
        for (i, t) in tables.iter().enumerate() {
            if shutdown.is_cancelled() {
                return Ok(false);
            }
            more |= self.batch(t, &tables[..i]).await?.more;
        }
        Ok(more)
    }

    /// Read, store and mark one batch of a table; a row whose case still has a
    /// pending row in an `earlier` table waits.
    pub async fn batch(
        &self,
        t: &Prepared,
        earlier: &[Prepared],
    ) -> Result<BatchOutcome, TableError> {
        let now = now_ms();
        let Some(source) = self
            .intake
            .store
            .sync_take(&t.name, &self.owner, "{}".into(), now, now + LEASE_MS)
            .await?
        else {
            return Ok(BatchOutcome::default());
        };
        if source.paused {
            return Ok(BatchOutcome::default());
        }
        if let Some((dest, level)) = self.intake.backlog.feeds_full(&self.node) {
            tracing::info!(source = %t.name, "table paused: {}", self.intake.backlog.describe(&dest, &level));
            return Ok(BatchOutcome::default());
        }
        let spec = &t.spec;
        let mut from = if t.cursor {
            cursor::parse(&source.cursor, t.order.len())
        } else {
            None
        };
        let mut rows = self
            .db
            .pending(&t.read_from(from.as_ref()))
            .await
            .map_err(|e| self.db_error(e))?;
        if rows.is_empty() && from.is_some() {
            // The end of a pass: read again from the top.
            from = None;
            rows = self
                .db
                .pending(&t.read())
                .await
                .map_err(|e| self.db_error(e))?;
            if rows.is_empty() {
                self.restart(t).await?;
            }
        }
        if rows.is_empty() {
            self.publish_pending(t, 0);
            return Ok(BatchOutcome::default());
        }
        let mut full = rows.len() >= spec.batch;
        // Where the next batch starts: after this one's last row while the pass goes
        // on; where this one started while rows of it wait for their case; the top
        // when a row of a case here lies behind the cursor.
        let mut next = match full && t.cursor {
            true => cursor::last(&rows, &t.at.order),
            false => None,
        };
        let mut holding = false;
        if let Some(case_at) = t.at.case {
            let (held, behind) = self
                .held_cases(t, &rows, case_at, earlier, from.as_ref())
                .await?;
            if !held.is_empty() {
                holding = true;
                next = match behind {
                    true => None,
                    false => from.as_ref().map(|b| b.values().to_vec()),
                };
                rows.retain(|r| {
                    cell::text(r.get(case_at).and_then(Option::as_ref))
                        .is_none_or(|c| !held.contains(&c))
                });
                if rows.is_empty() {
                    if behind {
                        self.restart(t).await?;
                        return Ok(BatchOutcome {
                            more: true,
                            ..BatchOutcome::default()
                        });
                    }
                    return Ok(BatchOutcome::default());
                }
            }
        }
        let options = rows::BodyOptions {
            zone: self.zone,
            keep_blobs: self.intake.config.audit.retain_payloads,
            max_bytes: self.intake.config.limits.max_body_bytes,
        };
        let rows::Body {
            bytes,
            row_of_record,
            mut marks,
            taken,
        } = rows::body(t, &rows, &options);
        if taken < rows.len() {
            // The body reached its limit: the rest waits for the next batch.
            rows.truncate(taken);
            full = true;
            if t.cursor && !holding {
                next = cursor::last(&rows, &t.at.order);
            }
        }
        let bytes = bytes::Bytes::from(bytes);
        let mut reasons: Vec<Value> = Vec::new();
        let mut new = 0;
        let admitted = if row_of_record.is_empty() {
            None
        } else {
            Some(
                self.intake
                    .admit_async(
                        &self.node,
                        Some(spec.kind),
                        bytes.clone(),
                        Some("application/json".into()),
                        Admission::Page,
                    )
                    .await
                    .map_err(|r| TableError::Refused {
                        table: spec.table.clone(),
                        reason: format!("{}: {}", r.code, mask_text(&r.message)),
                    })?,
            )
        };
        // Refusals by field, rule and message, per row; the rows refused for their
        // item alone (`not_in_catalogue`).
        let mut refused: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut item_only: BTreeMap<usize, bool> = BTreeMap::new();
        if let Some(a) = &admitted {
            for e in &a.errors {
                let Some(&row) = row_of_record.get(e.record) else {
                    continue;
                };
                let item = e.rule.starts_with("item_") && e.field == "item_code";
                *item_only.entry(row).or_insert(true) &= item;
                refused
                    .entry(row)
                    .or_default()
                    .push(format!("{}: {}: {}", e.field, e.rule, e.message));
                reasons.push(json!({"row": row, "field": e.field, "rule": e.rule}));
            }
        }
        let at = now_ms();
        let mut event = Event::new(at, EventKind::TableRead);
        event.node = Some(self.node.clone());
        event.detail = json!({
            "table": spec.table,
            "rows": rows.len(),
            "keys": marks.iter().map(|m| m.key.join("|")).collect::<Vec<_>>(),
            "unreadable": marks.iter().filter(|m| m.error.is_some()).count(),
            "refused": refused.len(),
            "reasons": reasons,
            "body_sha256": sha256_hex(&bytes),
            // Which instance read it (the holder of the table's lease).
            "reader": self.owner,
        });
        let advance = PullAdvance {
            node: t.name.clone(),
            owner: self.owner.clone(),
            cursor: cursor::write(next.as_deref()),
            at_ms: at,
            lease_until_ms: at + LEASE_MS,
            events: vec![event],
        };
        let new_records = admitted.map(|a| a.new_records).unwrap_or_default();
        if new_records.is_empty() {
            match self.intake.store.sync_advance(advance).await {
                Err(StoreError::LeaseLost(_)) => return Ok(BatchOutcome::default()),
                other => other?,
            }
        } else {
            let msg = NewMessage {
                token: None,
                id: uuid::Uuid::now_v7().to_string(),
                source: self.node.clone(),
                received_at_ms: at,
                content_type: Some("application/json".into()),
                idempotency_key: None,
                body_sha256: sha256_hex(&bytes),
                body: bytes,
                records: new_records,
                pull: Some(advance),
                grants: crate::intake::grants(&self.intake.config, &self.node),
                request_id: Some(format!("table-{}", uuid::Uuid::now_v7().simple())),
            };
            let outcome = match self.intake.commit(msg).await {
                Err(StoreError::LeaseLost(_)) => return Ok(BatchOutcome::default()),
                other => other?,
            };
            let (AcceptOutcome::Accepted(resp) | AcceptOutcome::Replayed(resp)) = outcome else {
                return Err(TableError::Refused {
                    table: spec.table.clone(),
                    reason: "the store refused the batch as if it were pushed".into(),
                });
            };
            for r in &resp.records {
                let Some(&row) = row_of_record.get(r.index) else {
                    continue;
                };
                match r.status.as_str() {
                    "accepted" => new += 1,
                    "duplicate" => {}
                    "stale" => refused.entry(row).or_default().push(
                        "version: stale: a newer version of this record is already stored".into(),
                    ),
                    other => refused
                        .entry(row)
                        .or_default()
                        .push(format!("record: {other}")),
                }
            }
            metrics::counter!("hallgate_records_accepted_total", "node" => self.node.clone())
                .increment(new as u64);
            crate::observe::minutes::accepted(new as u64);
        }
        for (row, texts) in refused {
            if let Some(m) = marks.get_mut(row) {
                m.flag = match (&spec.not_in_catalogue, item_only.get(&row)) {
                    (Some(flag), Some(true)) => flag.clone(),
                    _ => spec.failed.clone(),
                };
                m.error = Some(texts.join("; "));
            }
        }
        for m in &mut marks {
            if let Some(e) = &m.error {
                m.error = Some(truncate(&mask_text(e), t.error_chars));
            }
        }
        let mut out = self.mark(t, &marks, rows.len(), new).await?;
        out.more = full;
        Ok(out)
    }

    /// Mark the rows of a stored batch and audit the marks.
    async fn mark(
        &self,
        t: &Prepared,
        marks: &[Mark],
        rows: usize,
        new: usize,
    ) -> Result<BatchOutcome, TableError> {
        let spec = &t.spec;
        let write = MarkWrite {
            shape: &t.shape,
            keys: &spec.keys,
            flag: &spec.flag,
            sync_date: &spec.sync_date,
            error: &spec.error,
            version: spec.version.as_deref(),
            pending: &spec.pending,
            at: cell::local_time(now_ms(), self.zone),
        };
        let marked = self
            .db
            .mark(&write, marks)
            .await
            .map_err(|e| self.db_error(e))?;
        let failed = marks.iter().filter(|m| m.flag != spec.done).count() as u64;
        let done = marks.len() as u64 - failed;
        let mut event = Event::new(now_ms(), EventKind::TableMarked);
        event.node = Some(self.node.clone());
        event.detail = json!({
            "table": spec.table,
            "done": done,
            "failed": failed,
            "marked": marked,
            "failed_keys": marks.iter().filter(|m| m.flag != spec.done).map(|m| m.key.join("|")).collect::<Vec<_>>(),
        });
        self.intake.store.audit(event).await?;
        let labels = [("table", t.name.clone())];
        metrics::counter!("hallgate_table_rows_read_total", &labels).increment(rows as u64);
        metrics::counter!("hallgate_table_rows_marked_total", "table" => t.name.clone(), "flag" => "done")
            .increment(done);
        metrics::counter!("hallgate_table_rows_marked_total", "table" => t.name.clone(), "flag" => "failed")
            .increment(failed);
        if rows < spec.batch {
            self.publish_pending(t, 0);
        }
        tracing::debug!(source = %t.name, rows, new, done, failed, marked, "table batch");
        Ok(BatchOutcome {
            rows,
            new,
            done,
            failed,
            more: rows >= spec.batch,
        })
    }

    fn publish_pending(&self, t: &Prepared, n: u64) {
        metrics::gauge!("hallgate_table_pending_rows", "table" => t.name.clone()).set(n as f64);
    }

    fn db_error(&self, source: FrontDbError) -> TableError {
        TableError::Db {
            node: self.node.clone(),
            source,
        }
    }

    /// How many rows of each table are pending.
    pub async fn pending_counts(&self) -> Result<Vec<(String, u64)>, TableError> {
        let mut out = Vec::new();
        for t in self.tables.as_deref().unwrap_or_default() {
            let read = t.read();
            let n = self
                .db
                .count_pending(&read)
                .await
                .map_err(|e| self.db_error(e))?;
            out.push((t.spec.table.clone(), n));
        }
        Ok(out)
    }
}

fn settings<'a>(intake: &'a Intake, node: &str) -> Result<&'a TableSettings, TableError> {
    intake
        .config
        .node(node)
        .and_then(|n| n.tables.as_ref())
        .ok_or_else(|| TableError::NotConfigured(node.to_string()))
}

/// At most `chars` characters, cut on a character boundary.
fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    }
}

impl Source for TableReader {
    fn run(self: Box<Self>, shutdown: CancellationToken) -> SourceFuture {
        Box::pin(TableReader::run(*self, shutdown))
    }
}

/// A reader for every node with `[nodes.ID.tables]` sources.
pub fn readers(intake: &Arc<Intake>) -> Result<Vec<TableReader>, TableError> {
    let owner = format!(
        "{}-tables-{}",
        intake.config.gateway.id,
        uuid::Uuid::now_v7()
    );
    let mut out = Vec::new();
    for (id, node) in &intake.config.nodes {
        if node
            .get_ref()
            .tables
            .as_ref()
            .is_some_and(|t| !t.source.is_empty())
        {
            out.push(TableReader::new(intake.clone(), id, &owner)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncates_on_characters() {
        assert_eq!(super::truncate("申请人证件号码", 3), "申请人");
        assert_eq!(super::truncate("ab", 5), "ab");
    }
}
