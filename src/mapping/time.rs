//! Time patterns: parse a source time with an explicit pattern and zone into RFC 3339
//! (or a plain date), and format a canonical time back with the same pattern.
//!
//! Patterns use the letters integrators know from Java's `SimpleDateFormat`:
//! `yyyy` year, `MM`/`M` month, `dd`/`d` day, `HH`/`H` hour, `mm`/`m` minute,
//! `ss`/`s` second, `SSS` fraction, `XXX` an offset in the value (`+08:00` or `Z`).
//! A doubled letter needs two digits, a single letter takes one or two. Anything else
//! is literal; `'T'` may be quoted. Three whole-value patterns: `epoch_ms`, `epoch_s`
//! and `rfc3339`. Zones are fixed offsets (`+08:00`, the default): China keeps no
//! daylight saving time.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::Offset;

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Year,
    Month { two: bool },
    Day { two: bool },
    Hour { two: bool },
    Minute { two: bool },
    Second { two: bool },
    Fraction,
    Offset,
    Lit(char),
}

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Fields(Vec<Token>),
    EpochMs,
    EpochS,
    Rfc3339,
}

/// Why a pattern cannot compile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("time pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl Pattern {
    pub fn compile(src: &str, date_only: bool) -> Result<Pattern, PatternError> {
        let err = |reason: &str| PatternError {
            pattern: src.to_string(),
            reason: reason.to_string(),
        };
        match src {
            "epoch_ms" => return Ok(Pattern::EpochMs),
            "epoch_s" => return Ok(Pattern::EpochS),
            "rfc3339" => return Ok(Pattern::Rfc3339),
            _ => {}
        }
        let chars: Vec<char> = src.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                let end = chars[i + 1..]
                    .iter()
                    .position(|x| *x == '\'')
                    .ok_or_else(|| err("a quote is not closed"))?;
                tokens.extend(chars[i + 1..i + 1 + end].iter().map(|c| Token::Lit(*c)));
                i += end + 2;
                continue;
            }
            let run = chars[i..].iter().take_while(|x| **x == c).count();
            let two = run >= 2;
            let token = match (c, run) {
                ('y', 4) => Token::Year,
                ('y', _) => return Err(err("the year is written yyyy")),
                ('M', 1 | 2) => Token::Month { two },
                ('d', 1 | 2) => Token::Day { two },
                ('H', 1 | 2) => Token::Hour { two },
                ('m', 1 | 2) => Token::Minute { two },
                ('s', 1 | 2) => Token::Second { two },
                ('S', _) => Token::Fraction,
                ('X', _) => Token::Offset,
                ('M' | 'd' | 'H' | 'm' | 's', _) => {
                    return Err(err("a field letter appears more than twice in a row"));
                }
                ('h', _) => {
                    return Err(err("hh (a 12-hour clock) is not supported; hours are HH"));
                }
                (c, _) if c.is_ascii_alphabetic() && c != 'T' => {
                    return Err(err(&format!(
                        "`{c}` is not a pattern letter (yyyy MM dd HH mm ss SSS XXX); quote literal text: 'text'"
                    )));
                }
                _ => {
                    tokens.extend(std::iter::repeat_n(Token::Lit(c), run));
                    i += run;
                    continue;
                }
            };
            tokens.push(token);
            i += run;
        }
        let count = |t: fn(&Token) -> bool| tokens.iter().filter(|x| t(x)).count();
        type Is = fn(&Token) -> bool;
        let fields: [(&str, Is); 7] = [
            ("the year", |t| *t == Token::Year),
            ("the month (MM; minutes are mm)", |t| {
                matches!(t, Token::Month { .. })
            }),
            ("the day", |t| matches!(t, Token::Day { .. })),
            ("the hour", |t| matches!(t, Token::Hour { .. })),
            ("the minute (mm; the month is MM)", |t| {
                matches!(t, Token::Minute { .. })
            }),
            ("the second", |t| matches!(t, Token::Second { .. })),
            ("the offset", |t| *t == Token::Offset),
        ];
        for (name, f) in fields {
            if count(f) > 1 {
                return Err(err(&format!("{name} appears twice")));
            }
        }
        let has = |t: fn(&Token) -> bool| tokens.iter().any(t);
        if !has(|t| *t == Token::Year)
            || !has(|t| matches!(t, Token::Month { .. }))
            || !has(|t| matches!(t, Token::Day { .. }))
        {
            return Err(err("a pattern needs yyyy, MM and dd"));
        }
        if date_only && has(|t| matches!(t, Token::Hour { .. } | Token::Minute { .. })) {
            return Err(err("a date pattern has no hours or minutes"));
        }
        Ok(Pattern::Fields(tokens))
    }
}

