//! The auditor's tools over the audit log (layer 4; DESIGN.md section 6): walking the
//! chain as stored ([`verify_store`]), signed checkpoints, archives, the case
//! timeline and the command-line tools. The events and the chain itself are in
//! `event`; the store appends them in the transactions they record.

pub mod archive;
pub mod checkpoint;
pub mod evidence;
pub mod timeline;
pub mod tools;

use serde::Serialize;

use crate::event::{AuditRow, Broken, Verifier};
use crate::hash::{HashAlg, parse_hash};
use crate::store::{AuditFilter, Store, StoreError};

/// Why the audit log could not be used or does not hold.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit event {seq}: {reason}")]
    Broken { seq: i64, reason: String },
    #[error(transparent)]
    UnknownAlg(#[from] crate::hash::UnknownAlg),
    /// The checkpoint does not match the log or was altered (a finding).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The checkpoint could not be checked (its file, the key given, an archived
    /// event without `--archives`): no finding either way.
    #[error("checkpoint not checked: {0}")]
    CheckpointUnchecked(String),
    #[error("archive {path}: {reason}")]
    Archive { path: String, reason: String },
    /// What the store holds is not what the chain vouches for (a finding).
    #[error("evidence: {0}")]
    Evidence(String),
    #[error("archive folder {path}: {reason}")]
    ArchiveFolder { path: String, reason: String },
    #[error("signing key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl From<crate::keys::KeyFileError> for AuditError {
    fn from(e: crate::keys::KeyFileError) -> AuditError {
        match e {
            crate::keys::KeyFileError::File { path, reason } => AuditError::Key { path, reason },
            crate::keys::KeyFileError::Encoding(m) => AuditError::Checkpoint(m),
            crate::keys::KeyFileError::Io(e) => AuditError::Io(e),
        }
    }
}

impl From<Broken> for AuditError {
    fn from(b: Broken) -> AuditError {
        AuditError::Broken {
            seq: b.seq,
            reason: b.reason,
        }
    }
}

/// Visit the audit rows a filter selects, in sequence order, page by page (the
/// filter's `limit` is the page size; 5000 when zero). `f` answers whether to go on.
pub async fn each_row(
    store: &dyn Store,
    mut filter: AuditFilter,
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
    store: &dyn Store,
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
    let filter = AuditFilter {
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
