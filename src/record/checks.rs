//! Canonical validation: the checks every record passes whatever dialect it came in
//! (DESIGN.md section 3, issue "canonical validation").
//!
//! Required fields per kind, enumerations, integer and boolean fields, RFC 3339 times
//! and plain dates, and the named checks on identifiers: resident ID numbers (GB 11643:
//! a real birth date and the check character; a lower-case `x` is accepted and written
//! upper-case), unified social credit codes (GB 32100), organisation codes (GB 11714),
//! region codes (GB/T 2260 shape) and mobiles. Each problem names the record, the
//! canonical field and a stable rule code; messages never repeat personal data.

use super::value::{Obj, Val};

use super::{FieldError, Kind};

/// A named check an integrator can also ask for in a mapping (`check = "id_no"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    IdNo,
    Uscc,
    OrgCode,
    Region,
    Mobile,
}

impl Check {
    pub const NAMES: &'static str = "id_no, uscc, org_code, region, mobile";

    pub fn parse(s: &str) -> Option<Check> {
        Some(match s {
            "id_no" => Check::IdNo,
            "uscc" => Check::Uscc,
            "org_code" => Check::OrgCode,
            "region" => Check::Region,
            "mobile" => Check::Mobile,
            _ => return None,
        })
    }

    /// The stable rule code reported when the check fails.
    pub fn code(self) -> &'static str {
        match self {
            Check::IdNo => "id_no",
            Check::Uscc => "uscc",
            Check::OrgCode => "org_code",
            Check::Region => "region_code",
            Check::Mobile => "mobile",
        }
    }

    /// Run the check; `Err` carries a message without the value itself.
    pub fn run(self, s: &str) -> Result<(), &'static str> {
        match self {
            Check::IdNo => id_no(s),
            Check::Uscc => uscc(s),
            Check::OrgCode => org_code(s),
            Check::Region => region(s),
            Check::Mobile => mobile(s),
        }
    }
}

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: &[u8; 11] = b"10X98765432";

/// GB 11643 resident ID number: 17 digits, a real birth date (1900 to today), and the
/// check character (`X` upper-case; callers normalise a lower-case `x` first).
pub fn id_no(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return Err("a resident ID number (居民身份证号码) has 17 digits and a check character");
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i16>().unwrap_or(0);
    let (year, month, day) = (num(6..10), num(10..12), num(12..14));
    // Today where the day starts first (UTC+14): no birth date is refused early.
    let today = jiff::tz::Offset::constant(14)
        .to_datetime(jiff::Timestamp::now())
        .date();
    match jiff::civil::Date::new(year, month as i8, day as i8) {
        Ok(d) if year >= 1900 && d <= today => {}
        _ => return Err("the birth date inside the ID number is not a real date"),
    }
    let sum: u32 = b[..17]
        .iter()
        .zip(ID_WEIGHTS)
        .map(|(c, w)| u32::from(c - b'0') * w)
        .sum();
    if ID_CHECK[(sum % 11) as usize] != b[17] {
        return Err("the check character of the ID number is wrong (GB 11643)");
    }
    Ok(())
}

const USCC_CHARS: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [usize; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// GB 32100 unified social credit code: 18 characters from the code set (no I, O, Z,
/// S, V) and the check character.
pub fn uscc(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let pos = |c: u8| USCC_CHARS.iter().position(|x| *x == c);
    if b.len() != 18 || b.iter().any(|c| pos(*c).is_none()) {
        return Err(
            "a unified social credit code (统一社会信用代码) has 18 characters of 0-9 and A-Y without I, O, S, V, Z",
        );
    }
    let sum: usize = b[..17]
        .iter()
        .zip(USCC_WEIGHTS)
        .map(|(c, w)| pos(*c).unwrap_or(0) * w)
        .sum();
    let check = (31 - sum % 31) % 31;
    if USCC_CHARS[check] != b[17] {
        return Err("the check character of the unified social credit code is wrong (GB 32100)");
    }
    Ok(())
}

/// GB 11714 organisation code: 8 characters and a check character, with or without
/// the hyphen (`12345678-9`).
pub fn org_code(s: &str) -> Result<(), &'static str> {
    const WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    let value = |c: u8| match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        b'A'..=b'Z' => Some(u32::from(c - b'A') + 10),
        _ => None,
    };
    if compact.len() != 9 || compact[..8].iter().any(|c| value(*c).is_none()) {
        return Err("an organisation code (组织机构代码) has 8 characters and a check character");
    }
    let sum: u32 = compact[..8]
        .iter()
        .zip(WEIGHTS)
        .map(|(c, w)| value(*c).unwrap_or(0) * w)
        .sum();
    let expected = match 11 - sum % 11 {
        10 => b'X',
        11 => b'0',
        n => b'0' + n as u8,
    };
    if compact[8] != expected {
        return Err("the check character of the organisation code is wrong (GB 11714)");
    }
    Ok(())
}

