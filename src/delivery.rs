//! Delivery (layer 4): workers that lease due deliveries from the store, hand each to
//! its destination's sink ([`crate::sinks`]), and record how each attempt ended.
//!
//! What every sink shares lives here, once: one worker loop per destination, holding
//! at most `concurrency` attempts in flight and pacing them to the destination's
//! rate; leases (the store hands out only the next delivery of each case, so records
//! of one case arrive in order while other cases go on); retries with exponential
//! backoff and full jitter (`Retry-After` honoured); dead letters when attempts or
//! age are used up; metrics and logs of every attempt, whose audit events the store
//! writes with the completion.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeliveryDefaults, Destination};
use crate::sinks::{Attempt, Outcome, Sink};
use crate::store::{Completion, DeliveryResult, LeaseRequest, LeasedDelivery, Store};
use crate::time::now_ms;

/// Wakes the worker of a destination when new work is stored for it.
#[derive(Clone, Default)]
pub struct Wake {
    notifiers: Arc<HashMap<String, Arc<Notify>>>,
}

impl Wake {
    pub fn new(config: &Config) -> Wake {
        Wake {
            notifiers: Arc::new(
                config
                    .destinations()
                    .map(|(id, _)| (id.to_string(), Arc::new(Notify::new())))
                    .collect(),
            ),
        }
    }

    pub fn wake(&self, destination: &str) {
        if let Some(n) = self.notifiers.get(destination) {
            n.notify_one();
        }
    }

    fn notifier(&self, destination: &str) -> Arc<Notify> {
        self.notifiers.get(destination).cloned().unwrap_or_default()
    }
}

/// Settings one worker runs with.
struct Policy {
    /// Paces requests to the destination's configured rate.
    pace: Option<Arc<governor::DefaultDirectRateLimiter>>,
    /// How many deliveries a worker holds leased at once (in flight and waiting).
    prefetch: usize,
    destination: String,
    concurrency: usize,
    lease_ms: i64,
    base_backoff_ms: u64,
    max_backoff_ms: u64,
    max_attempts: u32,
    max_age_ms: i64,
    poll: Duration,
    grace: Duration,
}

