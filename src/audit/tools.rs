//! The auditor's command-line tools: verify, checkpoint, query, timeline, export
//! and archive. They open the store beside a running gateway ([`OpenMode::Tool`]);
//! what they append to the log (exports, archives, checkpoints) extends the same
//! chain.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::checkpoint::{Checkpoint, CheckpointKey};
use super::{AuditError, VerifyReport, archive, timeline};
use crate::config::Config;
use crate::event::{AuditRow, Event, EventKind, Verifier};
use crate::hash::parse_hash;
use crate::record::mask_personal;
use crate::store::{self, AuditFilter, OpenMode, Store};
use crate::time::{now_ms, rfc3339};

/// Open the config's store for a tool.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, AuditError> {
    Ok(store::open_config(config, OpenMode::Tool).await?)
}

/// `hallgate audit verify`: the whole chain, optionally with archives and a checkpoint.
pub async fn verify(
    store: &dyn Store,
    archives: Option<&Path>,
    check: Option<(&Path, &Path)>,
) -> Result<(VerifyReport, Option<Checkpoint>), AuditError> {
    let cp = match check {
        Some((cp_path, key_path)) => {
            let cp = Checkpoint::load(cp_path)?;
            cp.verify_with(key_path)?;
            Some(cp)
        }
        None => None,
    };
    let bar = progress_bar(store.audit_meta().await?.live_last_seq.unwrap_or(0));
    let (report, watched) = super::verify_store(store, archives, cp.as_ref().map(|c| c.seq), |n| {
        bar.set_position(n)
    })
    .await?;
    bar.finish_and_clear();
    if let Some(c) = &cp {
        if c.alg != report.alg {
            return Err(AuditError::Checkpoint(format!(
                "checkpoint is over a {} chain, the log is {}",
                c.alg.as_str(),
                report.alg.as_str()
            )));
        }
        match watched {
            Some(h) if hex::encode(h) == c.hash => {}
            Some(_) => {
                return Err(AuditError::Broken {
                    seq: c.seq,
                    reason: "differs from the signed checkpoint: the log was rewritten".into(),
                });
            }
            None if report.trusted_through.is_some_and(|t| c.seq <= t) => {
                return Err(AuditError::CheckpointUnchecked(format!(
                    "event {} is archived; pass --archives DIR to check it",
                    c.seq
                )));
            }
            None => {
                return Err(AuditError::Broken {
                    seq: c.seq,
                    reason:
                        "the signed checkpoint names this event but the log does not reach it: \
                             events were removed"
                            .into(),
                });
            }
        }
    }
    Ok((report, cp))
}

