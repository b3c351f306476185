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
use crate::sources::http;
use crate::time::now_ms;
use crate::tls::{self, PeerCert};

/// The connection of a request: its address and, under HTTPS, the client certificate
/// it presented.
pub(super) type Peer = Option<axum::Extension<tls::Peer>>;

pub(super) fn peer_of(p: &Peer) -> Option<&tls::Peer> {
    p.as_ref().map(|e| &e.0)
}

fn peer_cert(p: &Peer) -> Option<&PeerCert> {
    peer_of(p).and_then(|p| p.cert.as_ref())
}

/// The node behind a read, its token claimed when the node takes each token once;
/// a refusal is counted against the peer's budget and audited.
async fn who(
    state: &AppState,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Result<auth::Authenticated, auth::AuthError>, Refusal> {
    if let Err(wait) = state.push.refusals.admit(peer_of(peer)) {
        return Err(http::throttled(&state.push.refusals, peer_of(peer), wait).await);
    }
    let who = match auth::caller(&state.config, &state.tokens, headers, peer_cert(peer)).await {
        Ok(who) => who,
        Err(e) => return Ok(Err(e)),
    };
    if let Err(e) = auth::claim_once(&*state.store, &who).await {
        return Err(http::unauthenticated(&state.push.refusals, peer_of(peer), &e).await);
    }
    Ok(Ok(who))
}

pub(super) fn masked<T: Serialize>(v: &T) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    mask_personal(&mut v);
    v
}

/// Who reads the operator endpoints: every node's data (operators, auditors, and
/// anyone when `trust_node_header` marks a development set-up) or one node's own.
pub(super) enum Reader {
    /// Reads everything: the operator or auditor node, or None for an unnamed caller
    /// of a development set-up.
    All(Option<String>),
    Node(String),
}

impl Reader {
    /// Who asked, as an operator action's audit event names them.
    pub(super) fn asked_by(&self) -> String {
        match self {
            Reader::All(Some(n)) | Reader::Node(n) => format!("node {n}"),
            Reader::All(None) => "an unnamed caller (development: trust_node_header)".into(),
        }
    }
}

pub(super) async fn reader(
    state: &AppState,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Reader, Refusal> {
    match who(state, headers, peer).await? {
        Ok(who) if state.config.reads_everything(&who.node) => Ok(Reader::All(Some(who.node))),
        Ok(who) => Ok(Reader::Node(who.node)),
        Err(auth::AuthError::NoCredentials | auth::AuthError::MissingNode)
            if state.config.gateway.trust_node_header =>
        {
            Ok(Reader::All(None))
        }
        Err(e) => Err(http::unauthenticated(&state.push.refusals, peer_of(peer), &e).await),
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
    peer: &Peer,
    asked: Option<String>,
) -> Result<Option<String>, Refusal> {
    let caller = match who(state, headers, peer).await? {
        Ok(who) => who.node,
        Err(e) => return Err(http::unauthenticated(&state.push.refusals, peer_of(peer), &e).await),
    };
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
