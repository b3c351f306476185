//! The 国密 settings: on the wire, `sm2_sign` (an SM2 signature of a canonical string
//! in headers) and `sm4` (an SM4-encrypted body), under a node (what it must send)
//! and under its destination (what the gateway sends it); at rest, `[store]`
//! (payloads and personal fields encrypted with a data key). Keys come from files or
//! environment variables, never from the config text.

use serde::Deserialize;

use super::Secret;
use crate::guomi::Encoding;
use crate::guomi::sm4::Mode;

/// `sm2_sign`: an SM2-with-SM3 signature over a canonical string, in headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sm2Sign {
    /// Inbound: the node's public key (SPKI PEM or hex). Outbound: the gateway's
    /// private key (default: `[gateway] sm2_signing_key`).
    #[serde(default)]
    pub key: Option<String>,
    /// The signed string: `{timestamp}`, `{nonce}`, `{body_sm3}` (hex SM3 of the body
    /// as sent, after any encryption), `{app_id}` and `{path}` are replaced.
    #[serde(default = "default_template")]
    pub template: String,
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    #[serde(default = "default_timestamp_header")]
    pub timestamp_header: String,
    #[serde(default = "default_nonce_header")]
    pub nonce_header: String,
    /// Outbound: sent in `app_id_header` and usable as `{app_id}`.
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default = "default_app_id_header")]
    pub app_id_header: String,
    /// How the signature is written: `hex` or `base64`.
    #[serde(default = "default_hex")]
    pub encoding: Encoding,
    /// `raw` (the 64 bytes r‖s) or `der` (GM/T 0009's SEQUENCE); inbound reads both.
    #[serde(default = "default_raw")]
    pub format: String,
    /// The SM2 user id whose Z value the signature covers.
    #[serde(default = "super::node::default_sm2_user_id")]
    pub user_id: String,
    /// Inbound: how far the timestamp (milliseconds or seconds since the epoch) may be
    /// from the gateway's clock.
    #[serde(default = "default_skew")]
    pub max_skew_seconds: u64,
}

/// `sm4`: the body encrypted with SM4.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sm4Body {
    /// `ecb`, `cbc` (PKCS#7 padding both) or `gcm`.
    pub mode: Mode,
    /// The key: 32 hex digits, 24 characters of base64, or 16 characters.
    #[serde(flatten)]
    pub key: Secret,
    /// CBC only: an IV agreed out of band (32 hex digits). Without it, a random IV
    /// precedes each ciphertext.
    #[serde(default)]
    pub fixed_iv: Option<Secret>,
    /// How the ciphertext is written: `base64` or `hex`.
    #[serde(default)]
    pub encoding: Encoding,
    /// The ciphertext travels in this field of a JSON object (`{"data": "…"}`);
    /// without it, the body is the ciphertext text itself.
    #[serde(default)]
    pub field: Option<String>,
    /// Inbound: the plaintext's content type, for the node's mapping (default
    /// `application/json`). Outbound: ignored (the rendered type is used).
    #[serde(default)]
    pub content_type: Option<String>,
}

fn default_template() -> String {
    "{timestamp}\n{nonce}\n{body_sm3}".into()
}
fn default_signature_header() -> String {
    "X-Signature".into()
}
fn default_timestamp_header() -> String {
    "X-Timestamp".into()
}
fn default_nonce_header() -> String {
    "X-Nonce".into()
}
fn default_app_id_header() -> String {
    "X-App-Id".into()
}
fn default_hex() -> Encoding {
    Encoding::Hex
}
fn default_raw() -> String {
    "raw".into()
}
fn default_skew() -> u64 {
    300
}

/// `[store]`: personal data encrypted at rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreCrypto {
    /// `off`, `sm4-gcm` or `aes-256-gcm`: stored payloads and the personal fields of
    /// stored records (ID numbers, names, mobiles, case passwords) are encrypted.
    pub encrypt: String,
    /// Data keys, the current one first: it encrypts; the others only decrypt, until
    /// `hallgate keys rotate-data` has moved every row to the current one.
    pub keys: Vec<DataKeyConfig>,
}

impl Default for StoreCrypto {
    fn default() -> Self {
        StoreCrypto {
            encrypt: "off".into(),
            keys: Vec::new(),
        }
    }
}

/// One data key: its id (stored with each value it encrypts) and where it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataKeyConfig {
    /// 1 to 32 of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// The key: hex or base64 (16 bytes for SM4, 32 for AES-256).
    #[serde(flatten)]
    pub secret: Secret,
}