impl Pattern {
    /// Whether the pattern holds a quoted `'Z'` (a letter, not an offset).
    pub fn has_literal_z(&self) -> bool {
        matches!(self, Pattern::Fields(tokens) if tokens.contains(&Token::Lit('Z')))
    }
}

/// Parse `s` with `pattern`; the result is RFC 3339 in `zone` (or the value's own
/// offset when the pattern reads one), or `YYYY-MM-DD` when `date_only`.
pub fn parse(s: &str, pattern: &Pattern, zone: Offset, date_only: bool) -> Option<String> {
    let (dt, offset) = match pattern {
        Pattern::EpochMs | Pattern::EpochS => {
            let n: i64 = s.parse().ok()?;
            let ts = if *pattern == Pattern::EpochMs {
                Timestamp::from_millisecond(n).ok()?
            } else {
                Timestamp::from_second(n).ok()?
            };
            (zone.to_datetime(ts), zone)
        }
        Pattern::Rfc3339 => {
            let ts: Timestamp = s.parse().ok()?;
            let offset = offset_of(s).unwrap_or(zone);
            (offset.to_datetime(ts), offset)
        }
        Pattern::Fields(tokens) => parse_fields(s, tokens, zone)?,
    };
    // Canonical times have four-digit years (an epoch value can reach year -9999),
    // and name an instant (9999-12-31T23:00 at +08:00 is past the last one an RFC 3339
    // check accepts).
    if !(0..=9999).contains(&dt.year()) || (!date_only && offset.to_timestamp(dt).is_err()) {
        return None;
    }
    Some(if date_only {
        format!("{:04}-{:02}-{:02}", dt.year(), dt.month(), dt.day())
    } else {
        rfc3339(dt, offset)
    })
}

fn offset_of(s: &str) -> Option<Offset> {
    if s.ends_with(['Z', 'z']) {
        return Some(Offset::UTC);
    }
    let tail = s.get(s.len().checked_sub(6)?..)?;
    parse_offset(tail)
}

