//! A client for one node's sync APIs ([`Api`]): its timeout, rate, TLS and auth
//! (those of the node's destination, when it has one), bodies bounded in size.

use std::sync::Arc;
use std::time::Duration;

use super::{SyncError, settings};
use crate::auth::outbound::{GatewayKeys, Signer};
use crate::config::Config;

/// A client for one node's sync APIs: its timeout, rate, TLS and auth (those of the
/// node's destination, when it has one).
pub struct Api {
    client: reqwest::Client,
    signer: Signer,
    pace: Option<Arc<governor::DefaultDirectRateLimiter>>,
    pub node: String,
}

/// An answer of a sync API.
pub struct Answer {
    pub url: String,
    pub content_type: Option<String>,
    pub next_cursor: Option<String>,
    pub body: bytes::Bytes,
}

impl Api {
    pub fn new(config: &Config, node: &str, keys: &Arc<GatewayKeys>) -> Result<Api, SyncError> {
        let s = settings(config, node)?;
        let n = config
            .nodes
            .get(node)
            .ok_or_else(|| SyncError::UnknownNode(node.to_string()))?
            .get_ref();
        let mut builder = crate::tls::http_client().timeout(Duration::from_millis(s.timeout_ms));
        let mut signer = Signer::None;
        if let Some(d) = &n.destination {
            if let Some(tls) = &d.tls {
                builder = crate::tls::client_builder(builder, tls, &config.base_dir())
                    .map_err(|e| SyncError::Other(format!("nodes.{node}.destination.tls: {e}")))?;
            }
            signer =
                Signer::new(config, node, d, keys).map_err(|e| SyncError::Other(e.to_string()))?;
        }
        let client = builder
            .build()
            .map_err(|e| SyncError::Other(format!("HTTP client: {e}")))?;
        Ok(Api {
            client,
            signer,
            pace: s.rate.as_ref().and_then(crate::limits::limiter),
            node: node.to_string(),
        })
    }

    /// GET `url` with `query`, paced by the node's rate; any 2xx is an answer.
    pub async fn get(
        &self,
        url: &str,
        query: &[(&str, String)],
        max_bytes: usize,
    ) -> Result<Answer, SyncError> {
        if let Some(p) = &self.pace {
            p.until_ready().await;
        }
        let shown = url.to_string();
        let http = |e: reqwest::Error| SyncError::Http {
            url: shown.clone(),
            reason: crate::tls::connect_failure(&e)
                .unwrap_or_else(|| crate::observe::error_chain(&e)),
        };
        let mut full = reqwest::Url::parse(url).map_err(|e| SyncError::Http {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if !query.is_empty() {
            let mut pairs = full.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let mut req = self.client.get(full);
        for (k, v) in self
            .signer
            .headers(&[])
            .map_err(|e| SyncError::Other(format!("signing a request to {url}: {e}")))?
        {
            req = req.header(k, v);
        }
        let mut resp = req.send().await.map_err(http)?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type");
        let next_cursor = header("x-next-cursor").filter(|c| !c.is_empty());
        let retry_after = header("retry-after").and_then(|t| t.trim().parse().ok());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > max_bytes {
                return Err(SyncError::BadAnswer {
                    url: url.to_string(),
                    reason: format!("larger than the body limit of {max_bytes} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(SyncError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                snippet: crate::record::mask_text(&text.chars().take(200).collect::<String>()),
                retry_after,
            });
        }
        Ok(Answer {
            url: url.to_string(),
            content_type,
            next_cursor,
            body: body.into(),
        })
    }

    /// GET a JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        query: &[(&str, String)],
        max_bytes: usize,
    ) -> Result<(T, Answer), SyncError> {
        let answer = self.get(url, query, max_bytes).await?;
        let value = serde_json::from_slice(&answer.body).map_err(|e| SyncError::BadAnswer {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        Ok((value, answer))
    }
}
