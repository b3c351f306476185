//! How the gateway proves itself to destinations: short-lived ES256 tokens from its
//! own key (published with the next key at `/.well-known/jwks.json`), or the legacy
//! schemes departments still use — a static token header, `appId` + `sign` (md5 or
//! SM3 of a configured concatenation), or an HMAC-SHA256 of the body.

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};
use sha2::Sha256;

use super::token::KeyError;
use crate::config::{Config, Destination, OutboundAuth};
use crate::time::now_ms;

/// Longest lifetime of an outbound token.
pub const TOKEN_TTL_SECONDS: i64 = 300;

struct GatewayKey {
    kid: String,
    public: p256::ecdsa::VerifyingKey,
    encoding: EncodingKey,
}

impl GatewayKey {
    fn load(path: &std::path::Path) -> Result<GatewayKey, String> {
        let key: SigningKey = crate::keys::load_signing_key(path).map_err(|e| e.to_string())?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?;
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        let public = *key.verifying_key();
        let kid = crate::keys::key_id(&public).map_err(|e| e.to_string())?;
        Ok(GatewayKey {
            kid: kid.chars().take(16).collect(),
            public,
            encoding,
        })
    }

    fn jwk(&self) -> Value {
        let point = self.public.to_encoded_point(false);
        let b64 = |b: Option<&p256::FieldBytes>| {
            b.map(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
                .unwrap_or_default()
        };
        json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": b64(point.x()), "y": b64(point.y()),
        })
    }
}

/// The gateway's signing keys: the current one signs, both are published.
#[derive(Default)]
pub struct GatewayKeys {
    current: Option<GatewayKey>,
    next: Option<GatewayKey>,
    issuer: String,
}

impl GatewayKeys {
    /// Load `[gateway].signing_key` (required when a destination uses `jwt`, optional
    /// otherwise) and `next_signing_key`.
    pub fn load(config: &Config) -> Result<GatewayKeys, KeyError> {
        let err = |reason: String| KeyError {
            node: config.gateway.id.clone(),
            reason,
        };
        let needed = config
            .destinations()
            .any(|(_, d)| matches!(d.auth, Some(OutboundAuth::Jwt)));
        let path = config.signing_key_path();
        let current = if path.exists() || needed {
            Some(GatewayKey::load(&path).map_err(|e| {
                err(format!(
                    "gateway.signing_key: {e} (make one with `hallgate keys generate`)"
                ))
            })?)
        } else {
            None
        };
        let next = match &config.gateway.next_signing_key {
            Some(p) => Some(
                GatewayKey::load(&config.base_dir().join(p))
                    .map_err(|e| err(format!("gateway.next_signing_key: {e}")))?,
            ),
            None => None,
        };
        Ok(GatewayKeys {
            current,
            next,
            issuer: config.gateway.id.clone(),
        })
    }

    /// The public keys as a JWK set.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .current
            .iter()
            .chain(self.next.iter())
            .map(GatewayKey::jwk)
            .collect();
        json!({ "keys": keys })
    }

    /// A token for one delivery to `audience`.
    pub fn token(&self, audience: &str) -> Result<String, String> {
        let key = self.current.as_ref().ok_or("no gateway signing key")?;
        let now = now_ms() / 1000;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        let claims = json!({
            "iss": self.issuer, "aud": audience, "iat": now, "nbf": now,
            "exp": now + TOKEN_TTL_SECONDS, "jti": uuid::Uuid::now_v7().to_string(),
        });
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| e.to_string())
    }
}

/// The headers one destination's scheme adds to a delivery.
pub enum Signer {
    None,
    Jwt {
        keys: Arc<GatewayKeys>,
        audience: String,
    },
    Static {
        header: String,
        value: String,
    },
    AppSign {
        app_id: String,
        secret: String,
        template: String,
        api_code: String,
        sm3: bool,
    },
    HmacBody {
        header: String,
        secret: Vec<u8>,
    },
}

impl Signer {
    pub fn new(
        config: &Config,
        id: &str,
        d: &Destination,
        keys: &Arc<GatewayKeys>,
    ) -> Result<Signer, KeyError> {
        let err = |reason: String| KeyError {
            node: id.to_string(),
            reason: format!("destination.auth: {reason}"),
        };
        let base = config.base_dir();
        Ok(match &d.auth {
            None => Signer::None,
            Some(OutboundAuth::Jwt) => Signer::Jwt {
                keys: keys.clone(),
                audience: id.to_string(),
            },
            Some(OutboundAuth::Static { header, value }) => Signer::Static {
                header: header.clone(),
                value: value.read(&base).map_err(err)?,
            },
            Some(OutboundAuth::AppSign {
                app_id,
                secret,
                template,
                api_code,
                digest,
            }) => Signer::AppSign {
                app_id: app_id.clone(),
                secret: secret.read(&base).map_err(err)?,
                template: template.clone(),
                api_code: api_code.clone(),
                sm3: match digest.as_str() {
                    "md5" => false,
                    "sm3" => true,
                    other => return Err(err(format!("digest `{other}`: md5 or sm3"))),
                },
            },
            Some(OutboundAuth::HmacBody { header, secret }) => Signer::HmacBody {
                header: header.clone(),
                secret: secret.read(&base).map_err(err)?.into_bytes(),
            },
        })
    }

    /// Headers for a request with this body.
    pub fn headers(&self, body: &[u8]) -> Result<Vec<(String, String)>, String> {
        Ok(match self {
            Signer::None => Vec::new(),
            Signer::Jwt { keys, audience } => vec![(
                "Authorization".into(),
                format!("Bearer {}", keys.token(audience)?),
            )],
            Signer::Static { header, value } => vec![(header.clone(), value.clone())],
            Signer::AppSign {
                app_id,
                secret,
                template,
                api_code,
                sm3,
            } => {
                let now =
                    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)));
                let timestamp = now_ms().to_string();
                let text = template
                    .replace("{app_id}", app_id)
                    .replace("{secret}", secret)
                    .replace("{date}", &now.strftime("%Y%m%d").to_string())
                    .replace("{timestamp}", &timestamp)
                    .replace("{api_code}", api_code);
                let sign = if *sm3 {
                    hex::encode(<sm3::Sm3 as sm3::Digest>::digest(text.as_bytes()))
                } else {
                    hex::encode(<md5::Md5 as md5::Digest>::digest(text.as_bytes()))
                };
                vec![
                    ("appId".into(), app_id.clone()),
                    ("timestamp".into(), timestamp),
                    ("sign".into(), sign),
                ]
            }
            Signer::HmacBody { header, secret } => {
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|e| e.to_string())?;
                mac.update(body);
                vec![(header.clone(), hex::encode(mac.finalize().into_bytes()))]
            }
        })
    }
}
