//! Sinks: the ways records go out (layer 4), in the manner of Vector's `sinks/`.
//!
//! A sink takes one leased delivery and makes one attempt to hand it over: it renders
//! the canonical record as the destination expects, proves the gateway to it, sends
//! it, and says how the attempt ended ([`Attempt`]). That is all a sink does.
//! Retries and backoff, attempt and age limits, per-case order, leases, pacing to the
//! destination's rate, metrics and the audit of every attempt live once, above the
//! sinks, in [`crate::delivery`].
//!
//! - [`http`]: POST to the destination's URL (JSON or its mapped format, signed),
//!   one record per request or, for a destination with `batch`, several
//!   (`batch.rs`: the list body, the per-record keys and answers, the split of a
//!   refused batch);
//! - [`receipt`]: receipts back to a sending node (`receipt:NODE`), POSTed through
//!   an HTTP sink made with that node's outbound settings.
//!
//! - [`tables`]: rows written into a node's 前置库 exchange tables, with the
//!   delivery's key in the same database transaction.
//!
//! A new sink is a module here that implements [`Sink`] and is chosen in [`build`].

mod batch;
pub mod http;
pub mod receipt;
pub mod tables;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::auth::outbound::GatewayKeys;
use crate::config::Config;
use crate::mapping::MappingSet;
use crate::store::{LeasedDelivery, Store};

/// Why a sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot build the HTTP client for `{destination}`: {reason}")]
    Client { destination: String, reason: String },
    #[error("前置库 of `{destination}`: {reason}")]
    Tables { destination: String, reason: String },
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination has it (`duplicate`: it already had it).
    Delivered {
        status: u16,
        receipt: String,
        duplicate: bool,
    },
    /// Worth trying again: a timeout, a network error, 408, 429 or 5xx. The delivery
    /// layer decides when, or whether attempts are used up.
    Retry {
        status: Option<u16>,
        error: String,
        /// The destination's `Retry-After`, in milliseconds from now.
        retry_after_ms: Option<u64>,
    },
    /// No retry can help: refused by the destination, or not sendable at all.
    Dead { status: Option<u16>, reason: String },
}

/// One attempt: how it ended and the SHA-256 of the bytes sent (for the audit log).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    pub request_sha256: String,
}

/// The future of one attempt.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;

/// The future of one attempt per delivery of a batch, in their order.
pub type BatchFuture<'a> = Pin<Box<dyn Future<Output = Vec<Attempt>> + Send + 'a>>;

/// A destination the gateway delivers to.
pub trait Sink: Send + Sync {
    /// Make one attempt to hand `delivery` over. Never retries by itself.
    fn send<'a>(&'a self, delivery: &'a LeasedDelivery) -> SinkFuture<'a>;

    /// Hand several deliveries over in as few requests as the destination allows
    /// (a destination with `batch`); one attempt per delivery, in their order. A
    /// sink without batches sends them one by one.
    fn send_batch<'a>(&'a self, deliveries: &'a [LeasedDelivery]) -> BatchFuture<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                out.push(self.send(d).await);
            }
            out
        })
    }
}

/// The sink of every destination in the config, keyed by node id, and of every
/// receipt queue (`receipt:NODE`), which reads the outcomes it reports in `store`.
pub fn build(
    config: &Config,
    mappings: &BTreeMap<String, MappingSet>,
    keys: &Arc<GatewayKeys>,
    store: &Arc<dyn Store>,
) -> Result<BTreeMap<String, Arc<dyn Sink>>, SinkError> {
    let mut out: BTreeMap<String, Arc<dyn Sink>> = BTreeMap::new();
    for (id, d) in config.destinations() {
        let tables = config
            .node(id)
            .and_then(|n| n.tables.as_ref())
            .filter(|t| !t.destination.is_empty());
        let sink: Arc<dyn Sink> = match tables {
            Some(t) => Arc::new(
                tables::open(config, id, t, mappings.get(id).cloned()).map_err(|e| {
                    SinkError::Tables {
                        destination: id.to_string(),
                        reason: e.to_string(),
                    }
                })?,
            ),
            None => Arc::new(http::HttpSink::new(
                config,
                id,
                d,
                mappings.get(id).cloned(),
                keys,
            )?),
        };
        out.insert(id.to_string(), sink);
    }
    for (queue, d) in config.receipt_destinations() {
        let node = queue.trim_start_matches(crate::config::RECEIPT_PREFIX);
        let sink = receipt::ReceiptSink {
            // Signed as deliveries to the node are: its outbound auth, keyed by its id.
            http: http::HttpSink::new(config, node, &d, None, keys)?,
            store: store.clone(),
            gateway: config.gateway.id.clone(),
        };
        out.insert(queue, Arc::new(sink));
    }
    Ok(out)
}