/// Province-level prefixes of GB/T 2260.
const PROVINCES: [u8; 34] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
];

/// GB/T 2260 shape: 6 or 12 digits starting with a province code.
pub fn region(s: &str) -> Result<(), &'static str> {
    if !super::is_region_code(s) {
        return Err("a region code (行政区划代码) has 6 or 12 digits");
    }
    let province = s[..2].parse::<u8>().unwrap_or(0);
    if !PROVINCES.contains(&province) {
        return Err("a region code starts with a province code (11 to 82, GB/T 2260)");
    }
    Ok(())
}

/// Mainland mobile number: 11 digits, `1` then 3–9.
pub fn mobile(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() == 11 && b.iter().all(u8::is_ascii_digit) && b[0] == b'1' && b[1] >= b'3' {
        Ok(())
    } else {
        Err("a mobile number has 11 digits starting with 13 to 19")
    }
}

/// RFC 3339 date-time with an offset (`2026-03-24T07:56:00+08:00`).
pub fn rfc3339(s: &str) -> Result<(), &'static str> {
    let ok = s.len() >= 20
        && s.as_bytes()
            .get(10)
            .is_some_and(|c| matches!(c, b'T' | b't'))
        && s.parse::<jiff::Timestamp>().is_ok();
    if ok {
        Ok(())
    } else {
        Err("times are RFC 3339 with an offset, e.g. 2026-03-24T07:56:00+08:00")
    }
}

/// A plain date `YYYY-MM-DD` that exists.
pub fn date(s: &str) -> Result<(), &'static str> {
    if s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok() {
        Ok(())
    } else {
        Err("dates are YYYY-MM-DD")
    }
}

/// What a canonical field must look like.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
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
pub(crate) fn shapes(kind: Kind) -> &'static [(&'static str, Shape)] {
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
        Kind::Material | Kind::Process | Kind::Result => &[],
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
const COMMON_FIELDS: &[&str] = &["case_no", "region", "version", "op", "record_id"];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_numbers() {
        assert_eq!(id_no("350205195912280259"), Ok(()));
        assert_eq!(id_no("33012219580905367X"), Ok(()));
        assert!(id_no("350205195912280258").is_err(), "check digit");
        assert!(id_no("350205195902300259").is_err(), "30 February");
        assert!(id_no("35020519591228025").is_err(), "short");
    }

    #[test]
    fn credit_and_org_codes() {
        assert_eq!(uscc("913301228R1PEH3X3L"), Ok(()));
        assert_eq!(uscc("91330122C2H9TLKW9G"), Ok(()));
        assert!(uscc("913301228R1PEH3X3M").is_err());
        assert!(
            uscc("91330122OR1PEH3X3L").is_err(),
            "O is not in the code set"
        );
        // the organisation code inside a credit code (positions 9 to 17)
        assert_eq!(org_code("8R1PEH3X3"), Ok(()));
        assert_eq!(org_code("8R1PEH3X-3"), Ok(()));
        assert!(org_code("8R1PEH3X4").is_err());
    }

    #[test]
    fn regions_mobiles_times() {
        assert_eq!(region("330122"), Ok(()));
        assert_eq!(region("370982000000"), Ok(()));
        assert!(region("990122").is_err());
        assert!(region("33012").is_err());
        assert_eq!(mobile("13906711234"), Ok(()));
        assert!(mobile("12906711234").is_err());
        assert_eq!(rfc3339("2026-03-24T07:56:00+08:00"), Ok(()));
        assert!(rfc3339("2026-03-24 07:56:00").is_err());
        assert!(rfc3339("2026-03-24T07:56:00").is_err(), "offset required");
        assert_eq!(date("2031-04-06"), Ok(()));
        assert!(date("2031-02-30").is_err());
    }
}
