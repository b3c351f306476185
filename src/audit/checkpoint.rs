//! Signed checkpoints: the chain head (sequence, hash, time) signed with the
//! gateway's ES256 key, so an outside party holding only the public key can later
//! prove the log still contains that head unaltered.

use std::path::Path;

use p256::ecdsa::signature::{Signer, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::hash::HashAlg;
use crate::keys::key_id;

/// A signed chain head, as written by `hallgate audit checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub gateway: String,
    pub seq: i64,
    /// Hex of the chain hash of event `seq`.
    pub hash: String,
    pub alg: HashAlg,
    /// When the checkpoint was taken (RFC 3339).
    pub at: String,
    /// SHA-256 of the public key (SPKI DER), to tell keys apart.
    pub key_id: String,
    /// Hex of the DER ECDSA P-256 / SHA-256 signature over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: the fields above, without the signature, in a fixed form.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "hallgate-checkpoint-v1\ngateway={}\nseq={}\nhash={}\nalg={}\nat={}\nkey_id={}\n",
            self.gateway,
            self.seq,
            self.hash,
            self.alg.as_str(),
            self.at,
            self.key_id
        )
        .into_bytes()
    }

    pub fn sign(
        key: &SigningKey,
        gateway: &str,
        seq: i64,
        hash: &str,
        alg: HashAlg,
        at: &str,
    ) -> Result<Checkpoint, AuditError> {
        let mut c = Checkpoint {
            gateway: gateway.to_string(),
            seq,
            hash: hash.to_string(),
            alg,
            at: at.to_string(),
            key_id: key_id(key.verifying_key())?,
            signature: String::new(),
        };
        let sig: Signature = key.sign(&c.signed_bytes());
        c.signature = hex::encode(sig.to_der().as_bytes());
        Ok(c)
    }

    /// Check the signature with the gateway's public key.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), AuditError> {
        let bad = |m: &str| AuditError::Checkpoint(m.to_string());
        let unchecked = |m: &str| AuditError::CheckpointUnchecked(m.to_string());
        if key_id(key)? != self.key_id {
            return Err(unchecked("signed with a different key than the one given"));
        }
        let der = hex::decode(&self.signature).map_err(|_| unchecked("signature is not hex"))?;
        let sig = Signature::from_der(&der)
            .map_err(|_| unchecked("signature is not a DER ECDSA signature"))?;
        key.verify(&self.signed_bytes(), &sig)
            .map_err(|_| bad("signature does not match its content: the checkpoint was altered"))
    }

    pub fn load(path: &Path) -> Result<Checkpoint, AuditError> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text)
            .map_err(|e| AuditError::CheckpointUnchecked(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate_key, load_public_key, load_signing_key};

    #[test]
    fn signed_checkpoint_verifies_and_detects_changes() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("gw.key.pem");
        let pub_path = generate_key(&key_path).unwrap();
        assert_eq!(pub_path, dir.path().join("gw.pub.pem"));
        assert!(generate_key(&key_path).is_err(), "never overwrites a key");
        let key = load_signing_key(&key_path).unwrap();
        let public = load_public_key(&pub_path).unwrap();
        let c = Checkpoint::sign(
            &key,
            "gw",
            42,
            &"ab".repeat(32),
            HashAlg::Sha256,
            "2026-11-22T10:00:00+08:00",
        )
        .unwrap();
        c.verify_signature(&public).unwrap();
        let mut moved = c.clone();
        moved.seq = 41;
        assert!(moved.verify_signature(&public).is_err());
        let other = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        assert!(c.verify_signature(other.verifying_key()).is_err());
    }
}
