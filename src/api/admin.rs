//! `POST /v1/admin/reload`: an operator asks the running gateway to read its
//! configuration again (what `hallgate reload` calls). The reload itself is the
//! gateway's (`gateway::reload`): this module only carries the ask to it and its
//! answer back, the report of what changed or the problem with file and line.

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::AppState;
use super::access::{Peer, Reader, reader, refuse_read};
use crate::intake::Refusal;

/// One ask to reload: who asked, and where the outcome goes (the report as JSON, or
/// the reason the old configuration stays).
pub struct ReloadAsk {
    pub by: String,
    pub reply: oneshot::Sender<Result<Value, String>>,
}

/// Where reloads are asked for (the gateway's reloader reads them in turn).
pub type Reloads = mpsc::Sender<ReloadAsk>;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/admin/reload", post(reload))
}

#[utoipa::path(
    post, path = "/v1/admin/reload", tag = "admin",
    responses(
        (status = 200, description = "The new configuration serves; what changed, with the SHA-256 of each file loaded", body = ReloadReport),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller may not do this; the message names the role needed", body = ErrorBody),
        (status = 422, description = "The new configuration is refused (file:line: key: problem) and the old one keeps serving", body = ErrorBody),
        (status = 503, description = "This gateway cannot reload (it is stopping, or runs an embedded demo configuration)", body = ErrorBody),
    ),
    security(("bearer" = []), ("mtls" = []))
)]
pub(super) async fn reload(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, Refusal> {
    let who = reader(&state, &headers, &peer).await?;
    if let Reader::All(Some(n)) | Reader::Node(n) = &who
        && !state.config.is_operator(n)
    {
        let what = format!(
            "node `{n}` is not an operator: reloading the configuration needs roles = [\"operator\"]"
        );
        return Err(refuse_read(&state, n, what).await);
    }
    let unavailable = || {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot_reload",
            "this gateway cannot reload now (it is stopping, or runs an embedded configuration)",
        )
    };
    let Some(reloads) = &state.reload else {
        return Err(unavailable());
    };
    let (reply, answer) = oneshot::channel();
    reloads
        .send(ReloadAsk {
            by: who.asked_by(),
            reply,
        })
        .await
        .map_err(|_| unavailable())?;
    match answer.await.map_err(|_| unavailable())? {
        Ok(report) => Ok(Json(report)),
        Err(problem) => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "config_invalid",
            problem,
        )),
    }
}
