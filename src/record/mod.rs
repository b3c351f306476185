//! The canonical record (DESIGN.md section 3): one JSON object per record, snake_case
//! fields, whatever dialect it came from.
//!
//! This module owns the record's kind, the checks that hold for every record
//! whatever its source, the keys derived from it (case ordering, record identity for
//! versions) and the masking of personal data wherever a record is displayed.

use std::fmt;

pub mod checks;
mod json;
pub mod lenient;
pub mod schema;
pub mod value;

pub use value::{Obj, Val};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Record kinds, in the order they are delivered within a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Application,
    Material,
    Process,
    Result,
    /// 监察预警: made by the gateway's supervision, never sent by a node.
    Alert,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Application,
        Kind::Material,
        Kind::Process,
        Kind::Result,
        Kind::Alert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Application => "application",
            Kind::Material => "material",
            Kind::Process => "process",
            Kind::Result => "result",
            Kind::Alert => "alert",
        }
    }

    /// Position within a case's delivery order.
    pub fn rank(self) -> i64 {
        match self {
            Kind::Application => 0,
            Kind::Material => 1,
            Kind::Process => 2,
            Kind::Result => 3,
            Kind::Alert => 4,
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with one record: which record, which field, which rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Index of the record in the body (0-based).
    pub record: usize,
    /// Canonical field, dotted (`applicant.id_no`).
    pub field: String,
    /// Path in the source message, when a mapping knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    /// Stable rule code (`required`, `enum`, `region_code`, …).
    pub rule: String,
    /// What a person can act on. Never contains personal data.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}: {}", self.record, self.field)?;
        if let Some(p) = &self.source_path {
            write!(f, " ({p})")?;
        }
        write!(f, ": {}: {}", self.rule, self.message)
    }
}

/// A canonical record that passed the common checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: Kind,
    pub case_no: String,
    pub fields: Obj,
}

impl Record {
    /// Check a canonical JSON object and wrap it. `index` is its place in the body;
    /// `expected` is the kind the endpoint was called for, if any.
    pub fn from_value(
        index: usize,
        value: Value,
        expected: Option<Kind>,
    ) -> Result<Record, Vec<FieldError>> {
        match value {
            Value::Object(fields) => Record::from_obj(index, Obj::from(fields), expected),
            _ => Err(vec![FieldError {
                record: index,
                field: String::new(),
                source_path: None,
                rule: "type".into(),
                message: "a record must be a JSON object".into(),
            }]),
        }
    }

    /// [`Record::from_value`] for a record already in the engine's own values.
    pub fn from_obj(
        index: usize,
        fields: Obj,
        expected: Option<Kind>,
    ) -> Result<Record, Vec<FieldError>> {
        Record::from_obj_known(index, fields, expected, schema::Known::default())
    }

