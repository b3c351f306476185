//! Inbound signed tokens (JWT): which node sent a request, proven by a signature
//! with the key pinned to that node.
//!
//! The token's `iss` names the node; its header's `alg` must be one the node is
//! configured for and its `kid`, when present, one of the node's keys. Then `aud`
//! must be this gateway, `exp`, `iat` and `jti` present, `nbf` passed, the lifetime
//! (`exp - iat`) within the node's maximum, all with the configured clock skew.
//! A verified token is cached until it expires, so the hot path verifies each token
//! once. Keys come from files or from the node's JWKS URL (`node_keys.rs`); SM2
//! tokens are checked by `sm2_token.rs`. A `jti` may belong to one token only: the
//! store records it with the message, so a second token reusing it is refused,
//! across restarts and instances.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::Validation;
use serde::Deserialize;

pub use super::node_keys::{FORCED_REFRESH, check_node, parse_algorithm};
pub(super) use super::node_keys::{Family, family};
use super::node_keys::{NodeKeys, node_keys};
use super::sm2_token::{self, Expect};
use crate::config::Config;
use crate::hash::sha256_hex;
use crate::store::TokenUse;
use crate::time::now_ms;

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("more than one different token in the request")]
    Several,
    #[error("Authorization must be `Bearer <token>`")]
    NotBearer,
    #[error("token is not a JWT: {0}")]
    Malformed(String),
    #[error("token issuer `{0}` is not a configured node")]
    UnknownIssuer(String),
    #[error("algorithm {alg} is not allowed for node `{node}`")]
    AlgorithmNotAllowed { alg: String, node: String },
    #[error("key id `{kid}` is not a key of node `{node}`")]
    UnknownKid { kid: String, node: String },
    #[error("token refused: {reason}")]
    Invalid { node: String, reason: String },
    #[error("token lifetime {lifetime} s is over the maximum of {max} s for node `{node}`")]
    TooLong {
        lifetime: i64,
        max: i64,
        node: String,
    },
    #[error("token jti was already used by another token")]
    Replayed,
    #[error("token jti was already used: node `{0}` takes each token once")]
    UsedOnce(String),
    #[error(
        "token header lists critical extensions ({0}) this gateway does not understand (RFC 7515 section 4.1.11)"
    )]
    Crit(String),
    /// A refusal of a token whose issuer is a configured node.
    #[error("{error}")]
    ForNode {
        node: String,
        error: Box<TokenError>,
    },
}

/// A verified token: its use as the store records it, and the client certificate it
/// is bound to (RFC 8705 `cnf.x5t#S256`), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub used: TokenUse,
    pub cert_thumbprint: Option<String>,
    /// The node takes each token once (`auth.one_time_jti`).
    pub once: bool,
}

impl TokenError {
    /// The configured node the token was for, once its issuer was recognised.
    pub fn node(&self) -> Option<&str> {
        match self {
            TokenError::AlgorithmNotAllowed { node, .. }
            | TokenError::UnknownKid { node, .. }
            | TokenError::TooLong { node, .. }
            | TokenError::Invalid { node, .. }
            | TokenError::ForNode { node, .. }
            | TokenError::UsedOnce(node) => Some(node),
            _ => None,
        }
    }
}

/// Why the token configuration of a node cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("nodes.{node}.auth: {reason}")]
pub struct KeyError {
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Claims {
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default)]
    cnf: Option<Confirmation>,
}

/// RFC 8705: the certificate a token is bound to.
#[derive(Debug, Deserialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256", default)]
    x5t_s256: Option<String>,
}

/// Verifies inbound tokens against the nodes' pinned keys.
pub struct Verifier {
    client: reqwest::Client,
    audience: String,
    by_issuer: HashMap<String, NodeKeys>,
    cache: Mutex<HashMap<String, Verified>>,
}

impl Verifier {
    /// Load every node's keys; a key that cannot be read is an error naming it.
    pub fn new(config: &Config) -> Result<Verifier, KeyError> {
        let mut by_issuer = HashMap::new();
        for (id, node) in &config.nodes {
            let Some(auth) = &node.get_ref().auth else {
                continue;
            };
            let keys = node_keys(config, id, auth)?;
            by_issuer.insert(keys.issuer.clone(), keys);
        }
        Ok(Verifier {
            client: crate::tls::http_client()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| KeyError {
                    node: config.gateway.id.clone(),
                    reason: e.to_string(),
                })?,
            audience: config.gateway.id.clone(),
            by_issuer,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether any node is configured for tokens.
    pub fn enabled(&self) -> bool {
        !self.by_issuer.is_empty()
    }

    /// The bearer token of a request, if any.
    pub fn bearer(headers: &axum::http::HeaderMap) -> Result<Option<&str>, TokenError> {
        let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.any(|v| v != first) {
            return Err(TokenError::Several);
        }
        let text = first.to_str().map_err(|_| TokenError::NotBearer)?.trim();
        match text.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Ok(Some(token.trim()))
            }
            _ => Err(TokenError::NotBearer),
        }
    }

