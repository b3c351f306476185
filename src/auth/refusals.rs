//! Refusals before a node is known: requests without credentials or with ones that
//! name no configured node, and request heads too large to read. One sender can
//! cause any number of them, so they must not cost an audit write each, nor a
//! token verification each:
//!
//! - each peer address may cause `refusals_per_second` of them (a burst of
//!   `refusal_burst`); past it, its requests are answered 429 before authentication
//!   until the budget refills;
//! - they are audited as one event per peer address and reason per
//!   `refusal_audit_seconds`, with the count and the first and last sample;
//! - a refusal whose credentials name a configured node (a bad signature on a
//!   node's token, a certificate for the wrong node) is audited at once, on its own.
//!
//! Every refusal event carries the peer address, and the client certificate's names
//! where there is one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::event::{Event, EventKind};
use crate::store::Store;
use crate::time::{now_ms, rfc3339};
use crate::tls::Peer;

/// Peers and reasons tallied at once; past it, the rest share one tally.
const MAX_TALLIES: usize = 10_000;

/// The code of a request answered 429 because its peer spent its refusal budget.
pub const THROTTLED: &str = "refusals_rate_limited";

/// One refusal.
#[derive(Debug, Clone)]
pub struct Refused {
    pub peer: SocketAddr,
    /// The client certificate's names and thumbprint, when it presented one.
    pub cert: Option<String>,
    pub status: u16,
    /// Stable code (`unauthenticated`, `header_too_large`, …).
    pub code: &'static str,
    pub message: String,
    /// The configured node the credentials named, if they named one.
    pub node: Option<String>,
}

impl Refused {
    /// A refusal of a request from `peer`.
    pub fn of(peer: Option<&Peer>, status: u16, code: &'static str, message: String) -> Refused {
        Refused {
            peer: peer.map_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), |p| {
                p.addr
            }),
            cert: peer.and_then(|p| p.cert.as_ref()).map(|c| c.describe()),
            status,
            code,
            message,
            node: None,
        }
    }

    fn sample(&self) -> Value {
        json!({
            "at": rfc3339(now_ms()),
            "peer": self.peer.to_string(),
            "client_cert": self.cert,
            "message": self.message,
        })
    }
}

struct Tally {
    count: u64,
    status: u16,
    first: Value,
    last: Value,
}

/// The refusal budget of each peer address, and the tallies waiting to be audited.
pub struct Refusals {
    store: Arc<dyn Store>,
    budget: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Peers that spent their budget, and until when they are answered 429.
    throttled: Mutex<HashMap<IpAddr, Instant>>,
    tallies: Mutex<HashMap<(IpAddr, &'static str), Tally>>,
    interval: Duration,
}

impl Refusals {
    pub fn new(limits: &Limits, store: Arc<dyn Store>) -> Arc<Refusals> {
        let budget = NonZeroU32::new(limits.refusals_per_second).map(|rate| {
            let burst = NonZeroU32::new(limits.refusal_burst).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Refusals {
            store,
            budget,
            throttled: Mutex::new(HashMap::new()),
            tallies: Mutex::new(HashMap::new()),
            interval: Duration::from_secs(limits.refusal_audit_seconds.max(1)),
        })
    }

    /// Whether `peer` may still be refused the ordinary way: `Err(seconds)` while it
    /// is over its budget, and its request is answered 429 before authentication.
    /// Looking spends nothing: only refusals spend the budget.
    pub fn admit(&self, peer: Option<&Peer>) -> Result<(), u64> {
        let Some(p) = peer else { return Ok(()) };
        let Ok(mut throttled) = self.throttled.lock() else {
            return Ok(());
        };
        let ip = p.addr.ip();
        match throttled.get(&ip) {
            Some(until) if *until > Instant::now() => {
                let wait = *until - Instant::now();
                Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            Some(_) => {
                throttled.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Spend one refusal of `ip`'s budget; past it, throttle the peer.
    fn spend(&self, ip: IpAddr) {
        let Some(budget) = &self.budget else { return };
        if let Err(not_until) = budget.check_key(&ip) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            if let Ok(mut t) = self.throttled.lock()
                && t.len() < MAX_TALLIES
            {
                t.insert(ip, Instant::now() + wait.max(Duration::from_secs(1)));
            }
        }
    }

    /// Note a refusal: audited at once when it names a node, else tallied.
    pub async fn refused(&self, r: Refused) {
        if r.node.is_none() {
            self.tally(r);
            return;
        }
        metrics::counter!("hallgate_refusals_total", "code" => r.code).increment(1);
        self.spend(r.peer.ip());
        if let Some(node) = &r.node {
            let mut ev = Event::new(now_ms(), kind_of(r.status));
            ev.node = Some(node.clone());
            ev.detail = json!({
                "status": r.status,
                "code": r.code,
                "message": r.message,
                "peer": r.peer.to_string(),
                "client_cert": r.cert,
            });
            if let Err(e) = self.store.audit(ev).await {
                tracing::error!(error = %e, "could not audit a refused request");
            }
        }
    }

    /// Count a refusal that names no node in its peer's tally (audited at the next
    /// flush).
    pub fn tally(&self, r: Refused) {
        metrics::counter!("hallgate_refusals_total", "code" => r.code).increment(1);
        if r.code != THROTTLED {
            self.spend(r.peer.ip());
        }
        let Ok(mut tallies) = self.tallies.lock() else {
            return;
        };
        let mut key = (r.peer.ip(), r.code);
        if !tallies.contains_key(&key) && tallies.len() >= MAX_TALLIES {
            key = (IpAddr::V4(Ipv4Addr::UNSPECIFIED), "other_peers");
        }
        let sample = r.sample();
        tallies
            .entry(key)
            .and_modify(|t| {
                t.count += 1;
                t.last = sample.clone();
            })
            .or_insert(Tally {
                count: 1,
                status: r.status,
                first: sample.clone(),
                last: sample,
            });
    }

    /// Write one audit event per tallied peer and reason.
    pub async fn flush(&self) {
        let drained: Vec<((IpAddr, &'static str), Tally)> = match self.tallies.lock() {
            Ok(mut t) => t.drain().collect(),
            Err(_) => return,
        };
        for ((ip, code), t) in drained {
            let mut ev = Event::new(now_ms(), kind_of(t.status));
            ev.detail = json!({
                "status": t.status,
                "code": code,
                "peer": ip.to_string(),
                "count": t.count,
                "coalesced_seconds": self.interval.as_secs(),
                "first": t.first,
                "last": t.last,
            });
            if let Err(e) = self.store.audit(ev).await {
                tracing::error!(error = %e, "could not audit refused requests");
            }
        }
        if let Some(b) = &self.budget {
            b.retain_recent();
            b.shrink_to_fit();
        }
        if let Ok(mut t) = self.throttled.lock() {
            let now = Instant::now();
            t.retain(|_, until| *until > now);
        }
    }

    /// Flush every interval until `shutdown`, and once more then.
    pub async fn flush_every_interval(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.flush().await,
            }
        }
        self.flush().await;
    }
}

/// The event kind of a refusal by its status.
fn kind_of(status: u16) -> EventKind {
    if status == 403 {
        EventKind::AuthorizationRefused
    } else if status == 401 {
        EventKind::TokenRefused
    } else {
        EventKind::Rejected
    }
}