/// `+08:00`, `-05:30`, `Z` or `UTC`.
pub fn parse_offset(s: &str) -> Option<Offset> {
    if s == "Z" || s.eq_ignore_ascii_case("utc") {
        return Some(Offset::UTC);
    }
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h: i32 = s.get(1..3)?.parse().ok()?;
    let m: i32 = s.get(4..6)?.parse().ok()?;
    if h > 14 || m > 59 {
        return None;
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

fn rfc3339(dt: DateTime, offset: Offset) -> String {
    // Written digit by digit: this runs for every time of every record.
    fn two(out: &mut String, v: i32) {
        out.push(char::from(b'0' + (v / 10 % 10) as u8));
        out.push(char::from(b'0' + (v % 10) as u8));
    }
    let mut out = String::with_capacity(32);
    let y = i32::from(dt.year());
    two(&mut out, y / 100);
    two(&mut out, y % 100);
    out.push('-');
    two(&mut out, dt.month().into());
    out.push('-');
    two(&mut out, dt.day().into());
    out.push('T');
    two(&mut out, dt.hour().into());
    out.push(':');
    two(&mut out, dt.minute().into());
    out.push(':');
    two(&mut out, dt.second().into());
    match dt.subsec_nanosecond() {
        0 => {}
        n if n % 1_000_000 == 0 => out.push_str(&format!(".{:03}", n / 1_000_000)),
        n => out.push_str(&format!(".{n:09}")),
    }
    let secs = offset.seconds();
    out.push(if secs < 0 { '-' } else { '+' });
    two(&mut out, secs.abs() / 3600);
    out.push(':');
    two(&mut out, secs.abs() % 3600 / 60);
    out
}

fn parse_fields(s: &str, tokens: &[Token], zone: Offset) -> Option<(DateTime, Offset)> {
    let b = s.as_bytes();
    let mut pos = 0;
    let digits = |min: usize, max: usize, pos: &mut usize| -> Option<i32> {
        let run = b[*pos..]
            .iter()
            .take(max)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if run < min {
            return None;
        }
        let v = s[*pos..*pos + run].parse().ok()?;
        *pos += run;
        Some(v)
    };
    let (mut y, mut mo, mut d, mut h, mut mi, mut se, mut nanos) = (0, 0, 0, 0, 0, 0, 0);
    let mut offset = zone;
    for t in tokens {
        match t {
            Token::Year => y = digits(4, 4, &mut pos)?,
            Token::Month { two } => mo = digits(if *two { 2 } else { 1 }, 2, &mut pos)?,
            Token::Day { two } => d = digits(if *two { 2 } else { 1 }, 2, &mut pos)?,
            Token::Hour { two } => h = digits(if *two { 2 } else { 1 }, 2, &mut pos)?,
            Token::Minute { two } => mi = digits(if *two { 2 } else { 1 }, 2, &mut pos)?,
            Token::Second { two } => se = digits(if *two { 2 } else { 1 }, 2, &mut pos)?,
            Token::Fraction => {
                let start = pos;
                let v = digits(1, 9, &mut pos)?;
                nanos = v * 10i32.pow(9 - (pos - start) as u32);
            }
            Token::Offset => {
                let rest = s.get(pos..)?;
                if rest.starts_with('Z') {
                    offset = Offset::UTC;
                    pos += 1;
                } else {
                    offset = parse_offset(rest.get(..6)?)?;
                    pos += 6;
                }
            }
            Token::Lit(c) => {
                let mut buf = [0u8; 4];
                let lit = c.encode_utf8(&mut buf).as_bytes();
                if !b[pos..].starts_with(lit) {
                    return None;
                }
                pos += lit.len();
            }
        }
    }
    if pos != b.len() {
        return None;
    }
    let date = Date::new(i16::try_from(y).ok()?, mo as i8, d as i8).ok()?;
    let dt = date.to_datetime(jiff::civil::Time::new(h as i8, mi as i8, se as i8, nanos).ok()?);
    Some((dt, offset))
}

/// Format a canonical RFC 3339 time (or `YYYY-MM-DD` date) with `pattern` in `zone`.
pub fn format(s: &str, pattern: &Pattern, zone: Offset, date_only: bool) -> Option<String> {
    let (dt, ts) = if date_only {
        let d: Date = s.parse().ok()?;
        let dt = d.to_datetime(jiff::civil::Time::midnight());
        // A date as an epoch value: its midnight in the zone.
        (dt, zone.to_timestamp(dt).ok())
    } else {
        let ts: Timestamp = s.parse().ok()?;
        (zone.to_datetime(ts), Some(ts))
    };
    let tokens = match pattern {
        Pattern::EpochMs => return ts.map(|t| t.as_millisecond().to_string()),
        Pattern::EpochS => return ts.map(|t| t.as_second().to_string()),
        Pattern::Rfc3339 => {
            return Some(if date_only {
                s.to_string()
            } else {
                rfc3339(dt, zone)
            });
        }
        Pattern::Fields(tokens) => tokens,
    };
    let mut out = String::with_capacity(20);
    let pad = |out: &mut String, v: i32, two: bool| {
        if two {
            out.push_str(&format!("{v:02}"));
        } else {
            out.push_str(&v.to_string());
        }
    };
    for t in tokens {
        match t {
            Token::Year => out.push_str(&format!("{:04}", dt.year())),
            Token::Month { two } => pad(&mut out, dt.month().into(), *two),
            Token::Day { two } => pad(&mut out, dt.day().into(), *two),
            Token::Hour { two } => pad(&mut out, dt.hour().into(), *two),
            Token::Minute { two } => pad(&mut out, dt.minute().into(), *two),
            Token::Second { two } => pad(&mut out, dt.second().into(), *two),
            Token::Fraction => out.push_str(&format!("{:03}", dt.subsec_nanosecond() / 1_000_000)),
            Token::Offset => {
                let r = rfc3339(dt, zone);
                out.push_str(&r[r.len() - 6..]);
            }
            Token::Lit(c) => out.push(*c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cst() -> Offset {
        parse_offset("+08:00").unwrap()
    }

    fn p(pattern: &str, s: &str) -> Option<String> {
        parse(s, &Pattern::compile(pattern, false).unwrap(), cst(), false)
    }

    #[test]
    fn the_shapes_halls_send() {
        let want = Some("2026-03-24T07:56:00+08:00".to_string());
        assert_eq!(p("yyyyMMddHHmmss", "20260324075600"), want);
        assert_eq!(p("yyyy-MM-dd HH:mm:ss", "2026-03-24 07:56:00"), want);
        assert_eq!(p("yyyy/M/d H:mm:ss", "2026/3/24 7:56:00"), want);
        assert_eq!(p("yyyy-MM-dd'T'HH:mm:ss", "2026-03-24T07:56:00"), want);
        assert_eq!(p("yyyy-MM-ddTHH:mm:ss", "2026-03-24T07:56:00"), want);
        assert_eq!(
            p("epoch_ms", "1775526600000").as_deref(),
            Some("2026-04-07T09:50:00+08:00")
        );
        assert_eq!(p("yyyy-MM-dd HH:mm:ss", "2026-02-30 07:56:00"), None);
        assert_eq!(p("yyyy-MM-dd HH:mm:ss", "2026-03-24 07:56"), None);
        assert_eq!(p("yyyyMMddHHmmss", "2026032407560"), None);
    }

    #[test]
    fn dates_stay_dates_and_format_back() {
        let pat = Pattern::compile("yyyy-MM-dd", true).unwrap();
        assert_eq!(
            parse("2031-04-06", &pat, cst(), true).as_deref(),
            Some("2031-04-06")
        );
        assert_eq!(
            format("2031-04-06", &pat, cst(), true).as_deref(),
            Some("2031-04-06")
        );
        let pat = Pattern::compile("yyyy/M/d H:mm:ss", false).unwrap();
        assert_eq!(
            format("2026-04-08T09:05:00+08:00", &pat, cst(), false).as_deref(),
            Some("2026/4/8 9:05:00")
        );
        assert_eq!(
            format("2026-04-08T01:05:00Z", &pat, cst(), false).as_deref(),
            Some("2026/4/8 9:05:00")
        );
        assert!(Pattern::compile("yy-MM-dd", false).is_err());
        // mistakes that would silently give wrong times
        assert!(
            Pattern::compile("yyyy-MM-dd HH:MM:ss", false).is_err(),
            "MM twice"
        );
        assert!(
            Pattern::compile("yyyy-MM-dd hh:mm:ss", false).is_err(),
            "12-hour clock"
        );
        assert!(Pattern::compile("YYYY-MM-dd", false).is_err(), "week year");
        assert!(Pattern::compile("yyyy-MM-dd'T'HH:mm:ss", false).is_ok());
        assert!(
            Pattern::compile("yyyy-MM-dd'T'HH:mm:ss'Z'", false)
                .unwrap()
                .has_literal_z()
        );
    }

    #[test]
    fn dates_as_epoch_values_and_years_out_of_range() {
        // A date written as epoch milliseconds is its midnight in the zone, and reads
        // back as the same date.
        let pat = Pattern::compile("epoch_ms", true).unwrap();
        let ms = format("2026-04-06", &pat, cst(), true).expect("formats");
        assert_eq!(ms, "1775404800000");
        assert_eq!(parse(&ms, &pat, cst(), true).as_deref(), Some("2026-04-06"));
        // Year -1 is a valid epoch value, not a canonical time.
        assert_eq!(p("epoch_ms", "-62198841600000"), None);
        assert_eq!(p("epoch_s", "-62198841600"), None);
        assert!(
            p("epoch_s", "-62167219200").is_some(),
            "year 0 is four digits"
        );
    }

    proptest::proptest! {
        /// What a time rule writes passes the canonical time (or date) check, which
        /// a mapping with a time rule therefore skips (`layout::known`).
        #[test]
        fn what_a_time_rule_writes_is_a_canonical_time(
            ms in -70_000_000_000_000i64..260_000_000_000_000i64,
            offset_min in -1439i32..1440,
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}",
            rfc in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})",
        ) {
            let zone = Offset::from_seconds(offset_min * 60).unwrap();
            for date_only in [false, true] {
                let check = if date_only { crate::record::checks::date } else { crate::record::checks::rfc3339 };
                for (pat, s) in [("epoch_ms", ms.to_string()), ("epoch_s", (ms / 1000).to_string()), ("yyyy-MM-dd HH:mm:ss", text.clone()), ("yyyy-MM-dd", text[..10].to_string()), ("rfc3339", rfc.clone())] {
                    // A date pattern has no hours: a refused pattern is not a rule.
                    let Ok(pattern) = Pattern::compile(pat, date_only) else { continue };
                    if let Some(out) = parse(&s, &pattern, zone, date_only) {
                        proptest::prop_assert!(check(&out).is_ok(), "{pat} {s} -> {out}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_time_past_the_last_instant_is_refused() {
        assert_eq!(p("yyyy-MM-dd HH:mm:ss", "9999-12-31 23:00:00"), None);
        assert_eq!(p("rfc3339", "9999-12-31T00:00:00-05:00"), None);
        let last = p("yyyy-MM-dd HH:mm:ss", "9999-12-30 23:00:00").expect("in range");
        assert!(crate::record::checks::rfc3339(&last).is_ok(), "{last}");
    }
}
