//! Receipts back to senders (回执推送): a sending node's `receipt_url`. Once every
//! delivery of one of its records is settled (delivered, or dead-lettered), the
//! gateway POSTs a receipt there through the same durable queue as any delivery,
//! to the queue's own destination `receipt:NODE`. It proves itself as it does when
//! delivering to that node: the node's `destination` settings (auth, TLS, SM2/SM4,
//! timeouts) when it has them, else a POST signed with the gateway's token.

use toml::Spanned;

use super::{Config, Destination, Node, OutboundAuth};

/// The queue name of a node's receipts.
pub const RECEIPT_PREFIX: &str = "receipt:";

/// What is wrong with a node's `receipt_url`, if anything.
pub(super) fn problem(id: &str, n: &Node) -> Option<String> {
    let url = n.receipt_url.as_ref()?.get_ref();
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || reqwest::Url::parse(url).is_err()
    {
        return Some(format!(
            "nodes.{id}.receipt_url: `{url}` is not an http(s) URL"
        ));
    }
    if n.accept.is_none() && n.sync.is_none() {
        return Some(format!(
            "nodes.{id}.receipt_url: the node sends nothing (no accept or sync), so there is nothing to send receipts for"
        ));
    }
    None
}

impl Config {
    /// The nodes that get receipts for their records.
    pub fn receipt_senders(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.get_ref().receipt_url.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Each receipt queue (`receipt:NODE`) with the destination settings it is
    /// delivered with: the node's own destination, at the receipt URL, one record per
    /// request, or defaults.
    pub fn receipt_destinations(&self) -> Vec<(String, Destination)> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| {
                let n = n.get_ref();
                let url = n.receipt_url.as_ref()?;
                let d = match &n.destination {
                    Some(d) => Destination {
                        url: Some(url.clone()),
                        content_type: "application/json".into(),
                        batch: None,
                        max_backlog: None,
                        ..d.clone()
                    },
                    None => defaults(url),
                };
                Some((format!("{RECEIPT_PREFIX}{id}"), d))
            })
            .collect()
    }
}

/// A destination with every setting at its default, signed with the gateway's
/// token (`auth = "jwt"`: ES256, `aud` = the node id).
fn defaults(url: &Spanned<String>) -> Destination {
    let text = format!("url = {}", toml::Value::String(url.get_ref().clone()));
    let d = toml::from_str(&text).unwrap_or_else(|_| Destination {
        url: Some(url.clone()),
        content_type: "application/json".into(),
        timeout_ms: 10_000,
        concurrency: 2,
        max_attempts: None,
        max_age_seconds: None,
        rate: None,
        auth: None,
        sm2_sign: None,
        sm4: None,
        tls: None,
        max_backlog: None,
        batch: None,
    });
    Destination {
        auth: Some(OutboundAuth::Jwt),
        ..d
    }
}
