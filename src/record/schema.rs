//! The canonical record's schema and its validation (DESIGN.md section 3): the fields
//! of each kind, which are required, their enumerations and types, and the named
//! checks on identifiers ([`super::checks`]). A lower-case `x` in an ID number is
//! accepted and written upper-case. Each problem names the record, the canonical
//! field and a stable rule code; messages never repeat personal data.

use super::checks::{Check, date, id_no, rfc3339, uscc};
use super::value::{Obj, Val};
use super::{FieldError, Kind};

/// What a canonical field must look like.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Enum(&'static [&'static str]),
    Integer,
    Number,
    Boolean,
    Time,
    Date,
    Named(Check),
}

const UNITS: &[&str] = &["workday", "day", "hour", "minute", "month"];

/// Checks shared by application-embedded materials and material records.
const MATERIAL: &[(&str, Shape)] = &[
    (
        "submit_type",
        Shape::Enum(&["paper", "upload", "e_license", "exempt"]),
    ),
    (
        "necessity",
        Shape::Enum(&["required", "optional", "deferred"]),
    ),
    ("form", Shape::Enum(&["original", "copy", "electronic"])),
    ("sort", Shape::Integer),
    ("copies", Shape::Integer),
    ("received_at", Shape::Time),
    ("file.size", Shape::Integer),
];

/// The shape checks of a kind, in the order [`Known`] numbers them (embedded
/// materials: those of [`Kind::Material`]).
pub fn shapes(kind: Kind) -> &'static [(&'static str, Shape)] {
    match kind {
        Kind::Application => &[
            (
                "item_type",
                Shape::Enum(&[
                    "licensing",
                    "penalty",
                    "enforcement",
                    "levy",
                    "benefit",
                    "inspection",
                    "confirmation",
                    "reward",
                    "adjudication",
                    "other",
                    "public_service",
                ]),
            ),
            (
                "case_type",
                Shape::Enum(&["immediate", "promised", "joint", "reported"]),
            ),
            ("applicant.type", Shape::Enum(&["person", "legal", "other"])),
            ("channel", Shape::Enum(&["window", "online", "other"])),
            ("promise.unit", Shape::Enum(UNITS)),
            ("promise.value", Shape::Integer),
            ("submitted_at", Shape::Time),
            ("accepted_at", Shape::Time),
            ("accept_dept.code", Shape::Named(Check::Uscc)),
            ("contact.id_no", Shape::Named(Check::IdNo)),
            ("contact.mobile", Shape::Named(Check::Mobile)),
        ],
        Kind::Material => MATERIAL,
        Kind::Process => &[
            (
                "node_type",
                Shape::Enum(&["start", "middle", "end", "single"]),
            ),
            ("state", Shape::Enum(&["pending", "done"])),
            (
                "result",
                Shape::Enum(&[
                    "agree",
                    "disagree",
                    "accepted",
                    "not_accepted",
                    "correction",
                    "suspended",
                    "returned",
                ]),
            ),
            ("time_limit.unit", Shape::Enum(UNITS)),
            ("time_limit.value", Shape::Integer),
            ("started_at", Shape::Time),
            ("ended_at", Shape::Time),
            ("dept.code", Shape::Named(Check::Uscc)),
        ],
        Kind::Result => &[
            (
                "outcome",
                Shape::Enum(&[
                    "issued",
                    "returned",
                    "voided",
                    "deleted",
                    "forwarded",
                    "correction_timeout",
                    "finished",
                ]),
            ),
            ("decision", Shape::Enum(&["approve", "deny"])),
            ("finished_at", Shape::Time),
            ("certificate.valid_from", Shape::Date),
            ("certificate.valid_to", Shape::Date),
            ("fee.charged", Shape::Boolean),
            ("fee.amount", Shape::Number),
            ("dept.code", Shape::Named(Check::Uscc)),
        ],
        Kind::Alert => &[
            (
                "state",
                Shape::Enum(&["warning", "overdue", "finished_late"]),
            ),
            ("accepted_at", Shape::Time),
            ("deadline", Shape::Time),
            ("raised_at", Shape::Time),
            ("promise.unit", Shape::Enum(UNITS)),
            ("promise.value", Shape::Integer),
            ("used.value", Shape::Number),
        ],
    }
}

/// Fields each kind must carry besides `kind` and `case_no` (DESIGN.md section 3
/// marks only the application's 事项编码 as required).
fn required(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::Application => &[(
            "item_code",
            "item_code (事项编码) is required for an application",
        )],
        Kind::Material | Kind::Process | Kind::Result | Kind::Alert => &[],
    }
}

// Canonical fields nest one level at most (`applicant.id_no`).
fn get<'a>(fields: &'a Obj, path: &str) -> Option<&'a Val> {
    match split_dot(path) {
        None => fields.get(path),
        Some((outer, inner)) => match fields.get(outer)? {
            Val::Obj(m) => m.get(inner),
            _ => None,
        },
    }
}