    /// Verify a token; the node it proves, and the use to record.
    pub async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let sha = sha256_hex(token.as_bytes());
        let now = now_ms();
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.get(&sha)
            && hit.used.exp_ms > now
        {
            return Ok(hit.clone());
        }
        let issuer = peek_issuer(token)?;
        let node = self
            .by_issuer
            .get(&issuer)
            .ok_or_else(|| TokenError::UnknownIssuer(issuer.chars().take(64).collect()))?;
        // From here on the token names a configured node: its refusal is that node's.
        self.verify_for(node, token, sha, now)
            .await
            .map_err(|e| match e.node() {
                Some(_) => e,
                None => TokenError::ForNode {
                    node: node.node.clone(),
                    error: Box::new(e),
                },
            })
    }

    /// Verify a token whose issuer is `node`.
    async fn verify_for(
        &self,
        node: &NodeKeys,
        token: &str,
        sha: String,
        now: i64,
    ) -> Result<Verified, TokenError> {
        refuse_critical(token)?;
        let claims = match &node.sm2 {
            Some(sm2) if sm2_token::header_alg(token)? == sm2.alg_name => sm2.verify(
                token,
                &Expect {
                    node: &node.node,
                    issuer: &node.issuer,
                    audience: &self.audience,
                    skew: node.skew,
                    now_s: now / 1000,
                },
            )?,
            _ => self.jose_claims(node, token).await?,
        };
        let lifetime = claims.exp - claims.iat;
        if lifetime > node.max_lifetime {
            return Err(TokenError::TooLong {
                lifetime,
                max: node.max_lifetime,
                node: node.node.clone(),
            });
        }
        if claims.iat * 1000 > now + (node.skew as i64) * 1000 {
            return Err(TokenError::Invalid {
                node: node.node.clone(),
                reason: "issued in the future".into(),
            });
        }
        let used = Verified {
            used: TokenUse {
                node: node.node.clone(),
                jti: claims.jti.chars().take(200).collect(),
                token_sha256: sha.clone(),
                exp_ms: claims.exp.saturating_mul(1000),
            },
            cert_thumbprint: claims.cnf.and_then(|c| c.x5t_s256),
            once: node.once,
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 100_000 {
                cache.retain(|_, t| t.used.exp_ms > now);
            }
            cache.insert(sha, used.clone());
        }
        Ok(used)
    }

    /// The claims of a token signed with a JOSE algorithm (jsonwebtoken).
    async fn jose_claims(&self, node: &NodeKeys, token: &str) -> Result<Claims, TokenError> {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            // An algorithm JOSE does not know (such as an SM2 name the node is not
            // configured for) is refused as not allowed; anything else is malformed.
            Err(e) => {
                return Err(match sm2_token::header_alg(token) {
                    Ok(alg) if !alg.is_empty() && e.to_string().contains("variant") => {
                        TokenError::AlgorithmNotAllowed {
                            alg: alg.chars().take(32).collect(),
                            node: node.node.clone(),
                        }
                    }
                    _ => TokenError::Malformed(e.to_string()),
                });
            }
        };
        if !node.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAllowed {
                alg: format!("{:?}", header.alg),
                node: node.node.clone(),
            });
        }
        let fam = family(header.alg);
        let mut candidates = node.candidates(fam, header.kid.as_ref());
        if node.jwks.is_some() {
            let unknown = candidates.is_empty() && header.kid.is_some();
            node.refresh(&self.client, unknown).await;
            candidates = node.candidates(fam, header.kid.as_ref());
        }
        if candidates.is_empty() {
            return Err(match header.kid {
                Some(kid) => TokenError::UnknownKid {
                    kid: kid.chars().take(64).collect(),
                    node: node.node.clone(),
                },
                None => TokenError::AlgorithmNotAllowed {
                    alg: format!("{:?}", header.alg),
                    node: node.node.clone(),
                },
            });
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&node.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.leeway = node.skew;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "jti"]);
        let mut last = None;
        let mut claims = None;
        for k in &candidates {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        claims.ok_or_else(|| TokenError::Invalid {
            node: node.node.clone(),
            reason: last.map_or_else(
                || "no key verified it".into(),
                |e| sentence(&e, &node.issuer, &self.audience),
            ),
        })
    }
}

/// What a partner reads when its token is refused: a sentence, not a library's
/// error name.
fn sentence(e: &jsonwebtoken::errors::Error, issuer: &str, audience: &str) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => "the signature does not verify with the node's key".into(),
        K::ExpiredSignature => "the token has expired (exp is past, beyond the clock skew)".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf is in the future)".into(),
        K::InvalidAudience => format!("aud must be `{audience}`"),
        K::InvalidIssuer => format!("iss must be `{issuer}`"),
        K::MissingRequiredClaim(c) => format!("the claim `{c}` is required"),
        K::InvalidAlgorithm => "the token's algorithm does not match the node's key".into(),
        _ => e.to_string(),
    }
}

/// The `iss` of a token before it is verified, to find the node's keys.
fn peek_issuer(token: &str) -> Result<String, TokenError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| TokenError::Malformed("no payload".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("payload is not base64url".into()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("payload is not JSON".into()))?;
    v.get("iss")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| TokenError::Malformed("no iss claim".into()))
}

/// Refuse a token whose header has `crit`: it names extensions the recipient must
/// understand, and this gateway understands none (RFC 7515 section 4.1.11).
fn refuse_critical(token: &str) -> Result<(), TokenError> {
    let head = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("header is not base64url".into()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("header is not JSON".into()))?;
    match v.get("crit") {
        None => Ok(()),
        Some(c) => {
            let names: Vec<String> = match c.as_array() {
                Some(a) => a
                    .iter()
                    .map(|n| n.as_str().unwrap_or("?").chars().take(32).collect())
                    .take(8)
                    .collect(),
                None => vec!["not a list".into()],
            };
            Err(TokenError::Crit(names.join(", ")))
        }
    }
}
