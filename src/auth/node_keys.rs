//! The keys a node's tokens are checked with: its pinned key files (PEM, JWK, or SM2
//! PEM/hex), the HS256 secret from the environment, and its JWKS URL, fetched and
//! cached for a TTL and once more (rate-limited) when a token names an unknown `kid`.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};

use super::sm2_token::Sm2Keys;
use super::token::KeyError;
use crate::config::{Config, TokenAuth};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Ec,
    Rsa,
    Ed,
    Hmac,
}

pub(super) fn family(alg: Algorithm) -> Family {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        _ => Family::Rsa,
    }
}

#[derive(Clone)]
pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) family: Family,
    pub(super) key: DecodingKey,
}

/// Keys fetched from a node's JWKS URL: refreshed when older than the TTL, and once
/// (at most every [`FORCED_REFRESH`]) when a token names a `kid` not yet known.
pub(super) struct Jwks {
    url: String,
    ttl: Duration,
    state: Mutex<JwksState>,
}

#[derive(Default)]
pub(super) struct JwksState {
    keys: Vec<Key>,
    fetched: Option<Instant>,
    forced: Option<Instant>,
}

/// Least time between two refreshes forced by unknown key ids.
pub const FORCED_REFRESH: Duration = Duration::from_secs(30);

pub(super) struct NodeKeys {
    pub(super) node: String,
    pub(super) issuer: String,
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) keys: Vec<Key>,
    pub(super) jwks: Option<Jwks>,
    pub(super) max_lifetime: i64,
    pub(super) skew: u64,
    pub(super) once: bool,
    pub(super) sm2: Option<Sm2Keys>,
}

impl NodeKeys {
    pub(super) fn candidates(&self, fam: Family, kid: Option<&String>) -> Vec<Key> {
        let fetched = self
            .jwks
            .as_ref()
            .and_then(|j| j.state.lock().ok().map(|s| s.keys.clone()))
            .unwrap_or_default();
        self.keys
            .iter()
            .chain(fetched.iter())
            .filter(|k| k.family == fam)
            .filter(|k| kid.is_none() || k.kid.as_ref() == kid)
            .cloned()
            .collect()
    }

    /// Refresh the JWKS when it is stale, or when `unknown_kid` and the last forced
    /// refresh is old enough. Fetch errors leave the keys as they were.
    pub(super) async fn refresh(&self, client: &reqwest::Client, unknown_kid: bool) {
        let Some(j) = &self.jwks else { return };
        let due = match j.state.lock() {
            Ok(mut st) => {
                let stale = st.fetched.is_none_or(|t| t.elapsed() >= j.ttl);
                let forced = !stale
                    && unknown_kid
                    && st.forced.is_none_or(|t| t.elapsed() >= FORCED_REFRESH);
                if forced {
                    st.forced = Some(Instant::now());
                }
                stale || forced
            }
            Err(_) => false,
        };
        if !due {
            return;
        }
        match fetch_jwks(client, &j.url).await {
            Ok(keys) => {
                if let Ok(mut st) = j.state.lock() {
                    st.keys = keys;
                    st.fetched = Some(Instant::now());
                }
            }
            Err(e) => {
                tracing::warn!(node = %self.node, url = %j.url, error = %e, "cannot refresh JWKS; keeping the keys held")
            }
        }
    }
}

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<Vec<Key>, String> {
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JWK set: {e}"))?;
    Ok(set
        .keys
        .iter()
        .filter_map(|jwk| key_from_jwk(jwk).ok())
        .collect())
}

fn key_from_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Key, String> {
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let family = match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Family::Ec,
        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Family::Rsa,
        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
        _ => {
            return Err(
                "only EC, RSA and OKP public keys (symmetric keys come from hmac_secret_env)"
                    .into(),
            );
        }
    };
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        family,
        key,
    })
}

/// Parse an algorithm name as configured.
pub fn parse_algorithm(s: &str) -> Option<Algorithm> {
    match s {
        "ES256" => Some(Algorithm::ES256),
        "ES384" => Some(Algorithm::ES384),
        "RS256" => Some(Algorithm::RS256),
        "RS384" => Some(Algorithm::RS384),
        "RS512" => Some(Algorithm::RS512),
        "PS256" => Some(Algorithm::PS256),
        "EdDSA" => Some(Algorithm::EdDSA),
        "HS256" => Some(Algorithm::HS256),
        _ => None,
    }
}

