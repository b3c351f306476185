//! Personal data encrypted at rest (`[store] encrypt`): [`SealedStore`] wraps either
//! engine, and encrypts what it writes and decrypts what it reads, so neither engine
//! nor any caller changes.
//!
//! - A stored payload (`messages.body`) is sealed whole.
//! - A stored record (`records.canonical`) keeps its JSON shape, and with it every
//!   query on its other fields; only its personal fields are sealed: `case_pwd`,
//!   every `id_no` and `mobile`, and `name` and `legal_rep` of `applicant` and
//!   `contact`.
//! - A sealed value names its key: `hge1:KEYID:` then the 12-byte nonce, ciphertext
//!   and 16-byte tag of SM4-GCM or AES-256-GCM (base64 inside a record's JSON).
//!   Values written before encryption was turned on are read as they are, until
//!   `hallgate keys rotate-data` seals them.
//! - The store remembers each key it has values under, with a check value. Opening a
//!   store with a key missing, a wrong key, or encryption off while sealed values
//!   remain is refused, never a read of ciphertext as data.
//!
//! Hashes (record `sha256`, body `body_sha256`, the audit chain) are of the
//! plaintext, as without encryption: audit verification works unchanged.

use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use base64::Engine;
use serde_json::Value;

use super::{DataKey, RecordView, SealOp, SealOut, Store, StoreError};
use crate::config::Config;

/// The marker every sealed value starts with.
const MARK: &[u8] = b"hge1:";
/// What a key's check value encrypts.
const CHECK: &[u8] = b"hallgate data key check v1";

type Sm4Gcm = aes_gcm::AesGcm<::sm4::Sm4, aes_gcm::aead::consts::U12>;

enum Cipher {
    Sm4(Box<Sm4Gcm>),
    Aes(Box<aes_gcm::Aes256Gcm>),
}

impl Cipher {
    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        // Encrypting into a Vec fails only past GCM's 64 GiB limit.
        match self {
            Cipher::Sm4(c) => {
                let nonce = Sm4Gcm::generate_nonce(&mut OsRng);
                let mut out = nonce.to_vec();
                out.extend(c.encrypt(&nonce, plain).unwrap_or_default());
                out
            }
            Cipher::Aes(c) => {
                let nonce = aes_gcm::Aes256Gcm::generate_nonce(&mut OsRng);
                let mut out = nonce.to_vec();
                out.extend(c.encrypt(&nonce, plain).unwrap_or_default());
                out
            }
        }
    }

    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 28 {
            return None;
        }
        let (nonce, body) = sealed.split_at(12);
        match self {
            Cipher::Sm4(c) => c.decrypt(nonce.into(), body).ok(),
            Cipher::Aes(c) => c.decrypt(nonce.into(), body).ok(),
        }
    }
}

struct Key {
    id: String,
    cipher: Cipher,
}

/// The data keys of `[store]`: the first encrypts, all decrypt.
pub struct DataKeys {
    alg: String,
    keys: Vec<Key>,
}

fn bad(m: String) -> StoreError {
    StoreError::Open {
        path: "[store]".into(),
        reason: m,
    }
}

impl DataKeys {
    /// The keys `[store]` names, or None when encryption is off.
    pub fn from_config(config: &Config) -> Result<Option<DataKeys>, StoreError> {
        let s = &config.store;
        let alg = s.encrypt.to_ascii_lowercase();
        let len = match alg.as_str() {
            "off" => return Ok(None),
            "sm4-gcm" => 16,
            "aes-256-gcm" => 32,
            other => {
                return Err(bad(format!(
                    "encrypt `{other}`: off, sm4-gcm or aes-256-gcm"
                )));
            }
        };
        if s.keys.is_empty() {
            return Err(bad(format!(
                "encrypt = \"{alg}\" needs keys = [{{ id = \"…\", secret_env = \"…\" }}]"
            )));
        }
        let mut keys = Vec::new();
        for k in &s.keys {
            let valid = !k.id.is_empty()
                && k.id.len() <= 32
                && k.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid || keys.iter().any(|x: &Key| x.id == k.id) {
                return Err(bad(format!(
                    "key id `{}`: 1 to 32 of A-Z a-z 0-9 . _ -, each once",
                    k.id
                )));
            }
            let text = k
                .secret
                .read(&config.base_dir())
                .map_err(|e| bad(format!("key `{}`: {e}", k.id)))?;
            let bytes = decode_key(text.trim(), len)
                .ok_or_else(|| bad(format!("key `{}`: {len} bytes as hex or base64", k.id)))?;
            let cipher = if len == 16 {
                Cipher::Sm4(Box::new(Sm4Gcm::new(bytes.as_slice().into())))
            } else {
                Cipher::Aes(Box::new(aes_gcm::Aes256Gcm::new(bytes.as_slice().into())))
            };
            keys.push(Key {
                id: k.id.clone(),
                cipher,
            });
        }
        Ok(Some(DataKeys { alg, keys }))
    }