/// `applicant.id_no` → (`applicant`, `id_no`), without a `char` searcher (this runs for
/// every checked field of every record).
fn split_dot(path: &str) -> Option<(&str, &str)> {
    let at = path.bytes().position(|b| b == b'.')?;
    Some((&path[..at], &path[at + 1..]))
}

fn get_mut<'a>(fields: &'a mut Obj, path: &str) -> Option<&'a mut Val> {
    match split_dot(path) {
        None => fields.get_mut(path),
        Some((outer, inner)) => match fields.get_mut(outer)? {
            Val::Obj(m) => m.get_mut(inner),
            _ => None,
        },
    }
}

/// Normalise an ID number in place (lower-case `x` to `X`) and check it.
fn id_field(fields: &mut Obj, path: &str) -> Option<Result<(), &'static str>> {
    let v = get_mut(fields, path)?;
    let s = v.as_str()?;
    if s.ends_with('x') {
        *v = Val::str(&s.to_ascii_uppercase());
    }
    v.as_str().map(id_no)
}

/// Shape checks a record's maker guarantees, so they are not looked up: bit `i` set
/// when the `i`-th of [`shapes`] of the record's kind (or, for `materials`, of an
/// embedded material) holds or its field is never written. A mapping works these out
/// from its rules at load; any other record is checked in full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    pub fields: u64,
    pub materials: u64,
}

impl Shape {
    /// Whether `v` has this shape.
    pub(crate) fn problem(&self, field: &str, v: &Val) -> Option<(&'static str, String)> {
        match self {
            Shape::Enum(allowed) => match v.as_str() {
                Some(s) if allowed.contains(&s) => None,
                _ => Some((
                    "enum",
                    format!("{field} must be one of {}", allowed.join(", ")),
                )),
            },
            Shape::Integer if v.as_i64().is_none() => {
                Some(("type", format!("{field} must be an integer")))
            }
            Shape::Number if !v.is_number() => Some(("type", format!("{field} must be a number"))),
            Shape::Boolean if !v.is_boolean() => {
                Some(("type", format!("{field} must be true or false")))
            }
            Shape::Time => v
                .as_str()
                .ok_or("a time must be a string")
                .and_then(rfc3339)
                .err()
                .map(|m| ("time", m.to_string())),
            Shape::Date => v
                .as_str()
                .ok_or("a date must be a string")
                .and_then(date)
                .err()
                .map(|m| ("date", m.to_string())),
            Shape::Named(check) => v
                .as_str()
                .ok_or("must be a string")
                .and_then(|s| check.run(s))
                .err()
                .map(|m| (check.code(), m.to_string())),
            _ => None,
        }
    }
}

/// Validate a canonical record of a known kind. `material` is the number of an
/// embedded material (`materials[0].` in error fields); `known` the shape checks
/// its maker guarantees.
pub fn validate(
    kind: Kind,
    fields: &mut Obj,
    index: usize,
    material: Option<usize>,
    errors: &mut Vec<FieldError>,
    known: Known,
) {
    let prefix = |field: &str| match material {
        Some(i) => format!("materials[{i}].{field}"),
        None => field.to_string(),
    };
    let mut e = |field: &str, rule: &str, message: String| {
        errors.push(FieldError {
            record: index,
            field: prefix(field),
            source_path: None,
            rule: rule.to_string(),
            message,
        })
    };
    if material.is_none() {
        for (field, message) in required(kind) {
            if get(fields, field).is_none_or(Val::is_null) {
                e(field, "required", (*message).to_string());
            }
        }
    }
    // Resident ID numbers: the contact always, the applicant when the document type
    // says 居民身份证 (111); an applicant with 001 carries a credit code.
    // 111 and 001 are the only document types with a check of their own.
    // A document type sent as a number (111) is the same code as the text "111".
    if kind == Kind::Application {
        let id_type = match get(fields, "applicant.id_type") {
            Some(Val::Str(s)) if s == "111" => Some("111"),
            Some(Val::Str(s)) if s == "001" => Some("001"),
            Some(Val::Num(n)) if n.as_u64() == Some(111) => Some("111"),
            _ => None,
        };
        match id_type {
            Some("111") => {
                if let Some(Err(m)) = id_field(fields, "applicant.id_no") {
                    e("applicant.id_no", "id_no", m.to_string());
                }
            }
            Some("001") => {
                if let Some(Err(m)) = get(fields, "applicant.id_no")
                    .and_then(Val::as_str)
                    .map(uscc)
                {
                    e("applicant.id_no", "uscc", m.to_string());
                }
            }
            _ => {}
        }
        if let Some(Err(m)) = id_field(fields, "contact.id_no") {
            e("contact.id_no", "id_no", m.to_string());
        }
    }
    for (i, (field, shape)) in shapes(kind).iter().enumerate() {
        if (i < 64 && known.fields & (1 << i) != 0) || *field == "contact.id_no" {
            // Guaranteed, or (contact.id_no) checked above after normalising.
            continue;
        }
        let Some(v) = get(fields, field) else {
            continue;
        };
        if let Some((rule, message)) = shape.problem(field, v) {
            e(field, rule, message);
        }
    }
    // A time limit counts forwards: a negative one would give a deadline before the
    // case began.
    for field in ["promise.value", "time_limit.value"] {
        if let Some(v) = get(fields, field).and_then(Val::as_i64)
            && v < 0
        {
            e(field, "range", format!("{field} must be 0 or more"));
        }
    }
    if kind == Kind::Application {
        match fields.get_mut("materials") {
            Some(Val::Arr(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    match item {
                        Val::Obj(m) => validate(
                            Kind::Material,
                            m,
                            index,
                            Some(i),
                            errors,
                            Known {
                                fields: known.materials,
                                materials: 0,
                            },
                        ),
                        _ => errors.push(FieldError {
                            record: index,
                            field: format!("materials[{i}]"),
                            source_path: None,
                            rule: "type".into(),
                            message: "each material is an object".into(),
                        }),
                    }
                }
            }
            Some(_) => errors.push(FieldError {
                record: index,
                field: "materials".to_string(),
                source_path: None,
                rule: "type".into(),
                message: "materials is a list of material objects".into(),
            }),
            None => {}
        }
    }
}

