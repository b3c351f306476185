//! The named checks on canonical values: resident ID numbers (GB 11643: a real birth
//! date and the check character), unified social credit codes (GB 32100),
//! organisation codes (GB 11714), region codes (GB/T 2260 shape), mobiles, RFC 3339
//! times and plain dates. Each answers with a message that never repeats the value.
//! Which field gets which check is in [`super::schema`].

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

/// The first character text may not hold, with its place (in characters): C0 and C1
/// control characters other than tab, line feed and carriage return (which free text
/// legitimately holds), DEL, and the invisible bidirectional controls that make text
/// display other than it reads (U+202A–U+202E overrides and embeddings, U+2066–U+2069
/// isolates, U+200E/U+200F/U+061C marks).
pub fn forbidden_char(s: &str) -> Option<(usize, char)> {
    // Most text is printable ASCII or CJK: one pass over the bytes finds the
    // candidates (a control byte, or the lead bytes of the characters above).
    let b = s.as_bytes();
    if !b
        .iter()
        .any(|&c| c < 0x20 || c == 0x7f || c == 0xc2 || c == 0xd8 || c == 0xe2)
    {
        return None;
    }
    s.chars().enumerate().find(|(_, c)| {
        matches!(c,
            '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
            | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            | '\u{200e}' | '\u{200f}' | '\u{61c}')
    })
}

/// The default syntax of case numbers and other identifiers: letters, digits and
/// `-`, `_`, `.`, 1 to 64 of them.
pub fn plain_identifier(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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
    fn control_and_bidi_characters_are_found() {
        assert_eq!(forbidden_char("营业执照 line\nbreak\ttab\r"), None);
        assert_eq!(forbidden_char("a\u{0}b"), Some((1, '\u{0}')));
        assert_eq!(forbidden_char("许可\u{202e}gpj.exe"), Some((2, '\u{202e}')));
        assert_eq!(forbidden_char("x\u{85}"), Some((1, '\u{85}')));
        assert_eq!(forbidden_char("\u{2067}"), Some((0, '\u{2067}')));
        // Characters sharing those lead bytes are fine.
        assert_eq!(forbidden_char("é ‘quoted’ … €"), None);
        assert!(plain_identifier("350205260401000123"));
        assert!(plain_identifier("SD-JN-2026_0000918.v2"));
        assert!(!plain_identifier(""));
        assert!(!plain_identifier(&"9".repeat(65)));
        assert!(!plain_identifier("1; DROP TABLE records"));
        assert!(!plain_identifier("办件123"));
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
