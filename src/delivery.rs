//! Delivery: workers that lease due deliveries from the store, send them to their
//! destination, and record how each attempt ended.
//!
//! One worker loop per destination, holding at most `concurrency` requests in flight.
//! The store hands out only the next delivery of each case, so records of one case
//! arrive in order while other cases go on. Answers are classified as DESIGN.md
//! section 1 step 8 says: 2xx delivered, 409 duplicate = delivered, 408/429/5xx and
//! network errors retried (exponential backoff, full jitter, `Retry-After` honoured),
//! other 4xx dead-lettered at once. Every request carries the delivery's stable
//! `Idempotency-Key`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeliveryDefaults, Destination};
use crate::store::{Completion, DeliveryResult, LeaseRequest, LeasedDelivery, Store, now_ms};

/// Largest receipt body kept.
const MAX_RECEIPT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot build the HTTP client for `{destination}`: {reason}")]
    Client { destination: String, reason: String },
}

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
    /// The destination's mappings: records of a kind it has a mapping for are sent in
    /// its native format, others as canonical JSON.
    render: Option<crate::mapping::MappingSet>,
    /// The headers that prove the gateway to the destination.
    signer: crate::auth::outbound::Signer,
    /// Paces requests to the destination's configured rate.
    pace: Option<Arc<governor::DefaultDirectRateLimiter>>,
    /// How many deliveries a worker holds leased at once (in flight and waiting).
    prefetch: usize,
    destination: String,
    url: String,
    content_type: String,
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
    fn new(
        id: &str,
        d: &Destination,
        defaults: &DeliveryDefaults,
        grace: Duration,
        signer: crate::auth::outbound::Signer,
    ) -> Policy {
        Policy {
            render: None,
            signer,
            pace: d.rate.as_ref().and_then(crate::limits::limiter),
            // Never lease more than can be sent within half a lease at the
            // destination's rate: a lease must not expire while waiting its turn.
            prefetch: match &d.rate {
                Some(r) => (u64::from(r.per_second) * defaults.lease_seconds / 2)
                    .clamp(1, d.concurrency.max(1) as u64 * 4) as usize,
                None => d.concurrency.max(1) * 4,
            },
            destination: id.to_string(),
            url: d.url.get_ref().clone(),
            content_type: d.content_type.clone(),
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

/// A reqwest client builder on rustls with the pure-Rust `ring` provider (installed
/// as the process default on first use).
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// Start one worker per destination. They stop leasing when `shutdown` fires, let
/// in-flight requests finish within the grace period, and give back the rest.
pub fn spawn_workers(
    config: &Config,
    mappings: &std::collections::BTreeMap<String, crate::mapping::MappingSet>,
    keys: &Arc<crate::auth::outbound::GatewayKeys>,
    store: Arc<dyn Store>,
    wake: Wake,
    shutdown: CancellationToken,
) -> Result<JoinSet<()>, DeliveryError> {
    let owner = format!("{}-{}", config.gateway.id, uuid::Uuid::now_v7());
    let grace = Duration::from_secs(config.gateway.shutdown_grace_seconds);
    let mut set = JoinSet::new();
    for (id, d) in config.destinations() {
        let mut builder = http_client();
        if let Some(tls) = &d.tls {
            builder = crate::auth::tls::client_builder(builder, tls, &config.base_dir()).map_err(
                |e| DeliveryError::Client {
                    destination: id.to_string(),
                    reason: e.to_string(),
                },
            )?;
        }
        let client = builder
            .timeout(Duration::from_millis(d.timeout_ms))
            .connect_timeout(Duration::from_millis(d.timeout_ms.min(5_000)))
            .pool_max_idle_per_host(d.concurrency)
            .user_agent(concat!("hallgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeliveryError::Client {
                destination: id.to_string(),
                reason: e.to_string(),
            })?;
        let mut policy = Policy::new(
            id,
            d,
            &config.delivery,
            grace,
            crate::auth::outbound::Signer::new(config, id, d, keys).map_err(|e| {
                DeliveryError::Client {
                    destination: id.to_string(),
                    reason: e.to_string(),
                }
            })?,
        );
        policy.render = mappings.get(id).cloned();
        let worker = Worker {
            policy: Arc::new(policy),
            client,
            store: store.clone(),
            owner: owner.clone(),
            notify: wake.notifier(id),
        };
        set.spawn(worker.run(shutdown.clone()));
    }
    Ok(set)
}

struct Worker {
    policy: Arc<Policy>,
    client: reqwest::Client,
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
                    client: self.client.clone(),
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
    client: reqwest::Client,
    owner: String,
}

/// What an attempt's answer means.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Delivered { duplicate: bool },
    Retry,
    Dead,
}

fn classify(status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Delivered { duplicate: false },
        409 => Verdict::Delivered { duplicate: true },
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Dead,
    }
}

