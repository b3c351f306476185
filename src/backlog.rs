//! Back-pressure (layer 4): a destination's `max_backlog` (records, bytes or both).
//!
//! A watcher measures the pending deliveries of every bounded destination in the store
//! each `[delivery] backlog_poll_ms`. While one is at or over its bound, intake of
//! records routed there answers 503 with Retry-After (`backlog_full`), and the pull
//! sources that can feed it pause between pages. The store is the measure, so several
//! instances on one store agree. Between two measurements a burst may overshoot the
//! bound by what arrives meanwhile. Each crossing, up or back down, is audited
//! (`backpressure`) and shown in `hallgate_backlog_full{destination}` (0 or 1).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MaxBacklog};
use crate::event::{Event, EventKind};
use crate::route::Router;
use crate::store::{Store, StoreError};
use crate::time::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    #[error("cannot measure the backlog: {0}")]
    Store(#[from] StoreError),
}

/// What waits for a destination that is over its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub records: i64,
    /// Measured only where a `bytes` bound is set.
    pub bytes: Option<i64>,
}

/// The bounds, and which destinations are over them now.
pub struct Backlog {
    bounds: BTreeMap<String, MaxBacklog>,
    /// Per source node: the bounded destinations it can feed.
    feeds: BTreeMap<String, Vec<String>>,
    full: RwLock<BTreeMap<String, Level>>,
    poll: Duration,
}

impl Backlog {
    pub fn new(config: &Config, router: &Router) -> Backlog {
        let bounds: BTreeMap<String, MaxBacklog> = config
            .destinations()
            .filter_map(|(id, d)| d.max_backlog.map(|b| (id.to_string(), b)))
            .collect();
        let feeds = config
            .nodes
            .keys()
            .map(|n| {
                let fed = router
                    .reachable(n)
                    .into_iter()
                    .filter(|d| bounds.contains_key(d))
                    .collect();
                (n.clone(), fed)
            })
            .collect();
        Backlog {
            bounds,
            feeds,
            full: RwLock::new(BTreeMap::new()),
            poll: Duration::from_millis(config.delivery.backlog_poll_ms.max(10)),
        }
    }

    /// Seconds a refused sender is asked to wait: a few measurements.
    pub fn retry_after(&self) -> u64 {
        (self.poll.as_secs() * 4).max(1)
    }

    /// The first of these destinations that is over its bound, with what waits there.
    pub fn over<'a>(
        &self,
        destinations: impl IntoIterator<Item = &'a str>,
    ) -> Option<(String, Level)> {
        if self.bounds.is_empty() {
            return None;
        }
        let full = self.full.read().unwrap_or_else(|e| e.into_inner());
        if full.is_empty() {
            return None;
        }
        destinations
            .into_iter()
            .find_map(|d| full.get(d).map(|l| (d.to_string(), *l)))
    }

    /// A bounded destination that `source` feeds and that is full now, if any.
    pub fn feeds_full(&self, source: &str) -> Option<(String, Level)> {
        let fed = self.feeds.get(source)?;
        self.over(fed.iter().map(String::as_str))
    }

    /// What the refusal says: the destination, what waits and the bound.
    pub fn describe(&self, destination: &str, level: &Level) -> String {
        let bound = self.bounds.get(destination);
        let mut parts = Vec::new();
        if let Some(max) = bound.and_then(|b| b.records) {
            parts.push(format!(
                "{} record(s) waiting, max_backlog records = {max}",
                level.records
            ));
        }
        if let (Some(max), Some(bytes)) = (bound.and_then(|b| b.bytes), level.bytes) {
            parts.push(format!(
                "{bytes} byte(s) waiting, max_backlog bytes = {max}"
            ));
        }
        format!(
            "destination `{destination}` is over its backlog ({})",
            parts.join("; ")
        )
    }

    /// Measure every bounded destination until `shutdown`.
    pub async fn watch(self: Arc<Self>, store: Arc<dyn Store>, shutdown: CancellationToken) {
        if self.bounds.is_empty() {
            return;
        }
        loop {
            if let Err(e) = self.measure(&*store).await {
                tracing::warn!(error = %e, "back-pressure not updated");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// One measurement: update which destinations are full, audit each crossing.
    pub async fn measure(&self, store: &dyn Store) -> Result<(), BacklogError> {
        let depths = store.queue_depths().await?;
        for (dest, bound) in &self.bounds {
            let records = depths
                .iter()
                .find(|d| &d.destination == dest)
                .map_or(0, |d| d.pending);
            let bytes = match bound.bytes {
                Some(_) => Some(store.pending_bytes(dest).await?),
                None => None,
            };
            let over = bound.records.is_some_and(|m| records >= m as i64)
                || matches!((bound.bytes, bytes), (Some(m), Some(b)) if b >= m as i64);
            let level = Level { records, bytes };
            let was = {
                let mut full = self.full.write().unwrap_or_else(|e| e.into_inner());
                if over {
                    full.insert(dest.clone(), level).is_some()
                } else {
                    full.remove(dest).is_some()
                }
            };
            metrics::gauge!("hallgate_backlog_full", "destination" => dest.clone()).set(if over {
                1.0
            } else {
                0.0
            });
            if over != was {
                if over {
                    tracing::warn!(destination = %dest, records, ?bytes, "backlog full: intake for it refused, its pull sources paused");
                } else {
                    tracing::info!(destination = %dest, records, ?bytes, "backlog below its bound again: intake resumes");
                }
                let mut ev = Event::new(now_ms(), EventKind::Backpressure);
                ev.node = Some(dest.clone());
                ev.detail = json!({
                    "state": if over { "on" } else { "off" },
                    "records": records,
                    "bytes": bytes,
                    "max_records": bound.records,
                    "max_bytes": bound.bytes,
                });
                store.audit(ev).await?;
            }
        }
        Ok(())
    }
}
