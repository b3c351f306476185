//! Receipts back to senders (回执推送): the sink of a `receipt:NODE` queue. Each
//! delivery in it stands for one record of NODE whose deliveries are all settled;
//! the sink reads their outcomes from the store and POSTs the receipt, as JSON,
//! through an [`HttpSink`] made with the node's outbound settings (its auth, TLS,
//! SM2/SM4), under the queue's own Idempotency-Key. Retries, leases, order and the
//! audit of each attempt are the delivery layer's, as for any destination.

use std::sync::Arc;

use serde_json::{Value, json};

use super::http::HttpSink;
use super::{Attempt, Outcome, Sink, SinkFuture};
use crate::hash::sha256_hex;
use crate::store::{DeliveryState, DeliveryView, LeasedDelivery, Store};

pub struct ReceiptSink {
    pub(super) http: HttpSink,
    pub(super) store: Arc<dyn Store>,
    pub(super) gateway: String,
}

impl ReceiptSink {
    /// The receipt for the record that delivery `d` stands for.
    async fn receipt(&self, d: &LeasedDelivery) -> Result<Value, String> {
        let all = self
            .store
            .record_deliveries(d.id)
            .await
            .map_err(|e| format!("cannot read the record's deliveries: {e}"))?;
        let (this, others): (Vec<&DeliveryView>, Vec<&DeliveryView>) = all
            .iter()
            .partition(|v| v.destination.starts_with(crate::config::RECEIPT_PREFIX));
        let this = this
            .into_iter()
            .find(|v| v.id == d.id)
            .ok_or_else(|| format!("delivery {} is not in the store", d.id))?;
        let outcome = if others.iter().all(|v| v.state == DeliveryState::Delivered) {
            "delivered"
        } else {
            "dead_lettered"
        };
        let settled_at = others.iter().map(|v| v.updated_at.as_str()).max();
        let record: Value = serde_json::from_str(&d.canonical).unwrap_or(Value::Null);
        Ok(json!({
            "receipt": "hallgate.receipt.v1",
            "gateway": self.gateway,
            "record": {
                "message_id": d.message_id,
                "index": this.record_index,
                "kind": d.kind.as_str(),
                "case_no": d.case_no,
                "record_id": record.get("record_id"),
                "version": record.get("version"),
                "sha256": sha256_hex(d.canonical.as_bytes()),
            },
            "request_id": d.request_id,
            "outcome": outcome,
            "accepted_at": others.iter().map(|v| v.created_at.as_str()).min(),
            "settled_at": settled_at,
            "destinations": others.iter().map(|v| json!({
                "destination": v.destination,
                "state": v.state,
                "status": v.last_status,
                "attempts": v.attempts,
                "delivered_at": v.delivered_at,
                "reason": if v.state == DeliveryState::Dead { v.last_error.as_deref() } else { None },
                "receipt_sha256": v.receipt.as_deref().map(|r| sha256_hex(r.as_bytes())),
            })).collect::<Vec<_>>(),
        }))
    }
}

impl Sink for ReceiptSink {
    fn send<'a>(&'a self, d: &'a LeasedDelivery) -> SinkFuture<'a> {
        Box::pin(async move {
            let body = match self.receipt(d).await {
                Ok(b) => b,
                // The store could not be read: worth trying again.
                Err(error) => {
                    return Attempt {
                        outcome: Outcome::Retry {
                            status: None,
                            error,
                            retry_after_ms: None,
                        },
                        request_sha256: String::new(),
                    };
                }
            };
            let as_sent = LeasedDelivery {
                canonical: body.to_string(),
                ..d.clone()
            };
            self.http.send(&as_sent).await
        })
    }
}
