//! Who sent a request, and whether it may send what it sent.
//!
//! Authentication names the sending node. Signed tokens are the production way (see
//! the trust issue); until a node is configured for them, the development switch
//! `gateway.trust_node_header` lets the `X-Hallgate-Node` header name the sender.
//! It is off by default. Authorisation checks every canonical record against the
//! node's `[nodes.ID.accept]` entry: kinds, region prefixes and item-code prefixes,
//! so a district system cannot inject a case for another district.

use axum::http::HeaderMap;

use crate::config::Config;
use crate::record::Record;

/// Header naming the sender when `trust_node_header` is on (development only).
pub const NODE_HEADER: &str = "x-hallgate-node";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "no credentials: this gateway has no token verification configured and does not trust the X-Hallgate-Node header"
    )]
    NoCredentials,
    #[error("missing X-Hallgate-Node header naming the sending node")]
    MissingNode,
    #[error("node `{0}` is not configured")]
    UnknownNode(String),
    #[error("node `{0}` may not send records (it has no [nodes.{0}.accept])")]
    NotASender(String),
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
pub fn identify(config: &Config, headers: &HeaderMap) -> Result<String, AuthError> {
    let id = caller(config, headers)?;
    match config.node(&id) {
        Some(n) if n.accept.is_some() => Ok(id),
        _ => Err(AuthError::NotASender(id)),
    }
}

/// Name the node making a request (any configured node: senders, receivers,
/// auditors).
pub fn caller(config: &Config, headers: &HeaderMap) -> Result<String, AuthError> {
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
    Ok(id.to_string())
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
