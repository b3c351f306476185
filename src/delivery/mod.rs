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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeliveryDefaults, Destination};
use crate::sinks::Sink;

pub mod manual;
mod send;
use crate::store::{Completion, Exchange, LeaseRequest, LeasedDelivery, Store, StoreError};
use crate::time::now_ms;
use send::Send;

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
                    .map(|(id, _)| id.to_string())
                    .chain(config.receipt_destinations().into_iter().map(|(id, _)| id))
                    .map(|id| (id, Arc::new(Notify::new())))
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
    /// The senders that get receipts (see [`crate::store::Completion::receipts`]);
    /// none for a receipt queue itself.
    receipts: Arc<[String]>,
    /// Paces requests to the destination's configured rate.
    pace: Option<Arc<governor::DefaultDirectRateLimiter>>,
    /// How many deliveries a worker holds leased at once (in flight and waiting), at
    /// least…
    prefetch: usize,
    /// …and at most, when the destination has shown it takes them fast enough.
    prefetch_max: usize,
    destination: String,
    concurrency: usize,
    lease_ms: i64,
    base_backoff_ms: u64,
    max_backoff_ms: u64,
    max_attempts: u32,
    max_age_ms: i64,
    poll: Duration,
    grace: Duration,
    /// Several records per request (`batch`).
    batch: Option<BatchPolicy>,
    /// Retries of a destination that is down are logged at most every few seconds.
    warn_gate: send::WarnGate,
}

/// A destination's `batch`, as the worker uses it.
struct BatchPolicy {
    max_records: usize,
    max_bytes: usize,
    /// How long a record may wait for its batch to fill.
    max_wait: Duration,
}

