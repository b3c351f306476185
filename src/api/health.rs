//! Liveness (`/healthz`), readiness (`/readyz`: the store takes writes) and the
//! gateway's public keys (`/.well-known/jwks.json`) for destinations that check its
//! tokens.

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/readyz", get(readyz))
}

#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process runs", body = String, content_type = "text/plain")),
    security(())
)]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "health",
    responses((status = 200, description = "The gateway's public keys (current and next) for the tokens it sends, as a JWK set", body = Jwks)),
    security(())
)]
pub(super) async fn jwks(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(state.gateway_keys.jwks())
}

#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, description = "The store takes writes", body = Object), (status = 503, description = "The store cannot take writes", body = Object)),
    security(())
)]
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": e.to_string()})),
        )
            .into_response(),
    }
}
