//! Deadline arithmetic (承诺时限): when a promise runs out, and how much of it is used.
//!
//! A promise counts from a start instant. Working days and calendar days (and months)
//! count from the next midnight in China Standard Time (the day of acceptance does not
//! count, 期间开始之日不计算在内); hours and minutes from the instant itself. Working
//! days count only the working dates of the [`Calendar`]. Stops (特别程序, a
//! suspended step until the next step) do not count, whatever the unit. A deadline
//! is the instant at which the counted time reaches the promise.

use super::calendar::{Calendar, CalendarError};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
/// China Standard Time's offset from UTC.
const CST_MS: i64 = 8 * HOUR_MS;
/// The most days a deadline, or the time used, may span from its start: a promise
/// (or a case) longer than this is an error rather than a long walk.
pub const MAX_SPAN_DAYS: i64 = 3660;

/// The unit of a promise or a step's time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Workday,
    Day,
    Hour,
    Minute,
    Month,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s {
            "workday" => Unit::Workday,
            "day" => Unit::Day,
            "hour" => Unit::Hour,
            "minute" => Unit::Minute,
            "month" => Unit::Month,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Workday => "workday",
            Unit::Day => "day",
            Unit::Hour => "hour",
            Unit::Minute => "minute",
            Unit::Month => "month",
        }
    }
}

/// A time limit: `value` of `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promise {
    pub value: i64,
    pub unit: Unit,
}

/// Why a deadline cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error("the promise must be 0 or more, not {0}")]
    Negative(i64),
    #[error("the time counted spans more than {MAX_SPAN_DAYS} days from its start")]
    TooLong,
}

/// Days since 1970-01-01 in China Standard Time of an instant.
pub fn day_of(ms: i64) -> i64 {
    (ms + CST_MS).div_euclid(DAY_MS)
}

/// The instant a CST day begins.
pub fn midnight(day: i64) -> i64 {
    day * DAY_MS - CST_MS
}

/// A promise laid out from its start: what counts, from when, and how much.
#[derive(Debug, Clone)]
pub struct Timeline<'a> {
    cal: &'a Calendar,
    origin: i64,
    working: bool,
    budget: i64,
    /// Stopped spans, sorted and merged; an open one ends at `i64::MAX`.
    stops: Vec<(i64, i64)>,
}

impl<'a> Timeline<'a> {
    /// `stops` are `(from, to)`, `to = None` while still stopped.
    pub fn new(
        cal: &'a Calendar,
        start: i64,
        promise: Promise,
        stops: &[(i64, Option<i64>)],
    ) -> Result<Timeline<'a>, DeadlineError> {
        if promise.value < 0 {
            return Err(DeadlineError::Negative(promise.value));
        }
        let next_midnight = midnight(day_of(start) + 1);
        let v = promise.value;
        let too_long = |n: i64, per: i64| {
            n.checked_mul(per)
                .filter(|ms| *ms <= MAX_SPAN_DAYS * DAY_MS)
                .ok_or(DeadlineError::TooLong)
        };
        let (origin, working, budget) = match promise.unit {
            Unit::Workday => (next_midnight, true, too_long(v, DAY_MS)?),
            Unit::Day => (next_midnight, false, too_long(v, DAY_MS)?),
            Unit::Hour => (start, false, too_long(v, HOUR_MS)?),
            Unit::Minute => (start, false, too_long(v, MINUTE_MS)?),
            Unit::Month => {
                // The same date `v` months on (the month's last day if shorter),
                // counted to its end.
                let months = i32::try_from(v).map_err(|_| DeadlineError::TooLong)?;
                let date = super::calendar::date_of(day_of(start)).ok_or(DeadlineError::TooLong)?;
                let span = jiff::Span::new()
                    .try_months(months)
                    .map_err(|_| DeadlineError::TooLong)?;
                let end = date.checked_add(span).map_err(|_| DeadlineError::TooLong)?;
                let end = midnight(super::calendar::day_number(end) + 1);
                (next_midnight, false, too_long(end - next_midnight, 1)?)
            }
        };
        let mut spans: Vec<(i64, i64)> = stops
            .iter()
            .map(|(a, b)| (*a, b.unwrap_or(i64::MAX)))
            .filter(|(a, b)| b > a)
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
        for (a, b) in spans {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ok(Timeline {
            cal,
            origin,
            working,
            budget,
            stops: merged,
        })
    }

