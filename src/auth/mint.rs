//! Tokens the gateway mints for trying a node's set-up (`hallgate token issue`, the
//! demo): a node's private key signs the claims the gateway checks, optionally bound
//! to its client certificate (RFC 8705).

use std::path::Path;

use base64::Engine;

use super::token::{Family, KeyError, family, parse_algorithm};
use crate::config::Config;
use crate::time::now_ms;

/// The RFC 8705 thumbprint of a certificate: base64url SHA-256 of its DER.
pub fn cert_thumbprint(der: &[u8]) -> String {
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der))
}

/// `hallgate token issue`: a token for `node` signed with `key` (PEM private key);
/// with `cert`, bound to that client certificate (RFC 8705 `cnf.x5t#S256`).
pub fn issue(
    config: &Config,
    node: &str,
    key: &Path,
    ttl_seconds: i64,
    cert: Option<&Path>,
) -> Result<String, KeyError> {
    let err = |reason: String| KeyError {
        node: node.to_string(),
        reason,
    };
    let n = config
        .node(node)
        .ok_or_else(|| err("no such node".into()))?;
    let auth = n
        .auth
        .as_ref()
        .ok_or_else(|| err("node has no [auth]".into()))?;
    let first = auth.algorithms.first().map(String::as_str);
    let alg = match first {
        Some("SM2") => None,
        _ => Some(
            first
                .and_then(parse_algorithm)
                .ok_or_else(|| err("no usable algorithm".into()))?,
        ),
    };
    let stem = key
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| {
            n.strip_suffix(".key.pem")
                .or_else(|| n.strip_suffix(".pem"))
        })
        .map(str::to_string);
    // The key id the config sets for the public key beside it (`x.pub.pem` for
    // `x.key.pem`), else the file name's.
    let kid = auth
        .keys
        .iter()
        .find(|k| {
            let name = std::path::Path::new(k.path())
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            stem.as_deref()
                .is_some_and(|s| name == format!("{s}.pub.pem") || name == format!("{s}.hex"))
        })
        .and_then(|k| k.id().map(str::to_string))
        .or(stem);
    let claims = claims(config, node, auth, ttl_seconds, cert).map_err(err)?;
    let Some(alg) = alg else {
        let signer = crate::guomi::sm2::Sm2Signer::load(key, &auth.sm2_user_id)
            .map_err(|e| err(e.to_string()))?;
        return super::sm2_token::encode(&auth.sm2_alg_name, kid.as_deref(), &claims, &signer)
            .map_err(err);
    };
    let pem = std::fs::read(key).map_err(|e| err(format!("{}: {e}", key.display())))?;
    let encoding = match family(alg) {
        Family::Ec => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
        Family::Rsa => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
        Family::Ed => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
        Family::Hmac => Ok(jsonwebtoken::EncodingKey::from_secret(&pem)),
    }
    .map_err(|e| err(format!("{}: {e}", key.display())))?;
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid;
    jsonwebtoken::encode(&header, &claims, &encoding).map_err(|e| err(e.to_string()))
}

/// The claims the gateway checks, for a token of `ttl_seconds`.
fn claims(
    config: &Config,
    node: &str,
    auth: &crate::config::TokenAuth,
    ttl_seconds: i64,
    cert: Option<&Path>,
) -> Result<serde_json::Value, String> {
    let now = now_ms() / 1000;
    let mut claims = serde_json::json!({
        "iss": auth.issuer.clone().unwrap_or_else(|| node.to_string()),
        "aud": config.gateway.id,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid::Uuid::now_v7().to_string(),
    });
    if let Some(path) = cert {
        let certs = crate::tls::load_certs(path).map_err(|e| e.to_string())?;
        let leaf = certs.first().ok_or("no certificate")?;
        claims["cnf"] = serde_json::json!({ "x5t#S256": cert_thumbprint(leaf.as_ref()) });
    }
    Ok(claims)
}