    /// The id of the key that encrypts.
    pub fn current(&self) -> &str {
        &self.keys[0].id
    }

    fn key(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// `hge1:KEYID:` + sealed bytes, under the current key.
    fn seal_raw(&self, plain: &[u8]) -> Vec<u8> {
        let k = &self.keys[0];
        let mut out = Vec::with_capacity(plain.len() + 48);
        out.extend_from_slice(MARK);
        out.extend_from_slice(k.id.as_bytes());
        out.push(b':');
        out.extend(k.cipher.seal(plain));
        out
    }

    /// The key id of a sealed value and the bytes after it; None when not sealed.
    fn split(stored: &[u8]) -> Option<(&str, &[u8])> {
        let rest = stored.strip_prefix(MARK)?;
        let colon = rest.iter().position(|b| *b == b':')?;
        let id = std::str::from_utf8(&rest[..colon]).ok()?;
        Some((id, &rest[colon + 1..]))
    }

    fn open_raw(&self, id: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = self.key(id).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "a value is sealed with data key `{id}`, which [store] does not hold"
            ))
        })?;
        key.cipher.open(sealed).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "a value sealed with data key `{id}` does not decrypt: altered, or a wrong key"
            ))
        })
    }

    /// Seal a payload (an empty one, not retained, stays empty).
    pub fn seal_body(&self, body: &[u8]) -> Vec<u8> {
        if body.is_empty() {
            return Vec::new();
        }
        self.seal_raw(body)
    }

    /// A payload as stored, opened (one from before encryption, as it is).
    pub fn open_body(&self, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        match Self::split(stored) {
            Some((id, sealed)) => self.open_raw(id, sealed),
            None => Ok(stored.to_vec()),
        }
    }

    /// A canonical record with its personal fields sealed.
    pub fn seal_record(&self, canonical: &str) -> Result<String, StoreError> {
        let mut v: Value = serde_json::from_str(canonical)
            .map_err(|e| StoreError::Corrupt(format!("canonical record: {e}")))?;
        let k = &self.keys[0];
        let mut failed = None;
        personal(
            &mut v,
            &mut |s: &mut String| {
                let sealed = k.cipher.seal(s.as_bytes());
                *s = format!(
                    "hge1:{}:{}",
                    k.id,
                    base64::engine::general_purpose::STANDARD.encode(sealed)
                );
                Ok(())
            },
            &mut failed,
        );
        serde_json::to_string(&v).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Open the personal fields of a record value.
    pub fn open_value(&self, v: &mut Value) -> Result<(), StoreError> {
        let mut failed = None;
        personal(
            v,
            &mut |s: &mut String| {
                if let Some((id, text)) = Self::split(s.as_bytes()) {
                    let sealed = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|_| {
                            StoreError::Corrupt(format!("a field sealed with `{id}` is not base64"))
                        })?;
                    let plain = self.open_raw(id, &sealed)?;
                    *s = String::from_utf8(plain)
                        .map_err(|_| StoreError::Corrupt("a sealed field is not text".into()))?;
                }
                Ok(())
            },
            &mut failed,
        );
        failed.map_or(Ok(()), Err)
    }

    /// A canonical record as stored, opened to the text that was hashed.
    pub fn open_record(&self, stored: &str) -> Result<String, StoreError> {
        if !stored.contains("hge1:") {
            return Ok(stored.to_string());
        }
        let mut v: Value = serde_json::from_str(stored)
            .map_err(|e| StoreError::Corrupt(format!("canonical record: {e}")))?;
        self.open_value(&mut v)?;
        serde_json::to_string(&v).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The key ids a stored payload or record is under (none when not sealed).
    pub fn keys_of(stored: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = stored;
        while let Some(at) = memchr::memmem::find(rest, MARK) {
            rest = &rest[at..];
            if let Some((id, _)) = Self::split(rest)
                && !out.iter().any(|o: &String| o == id)
            {
                out.push(id.to_string());
            }
            rest = &rest[MARK.len()..];
        }
        out
    }

    /// The check value of each configured key.
    fn checks(&self) -> Vec<DataKey> {
        self.keys
            .iter()
            .map(|k| DataKey {
                id: k.id.clone(),
                alg: self.alg.clone(),
                check: k.cipher.seal(CHECK),
            })
            .collect()
    }
}