    /// [`Record::from_obj`] for a record whose maker guarantees the shape checks in
    /// `known` (a mapping's, worked out from its rules).
    pub fn from_obj_known(
        index: usize,
        mut fields: Obj,
        expected: Option<Kind>,
        known: schema::Known,
    ) -> Result<Record, Vec<FieldError>> {
        let mut errors = Vec::new();
        let e = |field: &str, rule: &str, message: String| FieldError {
            record: index,
            field: field.to_string(),
            source_path: None,
            rule: rule.to_string(),
            message,
        };
        let kind = match fields.get("kind") {
            None => expected.or_else(|| {
                errors.push(e(
                    "kind",
                    "required",
                    "kind is required (application, material, process or result)".into(),
                ));
                None
            }),
            Some(Val::Str(s)) => match Kind::parse(s) {
                Some(k) => {
                    if let Some(x) = expected.filter(|x| *x != k) {
                        errors.push(e(
                            "kind",
                            "kind_mismatch",
                            format!("record is a {k} but was posted to /v1/records/{x}"),
                        ));
                    }
                    Some(k)
                }
                None => {
                    errors.push(e(
                        "kind",
                        "enum",
                        "kind must be application, material, process or result".into(),
                    ));
                    None
                }
            },
            Some(_) => {
                errors.push(e("kind", "type", "kind must be a string".into()));
                None
            }
        };
        let case_no = match fields.get("case_no") {
            Some(Val::Str(s)) if !s.trim().is_empty() => Some(s.to_string()),
            Some(Val::Str(_)) | None => {
                errors.push(e(
                    "case_no",
                    "required",
                    "case_no (办件编号) is required".into(),
                ));
                None
            }
            Some(_) => {
                errors.push(e("case_no", "type", "case_no must be a string".into()));
                None
            }
        };
        if let Some(v) = fields.get("region")
            && let Err(m) = v
                .as_str()
                .ok_or("must be a string")
                .and_then(checks::region)
        {
            errors.push(e("region", "region_code", m.to_string()));
        }
        if let Some(v) = fields.get("version")
            && v.as_u64().is_none_or(|n| n > i64::MAX as u64)
        {
            errors.push(e(
                "version",
                "type",
                "version must be a non-negative integer".into(),
            ));
        }
        if let Some(v) = fields.get("op")
            && !matches!(v.as_str(), Some("upsert" | "delete"))
        {
            errors.push(e("op", "enum", "op must be upsert or delete".into()));
        }
        if kind == Some(Kind::Process)
            && let Some(v) = fields.get("step_no")
            && v.as_u64().is_none()
        {
            errors.push(e(
                "step_no",
                "type",
                "step_no must be a non-negative integer".into(),
            ));
        }
        for (key, value) in fields.iter() {
            if matches!(value, Val::Str(s) if s.is_empty()) {
                errors.push(e(
                    key,
                    "empty",
                    "empty values are left out, never sent as empty strings".into(),
                ));
            }
            if let Some((path, at, c)) = forbidden_in(key, value)
                .or_else(|| checks::forbidden_char(key).map(|(at, c)| (key.to_string(), at, c)))
            {
                errors.push(e(
                    &path,
                    "control_char",
                    format!(
                        "holds U+{:04X} at character {at}: control characters and bidirectional overrides are refused (line breaks and tabs are kept)",
                        c as u32
                    ),
                ));
            }
        }
        if let Some(kind) = kind {
            schema::validate(kind, &mut fields, index, None, &mut errors, known);
        }
        match (kind, case_no, errors.is_empty()) {
            (Some(kind), Some(case_no), true) => {
                if fields.get("kind").and_then(Val::as_str) != Some(kind.as_str()) {
                    fields.insert("kind", Val::str(kind.as_str()));
                }
                Ok(Record {
                    kind,
                    case_no,
                    fields,
                })
            }
            _ => Err(errors),
        }
    }

    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Val::as_str)
    }

    /// A value by dotted path (`applicant.type`), as text for comparisons.
    pub fn path_text(&self, path: &str) -> Option<String> {
        let mut parts = path.split('.');
        let mut v = self.fields.get(parts.next()?)?;
        for p in parts {
            v = v.get(p)?;
        }
        match v {
            Val::Str(s) => Some(s.to_string()),
            Val::Num(n) => Some(n.to_string()),
            Val::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn version(&self) -> Option<i64> {
        self.fields
            .get("version")
            .and_then(Val::as_u64)
            .and_then(|v| i64::try_from(v).ok())
    }

    /// Process step number, used to order steps within a case.
    pub fn step_no(&self) -> i64 {
        if self.kind == Kind::Process {
            self.fields
                .get("step_no")
                .and_then(Val::as_u64)
                .and_then(|v| i64::try_from(v).ok())
                .unwrap_or(0)
        } else {
            0
        }
    }

    /// Identity of "the same record" for versions and duplicates: the source record id
    /// when there is one, otherwise the natural key of its kind.
    pub fn identity(&self) -> String {
        identity_of(
            self.kind,
            &self.case_no,
            self.str_field("record_id"),
            self.str_field("material_id"),
            self.step_no(),
        )
    }

    /// A short name for the record in timelines: `application`, `material M-1`,
    /// `process step 2`, `result`. Never personal data.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Process => format!("process step {}", self.step_no()),
            Kind::Material => match self.str_field("name").or(self.str_field("material_id")) {
                Some(n) => format!("material {n}"),
                None => "material".into(),
            },
            k => k.to_string(),
        }
    }

    /// Set `source` to the sending node (the gateway's word, never the sender's).
    pub fn set_source(&mut self, node: &str) {
        self.fields.insert("source", Val::str(node));
    }

    pub fn to_json(&self) -> String {
        self.fields.to_json()
    }
}

