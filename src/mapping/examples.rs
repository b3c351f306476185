//! Mapping examples: an input and the canonical records it must become, or an input
//! that must be rejected with a given error code. `hallgate check` runs them and
//! reports each failure as a field-by-field diff.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::decode::{DecodeError, Limits};
use super::{Files, MappingSet, decode_and_check};
use crate::record::Kind;

/// One example, compiled from `[[examples]]`.
#[derive(Debug, Clone)]
pub struct Example {
    pub name: String,
    pub input: Input,
    pub content_type: Option<String>,
    pub kind: Option<Kind>,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub enum Input {
    File(PathBuf),
    Text(String),
}

#[derive(Debug, Clone)]
pub enum Expect {
    /// A JSON lines file of canonical records (`source` left out).
    Records(PathBuf),
    /// An error code (a field rule such as `required`, or a body-level code such as
    /// `doctype`), optionally on a given canonical field.
    Reject { code: String, field: Option<String> },
}

/// Every code a record or a body can be refused with.
pub const REJECT_CODES: &[&str] = &[
    // per field
    "required",
    "unknown_code",
    "time",
    "date",
    "number",
    "boolean",
    "pattern",
    "type",
    "enum",
    "empty",
    "id_no",
    "uscc",
    "org_code",
    "region_code",
    "mobile",
    "kind_mismatch",
    // per body
    "unsupported_media_type",
    "too_large",
    "encoding",
    "syntax",
    "doctype",
    "entity",
    "too_deep",
    "string_too_long",
    "too_many_records",
    "no_mapping",
];

const KEYS: &[&str] = &[
    "name",
    "input",
    "input_text",
    "content_type",
    "kind",
    "expected",
    "reject",
    "field",
];

impl Example {
    pub(crate) fn from_toml(t: &toml::Table, dir: &Path) -> Result<Example, String> {
        if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!("unknown key `{k}` (known: {})", KEYS.join(", ")));
        }
        let s = |k: &str| t.get(k).and_then(toml::Value::as_str).map(str::to_string);
        let input = match (s("input"), s("input_text")) {
            (Some(f), None) => Input::File(dir.join(f)),
            (None, Some(text)) => Input::Text(text),
            _ => return Err("an example has `input` (a file) or `input_text`".into()),
        };
        let expect = match (s("expected"), s("reject")) {
            (Some(f), None) => Expect::Records(dir.join(f)),
            (None, Some(code)) => {
                if !REJECT_CODES.contains(&code.as_str()) {
                    return Err(format!(
                        "`reject = \"{code}\"` is not an error code (known: {})",
                        REJECT_CODES.join(", ")
                    ));
                }
                Expect::Reject {
                    code,
                    field: s("field"),
                }
            }
            _ => {
                return Err(
                    "an example has `expected` (a JSON lines file) or `reject` (an error code)"
                        .into(),
                );
            }
        };
        let kind = match s("kind") {
            None => None,
            Some(k) => {
                Some(Kind::parse(&k).ok_or("`kind` is application, material, process or result")?)
            }
        };
        let name = s("name").unwrap_or_else(|| match &input {
            Input::File(p) => p.display().to_string(),
            Input::Text(t) => {
                let short: String = t.chars().take(40).collect();
                format!("input_text `{short}`")
            }
        });
        Ok(Example {
            name,
            input,
            content_type: s("content_type"),
            kind,
            expect,
        })
    }

    /// Run the example through `set`. `Err` holds readable diff lines.
    pub fn run(
        &self,
        set: &MappingSet,
        limits: &Limits,
        files: &dyn Files,
    ) -> Result<(), Vec<String>> {
        let body = match &self.input {
            Input::File(p) => files
                .read(p)
                .map_err(|e| vec![format!("cannot read {}: {e}", p.display())])?,
            Input::Text(t) => t.clone().into_bytes(),
        };
        let content_type = self.content_type.clone().or_else(|| match &self.input {
            Input::File(p) => guess_content_type(p),
            Input::Text(_) => None,
        });
        let decoded = decode_and_check(set, &body, content_type.as_deref(), self.kind, limits);
        match &self.expect {
            Expect::Reject { code, field } => {
                let found: Vec<(String, String)> = match &decoded {
                    Err(e) => vec![(error_code(e).to_string(), String::new())],
                    Ok(records) => records
                        .iter()
                        .filter_map(|r| r.result.as_ref().err())
                        .flatten()
                        .map(|e| (e.rule.clone(), e.field.clone()))
                        .collect(),
                };
                let hit = found
                    .iter()
                    .any(|(c, f)| c == code && field.as_ref().is_none_or(|want| want == f));
                if hit {
                    Ok(())
                } else {
                    let want = match field {
                        Some(f) => format!("`{code}` on {f}"),
                        None => format!("`{code}`"),
                    };
                    let got = if found.is_empty() {
                        "the input was accepted".to_string()
                    } else {
                        found
                            .iter()
                            .map(|(c, f)| {
                                if f.is_empty() {
                                    c.clone()
                                } else {
                                    format!("{c} on {f}")
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    Err(vec![format!("expected rejection {want}; got: {got}")])
                }
            }
            Expect::Records(path) => {
                let expected_text = files
                    .read(path)
                    .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
                let mut expected = Vec::new();
                for (i, line) in String::from_utf8_lossy(&expected_text).lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let v: Value = serde_json::from_str(line).map_err(|e| {
                        vec![format!("{}:{}: not JSON: {e}", path.display(), i + 1)]
                    })?;
                    expected.push(v);
                }
                let records = decoded.map_err(|e| vec![format!("the input is unusable: {e}")])?;
                let mut lines = Vec::new();
                let mut got = Vec::new();
                for r in records {
                    match r.result {
                        Ok(rec) => {
                            let mut fields = rec.fields;
                            fields.remove("source");
                            got.push(fields.to_value());
                        }
                        Err(errors) => {
                            for e in errors {
                                lines.push(format!("rejected: {e}"));
                            }
                            got.push(Value::Null);
                        }
                    }
                }
                if got.len() != expected.len() {
                    lines.push(format!(
                        "expected {} record(s), got {}",
                        expected.len(),
                        got.len()
                    ));
                }
                for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
                    if g.is_null() {
                        continue;
                    }
                    let mut e = e.clone();
                    if let Value::Object(m) = &mut e {
                        m.remove("source");
                    }
                    diff(&format!("record {i}: "), "", &e, g, &mut lines);
                }
                if lines.is_empty() { Ok(()) } else { Err(lines) }
            }
        }
    }
}

/// Content type from a file name: `.form` urlencoded, `.xml`, `.json`, `.jsonl`.
pub fn guess_content_type(p: &Path) -> Option<String> {
    let ext = p.extension()?.to_str()?.to_ascii_lowercase();
    Some(
        match ext.as_str() {
            "form" => "application/x-www-form-urlencoded",
            "xml" => "application/xml",
            "json" => "application/json",
            "jsonl" | "ndjson" => "application/x-ndjson",
            _ => return None,
        }
        .to_string(),
    )
}

/// The stable code of a body-level error, as used in examples and HTTP answers.
pub fn error_code(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::UnsupportedContentType(_) => "unsupported_media_type",
        DecodeError::TooLarge { .. } => "too_large",
        DecodeError::Encoding { .. } | DecodeError::UnknownEncoding(_) => "encoding",
        DecodeError::Syntax { .. } => "syntax",
        DecodeError::Doctype { .. } => "doctype",
        DecodeError::Entity { .. } => "entity",
        DecodeError::TooDeep { .. } | DecodeError::NestedTooDeep => "too_deep",
        DecodeError::StringTooLong { .. } => "string_too_long",
        DecodeError::TooManyAttributes { .. } => "too_many_attributes",
        DecodeError::TooManyElements { .. } => "too_many_elements",
        DecodeError::TooManyRecords { .. } => "too_many_records",
        DecodeError::Empty => "empty",
        DecodeError::NoMapping(_) | DecodeError::NoRecords(_) => "no_mapping",
    }
}

/// Field-by-field differences between two JSON values.
pub fn diff(prefix: &str, path: &str, expected: &Value, got: &Value, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (k, ev) in e {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match g.get(k) {
                    Some(gv) => diff(prefix, &p, ev, gv, out),
                    None => out.push(format!("{prefix}{p}: expected {ev}, missing")),
                }
            }
            for (k, gv) in g {
                if !e.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push(format!("{prefix}{p}: not expected, got {gv}"));
                }
            }
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            for (i, (ev, gv)) in e.iter().zip(g).enumerate() {
                diff(prefix, &format!("{path}[{i}]"), ev, gv, out);
            }
        }
        (e, g) if e != g => out.push(format!("{prefix}{path}: expected {e}, got {g}")),
        _ => {}
    }
}
