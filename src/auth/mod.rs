//! Who sent a request, and whether it may send what it sent.
//!
//! Authentication names the sending node: a signed token verified with the keys
//! pinned to the node ([`token`]), or — development only, behind the
//! `gateway.trust_node_header` switch that is off by default — the `X-Hallgate-Node`
//! header. A request with a token is judged by its token alone. Authorisation checks every canonical record against the
//! node's `[nodes.ID.accept]` entry: kinds, region prefixes and item-code prefixes,
//! so a district system cannot inject a case for another district.

pub mod certs;
pub mod envelope;
pub mod mint;
mod node_keys;
pub mod outbound;
pub mod refusals;
pub mod sm2_token;
pub mod token;

use axum::http::HeaderMap;

use crate::config::Config;
use crate::record::Record;
use crate::store::TokenUse;
use crate::tls;
use token::{TokenError, Verifier};

/// Header naming the sender when `trust_node_header` is on (development only).
pub const NODE_HEADER: &str = "x-hallgate-node";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <token>` signed with your node's key")]
    NoCredentials,
    #[error("missing X-Hallgate-Node header naming the sending node")]
    MissingNode,
    #[error("node `{0}` is not configured")]
    UnknownNode(String),
    #[error("node `{0}` may not send records (it has no [nodes.{0}.accept])")]
    NotASender(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("node `{0}` must connect with its TLS client certificate")]
    CertRequired(String),
    #[error("the TLS client certificate is not one issued to node `{0}`")]
    CertMismatch(String),
    #[error(
        "node `{0}` must send a token bound to its TLS client certificate (cnf.x5t#S256, RFC 8705)"
    )]
    TokenNotBound(String),
    #[error("the store could not check the token: {0}")]
    Store(String),
}

impl AuthError {
    /// A stable name of the refusal's cause, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::NoCredentials => "no_credentials",
            AuthError::MissingNode => "missing_node",
            AuthError::UnknownNode(_) => "unknown_node",
            AuthError::NotASender(_) => "not_a_sender",
            AuthError::Token(TokenError::Replayed | TokenError::UsedOnce(_)) => "token_replayed",
            AuthError::Token(_) => "token_invalid",
            AuthError::CertRequired(_) => "cert_required",
            AuthError::CertMismatch(_) => "cert_mismatch",
            AuthError::TokenNotBound(_) => "token_not_bound",
            AuthError::Store(_) => "store",
        }
    }

    /// The node the refused credentials named, when they named one: such refusals
    /// are audited on their own (others are counted per peer address).
    pub fn named_node(&self) -> Option<&str> {
        match self {
            AuthError::UnknownNode(_) | AuthError::NoCredentials | AuthError::MissingNode => None,
            AuthError::NotASender(n)
            | AuthError::CertRequired(n)
            | AuthError::CertMismatch(n)
            | AuthError::TokenNotBound(n) => Some(n),
            AuthError::Token(t) => t.node(),
            AuthError::Store(_) => None,
        }
    }
}

/// The node behind a request, and the token that proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub node: String,
    pub token: Option<TokenUse>,
    /// The node takes each token once: the caller claims its `jti` ([`claim_once`]).
    pub once: bool,
}

/// For a node that takes each token once: record the token's `jti` in the store,
/// refusing one seen before (on any instance, before or after a restart).
pub async fn claim_once(
    store: &dyn crate::store::Store,
    who: &Authenticated,
) -> Result<(), AuthError> {
    let (true, Some(t)) = (who.once, &who.token) else {
        return Ok(());
    };
    match store.claim_token(t.clone()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AuthError::Token(TokenError::UsedOnce(who.node.clone()))),
        Err(e) => Err(AuthError::Store(e.to_string())),
    }
}

/// A record the sender may not send.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("record {index}: {field}: node `{node}` {reason}")]
pub struct Forbidden {
    pub index: usize,
    pub node: String,
    pub field: &'static str,
    pub reason: String,
}

/// Name the sending node of a request: a configured node with an `accept` entry.
pub async fn identify(
    config: &Config,
    tokens: &Verifier,
    headers: &HeaderMap,
    peer: Option<&tls::PeerCert>,
) -> Result<Authenticated, AuthError> {
    let who = caller(config, tokens, headers, peer).await?;
    match config.node(&who.node) {
        Some(n) if n.accept.is_some() => Ok(who),
        _ => Err(AuthError::NotASender(who.node)),
    }
}

/// Name the node making a request (any configured node: senders, receivers,
/// auditors).
pub async fn caller(
    config: &Config,
    tokens: &Verifier,
    headers: &HeaderMap,
    peer: Option<&tls::PeerCert>,
) -> Result<Authenticated, AuthError> {
    let (who, bound) = caller_unbound(config, tokens, headers, peer).await?;
    // A node bound to a client certificate: the connection must carry one valid for
    // the node's names (when required), and never one issued to someone else.
    if let Some(cc) = config.node(&who.node).and_then(|n| n.client_cert.as_ref()) {
        match peer {
            Some(p) if !p.valid_for(&cc.names) => {
                return Err(AuthError::CertMismatch(who.node));
            }
            None if cc.required || cc.bind_token => {
                return Err(AuthError::CertRequired(who.node));
            }
            _ => {}
        }
        // Both the certificate and a token bound to it.
        if cc.bind_token {
            let presented = peer.map(|p| mint::cert_thumbprint(p.0.as_ref()));
            if who.token.is_none() || bound.is_none() || bound != presented {
                return Err(AuthError::TokenNotBound(who.node));
            }
        }
    }
    Ok(who)
}

/// The node a request's credentials name, and the certificate thumbprint its token
/// is bound to, if any.
async fn caller_unbound(
    config: &Config,
    tokens: &Verifier,
    headers: &HeaderMap,
    peer: Option<&tls::PeerCert>,
) -> Result<(Authenticated, Option<String>), AuthError> {
    if let Some(token) = Verifier::bearer(headers)? {
        let v = tokens.verify(token).await?;
        return Ok((
            Authenticated {
                node: v.used.node.clone(),
                token: Some(v.used),
                once: v.once,
            },
            v.cert_thumbprint,
        ));
    }
    // A verified client certificate names the node it was issued for.
    if let Some(p) = peer
        && let Some((id, _)) = config.nodes.iter().find(|(_, n)| {
            n.get_ref()
                .client_cert
                .as_ref()
                .is_some_and(|cc| p.valid_for(&cc.names))
        })
    {
        return Ok((
            Authenticated {
                node: id.clone(),
                token: None,
                once: false,
            },
            None,
        ));
    }
    if !config.gateway.trust_node_header {
        return Err(AuthError::NoCredentials);
    }
    let id = headers
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(AuthError::MissingNode)?;
    config
        .node(id)
        .ok_or_else(|| AuthError::UnknownNode(id.chars().take(64).collect()))?;
    Ok((
        Authenticated {
            node: id.to_string(),
            token: None,
            once: false,
        },
        None,
    ))
}

/// Check one record against what its sender may send.
pub fn authorize(
    config: &Config,
    node_id: &str,
    index: usize,
    record: &Record,
) -> Result<(), Forbidden> {
    let forbid = |field: &'static str, reason: String| Forbidden {
        index,
        node: node_id.to_string(),
        field,
        reason,
    };
    let Some(accept) = config.node(node_id).and_then(|n| n.accept.as_ref()) else {
        return Err(forbid("kind", "may not send records".into()));
    };
    if !accept.kinds.contains(&record.kind) {
        return Err(forbid(
            "kind",
            format!("may not send {} records", record.kind),
        ));
    }
    if !accept.regions.is_empty() {
        match record.str_field("region") {
            Some(r) if accept.regions.iter().any(|p| r.starts_with(p.as_str())) => {}
            Some(r) => {
                return Err(forbid(
                    "region",
                    format!(
                        "may not send records for region {r} (allowed: {})",
                        accept.regions.join(", ")
                    ),
                ));
            }
            None => {
                return Err(forbid(
                    "region",
                    "must name the region of its records".into(),
                ));
            }
        }
    }
    if !accept.item_codes.is_empty()
        && let Some(code) = record.str_field("item_code")
        && !accept
            .item_codes
            .iter()
            .any(|p| code.starts_with(p.as_str()))
    {
        return Err(forbid(
            "item_code",
            format!("may not send records for item {code}"),
        ));
    }
    Ok(())
}
