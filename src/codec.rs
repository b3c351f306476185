//! Decoding: request bytes to a list of JSON values, one per record.
//!
//! This is the seam where a node's mappings take over (DESIGN.md section 1, step 3):
//! until a node has mappings, a body is canonical JSON — one object, an array of
//! objects, or JSON lines. The content type decides which decoder runs; a type no
//! decoder understands is refused with a clear error (HTTP 415), never guessed at.

use serde_json::Value;

/// Why a body could not be decoded at all (as opposed to a record being invalid).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error(
        "content type `{0}` is not accepted here; send application/json or application/x-ndjson"
    )]
    UnsupportedContentType(String),
    #[error("body is not valid JSON at line {line}, column {column}: {reason}")]
    Syntax {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("body holds no records")]
    Empty,
    #[error("body holds {count} records, more than the limit of {limit}")]
    TooManyRecords { count: usize, limit: usize },
    #[error("body is not UTF-8 (byte offset {0}); canonical JSON must be UTF-8")]
    NotUtf8(usize),
}

/// Body formats the canonical decoder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    JsonLines,
}

impl Format {
    /// The decoder for a `Content-Type` header value (parameters ignored). A missing
    /// header is treated as JSON.
    pub fn from_content_type(ct: Option<&str>) -> Result<Format, CodecError> {
        let Some(ct) = ct else {
            return Ok(Format::Json);
        };
        match essence(ct).as_str() {
            "application/json" | "text/json" => Ok(Format::Json),
            "application/x-ndjson"
            | "application/jsonl"
            | "application/json-lines"
            | "application/jsonlines" => Ok(Format::JsonLines),
            _ => Err(CodecError::UnsupportedContentType(ct.to_string())),
        }
    }
}

/// The media type of a `Content-Type` value, lower-case, without parameters.
pub fn essence(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Split a canonical body into record values. At most `limit` records.
pub fn decode_canonical(
    body: &[u8],
    format: Format,
    limit: usize,
) -> Result<Vec<Value>, CodecError> {
    let text = std::str::from_utf8(body).map_err(|e| CodecError::NotUtf8(e.valid_up_to()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    let records = match format {
        // A JSON body that does not start with '[' or '{' cannot be a record list; a
        // body of several objects on lines is JSON lines whatever its label says.
        Format::Json if trimmed.starts_with('[') => match parse(text)? {
            Value::Array(items) => items,
            other => vec![other],
        },
        Format::Json | Format::JsonLines => {
            let mut out = Vec::new();
            for item in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
                out.push(item.map_err(syntax)?);
                if out.len() > limit {
                    return Err(CodecError::TooManyRecords {
                        count: out.len(),
                        limit,
                    });
                }
            }
            out
        }
    };
    if records.is_empty() {
        return Err(CodecError::Empty);
    }
    if records.len() > limit {
        return Err(CodecError::TooManyRecords {
            count: records.len(),
            limit,
        });
    }
    Ok(records)
}

fn parse(text: &str) -> Result<Value, CodecError> {
    serde_json::from_str(text).map_err(syntax)
}

fn syntax(e: serde_json::Error) -> CodecError {
    CodecError::Syntax {
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    }
}

/// Whether any of the eight bytes in `x` is `"`, `\\` or a control character.
fn needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |y: u64| y.wrapping_sub(ONES) & !y & HIGHS;
    // A byte below 0x20 (bytes of 0x80 and up are excluded by `!x`).
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
    zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64)) | control != 0
}

/// A JSON string, byte for byte what `serde_json` writes, with a faster path for
/// text that needs no escaping (eight bytes are checked at a time). Every canonical
/// record `hallgate map` prints goes through this ([`crate::record::Obj::write_json`]).
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.push(b'"');
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        if needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    out.extend_from_slice(&bytes[..i]);
    let mut start = i;
    for (j, &b) in bytes.iter().enumerate().skip(i) {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..j]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
                start = j + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..j]);
        out.extend_from_slice(escape);
        start = j + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use crate::record::Val;

    proptest::proptest! {
        #[test]
        fn write_json_writes_what_serde_json_writes(s in "\\PC*", t in proptest::collection::vec(0u8..0x80, 0..40)) {
            let ascii = String::from_utf8(t).unwrap_or_default();
            let v = serde_json::json!({"a": s, "b": [ascii, 1, 2.5, null, true], "c": {"d": s}});
            let mut ours = Vec::new();
            Val::from(&v).write_json(&mut ours);
            proptest::prop_assert_eq!(ours, serde_json::to_vec(&v).unwrap_or_default());
        }
    }

    #[test]
    fn write_json_escapes_like_serde_json() {
        for s in [
            "",
            "plain ascii text here",
            "引号\"和\\反斜杠",
            "tab\tnew\nline\r\u{1}\u{1f}\u{7f}",
            "12345678\"",
            "1234567\u{0}",
        ] {
            let v = Value::String(s.to_string());
            let mut ours = Vec::new();
            Val::from(&v).write_json(&mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
    }

    use super::*;

    #[test]
    fn object_array_and_lines() {
        let one = decode_canonical(br#"{"a":1}"#, Format::Json, 10).unwrap();
        assert_eq!(one.len(), 1);
        let arr = decode_canonical(br#" [{"a":1},{"a":2}]"#, Format::Json, 10).unwrap();
        assert_eq!(arr.len(), 2);
        let lines =
            decode_canonical(b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n", Format::JsonLines, 10).unwrap();
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn limits_and_errors() {
        assert_eq!(
            decode_canonical(b"[1,2,3]", Format::Json, 2),
            Err(CodecError::TooManyRecords { count: 3, limit: 2 })
        );
        assert_eq!(
            decode_canonical(b"[]", Format::Json, 2),
            Err(CodecError::Empty)
        );
        assert!(matches!(
            decode_canonical(b"{\"a\":", Format::Json, 2),
            Err(CodecError::Syntax { line: 1, .. })
        ));
        assert_eq!(
            decode_canonical(b"{\"a\":\"\xff\"}", Format::Json, 2),
            Err(CodecError::NotUtf8(6))
        );
        assert!(matches!(
            Format::from_content_type(Some("application/xml")),
            Err(CodecError::UnsupportedContentType(_))
        ));
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8")),
            Ok(Format::Json)
        );
    }
}
