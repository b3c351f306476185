//! The console (layer 5): web pages for auditors and operators at `/console/`,
//! served by the gateway on the API's listener and TLS (docs/console.md). People,
//! not nodes, log in: console users with roles (`hallgate users`), sessions in a
//! cookie, CSRF tokens on every change. A node's token does not open the console
//! and a console session does not open the node API. Every page is rendered on
//! the server with its outside text escaped (`html`); the CSS and the one small
//! script are embedded in the binary, so the page loads nothing from elsewhere.
//!
//! - `session`: cookies, sessions, CSRF, failed-login throttling;
//! - `pages`: overview (with the per-minute chart), deliveries (投递) and the
//!   operators' retries;
//! - `cases`: the case search and a case's page (办件, 全程留痕);
//! - `audit`: verify the chain now, signed checkpoints, masked exports;
//! - `sync`: the pull sources, paused and resumed by operators;
//! - `supervision`: 电子监察, the red and yellow lists and the report by department;
//! - `password`: Argon2id hashes (`hallgate users`).

mod audit;
mod cases;
mod html;
mod login;
mod pages;
pub mod password;
mod session;
mod supervision;
mod sync;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::api::AppState;

/// What the console's handlers share.
pub struct Console {
    pub app: Arc<AppState>,
    pub throttle: session::Throttle,
    pub verification: audit::Verification,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "console page failed");
        let body = html::page(
            "出错了",
            None,
            "<p class=\"error\">存储暂时不可用，请稍后再试。</p>",
        );
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::response::Html(body),
        )
            .into_response()
    }
}

/// The console's routes, or none when `[console] enabled` is off.
pub fn router(app: Arc<AppState>) -> Router {
    if !app.config.console.enabled {
        return Router::new();
    }
    let console = Arc::new(Console {
        app,
        throttle: session::Throttle::default(),
        verification: audit::Verification::default(),
    });
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::overview))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/cases", get(cases::cases))
        .route("/console/cases/reveal", post(cases::reveal))
        .route("/console/deliveries", get(pages::deliveries))
        .route("/console/deliveries/retry", post(pages::retry_matching))
        .route("/console/deliveries/{id}/retry", post(pages::retry_one))
        .route("/console/audit", get(audit::audit_page))
        .route("/console/audit/verify", post(audit::verify))
        .route("/console/audit/checkpoints/{seq}", get(audit::checkpoint))
        .route("/console/audit/export", get(audit::export))
        .route("/console/sync", get(sync::sync_page))
        .route("/console/supervision", get(supervision::supervision_page))
        .route("/console/sync/{node}/{action}", post(sync::control))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .with_state(console)
        .layer(axum::middleware::from_fn(guard))
        .layer(axum::middleware::from_fn(crate::api::tag_request))
}

/// Headers on every console answer: nothing from another origin, no framing, no
/// caching of pages that show case data.
async fn guard(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}
