//! Signed checkpoints: the chain head (sequence, hash, time) signed with the
//! gateway's ES256 key, so an outside party holding only the public key can later
//! prove the log still contains that head unaltered.

use std::path::{Path, PathBuf};

use p256::ecdsa::signature::{Signer, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::{Deserialize, Serialize};

use super::{AuditError, HashAlg, sha256_hex};

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

pub fn key_id(key: &VerifyingKey) -> Result<String, AuditError> {
    let der = key
        .to_public_key_der()
        .map_err(|e| AuditError::Checkpoint(e.to_string()))?;
    Ok(sha256_hex(der.as_bytes()))
}

/// Read a PKCS#8 PEM private key (ES256 / P-256).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, AuditError> {
    let err = |reason: String| AuditError::Key {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| err(format!("not a PKCS#8 P-256 key: {e}")))
}

/// Read a PEM public key (SPKI, P-256).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, AuditError> {
    let err = |reason: String| AuditError::Key {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| err(format!("not a P-256 public key: {e}")))
}

/// Public key path beside a private key: `x.key.pem` → `x.pub.pem`.
pub fn public_key_path(private: &Path) -> PathBuf {
    let name = private
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("gateway.key.pem");
    let stem = name
        .strip_suffix(".key.pem")
        .or_else(|| name.strip_suffix(".pem"))
        .unwrap_or(name);
    private.with_file_name(format!("{stem}.pub.pem"))
}

/// Make a new ES256 key pair: the private key (mode 0600) and its public key beside it.
pub fn generate_key(private: &Path) -> Result<PathBuf, AuditError> {
    let err = |reason: String| AuditError::Key {
        path: private.display().to_string(),
        reason,
    };
    if private.exists() {
        return Err(err("already exists; refusing to overwrite a key".into()));
    }
    if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let key = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| err(e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    opts.open(private)?.write_all(pem.as_bytes())?;
    let public = public_key_path(private);
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| err(e.to_string()))?;
    std::fs::write(&public, pub_pem)?;
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;

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
