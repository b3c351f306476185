//! `GET /metrics`: the Prometheus text of every series (`observe`), with the queue
//! gauges (depth, dead letters, the oldest pending delivery's age) read from the store
//! at the moment of asking. With `[gateway] metrics = "operator"`, only operators and
//! auditors (and a scraper holding an operator node's token) read them.

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::access::{Peer, Reader, reader, refuse_read};
use axum::http::HeaderMap;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/metrics", get(metrics))
}

#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text (docs/metrics.md)", body = String, content_type = "text/plain"), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody)),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn metrics(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    if state.config.gateway.metrics == "operator" {
        match reader(&state, &headers, &peer).await {
            Ok(Reader::All(_)) => {}
            Ok(Reader::Node(n)) => {
                let what = format!(
                    "node `{n}` may not read /metrics: [gateway] metrics = \"operator\" needs roles = [\"operator\"]"
                );
                return refuse_read(&state, &n, what).await.into_response();
            }
            Err(refusal) => return refusal.into_response(),
        }
    }
    if let Ok(depths) = state.store.queue_depths().await {
        for (dest, _) in state.config.destinations() {
            let d = depths.iter().find(|d| d.destination == dest);
            metrics::gauge!("hallgate_queue_depth", "destination" => dest.to_string())
                .set(d.map_or(0.0, |d| d.pending as f64));
            metrics::gauge!("hallgate_dead_letters", "destination" => dest.to_string())
                .set(d.map_or(0.0, |d| d.dead as f64));
            let oldest = d.and_then(|d| d.oldest_pending_ms).map_or(0.0, |at| {
                (crate::time::now_ms().saturating_sub(at)).max(0) as f64 / 1000.0
            });
            metrics::gauge!("hallgate_oldest_pending_seconds", "destination" => dest.to_string())
                .set(oldest);
        }
    }
    let text = crate::observe::prometheus()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
