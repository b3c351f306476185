//! Who may read what: the node behind a request ([`reader`], [`audit_scope`]), the
//! refusals of reads it may not make (audited), and masking of personal data in
//! every answer.

use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use super::AppState;
use crate::auth;
use crate::event::{Event, EventKind};
use crate::intake::Refusal;
use crate::record::mask_personal;
use crate::time::now_ms;
use crate::tls::PeerCert;

/// The TLS client certificate of the connection, when the gateway serves HTTPS and
/// the client presented one.
pub(super) type Peer = Option<axum::Extension<Option<PeerCert>>>;

pub(super) fn peer_cert(p: &Peer) -> Option<&PeerCert> {
    p.as_ref().and_then(|e| e.0.as_ref())
}

pub(super) fn masked<T: Serialize>(v: &T) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    mask_personal(&mut v);
    v
}

/// Who reads the operator endpoints: every node's data (operators, auditors, and
/// anyone when `trust_node_header` marks a development set-up) or one node's own.
pub(super) enum Reader {
    All,
    Node(String),
}

pub(super) async fn reader(
    state: &AppState,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Reader, Refusal> {
    match auth::caller(&state.config, &state.tokens, headers, peer_cert(peer)).await {
        Ok(who) if state.config.reads_everything(&who.node) => Ok(Reader::All),
        Ok(who) => Ok(Reader::Node(who.node)),
        Err(auth::AuthError::NoCredentials | auth::AuthError::MissingNode)
            if state.config.gateway.trust_node_header =>
        {
            Ok(Reader::All)
        }
        Err(e) => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            e.to_string(),
        )),
    }
}

/// Refuse a read and keep the refusal as evidence.
pub(super) async fn refuse_read(state: &AppState, node: &str, what: String) -> Refusal {
    let mut ev = Event::new(now_ms(), EventKind::AuthorizationRefused);
    ev.node = Some(node.to_string());
    ev.detail = json!({ "status": 403, "code": "forbidden", "message": what });
    if let Err(err) = state.store.audit(ev).await {
        tracing::error!(error = %err, "could not audit a refused read");
    }
    Refusal::new(StatusCode::FORBIDDEN, "forbidden", what)
}

/// The node asking for audit data: auditors see everything, others only events
/// that name them.
pub(super) async fn audit_scope(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<&PeerCert>,
    asked: Option<String>,
) -> Result<Option<String>, Refusal> {
    let caller = auth::caller(&state.config, &state.tokens, headers, peer)
        .await
        .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()))?
        .node;
    if state.config.is_auditor(&caller) {
        return Ok(asked);
    }
    match asked {
        Some(n) if n != caller => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("node `{caller}` is not an auditor and may query only its own events"),
        )),
        _ => Ok(Some(caller)),
    }
}
