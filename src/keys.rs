//! The gateway's own ES256 (P-256) key pair (layer 1): made by `hallgate keys
//! generate`, it signs the tokens of outbound deliveries (`auth::outbound`) and the
//! audit checkpoints (`audit::checkpoint`). Private keys are PKCS#8 PEM written with
//! mode 0600; public keys SPKI PEM beside them; a key's id is the SHA-256 of its
//! public key (SPKI DER).

use std::path::{Path, PathBuf};

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

use crate::hash::sha256_hex;

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("signing key {path}: {reason}")]
    File { path: String, reason: String },
    #[error("public key encoding: {0}")]
    Encoding(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The key id: hex SHA-256 of the public key (SPKI DER).
pub fn key_id(key: &VerifyingKey) -> Result<String, KeyFileError> {
    let der = key
        .to_public_key_der()
        .map_err(|e| KeyFileError::Encoding(e.to_string()))?;
    Ok(sha256_hex(der.as_bytes()))
}

/// Read a PKCS#8 PEM private key (ES256 / P-256).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let err = |reason: String| KeyFileError::File {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| err(format!("not a PKCS#8 P-256 key: {e}")))
}

/// Read a PEM public key (SPKI, P-256).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyFileError> {
    let err = |reason: String| KeyFileError::File {
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
pub fn generate_key(private: &Path) -> Result<PathBuf, KeyFileError> {
    let err = |reason: String| KeyFileError::File {
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