/// The first forbidden character ([`checks::forbidden_char`]) in a value or the keys
/// and values inside it: the field's dotted path, the character's place, the char.
fn forbidden_in(path: &str, v: &Val) -> Option<(String, usize, char)> {
    // The path is only built for a value that holds one (this runs for every value).
    fn any(v: &Val) -> bool {
        match v {
            Val::Str(s) => checks::forbidden_char(s).is_some(),
            Val::Arr(items) => items.iter().any(any),
            Val::Obj(m) => m
                .iter()
                .any(|(k, item)| checks::forbidden_char(k).is_some() || any(item)),
            _ => false,
        }
    }
    if !any(v) {
        return None;
    }
    match v {
        Val::Str(s) => checks::forbidden_char(s).map(|(at, c)| (path.to_string(), at, c)),
        Val::Arr(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| forbidden_in(&format!("{path}[{i}]"), item)),
        Val::Obj(m) => m.iter().find_map(|(k, item)| {
            let inner = format!("{path}.{k}");
            match checks::forbidden_char(k) {
                Some((at, c)) => Some((inner, at, c)),
                None => forbidden_in(&inner, item),
            }
        }),
        _ => None,
    }
}

/// GB/T 2260 shape: 6 or 12 ASCII digits.
pub fn is_region_code(s: &str) -> bool {
    (s.len() == 6 || s.len() == 12) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Mask personal data in a canonical record for display: ID numbers keep the first 6
/// and last 4 characters, mobiles the first 3 and last 4, case passwords nothing.
pub fn mask_personal(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v.as_str()) {
                    ("id_no", Some(s)) => *v = Value::String(mask_keep(s, 6, 4)),
                    ("mobile", Some(s)) => *v = Value::String(mask_keep(s, 3, 4)),
                    ("case_pwd", Some(_)) => *v = Value::String("******".into()),
                    _ => mask_personal(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_personal),
        _ => {}
    }
}

