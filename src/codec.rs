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

#[cfg(test)]
mod tests {
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
