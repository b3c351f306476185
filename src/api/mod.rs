//! The HTTP API (layer 5; axum), one module per resource in the manner of
//! realworld-axum-sqlx: each says its routes in a `router()`, and [`router`] merges
//! them. Every error is a [`crate::intake::Refusal`], answered as one JSON shape (`error.rs`).
//!
//! - `records`: intake, `POST /v1/records` (the HTTP source, `sources::http`);
//! - `messages`, `cases`, `deliveries`: what the store holds, for the node that may
//!   read it;
//! - `destinations`: pause and resume deliveries to one (operators);
//! - `audit`: events and case timelines;
//! - `sync`: pull sources and the item catalogue;
//! - `health`: liveness, readiness and the gateway's public keys;
//! - `metrics`: Prometheus;
//! - `admin`: reloading the configuration (operators).
//!
//! A new resource is a sibling module with a `router()`, merged below.

mod access;
pub mod admin;
mod audit;
mod cases;
mod deliveries;
mod destinations;
mod error;
mod health;
mod messages;
mod metrics;
mod openapi;
mod records;
mod request_id;
mod supervision;
mod sync;
mod tap;

use std::sync::Arc;

use axum::Router;

use crate::auth::outbound::GatewayKeys;
use crate::auth::token::Verifier;
use crate::config::Config;
use crate::delivery::Wake;
use crate::sources::http::HttpSource;
use crate::store::Store;

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub tokens: Arc<Verifier>,
    pub gateway_keys: Arc<GatewayKeys>,
    pub wake: Wake,
    /// The push source behind `POST /v1/records`.
    pub push: HttpSource,
    /// Where `POST /v1/admin/reload` asks the gateway to reload (none: it cannot).
    pub reload: Option<admin::Reloads>,
}

pub use openapi::document as openapi_document;
pub use request_id::RequestId;
/// The request-id and access-log middleware, for routes beside the API (the console).
pub use request_id::tag as tag_request;

/// Every unknown path answers 404 in the one JSON error shape.
async fn not_found(uri: axum::http::Uri) -> crate::intake::Refusal {
    crate::intake::Refusal::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such endpoint: {}",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

/// The router with every resource.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(records::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(messages::router())
        .merge(cases::router())
        .merge(deliveries::router())
        .merge(destinations::router())
        .merge(audit::router())
        .merge(supervision::router())
        .merge(sync::router())
        .merge(admin::router())
        .merge(openapi::router())
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(tap::tap))
        .layer(axum::middleware::from_fn(request_id::tag))
}
