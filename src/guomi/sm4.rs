//! SM4 (GB/T 32907) in the modes the field's interfaces use: ECB and CBC with PKCS#7
//! padding, and GCM (RFC 8998's SM4-GCM) where a peer supports it.
//!
//! Layouts, as bytes before any text encoding:
//! - ECB: the ciphertext;
//! - CBC with `iv = "prefix"`: a random 16-byte IV, then the ciphertext; with a fixed IV
//!   agreed out of band, the ciphertext alone;
//! - GCM: a random 12-byte nonce, the ciphertext, the 16-byte tag.
//!
//! A wrong key never yields data: CBC and ECB fail on their padding (a wrong key gets
//! past a PKCS#7 check about once in 256 tries, which is why GCM or a signature over
//! the body should be preferred), GCM on its tag.

use aes_gcm::aead::{Aead, AeadCore};
use base64::Engine;
use cipher::{BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit, block_padding::Pkcs7};

use super::GuomiError;

type Sm4Gcm = aes_gcm::AesGcm<::sm4::Sm4, aes_gcm::aead::consts::U12>;

/// A 128-bit SM4 key.
#[derive(Clone)]
pub struct Sm4Key([u8; 16]);

impl std::fmt::Debug for Sm4Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sm4Key(…)")
    }
}

impl Sm4Key {
    pub fn new(bytes: [u8; 16]) -> Sm4Key {
        Sm4Key(bytes)
    }

    /// A key as peers hand it out: 32 hex digits, 24 characters of base64, or the 16
    /// characters themselves (the ASCII keys many interfaces are configured with).
    pub fn from_text(text: &str) -> Result<Sm4Key, GuomiError> {
        let text = text.trim();
        let bytes = if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else if text.len() == 24 {
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        } else if text.len() == 16 {
            Some(text.as_bytes().to_vec())
        } else {
            None
        };
        bytes
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Sm4Key)
            .ok_or_else(|| {
                GuomiError::Key(
                    "an SM4 key is 32 hex digits, 24 characters of base64, or 16 characters".into(),
                )
            })
    }

    /// The key's id: the first 16 hex digits of SM3 over the key, safe to log.
    pub fn id(&self) -> String {
        hex::encode(&super::sm3(&self.0)[..8])
    }
}

/// The block mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Ecb,
    Cbc,
    Gcm,
}

/// Where CBC's IV comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Iv {
    /// A random IV written before the ciphertext.
    Prefix,
    /// An IV agreed out of band (as many interfaces do; weaker: equal bodies give
    /// equal ciphertexts).
    Fixed([u8; 16]),
}

/// SM4 with a key, a mode and (for CBC) an IV rule.
#[derive(Debug, Clone)]
pub struct Sm4Cipher {
    key: Sm4Key,
    mode: Mode,
    iv: Iv,
}

impl Sm4Cipher {
    pub fn new(key: Sm4Key, mode: Mode, iv: Iv) -> Sm4Cipher {
        Sm4Cipher { key, mode, iv }
    }

    pub fn key_id(&self) -> String {
        self.key.id()
    }

    /// Encrypt `plain` in the layout of the module header.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let k = &self.key.0;
        match (self.mode, &self.iv) {
            (Mode::Ecb, _) => {
                ecb::Encryptor::<::sm4::Sm4>::new(k.into()).encrypt_padded_vec_mut::<Pkcs7>(plain)
            }
            (Mode::Cbc, Iv::Fixed(iv)) => cbc::Encryptor::<::sm4::Sm4>::new(k.into(), iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(plain),
            (Mode::Cbc, Iv::Prefix) => {
                let mut iv = [0u8; 16];
                fill_random(&mut iv);
                let mut out = iv.to_vec();
                out.extend(
                    cbc::Encryptor::<::sm4::Sm4>::new(k.into(), (&iv).into())
                        .encrypt_padded_vec_mut::<Pkcs7>(plain),
                );
                out
            }
            (Mode::Gcm, _) => {
                let gcm = Sm4Gcm::new(k.into());
                let nonce = Sm4Gcm::generate_nonce(&mut aes_gcm::aead::OsRng);
                let mut out = nonce.to_vec();
                // Encrypting into a Vec fails only when the input exceeds GCM's 64 GiB.
                out.extend(gcm.encrypt(&nonce, plain).unwrap_or_default());
                out
            }
        }
    }

