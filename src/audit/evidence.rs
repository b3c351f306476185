//! The evidence behind the chain: the chain vouches for each received body
//! (`received.detail.body_sha256`) and each stored record
//! (`accepted.detail.record_sha256`). Verifying the chain proves those events are
//! the ones written; this proves the store still holds what they vouch for, by
//! hashing every retained body and every stored record again.
//!
//! Events are read in sequence order, live log and archives alike; the events of one
//! message are consecutive (written in its transaction), so messages are checked in
//! batches as their events complete, and memory stays bounded by the batch.

use std::collections::BTreeMap;
use std::path::Path;

use super::AuditError;
use super::archive;
use crate::event::AuditRow;
use crate::hash::sha256_hex;
use crate::store::{AuditFilter, Evidence, Store};

/// Messages checked at once.
const BATCH: usize = 500;

/// What the evidence check found (when it found nothing wrong).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EvidenceReport {
    /// Messages whose `received` event was checked against the store.
    pub messages: u64,
    /// Bodies hashed again.
    pub bodies: u64,
    /// Bodies not kept (`[audit] retain_payloads = false`): their stored hash only.
    pub not_retained: u64,
    /// Records hashed again.
    pub records: u64,
    /// Messages whose events are archived and were not checked (no `--archives`).
    pub unchecked_archived: bool,
}

/// What the chain says of one message.
struct Vouch {
    id: String,
    received_seq: i64,
    body_sha256: String,
    /// Record index → (seq of its `accepted` event, record_sha256).
    records: BTreeMap<usize, (i64, String)>,
}

struct Checker<'s> {
    store: &'s dyn Store,
    pending: Vec<Vouch>,
    report: EvidenceReport,
}

impl Checker<'_> {
    fn push(&mut self, row: &AuditRow) {
        let Some(id) = &row.message_id else { return };
        match row.event.as_str() {
            "received" => {
                if let Some(sha) = row.detail["body_sha256"].as_str() {
                    self.pending.push(Vouch {
                        id: id.clone(),
                        received_seq: row.seq,
                        body_sha256: sha.to_string(),
                        records: BTreeMap::new(),
                    });
                }
            }
            "accepted" => {
                let (Some(index), Some(sha)) = (
                    row.detail["index"].as_u64(),
                    row.detail["record_sha256"].as_str(),
                ) else {
                    return;
                };
                if let Some(v) = self.pending.iter_mut().rev().find(|v| v.id == *id) {
                    v.records.insert(index as usize, (row.seq, sha.to_string()));
                }
            }
            _ => {}
        }
    }

    /// Check the messages whose events are complete: all but the last, unless `all`.
    async fn flush(&mut self, all: bool) -> Result<(), AuditError> {
        let keep = usize::from(!all && !self.pending.is_empty());
        if self.pending.len() <= keep {
            return Ok(());
        }
        let done: Vec<Vouch> = self.pending.drain(..self.pending.len() - keep).collect();
        for chunk in done.chunks(BATCH) {
            let ids = chunk.iter().map(|v| v.id.clone()).collect();
            let held: BTreeMap<String, Evidence> = self
                .store
                .evidence(ids)
                .await?
                .into_iter()
                .map(|e| (e.message_id.clone(), e))
                .collect();
            for v in chunk {
                check(v, held.get(&v.id), &mut self.report)?;
            }
        }
        Ok(())
    }
}

/// Compare one message as stored with what its events vouch for.
fn check(
    v: &Vouch,
    held: Option<&Evidence>,
    report: &mut EvidenceReport,
) -> Result<(), AuditError> {
    let found = |what: String| Err(AuditError::Evidence(what));
    let Some(e) = held else {
        return found(format!(
            "message {} (received in event {}) is missing from the store",
            v.id, v.received_seq
        ));
    };
    report.messages += 1;
    if e.body_sha256 != v.body_sha256 {
        return found(format!(
            "message {}: the body hash stored with it differs from the one event {} recorded",
            v.id, v.received_seq
        ));
    }
    if e.body.is_empty() {
        report.not_retained += 1;
    } else if sha256_hex(&e.body) != v.body_sha256 {
        return found(format!(
            "message {}: its stored body does not hash to the body_sha256 event {} recorded (the body was changed)",
            v.id, v.received_seq
        ));
    } else {
        report.bodies += 1;
    }
    for r in &e.records {
        let Some((seq, sha)) = v.records.get(&r.index) else {
            return found(format!(
                "record {} of message {}: no accepted event vouches for it (it was added)",
                r.index, v.id
            ));
        };
        if r.sha256 != *sha || sha256_hex(&r.canonical) != *sha {
            return found(format!(
                "record {} of message {}: its stored content does not hash to the record_sha256 event {seq} recorded (the record was changed)",
                r.index, v.id
            ));
        }
        report.records += 1;
    }
    if let Some((index, (seq, _))) = v
        .records
        .iter()
        .find(|(i, _)| !e.records.iter().any(|r| r.index == **i))
    {
        return found(format!(
            "record {index} of message {} (accepted in event {seq}) is missing from the store",
            v.id
        ));
    }
    Ok(())
}

/// Hash every retained body and stored record again and compare them with the chain:
/// the archives in `archives` first (when given), then the live log.
pub async fn verify(
    store: &dyn Store,
    archives: Option<&Path>,
    mut on_progress: impl FnMut(u64),
) -> Result<EvidenceReport, AuditError> {
    let mut c = Checker {
        store,
        pending: Vec::new(),
        report: EvidenceReport::default(),
    };
    let mut seen = 0u64;
    let meta = store.audit_meta().await?;
    match archives {
        Some(dir) => {
            for path in archive::list(dir)? {
                let mut rows = archive::Rows::open(&path)?;
                while let Some(row) = rows.next_row()? {
                    c.push(&row);
                    seen += 1;
                    if c.pending.len() > BATCH {
                        c.flush(false).await?;
                        on_progress(seen);
                    }
                }
            }
        }
        None => c.report.unchecked_archived = meta.archived_through_seq.is_some(),
    }
    let mut filter = AuditFilter {
        limit: 5000,
        ..Default::default()
    };
    loop {
        let page = store.audit_events(filter.clone()).await?;
        let Some(last) = page.last() else { break };
        filter.after_seq = Some(last.seq);
        for row in &page {
            c.push(row);
        }
        seen += page.len() as u64;
        c.flush(false).await?;
        on_progress(seen);
    }
    c.flush(true).await?;
    on_progress(seen);
    Ok(c.report)
}
