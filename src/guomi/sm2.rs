//! SM2 signatures (GB/T 32918.2) with SM3 over Z‖M, where Z hashes the signer's user
//! id (GB/T 32918.2 section 5.5; GM/T 0009 fixes the default id `1234567812345678`).
//!
//! Keys are read as PEM (PKCS#8 or SEC1 private keys, SPKI public keys, with the SM2
//! curve OID 1.2.156.10197.1.301) or as the bare hex many peers hand out: 64 hex
//! digits for a private key, 128 (`x‖y`) or 130 (`04‖x‖y`) for a public key.
//! Signatures are made as the 64 bytes `r‖s`; they are read as `r‖s` or as the DER
//! `SEQUENCE { r, s }` of GM/T 0009.

use std::path::Path;

use ::sm2::dsa::signature::{Signer as _, Verifier as _};
use ::sm2::dsa::{Signature, SigningKey, VerifyingKey};
use ::sm2::elliptic_curve::sec1::ToEncodedPoint;
use ::sm2::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ::sm2::{PublicKey, SecretKey};

use super::GuomiError;

/// The user id of GM/T 0009 that peers use unless they agree on another.
pub const DEFAULT_USER_ID: &str = "1234567812345678";

/// An SM2 private key bound to a user id.
#[derive(Clone)]
pub struct Sm2Signer {
    key: SigningKey,
}

/// An SM2 public key bound to a user id.
#[derive(Clone)]
pub struct Sm2Verifier {
    key: VerifyingKey,
}

fn key_err(e: impl std::fmt::Display) -> GuomiError {
    GuomiError::Key(e.to_string())
}

fn is_hex(text: &str, lens: &[usize]) -> bool {
    lens.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Sm2Signer {
    /// A private key from its text: PKCS#8 or SEC1 PEM, or 64 hex digits.
    pub fn from_text(text: &str, user_id: &str) -> Result<Sm2Signer, GuomiError> {
        let text = text.trim();
        let secret = if text.contains("BEGIN PRIVATE KEY") {
            SecretKey::from_pkcs8_pem(text)
                .map_err(|e| key_err(format!("not a PKCS#8 SM2 private key: {e}")))?
        } else if text.contains("BEGIN EC PRIVATE KEY") {
            SecretKey::from_sec1_pem(text)
                .map_err(|e| key_err(format!("not a SEC1 SM2 private key: {e}")))?
        } else if is_hex(text, &[64]) {
            let bytes = hex::decode(text).map_err(key_err)?;
            SecretKey::from_slice(&bytes).map_err(|_| key_err("not an SM2 private scalar"))?
        } else {
            return Err(key_err(
                "an SM2 private key is PKCS#8 or SEC1 PEM, or 64 hex digits",
            ));
        };
        Ok(Sm2Signer {
            key: SigningKey::new(user_id, &secret).map_err(|_| key_err("user id too long"))?,
        })
    }

    /// Read a private key file.
    pub fn load(path: &Path, user_id: &str) -> Result<Sm2Signer, GuomiError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GuomiError::Io(format!("{}: {e}", path.display())))?;
        Sm2Signer::from_text(&text, user_id)
            .map_err(|e| GuomiError::Key(format!("{}: {e}", path.display())))
    }

    /// A fresh random key.
    pub fn random(user_id: &str) -> Result<Sm2Signer, GuomiError> {
        let secret = SecretKey::random(&mut ::sm2::elliptic_curve::rand_core::OsRng);
        Ok(Sm2Signer {
            key: SigningKey::new(user_id, &secret).map_err(|_| key_err("user id too long"))?,
        })
    }

    /// `r‖s` of the signature over `msg` (deterministic nonce, RFC 6979 style).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let sig: Signature = self.key.sign(msg);
        sig.to_bytes()
    }

    pub fn verifier(&self) -> Sm2Verifier {
        Sm2Verifier {
            key: self.key.verifying_key().clone(),
        }
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, GuomiError> {
        let secret = SecretKey::from_bytes(&self.key.to_bytes()).map_err(key_err)?;
        Ok(secret
            .to_pkcs8_pem(::sm2::pkcs8::LineEnding::LF)
            .map_err(key_err)?
            .to_string())
    }

    /// The private scalar as 64 hex digits (for peers that take bare hex keys).
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }
}

impl Sm2Verifier {
    /// A public key from its text: SPKI PEM, or 128/130 hex digits.
    pub fn from_text(text: &str, user_id: &str) -> Result<Sm2Verifier, GuomiError> {
        let text = text.trim();
        let public = if text.contains("BEGIN PUBLIC KEY") {
            PublicKey::from_public_key_pem(text)
                .map_err(|e| key_err(format!("not an SM2 public key: {e}")))?
        } else if is_hex(text, &[128, 130]) {
            let mut bytes = hex::decode(text).map_err(key_err)?;
            if bytes.len() == 64 {
                bytes.insert(0, 4);
            }
            PublicKey::from_sec1_bytes(&bytes).map_err(|_| key_err("not a point on SM2"))?
        } else {
            return Err(key_err(
                "an SM2 public key is SPKI PEM, or 128 (x‖y) or 130 (04‖x‖y) hex digits",
            ));
        };
        Ok(Sm2Verifier {
            key: VerifyingKey::new(user_id, public).map_err(|_| key_err("user id too long"))?,
        })
    }