    /// Decrypt what [`Sm4Cipher::encrypt`] (or a peer in the same layout) made.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, GuomiError> {
        let k = &self.key.0;
        let whole = |d: &[u8]| {
            if d.is_empty() || !d.len().is_multiple_of(16) {
                Err(GuomiError::BlockLength(d.len()))
            } else {
                Ok(())
            }
        };
        match (self.mode, &self.iv) {
            (Mode::Ecb, _) => {
                whole(data)?;
                ecb::Decryptor::<::sm4::Sm4>::new(k.into())
                    .decrypt_padded_vec_mut::<Pkcs7>(data)
                    .map_err(|_| GuomiError::Padding)
            }
            (Mode::Cbc, iv_rule) => {
                let (iv, body) = match iv_rule {
                    Iv::Fixed(iv) => (*iv, data),
                    Iv::Prefix => {
                        let (iv, body) = data.split_at_checked(16).ok_or(GuomiError::Short)?;
                        (
                            <[u8; 16]>::try_from(iv).map_err(|_| GuomiError::Short)?,
                            body,
                        )
                    }
                };
                whole(body)?;
                cbc::Decryptor::<::sm4::Sm4>::new(k.into(), (&iv).into())
                    .decrypt_padded_vec_mut::<Pkcs7>(body)
                    .map_err(|_| GuomiError::Padding)
            }
            (Mode::Gcm, _) => {
                if data.len() < 12 + 16 {
                    return Err(GuomiError::Short);
                }
                let (nonce, body) = data.split_at(12);
                Sm4Gcm::new(k.into())
                    .decrypt(nonce.into(), body)
                    .map_err(|_| GuomiError::Tag)
            }
        }
    }
}

fn fill_random(buf: &mut [u8]) {
    use aes_gcm::aead::rand_core::RngCore;
    aes_gcm::aead::OsRng.fill_bytes(buf);
}

/// The bare block cipher on one block (for the standard's known answers).
pub fn encrypt_block(key: &Sm4Key, block: [u8; 16]) -> [u8; 16] {
    use cipher::BlockEncrypt;
    let c = ::sm4::Sm4::new((&key.0).into());
    let mut b = block.into();
    c.encrypt_block(&mut b);
    b.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Sm4Key {
        Sm4Key::from_text("0123456789abcdeffedcba9876543210").unwrap()
    }

    /// GB/T 32907-2016 appendix A: example 1, and example 2 (one million rounds).
    #[test]
    fn the_examples_of_the_standard() {
        let plain: [u8; 16] = hex::decode("0123456789abcdeffedcba9876543210")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(
            hex::encode(encrypt_block(&key(), plain)),
            "681edf34d206965e86b3e94f536e4246"
        );
        let mut b = plain;
        for _ in 0..1_000_000 {
            b = encrypt_block(&key(), b);
        }
        assert_eq!(hex::encode(b), "595298c7c6fd271f0402f804c33d3f66");
    }

    #[test]
    fn every_mode_round_trips_and_refuses_a_wrong_key() {
        let other = Sm4Key::from_text("fedcba98765432100123456789abcdef").unwrap();
        let plain = "{\"caseNo\":\"3502\",\"name\":\"张三\"}".as_bytes();
        for (mode, iv) in [
            (Mode::Ecb, Iv::Prefix),
            (Mode::Cbc, Iv::Prefix),
            (Mode::Cbc, Iv::Fixed([7; 16])),
            (Mode::Gcm, Iv::Prefix),
        ] {
            let c = Sm4Cipher::new(key(), mode, iv.clone());
            let sealed = c.encrypt(plain);
            assert_eq!(c.decrypt(&sealed).unwrap(), plain, "{mode:?}");
            // A wrong key fails on the padding or the tag (CBC with a random IV may, once
            // in 256 tries, pass the padding check: it still never yields the data).
            let wrong = Sm4Cipher::new(other.clone(), mode, iv);
            assert_ne!(
                wrong.decrypt(&sealed).ok().as_deref(),
                Some(plain),
                "{mode:?}"
            );
        }
        let gcm = Sm4Cipher::new(key(), Mode::Gcm, Iv::Prefix);
        let mut sealed = gcm.encrypt(plain);
        sealed[14] ^= 1;
        assert_eq!(gcm.decrypt(&sealed), Err(GuomiError::Tag));
        let ecb = Sm4Cipher::new(key(), Mode::Ecb, Iv::Prefix);
        assert_eq!(ecb.decrypt(&[0; 15]), Err(GuomiError::BlockLength(15)));
    }

    #[test]
    fn keys_are_read_in_three_forms() {
        let hex = Sm4Key::from_text("31323334353637383930616263646566").unwrap();
        let ascii = Sm4Key::from_text("1234567890abcdef").unwrap();
        let b64 = Sm4Key::from_text("MTIzNDU2Nzg5MGFiY2RlZg==").unwrap();
        assert_eq!(hex.0, ascii.0);
        assert_eq!(b64.0, ascii.0);
        assert!(Sm4Key::from_text("short").is_err());
    }
}
