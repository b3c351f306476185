//! 国密 on the wire: the SM2 signature headers and the SM4-encrypted bodies of
//! `sm2_sign` and `sm4` (config/guomi.rs). Outbound, a [`Seal`] encrypts a body, then
//! signs what is sent. Inbound, an [`Opening`] checks the signature over the body as
//! received, then decrypts it, so the mapping only ever sees a verified plaintext:
//! a bad signature, a wrong key or bad padding is a refusal naming which, never a
//! garbled record.

use axum::http::HeaderMap;

use super::token::KeyError;
use crate::config::{Config, Sm2Sign, Sm4Body};
use crate::guomi::sm2::{Sm2Signer, Sm2Verifier};
use crate::guomi::sm4::{Iv, Mode, Sm4Cipher, Sm4Key};
use crate::guomi::{Encoding, GuomiError, sm3};
use crate::time::now_ms;

/// Why an inbound body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("SM2 signature: header {0} is missing")]
    MissingHeader(String),
    #[error("SM2 signature: timestamp {0} is not milliseconds or seconds since the epoch")]
    BadTimestamp(String),
    #[error("SM2 signature: timestamp is {0} s away from the gateway's clock (at most {1} s)")]
    Skew(i64, u64),
    #[error("SM2 signature: {0}")]
    Signature(GuomiError),
    #[error("SM4 body: {0}")]
    Body(GuomiError),
    #[error("SM4 body: not a JSON object with a string field `{0}`")]
    Field(String),
}

impl EnvelopeError {
    /// A signature problem (401) rather than a body problem (400).
    pub fn is_signature(&self) -> bool {
        !matches!(self, EnvelopeError::Body(_) | EnvelopeError::Field(_))
    }
}

fn cipher(c: &Sm4Body, base: &std::path::Path) -> Result<(Sm4Cipher, Encoding), String> {
    let key = Sm4Key::from_text(&c.key.read(base)?).map_err(|e| e.to_string())?;
    let iv = match (&c.fixed_iv, c.mode) {
        (None, _) => Iv::Prefix,
        (Some(s), Mode::Cbc) => {
            let text = s.read(base)?;
            let bytes = hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or("fixed_iv: 32 hex digits")?;
            Iv::Fixed(bytes)
        }
        (Some(_), mode) => return Err(format!("fixed_iv is for cbc only, not {mode:?}")),
    };
    Ok((Sm4Cipher::new(key, c.mode, iv), c.encoding))
}

fn canonical(
    template: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
    app_id: &str,
    path: &str,
) -> String {
    template
        .replace("{timestamp}", timestamp)
        .replace("{nonce}", nonce)
        .replace("{body_sm3}", &hex::encode(sm3(body)))
        .replace("{app_id}", app_id)
        .replace("{path}", path)
}

/// Outbound: what the gateway does to a destination's bodies.
pub struct Seal {
    sign: Option<(Sm2Sign, Sm2Signer, String)>,
    encrypt: Option<(Sm4Cipher, Encoding, Option<String>)>,
}

impl Seal {
    /// The destination `id`'s seal, or None when it has neither setting.
    pub fn new(
        config: &Config,
        id: &str,
        sign: Option<&Sm2Sign>,
        sm4: Option<&Sm4Body>,
        url: &str,
    ) -> Result<Option<Seal>, KeyError> {
        let err = |reason: String| KeyError {
            node: id.to_string(),
            reason,
        };
        let base = config.base_dir();
        let sign = match sign {
            None => None,
            Some(s) => {
                let path = match &s.key {
                    Some(k) => base.join(k),
                    None => config.sm2_signing_key_path(),
                };
                let key = Sm2Signer::load(&path, &s.user_id).map_err(|e| {
                    err(format!("destination.sm2_sign: {e} (make one with `hallgate keys generate --alg sm2`)"))
                })?;
                if !["raw", "der"].contains(&s.format.as_str()) {
                    return Err(err(format!(
                        "destination.sm2_sign.format `{}`: raw or der",
                        s.format
                    )));
                }
                let path = reqwest::Url::parse(url)
                    .map(|u| u.path().to_string())
                    .unwrap_or_default();
                Some((s.clone(), key, path))
            }
        };
        let encrypt = match sm4 {
            None => None,
            Some(c) => {
                let (cipher, enc) =
                    cipher(c, &base).map_err(|e| err(format!("destination.sm4: {e}")))?;
                Some((cipher, enc, c.field.clone()))
            }
        };
        Ok((sign.is_some() || encrypt.is_some()).then_some(Seal { sign, encrypt }))
    }