    /// The promise in counted milliseconds.
    pub fn budget(&self) -> i64 {
        self.budget
    }

    /// Call `visit` with each counted span `[a, b)` in order, from the origin, until
    /// it returns `false`, a stop never ends, or the walk passes [`MAX_SPAN_DAYS`].
    /// `Ok(false)` when the walk ended on an open stop.
    fn walk(&self, mut visit: impl FnMut(i64, i64) -> bool) -> Result<bool, DeadlineError> {
        let first = day_of(self.origin);
        let mut stop = 0;
        for day in first..=first + MAX_SPAN_DAYS {
            let (lo, hi) = (midnight(day).max(self.origin), midnight(day + 1));
            if self.working && !self.cal.workday(day)? {
                continue;
            }
            let mut at = lo;
            while at < hi {
                while stop < self.stops.len() && self.stops[stop].1 <= at {
                    stop += 1;
                }
                let (end, next) = match self.stops.get(stop) {
                    Some(&(a, b)) if a <= at => {
                        if b == i64::MAX {
                            return Ok(false);
                        }
                        at = b.min(hi);
                        continue;
                    }
                    Some(&(a, _)) if a < hi => (a, a),
                    _ => (hi, hi),
                };
                if !visit(at, end) {
                    return Ok(true);
                }
                at = next;
            }
        }
        Err(DeadlineError::TooLong)
    }

    /// The instant at which `amount` has been counted; `None` while stopped for good
    /// before then.
    pub fn instant_after(&self, amount: i64) -> Result<Option<i64>, DeadlineError> {
        if amount <= 0 {
            return Ok(Some(self.origin));
        }
        let mut left = amount;
        let mut found = None;
        self.walk(|a, b| {
            if b - a >= left {
                found = Some(a + left);
                false
            } else {
                left -= b - a;
                true
            }
        })?;
        Ok(found)
    }

    /// The deadline; `None` while stopped for good before it.
    pub fn deadline(&self) -> Result<Option<i64>, DeadlineError> {
        self.instant_after(self.budget)
    }

    /// The time counted from the origin until `until`.
    pub fn counted(&self, until: i64) -> Result<i64, DeadlineError> {
        let mut sum = 0;
        if until <= self.origin {
            return Ok(0);
        }
        self.walk(|a, b| {
            // `until` may fall between counted spans (a weekend, a stop).
            if a >= until {
                return false;
            }
            sum += b.min(until) - a;
            b < until
        })?;
        Ok(sum)
    }
}

/// The instant before `end` with `amount` of working time between it and `end`
/// (for "fewer than N working days left"); the earliest bound is [`MAX_SPAN_DAYS`].
pub fn working_before(cal: &Calendar, end: i64, amount: i64) -> Result<i64, DeadlineError> {
    let mut left = amount;
    if left <= 0 {
        return Ok(end);
    }
    let last = day_of(end - 1);
    for day in (last - MAX_SPAN_DAYS..=last).rev() {
        if !cal.workday(day)? {
            continue;
        }
        let (lo, hi) = (midnight(day), midnight(day + 1).min(end));
        if hi - lo >= left {
            return Ok(hi - left);
        }
        left -= hi - lo;
    }
    Err(DeadlineError::TooLong)
}

/// Working time between two instants (negative when `b` is before `a`), for "N
/// working days left" and "N working days past"; spans beyond [`MAX_SPAN_DAYS`] are
/// an error.
pub fn working_between(cal: &Calendar, a: i64, b: i64) -> Result<i64, DeadlineError> {
    if b < a {
        return working_between(cal, b, a).map(|v| -v);
    }
    let (first, last) = (day_of(a), day_of(b));
    if last - first > MAX_SPAN_DAYS {
        return Err(DeadlineError::TooLong);
    }
    let mut sum = 0;
    for day in first..=last {
        if cal.workday(day)? {
            sum += midnight(day + 1).min(b) - midnight(day).max(a);
        }
    }
    Ok(sum.max(0))
}

#[cfg(test)]
mod tests;
