//! Hashes (layer 1): hex SHA-256 of bytes the gateway keeps as evidence (bodies,
//! records, receipts, tokens), and the audit chain's hash function, SHA-256 or SM3
//! (GB/T 32905), fixed when a store is created.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A hash algorithm name that is neither `sha256` nor `sm3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit hash algorithm `{0}` (sha256 or sm3)")]
pub struct UnknownAlg(pub String);

/// The chain's hash function, fixed when a store is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    #[default]
    Sha256,
    Sm3,
}

impl HashAlg {
    pub fn parse(s: &str) -> Result<HashAlg, UnknownAlg> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Ok(HashAlg::Sha256),
            "sm3" => Ok(HashAlg::Sm3),
            _ => Err(UnknownAlg(s.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sm3 => "sm3",
        }
    }

    /// The chain step: `H(prev || canonical)`.
    pub fn chain(self, prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
        match self {
            HashAlg::Sha256 => {
                let mut h = Sha256::new();
                h.update(prev);
                h.update(canonical);
                h.finalize().into()
            }
            HashAlg::Sm3 => {
                let mut h = sm3::Sm3::new();
                h.update(prev);
                h.update(canonical);
                h.finalize().into()
            }
        }
    }
}

/// Hex SHA-256 of some bytes (bodies, records, receipts).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Parse a hex chain hash.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}