/// The evidence part of `hallgate audit verify`: every retained body and stored
/// record hashed again against the chain ([`super::evidence`]), with a progress bar
/// on a terminal.
pub async fn verify_evidence(
    store: &dyn Store,
    archives: Option<&Path>,
) -> Result<super::evidence::EvidenceReport, AuditError> {
    let bar = progress_bar(store.audit_meta().await?.live_last_seq.unwrap_or(0));
    let report = super::evidence::verify(store, archives, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    Ok(report)
}

/// `hallgate audit checkpoint`: sign the current head and record that it was taken.
pub async fn checkpoint(
    store: &dyn Store,
    config: &Config,
    key_path: &Path,
    out: Option<PathBuf>,
) -> Result<(PathBuf, Checkpoint), AuditError> {
    let key = CheckpointKey::load(&config.audit.checkpoint_alg, key_path)?;
    let meta = store.audit_meta().await?;
    let last = meta
        .live_last_seq
        .ok_or_else(|| AuditError::Checkpoint("the live log is empty".into()))?;
    let head = store
        .audit_events(AuditFilter {
            after_seq: Some(last - 1),
            limit: 1,
            ..Default::default()
        })
        .await?;
    let head = head
        .first()
        .ok_or_else(|| AuditError::Checkpoint("the head event vanished".into()))?;
    let cp = Checkpoint::sign(
        &key,
        &config.gateway.id,
        head.seq,
        &head.hash,
        meta.alg,
        &rfc3339(now_ms()),
    )?;
    let path =
        out.unwrap_or_else(|| PathBuf::from(format!("audit-checkpoint-{:012}.json", cp.seq)));
    let text = serde_json::to_string_pretty(&cp).map_err(std::io::Error::other)?;
    std::fs::write(&path, text + "\n")?;
    let mut e = Event::new(now_ms(), EventKind::Checkpoint);
    // The signed checkpoint itself too: the console lists and serves it from here.
    e.detail = json!({ "seq": cp.seq, "hash": cp.hash, "key_id": cp.key_id, "file": path.display().to_string(), "checkpoint": cp });
    store.audit(e).await?;
    Ok((path, cp))
}

/// The audit rows matching a filter, at most `max`.
pub async fn rows(
    store: &dyn Store,
    filter: AuditFilter,
    max: usize,
) -> Result<Vec<AuditRow>, AuditError> {
    let mut out = Vec::new();
    super::each_row(store, filter, |row| {
        if out.len() < max {
            out.push(row.clone());
        }
        Ok(out.len() < max)
    })
    .await?;
    Ok(out)
}

/// `hallgate audit timeline CASE_NO` as text (personal data masked).
pub async fn timeline_text(
    store: &dyn Store,
    config: &Config,
    case_no: &str,
) -> Result<String, AuditError> {
    let rows = timeline::case_rows(store, case_no, None).await?;
    if rows.is_empty() {
        return Ok(format!("办件 {case_no}: no events\n"));
    }
    let name = |id: &str| config.node(id).map(|n| n.name.clone()).unwrap_or_default();
    let steps = timeline::build(&rows, &name);
    Ok(crate::record::mask_text(&timeline::render(case_no, &steps)))
}

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

/// `hallgate audit export`: events in `[from, to)`, each `accepted` event with its
/// canonical record — personal data masked unless `full`. Every export is itself
/// audited, with whether it was full.
pub async fn export<W: Write + ?Sized>(
    store: &dyn Store,
    filter: AuditFilter,
    format: Format,
    full: bool,
    out: &mut W,
) -> Result<u64, AuditError> {
    export_by(store, filter, format, full, out, None).await
}

/// The same, naming who asked in its audit event (the console's user).
pub async fn export_by<W: Write + ?Sized>(
    store: &dyn Store,
    filter: AuditFilter,
    format: Format,
    full: bool,
    out: &mut W,
    by: Option<&str>,
) -> Result<u64, AuditError> {
    let total = store.audit_count(filter.clone()).await?;
    let bar = progress_bar(total);
    let csv_err = |e: csv::Error| std::io::Error::other(e.to_string());
    let (mut csv, mut jsonl) = match format {
        Format::Csv => (Some(csv::Writer::from_writer(out)), None),
        Format::Jsonl => (None, Some(out)),
    };
    if let Some(w) = csv.as_mut() {
        w.write_record([
            "seq",
            "at",
            "event",
            "node",
            "case_no",
            "kind",
            "message_id",
            "delivery_id",
            "detail",
            "hash",
            "record",
        ])
        .map_err(csv_err)?;
    }
    let mut page_filter = filter.clone();
    let mut count = 0u64;
    let mut cached: Option<(String, Vec<Value>)> = None;
    loop {
        page_filter.limit = 2000;
        let page = store.audit_events(page_filter.clone()).await?;
        let Some(last) = page.last() else { break };
        page_filter.after_seq = Some(last.seq);
        for row in &page {
            let mut record = Value::Null;
            if row.event == "accepted"
                && let Some(m) = &row.message_id
            {
                if cached.as_ref().is_none_or(|(id, _)| id != m) {
                    let recs = store
                        .message(m)
                        .await?
                        .map(|v| v.records.into_iter().map(|r| r.record).collect())
                        .unwrap_or_default();
                    cached = Some((m.clone(), recs));
                }
                let idx = row.detail.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                record = cached
                    .as_ref()
                    .and_then(|(_, r)| r.get(idx).cloned())
                    .unwrap_or(Value::Null);
                if !full {
                    mask_personal(&mut record);
                }
            }
            if let Some(w) = csv.as_mut() {
                w.write_record([
                    row.seq.to_string(),
                    rfc3339(row.at_ms),
                    row.event.clone(),
                    row.node.clone().unwrap_or_default(),
                    row.case_no.clone().unwrap_or_default(),
                    row.kind.clone().unwrap_or_default(),
                    row.message_id.clone().unwrap_or_default(),
                    row.delivery_id.map(|d| d.to_string()).unwrap_or_default(),
                    row.detail.to_string(),
                    row.hash.clone(),
                    if record.is_null() {
                        String::new()
                    } else {
                        record.to_string()
                    },
                ])
                .map_err(csv_err)?;
            }
            if let Some(out) = jsonl.as_mut() {
                {
                    let mut v = serde_json::to_value(row).map_err(std::io::Error::other)?;
                    if let Some(o) = v.as_object_mut() {
                        o.insert("at".into(), Value::String(rfc3339(row.at_ms)));
                        if !record.is_null() {
                            o.insert("record".into(), record);
                        }
                    }
                    writeln!(out, "{v}")?;
                }
            }
            count += 1;
        }
        bar.set_position(count);
    }
    if let Some(w) = csv.as_mut() {
        w.flush()?;
    }
    if let Some(out) = jsonl.as_mut() {
        out.flush()?;
    }
    bar.finish_and_clear();
    let mut e = Event::new(now_ms(), EventKind::Exported);
    e.detail = json!({
        "events": count,
        "full": full,
        "format": if format == Format::Csv { "csv" } else { "jsonl" },
        "from": filter.from_ms.map(rfc3339),
        "to": filter.to_ms.map(rfc3339),
        "case_no": filter.case_no,
        "node": filter.node,
        "by": by,
    });
    store.audit(e).await?;
    Ok(count)
}

/// `hallgate audit archive`: move the events before `before_ms` to an archive file in
/// `dir`; returns the file and the number of events, or `None` when there is nothing
/// to archive.
pub async fn archive(
    store: &dyn Store,
    before_ms: i64,
    dir: &Path,
) -> Result<Option<(PathBuf, u64)>, AuditError> {
    let meta = store.audit_meta().await?;
    let (start_seq, start_hash) = match (
        meta.archived_through_seq,
        meta.archived_head_hash.as_deref(),
    ) {
        (Some(s), Some(h)) => (
            s,
            parse_hash(h).ok_or_else(|| AuditError::Broken {
                seq: s,
                reason: "archived head hash unreadable".into(),
            })?,
        ),
        _ => (0, crate::event::GENESIS),
    };
    // Pass 1: the contiguous run of events before the cut, verified.
    let mut verifier = Verifier::resume(meta.alg, start_seq, start_hash);
    let from_start = AuditFilter {
        after_seq: Some(start_seq),
        ..Default::default()
    };
    super::each_row(store, from_start.clone(), |row| {
        // Keep at least the newest event live: the chain goes on from it.
        if row.at_ms >= before_ms || Some(row.seq) == meta.live_last_seq {
            return Ok(false);
        }
        verifier.push(row)?;
        Ok(true)
    })
    .await?;
    let (last_seq, _) = verifier.head();
    if last_seq == start_seq {
        return Ok(None);
    }
    // Pass 2: write them.
    let header = archive::Header {
        hallgate_audit_archive: 1,
        first_seq: start_seq + 1,
        last_seq,
        alg: meta.alg,
        prev_hash: hex::encode(start_hash),
        prev_archive_sha256: meta.last_archive_sha256.clone(),
    };
    let mut writer = archive::Writer::create(dir, &header)?;
    let through = AuditFilter {
        through_seq: Some(last_seq),
        ..from_start
    };
    super::each_row(store, through, |row| writer.push(row).map(|()| true)).await?;
    let (path, sha) = writer.finish()?;
    let mut e = Event::new(now_ms(), EventKind::Archived);
    e.detail = json!({
        "first_seq": header.first_seq,
        "last_seq": last_seq,
        "file": path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
        "sha256": sha,
    });
    store.archive_audit(last_seq, sha, e).await?;
    Ok(Some((path, (last_seq - start_seq) as u64)))
}

fn progress_bar(len: i64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(u64::try_from(len).unwrap_or(0));
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}