fn load_key(path: &Path, families: &[Family]) -> Result<Key, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".json") {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a JWK: {e}", path.display()))?;
        return key_from_jwk(&jwk).map_err(|e| format!("{}: {e}", path.display()));
    }
    let kid = pem_kid(path);
    for fam in families {
        let key = match fam {
            Family::Ec => DecodingKey::from_ec_pem(&bytes),
            Family::Rsa => DecodingKey::from_rsa_pem(&bytes),
            Family::Ed => DecodingKey::from_ed_pem(&bytes),
            Family::Hmac => continue,
        };
        if let Ok(key) = key {
            return Ok(Key {
                kid,
                family: *fam,
                key,
            });
        }
    }
    Err(format!(
        "{}: not a PEM public key for the node's algorithms",
        path.display()
    ))
}

/// Check that a node's token configuration loads (for config validation).
pub fn check_node(config: &Config, id: &str, auth: &TokenAuth) -> Result<(), KeyError> {
    node_keys(config, id, auth).map(|_| ())
}

pub(super) fn node_keys(config: &Config, id: &str, auth: &TokenAuth) -> Result<NodeKeys, KeyError> {
    let err = |reason: String| KeyError {
        node: id.to_string(),
        reason,
    };
    let wants_sm2 = auth.algorithms.iter().any(|a| a == "SM2");
    let algorithms = auth
        .algorithms
        .iter()
        .filter(|a| *a != "SM2")
        .map(|a| parse_algorithm(a).ok_or_else(|| err(format!("unknown algorithm `{a}`"))))
        .collect::<Result<Vec<_>, _>>()?;
    let families: Vec<Family> = algorithms.iter().map(|a| family(*a)).collect();
    let mut keys = Vec::new();
    let mut sm2_keys = Vec::new();
    for file in &auth.keys {
        let path = config.base_dir().join(file.path());
        // A key id set in the config wins over the one the file name gives.
        let named = file.id().map(str::to_string);
        if wants_sm2 {
            match crate::guomi::sm2::Sm2Verifier::load(&path, &auth.sm2_user_id) {
                Ok(k) => {
                    sm2_keys.push((named.or_else(|| pem_kid(&path)), k));
                    continue;
                }
                Err(e) if families.is_empty() => return Err(err(e.to_string())),
                Err(_) => {}
            }
        }
        let mut key = load_key(&path, &families).map_err(err)?;
        if named.is_some() {
            key.kid = named;
        }
        keys.push(key);
    }
    let sm2 = if wants_sm2 {
        if sm2_keys.is_empty() {
            return Err(err("SM2 needs an SM2 public key file in keys".into()));
        }
        if auth.sm2_alg_name.is_empty() || parse_algorithm(&auth.sm2_alg_name).is_some() {
            return Err(err(format!(
                "sm2_alg_name `{}` must be a name of its own, not a JOSE algorithm's",
                auth.sm2_alg_name
            )));
        }
        Some(Sm2Keys {
            alg_name: auth.sm2_alg_name.clone(),
            keys: sm2_keys,
        })
    } else {
        None
    };
    if families.contains(&Family::Hmac) {
        let var = auth.hmac_secret_env.as_deref().ok_or_else(|| {
            err("HS256 needs hmac_secret_env naming the shared secret's variable".into())
        })?;
        let secret = std::env::var(var)
            .map_err(|_| err(format!("environment variable {var} is not set")))?;
        keys.push(Key {
            kid: None,
            family: Family::Hmac,
            key: DecodingKey::from_secret(secret.as_bytes()),
        });
    }
    let jwks = match &auth.jwks_url {
        Some(url) => {
            if reqwest::Url::parse(url).is_err()
                || !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(err(format!("jwks_url `{url}` is not an http(s) URL")));
            }
            Some(Jwks {
                url: url.clone(),
                ttl: Duration::from_secs(auth.jwks_ttl_seconds),
                state: Mutex::new(JwksState::default()),
            })
        }
        None => None,
    };
    if keys.is_empty() && jwks.is_none() && sm2.is_none() {
        return Err(err("no keys: name key files or a jwks_url".into()));
    }
    Ok(NodeKeys {
        node: id.to_string(),
        issuer: auth.issuer.clone().unwrap_or_else(|| id.to_string()),
        algorithms,
        keys,
        jwks,
        max_lifetime: auth.max_lifetime_seconds as i64,
        skew: auth.clock_skew_seconds,
        once: auth.one_time_jti,
        sm2,
    })
}

/// A PEM key's id: its file name without `.pub.pem` / `.pem` / `.hex`.
fn pem_kid(path: &Path) -> Option<String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_suffix(".pub.pem")
        .or_else(|| name.strip_suffix(".pem"))
        .or_else(|| name.strip_suffix(".hex"))
        .map(str::to_string)
}