impl Policy {
    fn new(id: &str, d: &Destination, defaults: &DeliveryDefaults, grace: Duration) -> Policy {
        Policy {
            pace: d.rate.as_ref().and_then(crate::limits::limiter),
            // Never lease more than can be sent within half a lease at the
            // destination's rate: a lease must not expire while waiting its turn.
            prefetch: match &d.rate {
                Some(r) => (u64::from(r.per_second) * defaults.lease_seconds / 2)
                    .clamp(1, d.concurrency.max(1) as u64 * 4) as usize,
                None => d.concurrency.max(1) * 4,
            },
            destination: id.to_string(),
            concurrency: d.concurrency.max(1),
            lease_ms: i64::try_from(defaults.lease_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            base_backoff_ms: defaults.base_backoff_ms.max(1),
            max_backoff_ms: defaults.max_backoff_ms.max(defaults.base_backoff_ms),
            max_attempts: d.max_attempts.unwrap_or(defaults.max_attempts).max(1),
            max_age_ms: i64::try_from(
                d.max_age_seconds
                    .unwrap_or(defaults.max_age_seconds)
                    .saturating_mul(1000),
            )
            .unwrap_or(i64::MAX),
            poll: Duration::from_millis(defaults.poll_ms.max(10)),
            grace,
        }
    }

    /// Full-jitter exponential backoff: uniform in [0, min(cap, base·2^attempt)].
    fn backoff_ms(&self, attempt: u32) -> u64 {
        let exp = self
            .base_backoff_ms
            .saturating_mul(1u64 << attempt.min(32))
            .min(self.max_backoff_ms);
        fastrand::u64(0..=exp)
    }
}

/// Start one worker per destination, each sending through its sink. They stop
/// leasing when `shutdown` fires, let in-flight attempts finish within the grace
/// period, and give back the rest.
pub fn spawn_workers(
    config: &Config,
    sinks: &BTreeMap<String, Arc<dyn Sink>>,
    store: Arc<dyn Store>,
    wake: Wake,
    shutdown: CancellationToken,
) -> JoinSet<()> {
    let owner = format!("{}-{}", config.gateway.id, uuid::Uuid::now_v7());
    let grace = Duration::from_secs(config.gateway.shutdown_grace_seconds);
    let mut set = JoinSet::new();
    for (id, d) in config.destinations() {
        let Some(sink) = sinks.get(id) else {
            tracing::error!(destination = %id, "no sink for a destination; its deliveries wait");
            continue;
        };
        let worker = Worker {
            policy: Arc::new(Policy::new(id, d, &config.delivery, grace)),
            sink: sink.clone(),
            store: store.clone(),
            owner: owner.clone(),
            notify: wake.notifier(id),
        };
        set.spawn(worker.run(shutdown.clone()));
    }
    set
}

struct Worker {
    policy: Arc<Policy>,
    sink: Arc<dyn Sink>,
    store: Arc<dyn Store>,
    owner: String,
    notify: Arc<Notify>,
}

impl Worker {
    /// Lease, send, record — with one store round trip at a time that both records
    /// finished attempts and leases more, and a small local queue (four times the
    /// concurrency) so a freed slot is filled without waiting for a commit.
    async fn run(self, shutdown: CancellationToken) {
        let p = self.policy.clone();
        let prefetch = p.prefetch;
        let mut ready: VecDeque<LeasedDelivery> = VecDeque::new();
        let mut finished: Vec<Completion> = Vec::new();
        let mut in_flight: JoinSet<Completion> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, i64> = HashMap::new();
        // The last lease found fewer due deliveries than asked: wait for news.
        let mut exhausted = false;
        let collect = |r: Result<(tokio::task::Id, Completion), tokio::task::JoinError>,
                       running: &mut HashMap<tokio::task::Id, i64>,
                       finished: &mut Vec<Completion>| {
            match r {
                Ok((id, c)) => {
                    running.remove(&id);
                    finished.push(c);
                }
                Err(e) => {
                    // A panicked or aborted send: its lease expires and it is sent again.
                    running.remove(&e.id());
                }
            }
        };
        loop {
            while let Some(r) = in_flight.try_join_next_with_id() {
                collect(r, &mut running, &mut finished);
            }
            if shutdown.is_cancelled() {
                break;
            }
            while in_flight.len() < p.concurrency {
                let Some(d) = ready.pop_front() else { break };
                let id = d.id;
                let send = Send {
                    policy: p.clone(),
                    sink: self.sink.clone(),
                    owner: self.owner.clone(),
                };
                let handle = in_flight.spawn(send.deliver(d));
                running.insert(handle.id(), id);
            }
            let want = prefetch.saturating_sub(in_flight.len() + ready.len());
            let lease_now = want > 0 && (!exhausted || !finished.is_empty());
            if lease_now || !finished.is_empty() {
                let request = lease_now.then(|| LeaseRequest {
                    destination: p.destination.clone(),
                    owner: self.owner.clone(),
                    limit: want,
                    now_ms: now_ms(),
                    lease_ms: p.lease_ms,
                });
                match self
                    .store
                    .exchange(std::mem::take(&mut finished), request)
                    .await
                {
                    Ok(x) => {
                        if x.lost > 0 {
                            tracing::warn!(destination = %p.destination, lost = x.lost, "attempts not recorded; those deliveries are sent again after their lease");
                        }
                        if lease_now {
                            exhausted = x.leased.len() < want;
                        }
                        ready.extend(x.leased);
                    }
                    Err(e) => {
                        tracing::error!(destination = %p.destination, error = %e, "store round trip failed; unrecorded attempts are sent again after their lease");
                        exhausted = true;
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = tokio::time::sleep(p.poll) => {}
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.notify.notified() => exhausted = false,
                _ = tokio::time::sleep(p.poll) => exhausted = false,
                Some(r) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    collect(r, &mut running, &mut finished);
                }
            }
        }
        // Shutdown: let in-flight requests finish within the grace period, record
        // them, and give back everything else.
        let deadline = tokio::time::sleep(p.grace);
        tokio::pin!(deadline);
        while !in_flight.is_empty() {
            tokio::select! {
                _ = &mut deadline => break,
                Some(r) = in_flight.join_next_with_id() => collect(r, &mut running, &mut finished),
            }
        }
        in_flight.abort_all();
        while let Some(r) = in_flight.join_next_with_id().await {
            collect(r, &mut running, &mut finished);
        }
        if !finished.is_empty()
            && let Err(e) = self.store.exchange(finished, None).await
        {
            tracing::error!(error = %e, "could not record the last attempts; they are sent again after their lease");
        }
        let unfinished: Vec<i64> = running
            .into_values()
            .chain(ready.iter().map(|d| d.id))
            .collect();
        if !unfinished.is_empty() {
            tracing::info!(destination = %p.destination, count = unfinished.len(), "releasing unfinished deliveries");
            if let Err(e) = self.store.release(&self.owner, unfinished).await {
                tracing::error!(error = %e, "could not release leases; they expire by themselves");
            }
        }
    }
}

/// One delivery attempt.
struct Send {
    policy: Arc<Policy>,
    sink: Arc<dyn Sink>,
    owner: String,
}

impl Send {
    async fn deliver(self, d: LeasedDelivery) -> Completion {
        if let Some(pace) = &self.policy.pace {
            pace.until_ready().await;
        }
        let started = Instant::now();
        let Attempt {
            outcome,
            request_sha256,
        } = self.sink.send(&d).await;
        let result = match outcome {
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
            } => self.retry(&d, status, error, retry_after_ms),
            Outcome::Dead { status, reason } => DeliveryResult::Dead { status, reason },
        };
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
            // Accepted → delivered: what the backlog costs a record.
            let waited = now_ms().saturating_sub(d.created_at_ms).max(0);
            metrics::histogram!("hallgate_delivery_latency_seconds", "destination" => p.destination.clone())
                .record(waited as f64 / 1000.0);
        }
        match &outcome {
            DeliveryResult::Retry { error, .. } => {
                tracing::warn!(destination = %p.destination, delivery = d.id, attempt = d.attempts + 1, %error, "delivery will be retried");
            }
            DeliveryResult::Dead { reason, .. } => {
                tracing::warn!(destination = %p.destination, delivery = d.id, %reason, "delivery dead-lettered");
            }
            DeliveryResult::Delivered { .. } => {}
        }
        Completion {
            id: d.id,
            owner: self.owner.clone(),
            request_sha256,
            at_ms: now_ms(),
            duration_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
            result: outcome,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_full_jitter() {
        let d = DeliveryDefaults {
            base_backoff_ms: 100,
            max_backoff_ms: 1000,
            ..DeliveryDefaults::default()
        };
        let dest = Destination {
            url: toml::Spanned::new(0..0, "http://x/".into()),
            content_type: "application/json".into(),
            timeout_ms: 1,
            concurrency: 1,
            max_attempts: None,
            max_age_seconds: None,
            rate: None,
            auth: None,
            tls: None,
            max_backlog: None,
        };
        let p = Policy::new("x", &dest, &d, Duration::ZERO);
        for attempt in 0..40 {
            let b = p.backoff_ms(attempt);
            assert!(b <= (100u64 << attempt.min(32)).min(1000), "{attempt}: {b}");
        }
    }
}