/// A delivery that no retry can help, sent nowhere.
fn dead(reason: String) -> DeliveryResult {
    DeliveryResult::Dead {
        status: None,
        reason,
    }
}

/// `Retry-After` as seconds or an HTTP date, in milliseconds from now.
fn retry_after_ms(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let ms = at.as_millisecond() - now_ms();
    Some(u64::try_from(ms).unwrap_or(0))
}

impl Send {
    async fn deliver(self, d: LeasedDelivery) -> Completion {
        let p = &self.policy;
        if let Some(pace) = &p.pace {
            pace.until_ready().await;
        }
        let started = Instant::now();
        let (body, content_type) = match p.render.as_ref().and_then(|set| set.for_render(d.kind)) {
            None => (
                bytes::Bytes::from(d.canonical.clone()),
                p.content_type.clone(),
            ),
            Some(m) => {
                let rendered = serde_json::from_str::<serde_json::Value>(&d.canonical)
                    .map_err(|e| e.to_string())
                    .and_then(|v| crate::mapping::render(m, &[v]).map_err(|e| e.to_string()));
                match rendered {
                    Ok(b) => (bytes::Bytes::from(b), m.content_type()),
                    Err(e) => {
                        let reason = format!("cannot render with {}: {e}", m.file);
                        return self.finish(&d, started, dead(reason), &[]);
                    }
                }
            }
        };
        let signed = match p.signer.headers(&body) {
            Ok(h) => h,
            Err(e) => {
                let reason = format!("cannot sign the request: {e}");
                return self.finish(&d, started, dead(reason), &body);
            }
        };
        let mut request = self
            .client
            .post(&p.url)
            .header(reqwest::header::CONTENT_TYPE, &content_type)
            .header("Idempotency-Key", &d.idempotency_key)
            .header("X-Hallgate-Message-Id", &d.message_id)
            .header("X-Hallgate-Kind", d.kind.as_str())
            .body(body.clone());
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let outcome = match request.send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = retry_after_ms(resp.headers());
                let body = resp.bytes().await.unwrap_or_default();
                let text =
                    String::from_utf8_lossy(&body[..body.len().min(MAX_RECEIPT)]).into_owned();
                match classify(status) {
                    Verdict::Delivered { duplicate } => DeliveryResult::Delivered {
                        status: status.as_u16(),
                        receipt: text,
                        duplicate,
                    },
                    Verdict::Retry => self.retry(
                        &d,
                        Some(status.as_u16()),
                        format!("HTTP {status}: {}", snippet(&text)),
                        retry_after,
                    ),
                    Verdict::Dead => DeliveryResult::Dead {
                        status: Some(status.as_u16()),
                        reason: format!(
                            "refused by destination: HTTP {status}: {}",
                            snippet(&text)
                        ),
                    },
                }
            }
            Err(e) => {
                let reason = if e.is_timeout() {
                    format!("timed out after {:?}", started.elapsed())
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    crate::record::mask_text(&format!("network error: {e}"))
                };
                self.retry(&d, None, reason, None)
            }
        };
        self.finish(&d, started, outcome, &body)
    }

    /// Count, log and package an attempt's outcome.
    fn finish(
        &self,
        d: &LeasedDelivery,
        started: Instant,
        outcome: DeliveryResult,
        sent: &[u8],
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
            request_sha256: crate::audit::sha256_hex(sent),
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

/// First line of a receipt, short, for error messages.
fn snippet(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    crate::record::mask_text(&line.chars().take(200).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn classification_follows_the_design() {
        assert_eq!(
            classify(StatusCode::OK),
            Verdict::Delivered { duplicate: false }
        );
        assert_eq!(
            classify(StatusCode::CONFLICT),
            Verdict::Delivered { duplicate: true }
        );
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                classify(StatusCode::from_u16(s).unwrap()),
                Verdict::Retry,
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 410, 422] {
            assert_eq!(
                classify(StatusCode::from_u16(s).unwrap()),
                Verdict::Dead,
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after_ms(&h), Some(7000));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_ms(&h), Some(0));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after_ms(&h), None);
    }

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
        };
        let p = Policy::new(
            "x",
            &dest,
            &d,
            Duration::ZERO,
            crate::auth::outbound::Signer::None,
        );
        for attempt in 0..40 {
            let b = p.backoff_ms(attempt);
            assert!(b <= (100u64 << attempt.min(32)).min(1000), "{attempt}: {b}");
        }
    }
}