impl Policy {
    fn new(id: &str, d: &Destination, defaults: &DeliveryDefaults, grace: Duration) -> Policy {
        Policy {
            receipts: Arc::from(Vec::new()),
            pace: d.rate.as_ref().and_then(crate::limits::limiter),
            // Never lease more than can be sent within half a lease at the
            // destination's rate: a lease must not expire while waiting its turn.
            prefetch: match &d.rate {
                Some(r) => (u64::from(r.per_second) * defaults.lease_seconds / 2)
                    .clamp(1, d.concurrency.max(1) as u64 * 4) as usize,
                None => d.concurrency.max(1) * 4,
            },
            // A paced destination keeps to the bound above; another may be sent as
            // many as it has shown it takes (see `Prefetch`).
            prefetch_max: match &d.rate {
                Some(_) => 0,
                None => MAX_PREFETCH,
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
            warn_gate: send::WarnGate::default(),
            batch: d.batch.as_ref().map(|b| BatchPolicy {
                max_records: b.max_records.max(1),
                max_bytes: b.max_bytes.max(1),
                max_wait: Duration::from_millis(b.max_wait_ms),
            }),
        }
        .with_batches()
    }

    /// A batching worker holds enough leased to fill its requests: two batches per
    /// request slot (within [`MAX_PREFETCH`]).
    fn with_batches(mut self) -> Policy {
        if let Some(b) = &self.batch {
            let want = (self.concurrency * b.max_records * 2).min(MAX_PREFETCH);
            self.prefetch = self.prefetch.max(want);
            if self.prefetch_max > 0 {
                self.prefetch_max = self.prefetch_max.max(want);
            }
        }
        self
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

/// The most deliveries a worker leases at once when a destination keeps up with more.
/// A batching destination wants two batches per request slot (16 × 100 × 2 = 3,200
/// in the bench): at 1,024, each writer transaction completed and leased at most
/// about a thousand while intake added up to 1,024 records of its own, and delivery
/// kept 0.57 of intake (BENCHMARKS.md, issue 19, fifth part).
const MAX_PREFETCH: usize = 4096;

/// How many deliveries a worker holds leased: four per request slot, and, when the
/// destination has taken more in the last second, as many as it would take in a
/// quarter of a lease (at most [`MAX_PREFETCH`]). A worker's store round trip waits
/// its turn behind intake at the single writer, and the queue must keep every slot
/// busy meanwhile (BENCHMARKS.md, issue 19).
struct Prefetch {
    min: usize,
    max: usize,
    lease_ms: i64,
    since: Instant,
    done: usize,
    now: usize,
}

impl Prefetch {
    fn new(p: &Policy) -> Prefetch {
        Prefetch {
            min: p.prefetch,
            max: p.prefetch_max.max(p.prefetch),
            lease_ms: p.lease_ms,
            since: Instant::now(),
            done: 0,
            now: p.prefetch,
        }
    }

    /// Deliveries finished (whatever their outcome).
    fn finished(&mut self, n: usize) {
        self.done += n;
    }

    /// How many to hold now (re-estimated once a second).
    fn allowed(&mut self) -> usize {
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let per_second = self.done as f64 / elapsed.as_secs_f64();
            let quarter_lease = per_second * (self.lease_ms as f64 / 1000.0) / 4.0;
            self.now = (quarter_lease as usize).clamp(self.min, self.max);
            self.since = Instant::now();
            self.done = 0;
        }
        self.now
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
    paused_now: &[String],
) -> JoinSet<()> {
    let owner = format!("{}-{}", config.gateway.id, uuid::Uuid::now_v7());
    let grace = Duration::from_secs(config.gateway.shutdown_grace_seconds);
    let mut set = JoinSet::new();
    let mut paused = Vec::new();
    let receipts: Arc<[String]> = Arc::from(config.receipt_senders());
    let receipt_queues = config.receipt_destinations();
    let queues = config
        .destinations()
        .map(|(id, d)| (id, d, receipts.clone()))
        .chain(
            receipt_queues
                .iter()
                .map(|(id, d)| (id.as_str(), d, Arc::from(Vec::new()))),
        );
    for (id, d, receipts) in queues {
        let Some(sink) = sinks.get(id) else {
            tracing::error!(destination = %id, "no sink for a destination; its deliveries wait");
            continue;
        };
        let flag = Arc::new(AtomicBool::new(paused_now.iter().any(|p| p == id)));
        paused.push((id.to_string(), flag.clone()));
        let worker = Worker {
            policy: Arc::new(Policy {
                receipts,
                ..Policy::new(id, d, &config.delivery, grace)
            }),
            sink: sink.clone(),
            store: store.clone(),
            owner: owner.clone(),
            notify: wake.notifier(id),
            paused: flag,
        };
        set.spawn(worker.run(shutdown.clone()));
    }
    set.spawn(watch_paused(store, paused, wake, shutdown));
    set
}

/// How often the paused destinations are read from the store.
const PAUSE_POLL: Duration = Duration::from_secs(1);

/// Keep each worker's paused flag as the store says (an operator's pause reaches
/// every instance within [`PAUSE_POLL`]); a resumed worker is woken at once.
async fn watch_paused(
    store: Arc<dyn Store>,
    flags: Vec<(String, Arc<AtomicBool>)>,
    wake: Wake,
    shutdown: CancellationToken,
) {
    loop {
        match store.paused_destinations().await {
            Ok(paused) => {
                for (dest, flag) in &flags {
                    let now = paused.contains(dest);
                    if flag.swap(now, Ordering::Relaxed) != now {
                        tracing::info!(destination = %dest, paused = now, "deliveries {}", if now { "paused" } else { "resumed" });
                        if !now {
                            wake.wake(dest);
                        }
                    }
                    metrics::gauge!("hallgate_destination_paused", "destination" => dest.clone())
                        .set(if now { 1.0 } else { 0.0 });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the paused destinations"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PAUSE_POLL) => {}
        }
    }
}

struct Worker {
    policy: Arc<Policy>,
    sink: Arc<dyn Sink>,
    store: Arc<dyn Store>,
    owner: String,
    notify: Arc<Notify>,
    /// An operator paused the destination: lease nothing more.
    paused: Arc<AtomicBool>,
}

impl Worker {
    /// Lease, send, record — with one store round trip at a time that both records
    /// finished attempts and leases more, and a local queue of leased deliveries
    /// (`Prefetch`) so a freed slot is filled without waiting for a commit. The round
    /// trip runs beside the sends: waiting for it, a worker sent only as many as it
    /// had slots per commit (16 per ~8 ms at a busy writer, 2,000/s).
    async fn run(self, shutdown: CancellationToken) {
        let p = self.policy.clone();
        let mut prefetch = Prefetch::new(&p);
        // Leased and waiting for a slot, with the time by which each must be sent:
        // half its lease, so that it is never sent after another took it.
        let mut ready: VecDeque<(Instant, LeasedDelivery)> = VecDeque::new();
        let half_lease = Duration::from_millis(u64::try_from(p.lease_ms / 2).unwrap_or(0));
        let mut finished: Vec<Completion> = Vec::new();
        // One task per request: a single delivery, or a batch of them.
        let mut in_flight: JoinSet<Vec<Completion>> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, Vec<i64>> = HashMap::new();
        // The last lease found fewer due deliveries than asked: wait for news.
        let mut exhausted = false;
        // The store round trip under way (at most one): it records finished attempts
        // and leases more while the sends go on.
        let mut exchange: Option<PendingExchange> = None;
        let collect = |r: Result<(tokio::task::Id, Vec<Completion>), tokio::task::JoinError>,
                       running: &mut HashMap<tokio::task::Id, Vec<i64>>,
                       finished: &mut Vec<Completion>| {
            match r {
                Ok((id, c)) => {
                    running.remove(&id);
                    finished.extend(c);
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
            // A batch waits for more records until then (`batch.max_wait_ms`).
            let mut hold: Option<Instant> = None;
            while in_flight.len() < p.concurrency {
                // Deliveries whose lease runs out soon are left to be leased again.
                while ready.front().is_some_and(|(by, _)| Instant::now() > *by) {
                    if let Some((_, d)) = ready.pop_front() {
                        tracing::warn!(destination = %p.destination, delivery = d.id, "leased delivery not sent within half its lease; it is sent after the lease expires");
                    }
                }
                let send = Send {
                    policy: p.clone(),
                    sink: self.sink.clone(),
                    owner: self.owner.clone(),
                };
                let Some(b) = &p.batch else {
                    let Some((_, d)) = ready.pop_front() else {
                        break;
                    };
                    let id = d.id;
                    let handle = in_flight.spawn(async move { vec![send.deliver(d).await] });
                    running.insert(handle.id(), vec![id]);
                    continue;
                };
                let Some((by, _)) = ready.front() else {
                    break;
                };
                // A batch not yet full waits for more, while more may come, at most
                // `max_wait` after its first record was leased.
                let full_by = by.checked_sub(half_lease).unwrap_or(*by) + b.max_wait;
                let more_may_come = !exhausted || exchange.is_some();
                if ready.len() < b.max_records && more_may_come && Instant::now() < full_by {
                    hold = Some(full_by);
                    break;
                }
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some((_, d)) = ready.front() {
                    let size = d.canonical.len();
                    if batch.len() == b.max_records
                        || (!batch.is_empty() && bytes + size > b.max_bytes)
                    {
                        break;
                    }
                    bytes += size;
                    if let Some((_, d)) = ready.pop_front() {
                        batch.push(d);
                    }
                }
                let ids = batch.iter().map(|d| d.id).collect();
                let handle = in_flight.spawn(send.deliver_batch(batch));
                running.insert(handle.id(), ids);
            }
            if exchange.is_none() {
                let want = prefetch
                    .allowed()
                    .saturating_sub(in_flight.len() + ready.len());
                let lease_now = want > 0
                    && !self.paused.load(Ordering::Relaxed)
                    && (!exhausted || !finished.is_empty());
                if lease_now || !finished.is_empty() {
                    let request = lease_now.then(|| LeaseRequest {
                        destination: p.destination.clone(),
                        owner: self.owner.clone(),
                        limit: want,
                        now_ms: now_ms(),
                        lease_ms: p.lease_ms,
                    });
                    prefetch.finished(finished.len());
                    let store = self.store.clone();
                    let done = std::mem::take(&mut finished);
                    let asked = lease_now.then_some(want);
                    exchange = Some(Box::pin(async move {
                        (store.exchange(done, request).await, asked)
                    }));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                (result, asked) = outstanding(&mut exchange) => {
                    exchange = None;
                    if !self.exchanged(result, asked, &mut ready, &mut exhausted, half_lease) {
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = tokio::time::sleep(p.poll) => {}
                        }
                    }
                }
                Some(r) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    collect(r, &mut running, &mut finished);
                }
                // New work, or the poll, matter only between round trips (a wake-up
                // during one is kept for the next wait).
                _ = self.notify.notified(), if exchange.is_none() => exhausted = false,
                _ = tokio::time::sleep(p.poll), if exchange.is_none() => exhausted = false,
                // A batch that waited long enough for more goes as it is.
                _ = sleep_until(hold), if hold.is_some() => {}
            }
        }
        // A round trip under way is finished first: what it leased is given back below.
        if let Some(x) = exchange.take() {
            let (result, asked) = x.await;
            self.exchanged(result, asked, &mut ready, &mut exhausted, half_lease);
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
            .flatten()
            .chain(ready.iter().map(|(_, d)| d.id))
            .collect();
        if !unfinished.is_empty() {
            tracing::info!(destination = %p.destination, count = unfinished.len(), "releasing unfinished deliveries");
            if let Err(e) = self.store.release(&self.owner, unfinished).await {
                tracing::error!(error = %e, "could not release leases; they expire by themselves");
            }
        }
    }
}

impl Worker {
    /// Take a round trip's answer: what it leased joins the queue. False when it
    /// failed (the caller waits a poll before the next).
    fn exchanged(
        &self,
        result: Result<Exchange, StoreError>,
        asked: Option<usize>,
        ready: &mut VecDeque<(Instant, LeasedDelivery)>,
        exhausted: &mut bool,
        half_lease: Duration,
    ) -> bool {
        let p = &self.policy;
        match result {
            Ok(x) => {
                if x.lost > 0 {
                    tracing::warn!(destination = %p.destination, lost = x.lost, "attempts not recorded; those deliveries are sent again after their lease");
                }
                if let Some(want) = asked {
                    *exhausted = x.leased.len() < want;
                }
                let by = Instant::now() + half_lease;
                ready.extend(x.leased.into_iter().map(|d| (by, d)));
                true
            }
            Err(e) => {
                tracing::error!(destination = %p.destination, error = %e, "store round trip failed; unrecorded attempts are sent again after their lease");
                *exhausted = true;
                false
            }
        }
    }
}

/// A store round trip under way, with how many deliveries it asked to lease.
type PendingExchange = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (Result<Exchange, StoreError>, Option<usize>)>
            + std::marker::Send,
    >,
>;

/// Until `at` (never without one).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The round trip under way, or never (a `select!` branch that waits for nothing).
async fn outstanding(
    x: &mut Option<PendingExchange>,
) -> (Result<Exchange, StoreError>, Option<usize>) {
    match x {
        Some(f) => f.await,
        None => std::future::pending().await,
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
            url: Some(toml::Spanned::new(0..0, "http://x/".into())),
            content_type: "application/json".into(),
            timeout_ms: 1,
            concurrency: 1,
            max_attempts: None,
            max_age_seconds: None,
            rate: None,
            auth: None,
            tls: None,
            max_backlog: None,
            batch: None,
            sm2_sign: None,
            sm4: None,
        };
        let p = Policy::new("x", &dest, &d, Duration::ZERO);
        for attempt in 0..40 {
            let b = p.backoff_ms(attempt);
            assert!(b <= (100u64 << attempt.min(32)).min(1000), "{attempt}: {b}");
        }
    }
}
