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

/// The clock supervision reads: the system's, or one a test or the demo sets and
/// moves (deadlines span days; nobody waits for them).
#[derive(Clone, Default)]
pub struct Clock(Option<std::sync::Arc<std::sync::atomic::AtomicI64>>);

impl Clock {
    /// A clock that stands at `ms` until moved.
    pub fn manual(ms: i64) -> Clock {
        Clock(Some(std::sync::Arc::new(
            std::sync::atomic::AtomicI64::new(ms),
        )))
    }

    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(at) => at.load(std::sync::atomic::Ordering::SeqCst),
            None => now_ms(),
        }
    }

    /// Move a manual clock to `ms` (the system clock does not move).
    pub fn set(&self, ms: i64) {
        if let Some(at) = &self.0 {
            at.store(ms, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(_) => write!(f, "Clock(manual {})", rfc3339(self.now_ms())),
            None => f.write_str("Clock(system)"),
        }
    }
}
