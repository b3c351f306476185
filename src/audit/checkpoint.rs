//! Signed checkpoints: the chain head (sequence, hash, time) signed with the
//! gateway's ES256 key or its SM2 key (`[audit] checkpoint_alg`), so an outside party
//! holding only the public key can later prove the log still contains that head
//! unaltered.

use std::path::Path;

use p256::ecdsa::signature::{Signer, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::guomi::sm2::{DEFAULT_USER_ID, Sm2Signer, Sm2Verifier};
use crate::hash::HashAlg;
use crate::keys::key_id;

/// What signs a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SigAlg {
    /// ECDSA P-256 with SHA-256; the signature is DER.
    #[default]
    ES256,
    /// SM2 with SM3 (GB/T 32918, user id `1234567812345678`); the signature is `r‖s`.
    SM2,
}

/// A checkpoint signing key.
pub enum CheckpointKey {
    Es256(SigningKey),
    Sm2(Sm2Signer),
}

impl CheckpointKey {
    /// Read the key for `alg` (`es256` or `sm2`) from a PEM file.
    pub fn load(alg: &str, path: &Path) -> Result<CheckpointKey, AuditError> {
        if alg.eq_ignore_ascii_case("sm2") {
            Sm2Signer::load(path, DEFAULT_USER_ID)
                .map(CheckpointKey::Sm2)
                .map_err(|e| AuditError::CheckpointUnchecked(e.to_string()))
        } else {
            Ok(CheckpointKey::Es256(crate::keys::load_signing_key(path)?))
        }
    }
}

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
    /// The signature algorithm (absent in checkpoints from before SM2: ES256).
    #[serde(default)]
    pub sig_alg: SigAlg,
    /// Hex of the signature over [`Checkpoint::signed_bytes`]: DER for ES256, `r‖s`
    /// for SM2.
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: the fields above, without the signature, in a fixed form. An
    /// SM2 checkpoint also signs its algorithm (ES256 ones keep the first form, so
    /// checkpoints taken before SM2 still verify).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut text = format!(
            "hallgate-checkpoint-v1\ngateway={}\nseq={}\nhash={}\nalg={}\nat={}\nkey_id={}\n",
            self.gateway,
            self.seq,
            self.hash,
            self.alg.as_str(),
            self.at,
            self.key_id
        );
        if self.sig_alg == SigAlg::SM2 {
            text.push_str("sig_alg=SM2\n");
        }
        text.into_bytes()
    }

    pub fn sign(
        key: &CheckpointKey,
        gateway: &str,
        seq: i64,
        hash: &str,
        alg: HashAlg,
        at: &str,
    ) -> Result<Checkpoint, AuditError> {
        let (kid, sig_alg) = match key {
            CheckpointKey::Es256(k) => (key_id(k.verifying_key())?, SigAlg::ES256),
            CheckpointKey::Sm2(k) => (
                k.verifier()
                    .key_id()
                    .map_err(|e| AuditError::CheckpointUnchecked(e.to_string()))?,
                SigAlg::SM2,
            ),
        };
        let mut c = Checkpoint {
            gateway: gateway.to_string(),
            seq,
            hash: hash.to_string(),
            alg,
            at: at.to_string(),
            key_id: kid,
            sig_alg,
            signature: String::new(),
        };
        c.signature = match key {
            CheckpointKey::Es256(k) => {
                let sig: Signature = k.sign(&c.signed_bytes());
                hex::encode(sig.to_der().as_bytes())
            }
            CheckpointKey::Sm2(k) => hex::encode(k.sign(&c.signed_bytes())),
        };
        Ok(c)
    }

    /// Check the signature with the public key (PEM) in `path`, read for the
    /// checkpoint's algorithm.
    pub fn verify_with(&self, path: &Path) -> Result<(), AuditError> {
        match self.sig_alg {
            SigAlg::ES256 => self.verify_signature(&crate::keys::load_public_key(path)?),
            SigAlg::SM2 => {
                let key = Sm2Verifier::load(path, DEFAULT_USER_ID)
                    .map_err(|e| AuditError::CheckpointUnchecked(e.to_string()))?;
                self.verify_sm2(&key)
            }
        }
    }

    fn verify_sm2(&self, key: &Sm2Verifier) -> Result<(), AuditError> {
        let unchecked = |m: &str| AuditError::CheckpointUnchecked(m.to_string());
        let kid = key.key_id().map_err(|e| unchecked(&e.to_string()))?;
        if kid != self.key_id {
            return Err(unchecked("signed with a different key than the one given"));
        }
        let sig = hex::decode(&self.signature).map_err(|_| unchecked("signature is not hex"))?;
        key.verify(&self.signed_bytes(), &sig).map_err(|_| {
            AuditError::Checkpoint(
                "signature does not match its content: the checkpoint was altered".into(),
            )
        })
    }

    /// Check an ES256 checkpoint's signature with the gateway's public key.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), AuditError> {
        let bad = |m: &str| AuditError::Checkpoint(m.to_string());
        let unchecked = |m: &str| AuditError::CheckpointUnchecked(m.to_string());
        if self.sig_alg != SigAlg::ES256 {
            return Err(unchecked("the checkpoint is not ES256-signed"));
        }
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
            &CheckpointKey::Es256(key),
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

    #[test]
    fn sm2_checkpoints_verify_and_cannot_pass_as_es256() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("gw-sm2.key.pem");
        let public = dir.path().join("gw-sm2.pub.pem");
        crate::guomi::sm2::generate(&private, &public).unwrap();
        let key = CheckpointKey::load("sm2", &private).unwrap();
        let c = Checkpoint::sign(
            &key,
            "gw",
            7,
            &"cd".repeat(32),
            HashAlg::Sm3,
            "2026-12-04T10:00:00+08:00",
        )
        .unwrap();
        assert_eq!(c.sig_alg, SigAlg::SM2);
        c.verify_with(&public).unwrap();
        let mut moved = c.clone();
        moved.hash = "ce".repeat(32);
        assert!(matches!(
            moved.verify_with(&public),
            Err(AuditError::Checkpoint(_))
        ));
        // Relabelled as ES256, its signed bytes change and no P-256 key reads the file.
        let mut relabelled = c.clone();
        relabelled.sig_alg = SigAlg::ES256;
        assert!(relabelled.verify_with(&public).is_err());
    }
}
