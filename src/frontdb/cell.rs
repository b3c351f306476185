//! A 前置库 row as the node's mapping reads it: one JSON object whose keys are the
//! column names. Every engine hands over a value as its text (a blob as its bytes);
//! this module reads it by the column's type, the same for every engine:
//! - integers and floats become numbers; DECIMAL/NUMERIC stays its exact text;
//! - DATETIME/TIMESTAMP become RFC 3339 times in the node's zone, DATE stays
//!   `YYYY-MM-DD`; MySQL's zero dates (`0000-00-00`) are refused;
//! - a BLOB/BYTEA becomes `{"sha256": …, "size": …}`, a file a material can name,
//!   with `"base64": …` (its bytes) when payloads are kept;
//! - NULL and empty text are absent (DESIGN.md: empty source values are absent).

use serde_json::{Map, Value};

use super::{ColumnType, Row, Shape};

/// Why a column's value cannot be read; never holds the value of a text column
/// (it may be personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct CellError {
    pub column: String,
    pub message: String,
}

/// `+08:00` for a zone given in seconds east of UTC.
pub fn offset_text(zone: i32) -> String {
    let sign = if zone < 0 { '-' } else { '+' };
    let z = zone.abs();
    format!("{sign}{:02}:{:02}", z / 3600, z % 3600 / 60)
}

/// The time `ms` (Unix milliseconds) as `YYYY-MM-DD HH:MM:SS` in the zone: what
/// the gateway stamps in a sync date column.
pub fn local_time(ms: i64, zone: i32) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return String::new();
    };
    let Ok(offset) = jiff::tz::Offset::from_seconds(zone) else {
        return String::new();
    };
    offset
        .to_datetime(ts)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The row as a JSON object (column → value), or the first column that cannot be
/// read. With `keep_blobs`, a blob's object also holds its bytes (`base64`).
pub fn row_object(
    shape: &Shape,
    row: &Row,
    zone: i32,
    keep_blobs: bool,
) -> Result<Map<String, Value>, CellError> {
    let offset = offset_text(zone);
    let mut out = Map::new();
    for (c, raw) in shape.columns.iter().zip(row) {
        let Some(raw) = raw else { continue };
        let v = value(c.ty, raw, &offset, keep_blobs).map_err(|message| CellError {
            column: c.name.clone(),
            message,
        })?;
        if let Some(v) = v {
            out.insert(c.name.clone(), v);
        }
    }
    Ok(out)
}

/// A key or version value as text (as it is compared when the row is marked).
pub fn text(raw: Option<&Vec<u8>>) -> Option<String> {
    raw.map(|b| String::from_utf8_lossy(b).into_owned())
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|e| format!("not UTF-8 text (byte {})", e.valid_up_to()))
}

fn value(
    ty: ColumnType,
    raw: &[u8],
    offset: &str,
    keep_blobs: bool,
) -> Result<Option<Value>, String> {
    if ty == ColumnType::Blob {
        let mut file = serde_json::json!({
            "sha256": crate::hash::sha256_hex(raw),
            "size": raw.len(),
        });
        if keep_blobs {
            use base64::Engine as _;
            file["base64"] = Value::from(base64::engine::general_purpose::STANDARD.encode(raw));
        }
        return Ok(Some(file));
    }
    let t = utf8(raw)?;
    Ok(Some(match ty {
        ColumnType::Integer => {
            if let Ok(n) = t.parse::<i64>() {
                Value::from(n)
            } else if let Ok(n) = t.parse::<u64>() {
                Value::from(n)
            } else {
                return Err("not an integer".into());
            }
        }
        ColumnType::Float => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or("not a finite number")?,
        ColumnType::Decimal => {
            if t.parse::<f64>().is_err() {
                return Err("not a decimal number".into());
            }
            Value::String(t.to_string())
        }
        ColumnType::Bool => match t {
            "t" | "true" | "1" => Value::Bool(true),
            "f" | "false" | "0" => Value::Bool(false),
            _ => return Err("not a boolean".into()),
        },
        ColumnType::DateTime => Value::String(date_time(t, offset)?),
        ColumnType::Date => Value::String(date(t)?.to_string()),
        ColumnType::Text | ColumnType::Time | ColumnType::Other | ColumnType::Blob => {
            if t.is_empty() {
                return Ok(None);
            }
            Value::String(t.to_string())
        }
    }))
}