/// Fields every record may carry (besides `kind` and `source`, which the mapping and
/// the gateway set).
pub const COMMON_FIELDS: &[&str] = &["case_no", "region", "version", "op", "record_id"];

/// Material fields, also those of materials embedded in an application.
pub const MATERIAL_FIELDS: &[&str] = &[
    "material_id",
    "name",
    "catalog_id",
    "sort",
    "submit_type",
    "necessity",
    "form",
    "copies",
    "received_at",
    "file.name",
    "file.url",
    "file.size",
    "file.mime",
    "file.sha256",
    "file.sm3",
    "license.code",
    "license.type",
    "license.no",
    "license.holder",
    "license.issuer_code",
];

/// The canonical fields of a kind (DESIGN.md section 3), dotted. `materials` is the
/// application's list of embedded materials; anything under `ext.` is free.
pub fn fields_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Application => &[
            "case_pwd",
            "item_code",
            "item_name",
            "catalog_code",
            "item_type",
            "case_type",
            "project_name",
            "applicant.type",
            "applicant.name",
            "applicant.id_type",
            "applicant.id_no",
            "applicant.legal_rep",
            "contact.name",
            "contact.id_no",
            "contact.mobile",
            "channel",
            "submitted_at",
            "accepted_at",
            "accept_dept.code",
            "accept_dept.name",
            "promise.value",
            "promise.unit",
            "materials",
        ],
        Kind::Material => MATERIAL_FIELDS,
        Kind::Process => &[
            "step_no",
            "node_code",
            "node_name",
            "node_type",
            "state",
            "result",
            "handler.id",
            "handler.name",
            "dept.code",
            "dept.name",
            "started_at",
            "ended_at",
            "opinion",
            "time_limit.value",
            "time_limit.unit",
        ],
        Kind::Result => &[
            "finished_at",
            "outcome",
            "decision",
            "description",
            "reason",
            "handler.name",
            "dept.code",
            "dept.name",
            "result_no",
            "approval_doc_no",
            "certificate.name",
            "certificate.no",
            "certificate.valid_from",
            "certificate.valid_to",
            "certificate.license_code",
            "fee.charged",
            "fee.amount",
            "delivery_mode",
        ],
        Kind::Alert => &[
            "state",
            "item_code",
            "item_name",
            "dept.code",
            "dept.name",
            "accepted_at",
            "deadline",
            "promise.value",
            "promise.unit",
            "used.value",
            "used.unit",
            "reason",
            "raised_at",
        ],
    }
}

/// Whether `field` (dotted) is a canonical field of `kind`, or one of `within` when
/// given (the fields of a list's items).
pub fn is_known_field(kind: Kind, within: Option<&[&str]>, field: &str) -> bool {
    if field == "ext" || field.starts_with("ext.") {
        return true;
    }
    match within {
        Some(list) => list.contains(&field),
        None => COMMON_FIELDS.contains(&field) || fields_of(kind).contains(&field),
    }
}

/// The known field closest to a misspelt one, for "did you mean".
pub fn closest_field(kind: Kind, within: Option<&[&str]>, field: &str) -> Option<&'static str> {
    let candidates: Vec<&'static str> = match within {
        Some(_) => MATERIAL_FIELDS.to_vec(),
        None => COMMON_FIELDS
            .iter()
            .chain(fields_of(kind))
            .copied()
            .collect(),
    };
    candidates
        .into_iter()
        .map(|c| (distance(c, field), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