fn decode_key(text: &str, len: usize) -> Option<Vec<u8>> {
    let bytes = if text.len() == len * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    };
    (bytes.len() == len).then_some(bytes)
}

/// Apply `f` to every personal string of a canonical record; the first error is
/// kept in `failed`.
fn personal(
    v: &mut Value,
    f: &mut dyn FnMut(&mut String) -> Result<(), StoreError>,
    failed: &mut Option<StoreError>,
) {
    fn walk(
        v: &mut Value,
        parent: &str,
        f: &mut dyn FnMut(&mut String) -> Result<(), StoreError>,
        failed: &mut Option<StoreError>,
    ) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    let personal = matches!(k.as_str(), "id_no" | "mobile" | "case_pwd")
                        || (matches!(parent, "applicant" | "contact")
                            && matches!(k.as_str(), "name" | "legal_rep"));
                    match child {
                        Value::String(s) if personal => {
                            if let Err(e) = f(s) {
                                failed.get_or_insert(e);
                            }
                        }
                        _ => walk(child, k, f, failed),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, parent, f, failed)),
            _ => {}
        }
    }
    walk(v, "", f, failed);
}

/// Either engine, with payloads and personal fields sealed.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    keys: Arc<DataKeys>,
}

/// Wrap `inner` for the keys of `config`, after checking them against the keys the
/// store has values under; without `[store] encrypt`, check only that the store has
/// no sealed values.
pub async fn wrap(inner: Arc<dyn Store>, config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    let keys = DataKeys::from_config(config)?;
    let SealOut::Keys(held) = inner.sealed(SealOp::Keys).await? else {
        return Err(StoreError::Corrupt("data keys: unexpected answer".into()));
    };
    let Some(keys) = keys else {
        if let Some(k) = held.first() {
            return Err(bad(format!(
                "the store holds values sealed with data key `{}`; set [store] encrypt = \"{}\" with its key",
                k.id, k.alg
            )));
        }
        return Ok(inner);
    };
    for h in &held {
        let key = keys.key(&h.id).ok_or_else(|| {
            bad(format!(
                "the store holds values sealed with data key `{}`, which [store] keys does not list",
                h.id
            ))
        })?;
        if h.alg != keys.alg || key.cipher.open(&h.check).as_deref() != Some(CHECK) {
            return Err(bad(format!(
                "data key `{}` is not the key the store's values were sealed with ({})",
                h.id, h.alg
            )));
        }
    }
    // Register the current key before anything is sealed with it.
    let current = keys.checks().into_iter().next();
    if let Some(c) = current.filter(|c| !held.iter().any(|h| h.id == c.id)) {
        inner
            .sealed(SealOp::SetKeys {
                add: vec![c],
                forget: Vec::new(),
            })
            .await?;
    }
    Ok(Arc::new(SealedStore {
        inner,
        keys: Arc::new(keys),
    }))
}

impl SealedStore {
    fn open_view(&self, r: &mut RecordView) -> Result<(), StoreError> {
        self.keys.open_value(&mut r.record)
    }
}

mod delegate;
mod rotate;

pub use rotate::{Rotation, rotate};

#[cfg(test)]
mod tests;