/// `YYYY-MM-DD`, checked to be a day of the calendar.
fn date(t: &str) -> Result<jiff::civil::Date, String> {
    let bad = || format!("`{}` is not a date", t.chars().take(32).collect::<String>());
    let d = t.get(..10).ok_or_else(bad)?;
    if d.starts_with("0000-00-00") {
        return Err("`0000-00-00` is not a date (MySQL's zero date)".into());
    }
    let mut parts = d.split('-');
    let (Some(y), Some(m), Some(day), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, day): (i16, i8, i8) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        day.parse().map_err(|_| bad())?,
    );
    jiff::civil::Date::new(y, m, day).map_err(|_| bad())
}

/// `YYYY-MM-DD HH:MM:SS[.fff][±zz]` as read in the session's (the node's) zone,
/// written as RFC 3339 with that zone's offset; fractions of a second are dropped.
fn date_time(t: &str, offset: &str) -> Result<String, String> {
    let d = date(t)?;
    let bad = || format!("`{}` is not a time", t.chars().take(32).collect::<String>());
    let time = t.get(11..19).ok_or_else(bad)?;
    let mut parts = time.split(':');
    let (Some(h), Some(m), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (h, m, s): (i8, i8, i8) = (
        h.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        s.parse().map_err(|_| bad())?,
    );
    jiff::civil::Time::new(h, m, s, 0).map_err(|_| bad())?;
    Ok(format!("{d}T{h:02}:{m:02}:{s:02}{offset}"))
}

/// A rendered field as the text a column of type `ty` takes (`None`: NULL): an
/// RFC 3339 time becomes `YYYY-MM-DD HH:MM:SS` in the node's zone for a DATETIME
/// column and its date for a DATE one; booleans `1`/`0`; objects and lists their
/// JSON text.
pub fn column_text(ty: ColumnType, v: &Value, zone: i32) -> Result<Option<String>, String> {
    Ok(match v {
        Value::Null => None,
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(t) if t.is_empty() => None,
        Value::String(t) => Some(match ty {
            ColumnType::DateTime | ColumnType::Date => match t.parse::<jiff::Timestamp>() {
                Ok(ts) => {
                    let offset = jiff::tz::Offset::from_seconds(zone).map_err(|e| e.to_string())?;
                    let local = offset.to_datetime(ts);
                    if ty == ColumnType::Date {
                        local.date().to_string()
                    } else {
                        local.strftime("%Y-%m-%d %H:%M:%S").to_string()
                    }
                }
                Err(_) => t.clone(),
            },
            _ => t.clone(),
        }),
        other => Some(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_type() {
        let o = "+08:00";
        assert_eq!(
            value(ColumnType::DateTime, b"2026-03-24 07:56:00", o, false),
            Ok(Some(Value::String("2026-03-24T07:56:00+08:00".into())))
        );
        assert_eq!(
            value(
                ColumnType::DateTime,
                b"2026-03-24 07:56:00.250+08",
                o,
                false
            ),
            Ok(Some(Value::String("2026-03-24T07:56:00+08:00".into())))
        );
        assert!(
            value(ColumnType::DateTime, b"0000-00-00 00:00:00", o, false)
                .unwrap_err()
                .contains("zero date")
        );
        assert!(value(ColumnType::Date, b"2026-02-30", o, false).is_err());
        assert_eq!(
            value(ColumnType::Decimal, b"12.50", o, false),
            Ok(Some(Value::String("12.50".into())))
        );
        assert!(value(ColumnType::Integer, b"abc", o, false).is_err());
        assert_eq!(value(ColumnType::Text, b"", o, false), Ok(None));
        let blob = value(ColumnType::Blob, b"abc", o, false).unwrap().unwrap();
        assert_eq!(blob["size"], 3);
        assert_eq!(
            blob["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(blob.get("base64").is_none());
        let kept = value(ColumnType::Blob, b"abc", o, true).unwrap().unwrap();
        assert_eq!(kept["base64"], "YWJj");
        assert_eq!(kept["sha256"], blob["sha256"]);
        assert_eq!(local_time(0, 28_800), "1970-01-01 08:00:00");
        let t = Value::String("2026-04-03T01:15:00Z".into());
        assert_eq!(
            column_text(ColumnType::DateTime, &t, 28_800),
            Ok(Some("2026-04-03 09:15:00".into()))
        );
        assert_eq!(
            column_text(ColumnType::Text, &t, 28_800),
            Ok(Some("2026-04-03T01:15:00Z".into()))
        );
        assert_eq!(
            column_text(ColumnType::Integer, &Value::Bool(true), 0),
            Ok(Some("1".into()))
        );
    }
}
