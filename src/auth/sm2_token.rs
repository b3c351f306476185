//! SM2 tokens: JWS compact tokens signed with SM2 over SM3 (GB/T 32918), for the nodes
//! whose platforms sign that way. No JOSE name is registered for SM2, so the header's
//! `alg` is the node's `sm2_alg_name` (`SM2` unless configured), the signature is the
//! 64 bytes `r‖s` in base64url as for ES256 (RFC 7518 section 3.4), and the user id
//! whose Z value it covers is the node's `sm2_user_id`. The claims are checked as for
//! every other token: `iss`, `aud`, `exp`, `nbf`, `iat`, `jti`, with the node's skew.

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::token::{Claims, TokenError};
use crate::guomi::sm2::{Sm2Signer, Sm2Verifier};

/// A node's SM2 keys, with the header `alg` that selects them.
pub(super) struct Sm2Keys {
    pub alg_name: String,
    pub keys: Vec<(Option<String>, Sm2Verifier)>,
}

/// What the SM2 path checks a token against.
pub(super) struct Expect<'a> {
    pub node: &'a str,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub skew: u64,
    pub now_s: i64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Registered {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    nbf: Option<i64>,
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))
}

/// The header's `alg`, before anything is verified.
pub(super) fn header_alg(token: &str) -> Result<String, TokenError> {
    let head = token.split('.').next().unwrap_or("");
    let header: Header = serde_json::from_slice(&b64(head, "header")?)
        .map_err(|_| TokenError::Malformed("header is not a JOSE header".into()))?;
    Ok(header.alg)
}

impl Sm2Keys {
    /// Verify an SM2 token for this node and check its claims.
    pub fn verify(&self, token: &str, expect: &Expect<'_>) -> Result<Claims, TokenError> {
        let invalid = |reason: &str| TokenError::Invalid {
            node: expect.node.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = token.split('.');
        let (Some(head), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "not three dot-separated parts".into(),
            ));
        };
        let header: Header = serde_json::from_slice(&b64(head, "header")?)
            .map_err(|_| TokenError::Malformed("header is not a JOSE header".into()))?;
        let candidates: Vec<&Sm2Verifier> = self
            .keys
            .iter()
            .filter(|(kid, _)| header.kid.is_none() || kid.as_ref() == header.kid.as_ref())
            .map(|(_, k)| k)
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKid {
                kid: header.kid.unwrap_or_default().chars().take(64).collect(),
                node: expect.node.to_string(),
            });
        }
        let sig = b64(sig, "signature")?;
        let signed = &token.as_bytes()[..head.len() + 1 + payload.len()];
        if !candidates.iter().any(|k| k.verify(signed, &sig).is_ok()) {
            return Err(invalid(
                "the SM2 signature does not verify with the node's key",
            ));
        }
        let body = b64(payload, "payload")?;
        let reg: Registered = serde_json::from_slice(&body)
            .map_err(|_| TokenError::Malformed("payload is not a claims object".into()))?;
        let claims: Claims = serde_json::from_slice(&body)
            .map_err(|e| invalid(&format!("a required claim is missing or malformed: {e}")))?;
        if reg.iss.as_deref() != Some(expect.issuer) {
            return Err(invalid(&format!("iss must be `{}`", expect.issuer)));
        }
        let aud_ok = match &reg.aud {
            Some(Value::String(a)) => a == expect.audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(expect.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(invalid(&format!("aud must be `{}`", expect.audience)));
        }
        let skew = expect.skew as i64;
        if claims.exp.saturating_add(skew) < expect.now_s {
            return Err(invalid(
                "the token has expired (exp is past, beyond the clock skew)",
            ));
        }
        if reg
            .nbf
            .is_some_and(|nbf| nbf > expect.now_s.saturating_add(skew))
        {
            return Err(invalid("the token is not valid yet (nbf is in the future)"));
        }
        Ok(claims)
    }
}

/// Sign claims as an SM2 token with header `alg` = `alg_name`.
pub fn encode(
    alg_name: &str,
    kid: Option<&str>,
    claims: &Value,
    key: &Sm2Signer,
) -> Result<String, String> {
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut header = serde_json::json!({ "alg": alg_name, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let head = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    let signed = format!("{}.{}", enc(&head), enc(&body));
    let sig = key.sign(signed.as_bytes());
    Ok(format!("{signed}.{}", enc(&sig)))
}
