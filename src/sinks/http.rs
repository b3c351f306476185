//! The HTTP sink: POST one record to the destination's URL, rendered by its mappings
//! (canonical JSON for kinds it has none for), signed as it expects, with the
//! delivery's stable `Idempotency-Key`. Answers are classified as DESIGN.md section
//! 1 step 8 says: 2xx delivered, 409 duplicate = delivered, 408/429/5xx and network
//! errors retried (`Retry-After` passed on), other 4xx dead at once.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::{Attempt, Outcome, Sink, SinkError, SinkFuture};
use crate::auth::envelope::Seal;
use crate::auth::outbound::{GatewayKeys, Signer};
use crate::config::{Config, Destination};
use crate::hash::sha256_hex;
use crate::mapping::MappingSet;
use crate::record::mask_text;
use crate::store::LeasedDelivery;
use crate::time::now_ms;

/// Largest receipt body kept.
pub(super) const MAX_RECEIPT: usize = 64 * 1024;

/// One HTTP destination.
pub struct HttpSink {
    pub(super) client: reqwest::Client,
    pub(super) url: String,
    pub(super) content_type: String,
    /// The destination's mappings: records of a kind it has a mapping for are sent in
    /// its native format, others as canonical JSON.
    pub(super) render: Option<MappingSet>,
    /// The headers that prove the gateway to the destination.
    pub(super) signer: Signer,
    /// SM4 encryption and SM2 signature headers, when the destination asks for them.
    pub(super) seal: Option<Seal>,
    /// Where a batch's answer lists one result per record (`batch.results`).
    pub(super) results: String,
}

