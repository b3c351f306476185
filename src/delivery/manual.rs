//! What operators do to deliveries by hand, shared by the HTTP API and the command
//! line: one delivery with its attempts, and putting dead letters back in the queue
//! in bulk (each with its own `manually_retried` event naming who asked).

use serde::Serialize;
use serde_json::Value;

use crate::event::AuditRow;
use crate::store::{
    Asked, AuditFilter, DeliveryFilter, DeliveryState, DeliveryView, Store, StoreError,
};
use crate::time::{now_ms, rfc3339};

/// Most dead letters one bulk retry puts back.
pub const MAX_BULK_RETRY: usize = 100_000;
/// Ids per store transaction of a bulk retry.
const CHUNK: usize = 500;
/// Most events read for one delivery's history.
const MAX_EVENTS: usize = 10_000;

/// One attempt, or another step of a delivery's life, as its audit event says.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub seq: i64,
    pub at: String,
    /// `attempted`, `retried`, `delivered`, `dead_lettered`, `manually_retried`, …
    pub event: String,
    pub detail: Value,
}

/// A delivery and its history.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryHistory {
    pub delivery: DeliveryView,
    pub steps: Vec<Step>,
}

/// The delivery `id` with its history, or `NotFound`.
pub async fn history(store: &dyn Store, id: i64) -> Result<DeliveryHistory, StoreError> {
    let delivery = store
        .deliveries(DeliveryFilter {
            after_id: Some(id - 1),
            limit: 1,
            ..DeliveryFilter::default()
        })
        .await?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or(StoreError::NotFound)?;
    let events: Vec<AuditRow> = store
        .audit_events(AuditFilter {
            message_id: Some(delivery.message_id.clone()),
            limit: MAX_EVENTS,
            ..AuditFilter::default()
        })
        .await?;
    let steps = events
        .into_iter()
        .filter(|e| e.delivery_id == Some(id))
        .map(|e| Step {
            seq: e.seq,
            at: rfc3339(e.at_ms),
            event: e.event,
            detail: e.detail,
        })
        .collect();
    Ok(DeliveryHistory { delivery, steps })
}

/// The dead letters a filter selects (its `state` is taken as dead), at most
/// [`MAX_BULK_RETRY`]: their ids.
pub async fn dead_matching(
    store: &dyn Store,
    mut filter: DeliveryFilter,
) -> Result<Vec<i64>, StoreError> {
    filter.state = Some(DeliveryState::Dead);
    filter.limit = 1000;
    let mut ids = Vec::new();
    loop {
        let page = store.deliveries(filter.clone()).await?;
        let Some(last) = page.last() else { break };
        filter.after_id = Some(last.id);
        let full = page.len() == filter.limit;
        ids.extend(page.iter().map(|d| d.id));
        if !full || ids.len() >= MAX_BULK_RETRY {
            break;
        }
    }
    ids.truncate(MAX_BULK_RETRY);
    Ok(ids)
}

/// Put these dead letters back in the queue, a chunk per transaction; how many were
/// put back (a letter retried meanwhile by someone else is skipped, never doubled).
pub async fn retry(store: &dyn Store, ids: &[i64], asked: &Asked) -> Result<usize, StoreError> {
    let mut done = 0;
    for chunk in ids.chunks(CHUNK) {
        done += store
            .retry_dead_many(chunk.to_vec(), now_ms(), asked.clone())
            .await?
            .len();
    }
    Ok(done)
}

/// Pause or resume deliveries to `destination` (a configured one), audited with who
/// asked. Deliveries in flight finish; nothing more is leased until it is resumed.
pub async fn pause(
    store: &dyn Store,
    destination: &str,
    paused: bool,
    asked: &Asked,
) -> Result<(), StoreError> {
    let mut e = crate::event::Event::new(now_ms(), crate::event::EventKind::DestinationControlled);
    e.node = Some(destination.to_string());
    e.detail = serde_json::json!({
        "action": if paused { "pause" } else { "resume" },
        "by": asked.by,
        "asked": asked.what,
    });
    store.pause_destination(destination, paused, e).await
}
