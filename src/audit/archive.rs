//! Retention: old events move from the live log to compressed archive files.
//!
//! An archive is gzip-compressed JSON lines: a header line, then one [`AuditRow`] per
//! line. The header names the event range, the chain hash before its first event and
//! the SHA-256 of the archive before it, so archives and the live log verify as one
//! chain (`hallgate audit verify --archives DIR`).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuditError;
use crate::event::{AuditRow, Verifier};
use crate::hash::{HashAlg, parse_hash};

/// First line of an archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub hallgate_audit_archive: u32,
    pub first_seq: i64,
    pub last_seq: i64,
    pub alg: HashAlg,
    /// Hex chain hash of event `first_seq - 1` (zeros for the first archive).
    pub prev_hash: String,
    /// SHA-256 (hex) of the archive file before this one; none for the first.
    pub prev_archive_sha256: Option<String>,
}

/// Writes one archive file, row by row.
pub struct Writer {
    path: PathBuf,
    tmp: PathBuf,
    out: GzEncoder<BufWriter<File>>,
}

impl Writer {
    /// Start `audit-{first}-{last}.jsonl.gz` in `dir`.
    pub fn create(dir: &Path, header: &Header) -> Result<Writer, AuditError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(
            "audit-{:012}-{:012}.jsonl.gz",
            header.first_seq, header.last_seq
        ));
        if path.exists() {
            return Err(AuditError::Archive {
                path: path.display().to_string(),
                reason: "already exists".into(),
            });
        }
        let tmp = path.with_extension("gz.partial");
        let mut out = GzEncoder::new(BufWriter::new(File::create(&tmp)?), Compression::default());
        serde_json::to_writer(&mut out, header).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        Ok(Writer { path, tmp, out })
    }

    pub fn push(&mut self, row: &AuditRow) -> Result<(), AuditError> {
        serde_json::to_writer(&mut self.out, row).map_err(std::io::Error::other)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// Flush, fsync and move into place; the file's SHA-256.
    pub fn finish(self) -> Result<(PathBuf, String), AuditError> {
        let file = self
            .out
            .finish()?
            .into_inner()
            .map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        let sha = file_sha256(&self.path)?;
        Ok((self.path, sha))
    }
}

pub fn file_sha256(path: &Path) -> Result<String, AuditError> {
    let mut h = Sha256::new();
    let mut f = File::open(path)?;
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Archive files in a folder, in sequence order.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| AuditError::ArchiveFolder {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl.gz"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The events of one archive file, in order (its header skipped).
pub struct Rows {
    path: String,
    lines: std::io::Lines<BufReader<GzDecoder<File>>>,
}

impl Rows {
    pub fn open(path: &Path) -> Result<Rows, AuditError> {
        let mut lines = BufReader::new(GzDecoder::new(File::open(path)?)).lines();
        let shown = path.display().to_string();
        match lines.next() {
            Some(Ok(_)) => Ok(Rows { path: shown, lines }),
            Some(Err(e)) => Err(AuditError::Archive {
                path: shown,
                reason: e.to_string(),
            }),
            None => Err(AuditError::Archive {
                path: shown,
                reason: "empty".into(),
            }),
        }
    }

    pub fn next_row(&mut self) -> Result<Option<AuditRow>, AuditError> {
        let bad = |reason: String| AuditError::Archive {
            path: self.path.clone(),
            reason,
        };
        match self.lines.next() {
            None => Ok(None),
            Some(line) => {
                let line = line.map_err(|e| bad(e.to_string()))?;
                serde_json::from_str(&line)
                    .map(Some)
                    .map_err(|e| bad(format!("bad event line: {e}")))
            }
        }
    }
}

/// Verify every archive in `dir` as one chain, starting with `verifier` (at the
/// beginning of the chain); it is left after the last archived event, with the last
/// archive's SHA-256.
pub fn verify_all(
    dir: &Path,
    mut verifier: Verifier,
) -> Result<(Verifier, Option<String>), AuditError> {
    let alg = verifier.alg();
    let mut prev_sha: Option<String> = None;
    for path in list(dir)? {
        let shown = path.display().to_string();
        let bad = |reason: String| AuditError::Archive {
            path: shown.clone(),
            reason,
        };
        let mut lines = BufReader::new(GzDecoder::new(File::open(&path)?)).lines();
        let header: Header = match lines.next() {
            Some(l) => serde_json::from_str(&l.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(format!("bad header: {e}")))?,
            None => return Err(bad("empty".into())),
        };
        if header.alg != alg {
            return Err(bad(format!(
                "hashed with {}, the log with {}",
                header.alg.as_str(),
                alg.as_str()
            )));
        }
        if header.prev_archive_sha256 != prev_sha {
            return Err(bad(
                "does not follow the archive before it (prev_archive_sha256 differs)".into(),
            ));
        }
        let (seq, hash) = verifier.head();
        if header.first_seq != seq + 1 || parse_hash(&header.prev_hash) != Some(hash) {
            return Err(bad(format!(
                "starts at event {} but the chain is at event {seq}",
                header.first_seq
            )));
        }
        for line in lines {
            let row: AuditRow = serde_json::from_str(&line.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(format!("bad event line: {e}")))?;
            verifier.push(&row)?;
        }
        if verifier.head().0 != header.last_seq {
            return Err(bad(format!(
                "ends at event {} but its header says {}",
                verifier.head().0,
                header.last_seq
            )));
        }
        prev_sha = Some(file_sha256(&path)?);
    }
    Ok((verifier, prev_sha))
}