impl HttpSink {
    pub fn new(
        config: &Config,
        id: &str,
        d: &Destination,
        render: Option<MappingSet>,
        keys: &std::sync::Arc<GatewayKeys>,
    ) -> Result<HttpSink, SinkError> {
        let failed = |reason: String| SinkError::Client {
            destination: id.to_string(),
            reason,
        };
        let mut builder = crate::tls::http_client();
        if let Some(tls) = &d.tls {
            builder = crate::tls::client_builder(builder, tls, &config.base_dir())
                .map_err(|e| failed(e.to_string()))?;
        }
        let client = builder
            .timeout(Duration::from_millis(d.timeout_ms))
            .connect_timeout(Duration::from_millis(d.timeout_ms.min(5_000)))
            .pool_max_idle_per_host(d.concurrency)
            .user_agent(concat!("hallgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| failed(e.to_string()))?;
        Ok(HttpSink {
            client,
            url: d.url().to_string(),
            content_type: d.content_type.clone(),
            render,
            signer: Signer::new(config, id, d, keys).map_err(|e| failed(e.to_string()))?,
            seal: Seal::new(config, id, d.sm2_sign.as_ref(), d.sm4.as_ref(), d.url())
                .map_err(|e| failed(e.to_string()))?,
            results: d
                .batch
                .as_ref()
                .map(|b| b.results.clone())
                .unwrap_or_default(),
        })
    }

    async fn attempt(&self, d: &LeasedDelivery) -> Attempt {
        let started = std::time::Instant::now();
        let (body, content_type) = match self.render.as_ref().and_then(|s| s.for_render(d.kind)) {
            None => (
                bytes::Bytes::from(d.canonical.clone()),
                self.content_type.clone(),
            ),
            Some(m) => {
                let rendered = serde_json::from_str::<serde_json::Value>(&d.canonical)
                    .map_err(|e| e.to_string())
                    .and_then(|v| crate::mapping::render(m, &[v]).map_err(|e| e.to_string()));
                match rendered {
                    Ok(b) => (bytes::Bytes::from(b), m.content_type()),
                    Err(e) => {
                        let reason = format!("cannot render with {}: {e}", m.file);
                        return attempt(dead(reason), &[]);
                    }
                }
            }
        };
        let mut headers = vec![
            ("Idempotency-Key", d.idempotency_key.clone()),
            ("X-Hallgate-Message-Id", d.message_id.clone()),
            ("X-Hallgate-Kind", d.kind.as_str().to_string()),
        ];
        if let Some(id) = &d.request_id {
            headers.push(("X-Request-Id", id.clone()));
        }
        let outcome = match self.post(&body, &content_type, &headers).await {
            Posted::Answered {
                status,
                retry_after_ms,
                body: received,
            } => {
                let text = String::from_utf8_lossy(&received[..received.len().min(MAX_RECEIPT)])
                    .into_owned();
                answered(status, text, retry_after_ms)
            }
            Posted::Unsigned(reason) => dead(reason),
            Posted::Failed(e) => unanswered(&e, started),
        };
        attempt(outcome, &body)
    }

    /// POST `body`, signed as the destination expects, with `headers`.
    pub(super) async fn post(
        &self,
        body: &bytes::Bytes,
        content_type: &str,
        headers: &[(&'static str, String)],
    ) -> Posted {
        let (body, content_type, sealed) = match &self.seal {
            Some(seal) => seal.seal(body, content_type),
            None => (body.clone(), content_type.to_string(), Vec::new()),
        };
        let signed = match self.signer.headers(&body) {
            Ok(h) => h,
            Err(e) => return Posted::Unsigned(format!("cannot sign the request: {e}")),
        };
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        for (name, value) in signed.into_iter().chain(sealed) {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry_after_ms = retry_after_ms(resp.headers());
                let body = resp.bytes().await.unwrap_or_default();
                Posted::Answered {
                    status,
                    retry_after_ms,
                    body,
                }
            }
            Err(e) => Posted::Failed(e),
        }
    }
}

/// How a POST went.
pub(super) enum Posted {
    Answered {
        status: StatusCode,
        retry_after_ms: Option<u64>,
        body: bytes::Bytes,
    },
    /// Not sent: the request could not be signed.
    Unsigned(String),
    /// Sent, and no answer came.
    Failed(reqwest::Error),
}

impl Sink for HttpSink {
    fn send<'a>(&'a self, delivery: &'a LeasedDelivery) -> SinkFuture<'a> {
        Box::pin(self.attempt(delivery))
    }

    fn send_batch<'a>(&'a self, deliveries: &'a [LeasedDelivery]) -> super::BatchFuture<'a> {
        Box::pin(self.attempt_batch(deliveries))
    }
}

/// What an answer with `status` and body `text` means for the records it answers.
pub(super) fn answered(status: StatusCode, text: String, retry_after_ms: Option<u64>) -> Outcome {
    match classify(status) {
        Verdict::Delivered { duplicate } => Outcome::Delivered {
            status: status.as_u16(),
            receipt: text,
            duplicate,
        },
        Verdict::Retry => Outcome::Retry {
            status: Some(status.as_u16()),
            error: format!("HTTP {status}: {}", snippet(&text)),
            retry_after_ms,
        },
        Verdict::Dead => Outcome::Dead {
            status: Some(status.as_u16()),
            reason: format!("refused by destination: HTTP {status}: {}", snippet(&text)),
        },
    }
}

/// A request that got no answer: retried.
pub(super) fn unanswered(e: &reqwest::Error, started: std::time::Instant) -> Outcome {
    let error = if e.is_timeout() {
        format!("timed out after {:?}", started.elapsed())
    } else if let Some(why) = crate::tls::connect_failure(e) {
        why
    } else {
        mask_text(&format!("network error: {e}"))
    };
    Outcome::Retry {
        status: None,
        error,
        retry_after_ms: None,
    }
}

pub(super) fn attempt(outcome: Outcome, sent: &[u8]) -> Attempt {
    Attempt {
        outcome,
        request_sha256: sha256_hex(sent),
    }
}

/// A delivery that no retry can help, sent nowhere.
pub(super) fn dead(reason: String) -> Outcome {
    Outcome::Dead {
        status: None,
        reason,
    }
}

/// What an attempt's answer means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Delivered { duplicate: bool },
    Retry,
    Dead,
}

pub(super) fn classify(status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Delivered { duplicate: false },
        409 => Verdict::Delivered { duplicate: true },
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Dead,
    }
}

/// `Retry-After` as seconds or an HTTP date, in milliseconds from now.
pub(super) fn retry_after_ms(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let ms = at.as_millisecond() - now_ms();
    Some(u64::try_from(ms).unwrap_or(0))
}

/// First line of a receipt, short, for error messages.
pub(super) fn snippet(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    mask_text(&line.chars().take(200).collect::<String>())
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
}