/// Mask personal data inside free text (a receiver's answer, an error from outside,
/// a value an error message quotes). Treated as ID numbers: 17 digits and a check
/// character, and 15 digits (the first-generation card), with a plausible birth date
/// where GB 11643 puts it — whether or not the check character is right, since a
/// mistyped ID number is still somebody's. As mobiles: 11 digits starting with 1, and
/// 13 starting with 861 (+86). Case numbers of the same lengths carry no birth date
/// (`350205260401000123`: year 2604) and stay readable. Full-width digits count, and
/// `0086` mobiles too.
pub fn mask_text(s: &str) -> String {
    // Full-width digits (１３９…) count as digits: a value quoted before the
    // half-width step still holds somebody's number.
    fn digit(c: char) -> Option<char> {
        match c {
            '0'..='9' => Some(c),
            '０'..='９' => char::from_u32(c as u32 - 0xFF10 + '0' as u32),
            _ => None,
        }
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if digit(chars[i]).is_some() {
            let mut j = i;
            let mut plain = String::new();
            while j < chars.len() {
                if let Some(d) = digit(chars[j]) {
                    plain.push(d);
                } else if j - i == 17 && matches!(chars[j], 'X' | 'x' | 'Ｘ' | 'ｘ') {
                    plain.push('X');
                } else {
                    break;
                }
                j += 1;
            }
            let run: String = chars[i..j].iter().collect();
            let masked = match plain.len() {
                18 if birth_date(&plain[6..14]) => mask_keep(&run, 6, 4),
                15 if plain.starts_with("00861") => mask_keep(&run, 7, 4),
                15 if birth_date(&format!("19{}", &plain[6..12])) => mask_keep(&run, 6, 3),
                11 if plain.starts_with('1') => mask_keep(&run, 3, 4),
                13 if plain.starts_with("861") => mask_keep(&run, 5, 4),
                _ => run,
            };
            out.push_str(&masked);
            i = j;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `YYYYMMDD` digits that could be a birth date (years 1900–2099).
fn birth_date(s: &str) -> bool {
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|t| t.parse::<u32>().ok());
    matches!(
        (num(0..4), num(4..6), num(6..8)),
        (Some(1900..=2099), Some(1..=12), Some(1..=31))
    ) && s.len() == 8
}

/// Keep `head` leading and `tail` trailing characters, star the rest.
pub fn mask_keep(s: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= head + tail {
        return "*".repeat(chars.len());
    }
    let mut out: String = chars[..head].iter().collect();
    out.extend(std::iter::repeat_n('*', chars.len() - head - tail));
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// A record's identity for versions and reconciliation: its record id when it has
/// one, else what makes it unique within its case.
pub fn identity_of(
    kind: Kind,
    case_no: &str,
    record_id: Option<&str>,
    material_id: Option<&str>,
    step_no: i64,
) -> String {
    if let Some(id) = record_id {
        return format!("id:{id}");
    }
    match kind {
        Kind::Application | Kind::Result => format!("case:{case_no}"),
        Kind::Material => format!("case:{case_no}:material:{}", material_id.unwrap_or("")),
        Kind::Process => format!("case:{case_no}:step:{step_no}"),
        Kind::Alert => format!("case:{case_no}:alert"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_record_passes_and_names_kind() {
        let r = Record::from_value(
            0,
            json!({"case_no": "1", "item_code": "X", "region": "350205"}),
            Some(Kind::Application),
        )
        .expect("valid");
        assert_eq!(r.kind, Kind::Application);
        assert_eq!(r.str_field("kind"), Some("application"));
    }

    #[test]
    fn errors_name_record_field_and_rule() {
        let errs = Record::from_value(
            3,
            json!({"kind": "result", "region": "35", "version": -1, "reason": ""}),
            None,
        )
        .unwrap_err();
        let rules: Vec<_> = errs
            .iter()
            .map(|e| (e.record, e.field.as_str(), e.rule.as_str()))
            .collect();
        assert!(rules.contains(&(3, "case_no", "required")));
        assert!(rules.contains(&(3, "region", "region_code")));
        assert!(rules.contains(&(3, "version", "type")));
        assert!(rules.contains(&(3, "reason", "empty")));
    }

    #[test]
    fn kind_mismatch_with_endpoint_is_an_error() {
        let errs = Record::from_value(
            0,
            json!({"kind": "result", "case_no": "1"}),
            Some(Kind::Process),
        )
        .unwrap_err();
        assert_eq!(errs[0].rule, "kind_mismatch");
    }

    #[test]
    fn masking_keeps_head_and_tail() {
        let mut v = json!({"applicant": {"id_no": "350205195912280259"}, "contact": {"mobile": "18659201234"}, "case_pwd": "558120"});
        mask_personal(&mut v);
        assert_eq!(v["applicant"]["id_no"], "350205********0259");
        assert_eq!(v["contact"]["mobile"], "186****1234");
        assert_eq!(v["case_pwd"], "******");
    }

    #[test]
    fn free_text_masks_id_numbers_and_mobiles() {
        assert_eq!(
            mask_text("证件号 33012219580905367x 手机 13758220019 金额 12345"),
            "证件号 330122********367x 手机 137****0019 金额 12345"
        );
        // an 18-digit case number is not an ID number
        assert_eq!(
            mask_text("办件 350205260401000123"),
            "办件 350205260401000123"
        );
        // a wrong check character, a first-generation number, +86: still masked
        assert_eq!(
            mask_text(
                "`350205195912280258` `35020519591228025X` `350205591228025` `+8613906711234`"
            ),
            "`350205********0258` `350205********025X` `350205******025` `+86139****1234`"
        );
        // full-width digits, 0086
        assert_eq!(
            mask_text("`１３９０６７１１２３４` `008613906711234`"),
            "`１３９****１２３４` `0086139****1234`"
        );
    }

    #[test]
    fn identity_prefers_record_id() {
        let r = Record::from_value(
            0,
            json!({"kind": "process", "case_no": "9", "step_no": 2}),
            None,
        )
        .unwrap();
        assert_eq!(r.identity(), "case:9:step:2");
        let r = Record::from_value(
            0,
            json!({"kind": "result", "case_no": "9", "record_id": "R1"}),
            None,
        )
        .unwrap();
        assert_eq!(r.identity(), "id:R1");
    }
}