    /// The body to send, its content type (changed when encrypted) and the headers
    /// to add.
    pub fn seal(
        &self,
        body: &[u8],
        content_type: &str,
    ) -> (bytes::Bytes, String, Vec<(String, String)>) {
        let (sent, ctype) = match &self.encrypt {
            None => (
                bytes::Bytes::copy_from_slice(body),
                content_type.to_string(),
            ),
            Some((c, enc, field)) => {
                let text = enc.encode(&c.encrypt(body));
                match field {
                    Some(f) => (
                        bytes::Bytes::from(serde_json::json!({ f: text }).to_string()),
                        "application/json".to_string(),
                    ),
                    None => (bytes::Bytes::from(text), "text/plain".to_string()),
                }
            }
        };
        let mut headers = Vec::new();
        if let Some((s, key, path)) = &self.sign {
            let timestamp = now_ms().to_string();
            let nonce = uuid::Uuid::now_v7().simple().to_string();
            let app_id = s.app_id.clone().unwrap_or_default();
            let text = canonical(&s.template, &timestamp, &nonce, &sent, &app_id, path);
            let raw = key.sign(text.as_bytes());
            let sig = if s.format == "der" {
                der(&raw)
            } else {
                raw.to_vec()
            };
            headers.push((s.signature_header.clone(), s.encoding.encode(&sig)));
            headers.push((s.timestamp_header.clone(), timestamp));
            headers.push((s.nonce_header.clone(), nonce));
            if s.app_id.is_some() {
                headers.push((s.app_id_header.clone(), app_id));
            }
        }
        (sent, ctype, headers)
    }
}

/// `r‖s` as DER `SEQUENCE { INTEGER r, INTEGER s }` (GM/T 0009).
fn der(raw: &[u8; 64]) -> Vec<u8> {
    match ::ecdsa::Signature::<::sm2::Sm2>::from_slice(raw) {
        Ok(sig) => sig.to_der().as_bytes().to_vec(),
        // r and s come from a signature just made: they are in range.
        Err(_) => raw.to_vec(),
    }
}

/// Inbound: what a node must do to its bodies.
pub struct Opening {
    verify: Option<(Sm2Sign, Sm2Verifier)>,
    decrypt: Option<(Sm4Cipher, Encoding, Option<String>, String)>,
}

impl Opening {
    /// The node `id`'s requirements, or None when it has neither setting.
    pub fn new(
        config: &Config,
        id: &str,
        sign: Option<&Sm2Sign>,
        sm4: Option<&Sm4Body>,
    ) -> Result<Option<Opening>, KeyError> {
        let err = |reason: String| KeyError {
            node: id.to_string(),
            reason,
        };
        let base = config.base_dir();
        let verify = match sign {
            None => None,
            Some(s) => {
                let path = s
                    .key
                    .as_ref()
                    .ok_or_else(|| err("sm2_sign.key: the node's SM2 public key file".into()))?;
                let key = Sm2Verifier::load(&base.join(path), &s.user_id)
                    .map_err(|e| err(format!("sm2_sign: {e}")))?;
                Some((s.clone(), key))
            }
        };
        let decrypt = match sm4 {
            None => None,
            Some(c) => {
                let (cipher, enc) = cipher(c, &base).map_err(|e| err(format!("sm4: {e}")))?;
                let ctype = c
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/json".into());
                Some((cipher, enc, c.field.clone(), ctype))
            }
        };
        Ok((verify.is_some() || decrypt.is_some()).then_some(Opening { verify, decrypt }))
    }

    /// Check and decrypt a body: the plaintext, and its content type when decrypted.
    pub fn open(
        &self,
        headers: &HeaderMap,
        path: &str,
        body: &[u8],
    ) -> Result<(bytes::Bytes, Option<String>), EnvelopeError> {
        if let Some((s, key)) = &self.verify {
            let get = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| EnvelopeError::MissingHeader(name.to_string()))
            };
            let sig = get(&s.signature_header)?;
            let timestamp = get(&s.timestamp_header)?;
            let nonce = if s.template.contains("{nonce}") {
                get(&s.nonce_header)?
            } else {
                ""
            };
            let app_id = if s.template.contains("{app_id}") {
                get(&s.app_id_header)?
            } else {
                ""
            };
            let n: i64 = timestamp
                .parse()
                .map_err(|_| EnvelopeError::BadTimestamp(timestamp.chars().take(20).collect()))?;
            let ms = if n > 100_000_000_000 {
                n
            } else {
                n.saturating_mul(1000)
            };
            let off = now_ms().saturating_sub(ms) / 1000;
            if off.unsigned_abs() > s.max_skew_seconds {
                return Err(EnvelopeError::Skew(off, s.max_skew_seconds));
            }
            let sig = s
                .encoding
                .decode(sig.as_bytes())
                .map_err(EnvelopeError::Signature)?;
            let text = canonical(&s.template, timestamp, nonce, body, app_id, path);
            key.verify(text.as_bytes(), &sig)
                .map_err(EnvelopeError::Signature)?;
        }
        let Some((c, enc, field, ctype)) = &self.decrypt else {
            return Ok((bytes::Bytes::copy_from_slice(body), None));
        };
        let text: Vec<u8> = match field {
            None => body.to_vec(),
            Some(f) => serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v.get(f)
                        .and_then(|t| t.as_str())
                        .map(|t| t.as_bytes().to_vec())
                })
                .ok_or_else(|| EnvelopeError::Field(f.clone()))?,
        };
        let sealed = enc.decode(&text).map_err(EnvelopeError::Body)?;
        let plain = c.decrypt(&sealed).map_err(EnvelopeError::Body)?;
        Ok((bytes::Bytes::from(plain), Some(ctype.clone())))
    }
}
