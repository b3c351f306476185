//! One request's worth of delivery: pacing, the sink's attempt (one record or a
//! batch), and each outcome turned into what the store records (delivered, retry at
//! a backed-off time, or dead when attempts or age are used up), with its metrics
//! and log line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Policy;
use crate::sinks::{Attempt, Outcome, Sink};
use crate::store::{Completion, DeliveryResult, LeasedDelivery};
use crate::time::now_ms;

/// Least time between two retry warnings of one destination: a destination that is
/// down would otherwise write one line per attempt.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets a retry warning through at most every [`WARN_EVERY`], counting the others.
#[derive(Default)]
pub(super) struct WarnGate(Mutex<(Option<Instant>, u64)>);

impl WarnGate {
    /// Some(number held back since the last one) when a warning may be written.
    fn admit(&self) -> Option<u64> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match g.0 {
            Some(t) if t.elapsed() < WARN_EVERY => {
                g.1 += 1;
                None
            }
            _ => {
                let held = g.1;
                *g = (Some(Instant::now()), 0);
                Some(held)
            }
        }
    }
}

/// One delivery attempt.
pub(super) struct Send {
    pub(super) policy: Arc<Policy>,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) owner: String,
}

impl Send {
    /// One request for several deliveries; each gets its own outcome.
    pub(super) async fn deliver_batch(self, ds: Vec<LeasedDelivery>) -> Vec<Completion> {
        if let Some(pace) = &self.policy.pace {
            for _ in &ds {
                pace.until_ready().await;
            }
        }
        let started = Instant::now();
        let attempts = self.sink.send_batch(&ds).await;
        ds.iter()
            .zip(attempts)
            .map(|(d, a)| {
                let result = self.result(d, a.outcome);
                self.finish(d, started, result, a.request_sha256)
            })
            .collect()
    }

    /// A sink's outcome as the store records it.
    fn result(&self, d: &LeasedDelivery, outcome: Outcome) -> DeliveryResult {
        match outcome {
            Outcome::Delivered {
                status,
                receipt,
                duplicate,
            } => DeliveryResult::Delivered {
                status,
                receipt,
                duplicate,
            },
            Outcome::Retry {
                status,
                error,
                retry_after_ms,
            } => self.retry(d, status, error, retry_after_ms),
            Outcome::Dead { status, reason } => DeliveryResult::Dead { status, reason },
        }
    }

    pub(super) async fn deliver(self, d: LeasedDelivery) -> Completion {
        if let Some(pace) = &self.policy.pace {
            pace.until_ready().await;
        }
        let started = Instant::now();
        let Attempt {
            outcome,
            request_sha256,
        } = self.sink.send(&d).await;
        let result = self.result(&d, outcome);
        self.finish(&d, started, result, request_sha256)
    }

    /// Count, log and package an attempt's outcome.
    fn finish(
        &self,
        d: &LeasedDelivery,
        started: Instant,
        outcome: DeliveryResult,
        request_sha256: String,
    ) -> Completion {
        let p = &self.policy;
        let elapsed = started.elapsed();
        metrics::histogram!("hallgate_delivery_seconds", "destination" => p.destination.clone())
            .record(elapsed.as_secs_f64());
        let counter = match &outcome {
            DeliveryResult::Delivered { .. } => "hallgate_deliveries_delivered_total",
            DeliveryResult::Retry { .. } => "hallgate_deliveries_retried_total",
            DeliveryResult::Dead { .. } => "hallgate_deliveries_dead_total",
        };
        metrics::counter!(counter, "destination" => p.destination.clone()).increment(1);
        if matches!(outcome, DeliveryResult::Delivered { .. }) {
            crate::observe::minutes::delivered(1);
            // Accepted → delivered: what the backlog costs a record.
            let waited = now_ms().saturating_sub(d.created_at_ms).max(0);
            metrics::histogram!("hallgate_delivery_latency_seconds", "destination" => p.destination.clone())
                .record(waited as f64 / 1000.0);
        }
        let request_id = d.request_id.as_deref().unwrap_or("");
        match &outcome {
            DeliveryResult::Retry { error, .. } => {
                if let Some(held) = p.warn_gate.admit() {
                    tracing::warn!(destination = %p.destination, delivery = d.id, request_id, attempt = d.attempts + 1, %error, similar_held_back = held, "delivery will be retried");
                }
            }
            DeliveryResult::Dead { reason, .. } => {
                tracing::warn!(destination = %p.destination, delivery = d.id, request_id, case_no = %d.case_no, %reason, "delivery dead-lettered");
            }
            DeliveryResult::Delivered {
                status, duplicate, ..
            } => {
                tracing::info!(destination = %p.destination, delivery = d.id, request_id, case_no = %d.case_no, kind = d.kind.as_str(), status, duplicate, duration_ms = elapsed.as_millis() as u64, "delivered");
            }
        }
        Completion {
            id: d.id,
            owner: self.owner.clone(),
            request_sha256,
            at_ms: now_ms(),
            duration_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
            result: outcome,
            receipts: p.receipts.clone(),
        }
    }

    /// Retry later, or dead-letter when attempts or age are used up.
    fn retry(
        &self,
        d: &LeasedDelivery,
        status: Option<u16>,
        error: String,
        retry_after: Option<u64>,
    ) -> DeliveryResult {
        let p = &self.policy;
        let attempt = d.attempts + 1;
        let now = now_ms();
        if attempt >= p.max_attempts {
            return DeliveryResult::Dead {
                status,
                reason: format!("gave up after {attempt} attempts; last: {error}"),
            };
        }
        if now - d.created_at_ms > p.max_age_ms {
            return DeliveryResult::Dead {
                status,
                reason: format!(
                    "gave up: older than {} s; last: {error}",
                    p.max_age_ms / 1000
                ),
            };
        }
        let delay = p.backoff_ms(d.attempts).max(retry_after.unwrap_or(0));
        DeliveryResult::Retry {
            status,
            error,
            next_attempt_at_ms: now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
        }
    }
}
