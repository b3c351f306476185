//! The national algorithms (国密, layer 1): SM2 signatures with SM3 over the user id's
//! Z value (GB/T 32918), SM4 in the modes the field's interfaces use (GB/T 32907), and
//! the text forms keys and ciphertexts travel in. The primitives are RustCrypto's
//! (`sm2`, `sm3`, `sm4`, `cbc`, `ecb`, `aes-gcm`); this module only chooses modes,
//! encodings and key formats, and says clearly what is wrong with a key or a text.

pub mod sm2;
pub mod sm4;

use base64::Engine;

/// Why a key, a signature or a ciphertext could not be used. Messages name the
/// problem, never the key or the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuomiError {
    #[error("key: {0}")]
    Key(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("signature is malformed: {0}")]
    MalformedSignature(String),
    #[error("ciphertext is not {0}")]
    Encoding(&'static str),
    #[error("ciphertext length {0} is not a whole number of 16-byte blocks")]
    BlockLength(usize),
    #[error("bad padding: the key is wrong or the ciphertext was altered")]
    Padding,
    #[error("authentication tag does not match: the key is wrong or the ciphertext was altered")]
    Tag,
    #[error("ciphertext too short for its IV or nonce")]
    Short,
    #[error("{0}")]
    Io(String),
}

/// How binary values travel as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Lower-case hex (upper case is read too).
    Hex,
    /// Standard base64 with padding.
    #[default]
    Base64,
}

impl Encoding {
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(bytes),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// Decode text, ignoring surrounding white space (line breaks included).
    pub fn decode(self, text: &[u8]) -> Result<Vec<u8>, GuomiError> {
        let compact: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        match self {
            Encoding::Hex => hex::decode(&compact).map_err(|_| GuomiError::Encoding("hex")),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&compact)
                .map_err(|_| GuomiError::Encoding("base64")),
        }
    }
}

/// SM3 digest of bytes.
pub fn sm3(bytes: &[u8]) -> [u8; 32] {
    <::sm3::Sm3 as ::sm3::Digest>::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GB/T 32905-2016, appendix A: the two SM3 examples.
    #[test]
    fn sm3_examples_of_the_standard() {
        assert_eq!(
            hex::encode(sm3(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            hex::encode(sm3(&b"abcd".repeat(16))),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    #[test]
    fn encodings_round_trip_and_refuse_garbage() {
        for enc in [Encoding::Hex, Encoding::Base64] {
            let text = enc.encode(b"\x00\x01hallgate");
            assert_eq!(enc.decode(text.as_bytes()).unwrap(), b"\x00\x01hallgate");
        }
        assert_eq!(
            Encoding::Hex.decode(b"zz"),
            Err(GuomiError::Encoding("hex"))
        );
        assert_eq!(
            Encoding::Base64.decode(b"@@@"),
            Err(GuomiError::Encoding("base64"))
        );
    }
}
