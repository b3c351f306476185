//! Time helpers (layer 1): the clock in milliseconds, stored times shown as RFC 3339
//! in China Standard Time (+08:00), and the dates and times people type on the
//! command line and in queries.

use jiff::tz::TimeZone;

/// China Standard Time, the zone every time is shown in.
fn cst() -> TimeZone {
    TimeZone::fixed(jiff::tz::offset(8))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Render stored milliseconds as RFC 3339 in China Standard Time (+08:00).
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts
            .to_zoned(cst())
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
        Err(_) => ms.to_string(),
    }
}

/// Parse `2026-04-01`, `2026-04-01T09:00:00+08:00` or `2026-04-01 09:00:00` (+08:00)
/// to milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(cst())
            .ok()
            .map(|z| z.timestamp().as_millisecond());
    }
    s.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(cst()).ok())
        .map(|z| z.timestamp().as_millisecond())
}

/// Today's date in China Standard Time, `YYYY-MM-DD`.
pub fn today() -> String {
    jiff::Timestamp::now()
        .to_zoned(cst())
        .strftime("%Y-%m-%d")
        .to_string()
}
