//! Backfill: re-send the deliveries to a node of the records received in a range,
//! under each delivery's own Idempotency-Key, paced by the destination's rate, and
//! wait for them to be delivered.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::SyncError;
use super::reconcile::progress;
use crate::config::Config;
use crate::event::{Event, EventKind};
use crate::store::{DeliveryState, Store};
use crate::time::{now_ms, rfc3339};

/// What a backfill did.
#[derive(Debug, Clone, Serialize)]
pub struct Backfill {
    pub node: String,
    pub selected: usize,
    pub requeued: usize,
    pub delivered: usize,
    /// Seconds waited for the deliveries.
    pub waited_seconds: f64,
}

/// What to re-send: the deliveries to `node` of records received from `from_ms` to
/// `to_ms`, `per_second` at a time, then wait up to `wait` for them to be delivered.
pub struct BackfillRequest<'a> {
    pub node: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
    pub per_second: usize,
    pub wait: Duration,
    /// Who asked (for the audit log).
    pub operator: &'a str,
}

/// Run a backfill (audited `requeued` per batch).
pub async fn backfill(
    config: &Config,
    store: &dyn Store,
    req: &BackfillRequest<'_>,
) -> Result<Backfill, SyncError> {
    let BackfillRequest {
        node,
        from_ms,
        to_ms,
        per_second,
        wait,
        operator,
    } = *req;
    let n = config
        .nodes
        .get(node)
        .ok_or_else(|| SyncError::UnknownNode(node.to_string()))?;
    if n.get_ref().destination.is_none() {
        return Err(SyncError::Other(format!(
            "node `{node}` is not a destination (no [nodes.{node}.destination]): nothing is delivered to it"
        )));
    }
    if from_ms > to_ms {
        return Err(SyncError::Other(format!(
            "the range is empty: --from {} is after --to {}",
            rfc3339(from_ms),
            rfc3339(to_ms)
        )));
    }
    let mut ids: Vec<i64> = store
        .exchanged(node, from_ms, to_ms)
        .await?
        .into_iter()
        .filter(|e| {
            e.direction == "delivered" && e.received_ms >= from_ms && e.received_ms <= to_ms
        })
        .filter(|e| e.state != Some(DeliveryState::Pending))
        .filter_map(|e| e.delivery_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let per_second = per_second.max(1);
    let bar = progress(ids.len() as u64, "requeued");
    let mut out = Backfill {
        node: node.to_string(),
        selected: ids.len(),
        requeued: 0,
        delivered: 0,
        waited_seconds: 0.0,
    };
    for chunk in ids.chunks(per_second) {
        let started = std::time::Instant::now();
        let at = now_ms();
        let mut e = Event::new(at, EventKind::Requeued);
        e.node = Some(node.to_string());
        e.detail = json!({
            "reason": "backfill",
            "deliveries": chunk,
            "from": rfc3339(from_ms),
            "to": rfc3339(to_ms),
            "by": operator,
        });
        out.requeued += store.requeue(chunk.to_vec(), at, e).await?;
        bar.inc(chunk.len() as u64);
        if let Some(rest) = Duration::from_secs(1).checked_sub(started.elapsed())
            && out.requeued < ids.len()
        {
            tokio::time::sleep(rest).await;
        }
    }
    bar.finish_and_clear();
    let started = std::time::Instant::now();
    let bar = progress(ids.len() as u64, "delivered");
    let wanted: std::collections::HashSet<i64> = ids.iter().copied().collect();
    loop {
        let delivered = store
            .exchanged(node, from_ms, i64::MAX)
            .await?
            .into_iter()
            .filter(|e| {
                e.delivery_id.is_some_and(|id| wanted.contains(&id))
                    && e.state == Some(DeliveryState::Delivered)
            })
            .count();
        bar.set_position(delivered as u64);
        out.delivered = delivered;
        if delivered >= ids.len() || started.elapsed() >= wait {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.finish_and_clear();
    out.waited_seconds = started.elapsed().as_secs_f64();
    Ok(out)
}