    /// Read a public key file.
    pub fn load(path: &Path, user_id: &str) -> Result<Sm2Verifier, GuomiError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GuomiError::Io(format!("{}: {e}", path.display())))?;
        Sm2Verifier::from_text(&text, user_id)
            .map_err(|e| GuomiError::Key(format!("{}: {e}", path.display())))
    }

    /// Check a signature given as `r‖s` (64 bytes) or DER.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), GuomiError> {
        let sig = parse_signature(sig)?;
        self.key
            .verify(msg, &sig)
            .map_err(|_| GuomiError::BadSignature)
    }

    /// The public key as SPKI PEM.
    pub fn to_pem(&self) -> Result<String, GuomiError> {
        PublicKey::from(&self.key)
            .to_public_key_pem(::sm2::pkcs8::LineEnding::LF)
            .map_err(key_err)
    }

    /// The public key as `04‖x‖y` hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_encoded_point(false).as_bytes())
    }

    /// Hex SHA-256 of the public key (SPKI DER): the key's id.
    pub fn key_id(&self) -> Result<String, GuomiError> {
        let der = PublicKey::from(&self.key)
            .to_public_key_der()
            .map_err(key_err)?;
        Ok(crate::hash::sha256_hex(der.as_bytes()))
    }
}

/// A signature as `r‖s` or DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn parse_signature(sig: &[u8]) -> Result<Signature, GuomiError> {
    let bad = |m: &str| GuomiError::MalformedSignature(m.to_string());
    if sig.len() == 64 {
        return Signature::from_slice(sig).map_err(|_| bad("r or s is out of range"));
    }
    let der = ::ecdsa::Signature::<::sm2::Sm2>::from_der(sig)
        .map_err(|_| bad("neither 64 bytes r‖s nor DER"))?;
    Signature::from_slice(&der.to_bytes()).map_err(|_| bad("r or s is out of range"))
}

/// Make a key pair: the private key (PKCS#8 PEM, mode 0600, never overwritten) and
/// its public key (SPKI PEM) at `public`.
pub fn generate(private: &Path, public: &Path) -> Result<Sm2Verifier, GuomiError> {
    let io = |e: std::io::Error| GuomiError::Io(format!("{}: {e}", private.display()));
    if private.exists() {
        return Err(GuomiError::Io(format!(
            "{}: already exists; refusing to overwrite a key",
            private.display()
        )));
    }
    if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let key = Sm2Signer::random(DEFAULT_USER_ID)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    let pem = key.to_pem()?;
    opts.open(private)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .map_err(io)?;
    let verifier = key.verifier();
    std::fs::write(public, verifier.to_pem()?).map_err(io)?;
    Ok(verifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GB/T 32918.5-2017 appendix A (and GM/T 0003.5): the signature example on the
    /// recommended curve, user id `1234567812345678`, message `message digest`.
    const D: &str = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8";
    const PUB: &str = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020\
                       CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13";
    const R: &str = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3";
    const S: &str = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA";

    #[test]
    fn the_signature_example_of_the_standard_verifies() {
        let signer = Sm2Signer::from_text(D, DEFAULT_USER_ID).unwrap();
        assert_eq!(
            signer.verifier().to_hex(),
            format!("04{}", PUB.to_lowercase())
        );
        let verifier = Sm2Verifier::from_text(PUB, DEFAULT_USER_ID).unwrap();
        let sig = hex::decode(format!("{R}{S}")).unwrap();
        verifier.verify(b"message digest", &sig).unwrap();
        assert_eq!(
            verifier.verify(b"message digesT", &sig),
            Err(GuomiError::BadSignature)
        );
        // Another user id gives another Z: the same signature no longer holds.
        let other = Sm2Verifier::from_text(PUB, "ALICE123@YAHOO.COM").unwrap();
        assert_eq!(
            other.verify(b"message digest", &sig),
            Err(GuomiError::BadSignature)
        );
    }

    #[test]
    fn der_signatures_are_read_too() {
        let verifier = Sm2Verifier::from_text(PUB, DEFAULT_USER_ID).unwrap();
        let r = hex::decode(R).unwrap();
        let s = hex::decode(S).unwrap();
        // Both integers have the high bit set: DER adds a zero byte before each.
        let mut der = vec![0x30, 2 + 33 + 2 + 33, 0x02, 33, 0];
        der.extend_from_slice(&r);
        der.extend_from_slice(&[0x02, 33, 0]);
        der.extend_from_slice(&s);
        verifier.verify(b"message digest", &der).unwrap();
        assert!(matches!(
            verifier.verify(b"message digest", &der[..40]),
            Err(GuomiError::MalformedSignature(_))
        ));
    }

    #[test]
    fn generated_keys_round_trip_through_pem() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("gw-sm2.key.pem");
        let public = dir.path().join("gw-sm2.pub.pem");
        let made = generate(&private, &public).unwrap();
        assert!(
            generate(&private, &public).is_err(),
            "never overwrites a key"
        );
        let signer = Sm2Signer::load(&private, DEFAULT_USER_ID).unwrap();
        let verifier = Sm2Verifier::load(&public, DEFAULT_USER_ID).unwrap();
        assert_eq!(verifier.to_hex(), made.to_hex());
        let sig = signer.sign(b"hallgate");
        verifier.verify(b"hallgate", &sig).unwrap();
        let hex_signer = Sm2Signer::from_text(&signer.to_hex(), DEFAULT_USER_ID).unwrap();
        verifier
            .verify(b"x", &hex_signer.sign(b"x"))
            .expect("hex and PEM name the same key");
        assert!(Sm2Verifier::from_text("not a key", DEFAULT_USER_ID).is_err());
    }
}
