//! `hallgate keys rotate-data`: move every stored payload and record to the current
//! data key, page by page, beside a running gateway. Each value is replaced only if it
//! is still what was read, so nothing written meanwhile is lost. When a pass finds
//! nothing left under an old key, the store forgets that key: from then on a config
//! may drop it.

use super::DataKeys;
use crate::store::{Reseal, SealOp, SealOut, Store, StoreError};

/// Rows per page.
const PAGE: usize = 500;
/// Passes before giving up on values that keep changing under an old key.
const MAX_PASSES: usize = 5;

/// What a rotation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Payloads and records read.
    pub seen: u64,
    /// Payloads and records sealed again under the current key.
    pub resealed: u64,
    /// Old keys the store no longer holds values under, and forgot.
    pub forgotten: Vec<String>,
    /// Old keys still holding values (a gateway still sealing with one of them).
    pub remaining: Vec<String>,
}

/// Whether a stored value must be sealed again: it is under another key, or it is
/// not sealed at all but sealing changes it.
fn stale(keys: &DataKeys, stored: &[u8]) -> bool {
    let under = DataKeys::keys_of(stored);
    under.iter().any(|k| k != keys.current())
}

async fn pass(
    store: &dyn Store,
    keys: &DataKeys,
    progress: &mut dyn FnMut(u64),
    r: &mut Rotation,
) -> Result<u64, StoreError> {
    let mut changed = 0u64;
    let mut after = String::new();
    loop {
        let SealOut::Messages(rows) = store
            .sealed(SealOp::Messages {
                after: after.clone(),
                limit: PAGE,
            })
            .await?
        else {
            return Err(StoreError::Corrupt("rotation: unexpected answer".into()));
        };
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        let mut batch = Vec::new();
        for (id, body) in rows {
            r.seen += 1;
            let plain_unsealed = !body.is_empty() && DataKeys::keys_of(&body).is_empty();
            if plain_unsealed || stale(keys, &body) {
                let new = keys.seal_body(&keys.open_body(&body)?);
                batch.push(Reseal {
                    key: id,
                    old: body,
                    new,
                });
            }
        }
        changed += reseal(store, batch, Vec::new()).await?;
        progress(r.seen);
    }
    let mut after = 0i64;
    loop {
        let SealOut::Records(rows) = store.sealed(SealOp::Records { after, limit: PAGE }).await?
        else {
            return Err(StoreError::Corrupt("rotation: unexpected answer".into()));
        };
        let Some(last) = rows.last() else { break };
        after = last.0;
        let mut batch = Vec::new();
        for (id, stored) in rows {
            r.seen += 1;
            let text = String::from_utf8(stored.clone())
                .map_err(|_| StoreError::Corrupt(format!("record {id} is not text")))?;
            let under = DataKeys::keys_of(&stored);
            if !under.is_empty() && !stale(keys, &stored) {
                continue;
            }
            let new = keys.seal_record(&keys.open_record(&text)?)?;
            if new != text {
                batch.push(Reseal {
                    key: id,
                    old: stored,
                    new: new.into_bytes(),
                });
            }
        }
        changed += reseal(store, Vec::new(), batch).await?;
        progress(r.seen);
    }
    Ok(changed)
}

async fn reseal(
    store: &dyn Store,
    messages: Vec<Reseal<String>>,
    records: Vec<Reseal<i64>>,
) -> Result<u64, StoreError> {
    if messages.is_empty() && records.is_empty() {
        return Ok(0);
    }
    match store.sealed(SealOp::Reseal { messages, records }).await? {
        SealOut::Resealed(n) => Ok(n as u64),
        _ => Err(StoreError::Corrupt("rotation: unexpected answer".into())),
    }
}

/// Seal every payload and record under the current key; forget old keys no value
/// is under any more. `progress` is told how many values were read so far.
pub async fn rotate(
    store: &dyn Store,
    keys: &DataKeys,
    mut progress: impl FnMut(u64),
) -> Result<Rotation, StoreError> {
    let mut r = Rotation::default();
    // A value replaced while it was read is left for the next pass; a pass that
    // changes nothing proves no value is left under an old key.
    let mut settled = false;
    for _ in 0..MAX_PASSES {
        let changed = pass(store, keys, &mut progress, &mut r).await?;
        r.resealed += changed;
        if changed == 0 {
            settled = true;
            break;
        }
    }
    let SealOut::Keys(held) = store.sealed(SealOp::Keys).await? else {
        return Err(StoreError::Corrupt("rotation: unexpected answer".into()));
    };
    let old: Vec<String> = held
        .into_iter()
        .map(|k| k.id)
        .filter(|id| id != keys.current())
        .collect();
    // The last pass found nothing to seal again, unless the passes ran out while
    // values kept appearing under an old key (a gateway still sealing with it).
    if !settled {
        r.remaining = old.clone();
    }
    r.forgotten = old
        .into_iter()
        .filter(|k| !r.remaining.contains(k))
        .collect();
    if !r.forgotten.is_empty() {
        store
            .sealed(SealOp::SetKeys {
                add: Vec::new(),
                forget: r.forgotten.clone(),
            })
            .await?;
    }
    Ok(r)
}
