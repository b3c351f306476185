//! Request ids and the access log. Every request gets an id: the `X-Request-Id` its
//! sender sent (1 to 128 visible ASCII characters), or a new one. The id is returned
//! in `X-Request-Id`, is a field of the `request` span every log line of the request
//! is written in, reaches the audit events of a pushed body and travels on to the
//! destinations with each delivery of its records. When the request is answered, one
//! access log line says what it was, who sent it, how it ended and how long it took.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The id of the request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Longest request id taken from a sender.
pub const MAX_REQUEST_ID: usize = 128;

/// The sender's id when it is usable, else a new one.
fn id_of(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Tag the request with its id, serve it in its span, log one access line.
pub async fn tag(mut req: Request, next: Next) -> Response {
    let id = id_of(&req);
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().chars().take(200).collect::<String>();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        node = tracing::field::Empty,
        message_id = tracing::field::Empty,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).instrument(span.clone()).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    metrics::counter!("hallgate_requests_total", "status" => status.to_string()).increment(1);
    span.in_scope(|| {
        // Health checks and scrapes are many and say nothing: debug only.
        if path == "/healthz" || path == "/readyz" || path == "/metrics" {
            tracing::debug!(%method, %path, status, duration_ms = ms, "request");
        } else if status >= 500 {
            tracing::warn!(%method, %path, status, duration_ms = ms, "request");
        } else {
            tracing::info!(%method, %path, status, duration_ms = ms, "request");
        }
    });
    resp
}
