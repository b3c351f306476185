//! A batch of table rows as the body the node's mapping reads: a JSON array of
//! row objects (`frontdb::cell`), with each row's mark started (`done`, or `failed`
//! with the column that could not be read). The body is bounded by
//! `[limits] max_body_bytes`: the rows after the one that would pass it wait for the
//! next batch, and a row that passes it alone is marked `failed` with the limit
//! named. A blob column's bytes go into the body (base64) when the gateway keeps
//! payloads (`[audit] retain_payloads`), so the stored message holds them as
//! evidence beside their SHA-256.

use super::Prepared;
use crate::frontdb::{Mark, Row, cell};

/// A batch's body and its rows' marks.
pub(super) struct Body {
    /// `[row, row, …]`, the rows that could be read.
    pub bytes: Vec<u8>,
    /// The row each record of the body came from.
    pub row_of_record: Vec<usize>,
    /// One per row taken (`rows[..taken]`).
    pub marks: Vec<Mark>,
    /// How many rows were taken: fewer than read when the body reached its limit.
    pub taken: usize,
}

/// How rows become a body.
pub(super) struct BodyOptions {
    pub zone: i32,
    pub keep_blobs: bool,
    pub max_bytes: usize,
}

/// The body of `rows` (in order), as far as `max_bytes` allows.
pub(super) fn body(t: &Prepared, rows: &[Row], o: &BodyOptions) -> Body {
    let spec = &t.spec;
    let mut out = Body {
        bytes: vec![b'['],
        row_of_record: Vec::new(),
        marks: Vec::with_capacity(rows.len()),
        taken: 0,
    };
    for (i, row) in rows.iter().enumerate() {
        let key =
            t.at.keys
                .iter()
                .map(|&k| cell::text(row.get(k).and_then(Option::as_ref)).unwrap_or_default())
                .collect();
        let version =
            t.at.version
                .and_then(|v| cell::text(row.get(v).and_then(Option::as_ref)));
        let mut mark = Mark {
            key,
            version,
            flag: spec.done.clone(),
            error: None,
        };
        match cell::row_object(&t.shape, row, o.zone, o.keep_blobs)
            .map_err(|e| e.to_string())
            .and_then(|obj| serde_json::to_vec(&obj).map_err(|e| e.to_string()))
        {
            // `[` + rows + `,` between + `]`.
            Ok(json) if out.bytes.len() + json.len() + 1 > o.max_bytes => {
                if !out.marks.is_empty() {
                    break;
                }
                mark.flag = spec.failed.clone();
                mark.error = Some(format!(
                    "row: too large: {} bytes as JSON, over [limits] max_body_bytes ({})",
                    json.len(),
                    o.max_bytes
                ));
            }
            Ok(json) => {
                if !out.row_of_record.is_empty() {
                    out.bytes.push(b',');
                }
                out.bytes.extend_from_slice(&json);
                out.row_of_record.push(i);
            }
            Err(e) => {
                mark.flag = spec.failed.clone();
                mark.error = Some(e);
            }
        }
        out.marks.push(mark);
    }
    out.bytes.push(b']');
    out.taken = out.marks.len();
    out
}
