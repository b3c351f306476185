//! Rate limits (governor): how fast each sending node may send, and how fast the
//! gateway delivers to each destination.
//!
//! A sender over its rate gets `429 Too Many Requests` with `Retry-After`; nothing
//! is decoded or stored. Deliveries to a destination with a rate wait their turn
//! before each request, so a destination configured for N records/s never gets more.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota};

use crate::config::{Config, RateLimit};

/// One limiter for a rate and burst.
pub fn limiter(rate: &RateLimit) -> Option<Arc<DefaultDirectRateLimiter>> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst.unwrap_or(rate.per_second)).unwrap_or(per_second);
    Some(Arc::new(DefaultDirectRateLimiter::direct(
        Quota::per_second(per_second).allow_burst(burst),
    )))
}

/// The sending nodes' limiters.
#[derive(Default)]
pub struct SenderLimits {
    by_node: HashMap<String, Arc<DefaultDirectRateLimiter>>,
}

impl SenderLimits {
    pub fn new(config: &Config) -> SenderLimits {
        SenderLimits {
            by_node: config
                .nodes
                .iter()
                .filter_map(|(id, n)| {
                    let rate = n.get_ref().accept.as_ref()?.rate.as_ref()?;
                    Some((id.clone(), limiter(rate)?))
                })
                .collect(),
        }
    }

    /// `Err(seconds to wait)` when `node` is over its rate.
    pub fn check(&self, node: &str) -> Result<(), u64> {
        let Some(l) = self.by_node.get(node) else {
            return Ok(());
        };
        l.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}
