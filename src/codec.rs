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
    #[error(transparent)]
    Bounds(#[from] ScanError),
}

/// What one JSON body may hold (`[limits]`).
#[derive(Debug, Clone)]
pub struct Bounds {
    pub max_depth: usize,
    pub max_string_bytes: usize,
    /// Objects, arrays and values in the body.
    pub max_elements: usize,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            max_depth: 64,
            max_string_bytes: 1 << 20,
            max_elements: 200_000,
        }
    }
}

/// A JSON body over one of its [`Bounds`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("nesting deeper than {limit} levels at byte offset {offset}")]
    TooDeep { limit: usize, offset: usize },
    #[error("a string longer than {limit} bytes at byte offset {offset}")]
    StringTooLong { limit: usize, offset: usize },
    #[error(
        "more than {limit} elements or values in the body at byte offset {offset} (limit max_elements)"
    )]
    TooManyElements { limit: usize, offset: usize },
}

impl CodecError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::UnsupportedContentType(_) => "unsupported_media_type",
            CodecError::TooManyRecords { .. } => "too_many_records",
            CodecError::Bounds(ScanError::TooDeep { .. }) => "too_deep",
            CodecError::Bounds(ScanError::StringTooLong { .. }) => "string_too_long",
            CodecError::Bounds(ScanError::TooManyElements { .. }) => "too_many_elements",
            _ => "bad_body",
        }
    }
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

/// Split a canonical body into record values. At most `limit` records; the body is
/// checked against `bounds` before anything is parsed.
pub fn decode_canonical(
    body: &[u8],
    format: Format,
    limit: usize,
    bounds: &Bounds,
) -> Result<Vec<Value>, CodecError> {
    let text = std::str::from_utf8(body).map_err(|e| CodecError::NotUtf8(e.valid_up_to()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    scan_json(text, bounds)?;
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

/// Check depth, string lengths and the number of values of a JSON text in one pass,
/// before parsing: what the parsed tree will hold is bounded before it is built, and
/// the pass is linear in the text.
pub fn scan_json(text: &str, limits: &Bounds) -> Result<(), ScanError> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    // Objects and arrays, plus one per separator: at least the values there are.
    let mut values = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b',' | b'{' | b'[' => {
                values += 1;
                if values > limits.max_elements {
                    return Err(ScanError::TooManyElements {
                        limit: limits.max_elements,
                        offset: i,
                    });
                }
                if b[i] != b',' {
                    depth += 1;
                    if depth > limits.max_depth {
                        return Err(ScanError::TooDeep {
                            limit: limits.max_depth,
                            offset: i,
                        });
                    }
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                // Eight bytes at a time while none is a quote or a backslash.
                while i + 8 <= b.len() {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&b[i..i + 8]);
                    if quote_or_backslash(u64::from_le_bytes(w)) {
                        break;
                    }
                    i += 8;
                }
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i - start > limits.max_string_bytes {
                    return Err(ScanError::StringTooLong {
                        limit: limits.max_string_bytes,
                        offset: start,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Whether any of the eight bytes in `x` is `"` or `\\`.
fn quote_or_backslash(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |y: u64| y.wrapping_sub(ONES) & !y & HIGHS;
    zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_array_and_lines() {
        let one = decode_canonical(br#"{"a":1}"#, Format::Json, 10, &Bounds::default()).unwrap();
        assert_eq!(one.len(), 1);
        let arr = decode_canonical(
            br#" [{"a":1},{"a":2}]"#,
            Format::Json,
            10,
            &Bounds::default(),
        )
        .unwrap();
        assert_eq!(arr.len(), 2);
        let lines = decode_canonical(
            b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n",
            Format::JsonLines,
            10,
            &Bounds::default(),
        )
        .unwrap();
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn limits_and_errors() {
        assert_eq!(
            decode_canonical(b"[1,2,3]", Format::Json, 2, &Bounds::default()),
            Err(CodecError::TooManyRecords { count: 3, limit: 2 })
        );
        assert_eq!(
            decode_canonical(b"[]", Format::Json, 2, &Bounds::default()),
            Err(CodecError::Empty)
        );
        assert!(matches!(
            decode_canonical(b"{\"a\":", Format::Json, 2, &Bounds::default()),
            Err(CodecError::Syntax { line: 1, .. })
        ));
        assert_eq!(
            decode_canonical(b"{\"a\":\"\xff\"}", Format::Json, 2, &Bounds::default()),
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
