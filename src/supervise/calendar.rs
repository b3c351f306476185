//! The working-day calendar (工作日历): which dates are working days in mainland China.
//!
//! The State Council's annual notices are shipped in `calendar/cn-holidays.toml` (each
//! year names its notice). An operator's file of the same shape (`[supervision]
//! calendar`) replaces or extends years without a rebuild. A date in a year neither
//! file covers is an error, never silently counted as a weekday.

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::{Date, Weekday};
use serde::Deserialize;

/// The calendar shipped with the gateway.
pub const SHIPPED: &str = include_str!("../../calendar/cn-holidays.toml");

/// The most days one `A..B` range may name (a holiday block is at most a few weeks).
pub const MAX_RANGE_DAYS: i64 = 31;

/// A calendar file that cannot be used, or a date it does not cover.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("{origin}: {problem}")]
    File { origin: String, problem: String },
    #[error(
        "the working-day calendar has no year {0}: add the State Council's notice for it to the file [supervision] calendar names (docs/supervision.md)"
    )]
    Uncovered(i16),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default)]
    year: Vec<YearText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YearText {
    year: i16,
    source: String,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    workdays: Vec<String>,
}

/// One year's days off and make-up working days, and the notice they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Year {
    pub source: String,
    holidays: BTreeSet<Date>,
    workdays: BTreeSet<Date>,
}

/// Working days by year.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Calendar {
    years: BTreeMap<i16, Year>,
    /// Per day from `first_day` (days since 1970-01-01) through the last covered
    /// year: whether it is a working day, `None` in a year not covered. Looked up for
    /// every day a deadline spans, so kept flat.
    first_day: i64,
    days: Vec<Option<bool>>,
}

/// Days since 1970-01-01 of a date.
pub fn day_number(d: Date) -> i64 {
    (d - Date::constant(1970, 1, 1)).get_days() as i64
}

/// The date of a day number.
pub fn date_of(day: i64) -> Option<Date> {
    Date::constant(1970, 1, 1)
        .checked_add(jiff::Span::new().try_days(day).ok()?)
        .ok()
}

fn weekend(d: Date) -> bool {
    matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

impl Calendar {
    /// The calendar shipped in the binary.
    pub fn shipped() -> Result<Calendar, CalendarError> {
        Calendar::parse(SHIPPED, "calendar/cn-holidays.toml")
    }

    /// Read a calendar file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Calendar, CalendarError> {
        let bad = |problem: String| CalendarError::File {
            origin: origin.to_string(),
            problem,
        };
        let file: FileText = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        let mut years = BTreeMap::new();
        for y in file.year {
            if !(1949..=2200).contains(&y.year) {
                return Err(bad(format!("year {} is not a calendar year", y.year)));
            }
            if y.source.trim().is_empty() {
                return Err(bad(format!(
                    "year {}: name the notice it comes from in `source`",
                    y.year
                )));
            }
            let holidays = dates(&y.holidays, y.year).map_err(|p| bad(p.clone()))?;
            let workdays = dates(&y.workdays, y.year).map_err(|p| bad(p.clone()))?;
            if let Some(d) = workdays.iter().find(|d| !weekend(**d)) {
                return Err(bad(format!(
                    "year {}: {d} is a weekday; `workdays` lists only the Saturdays and Sundays worked (调休上班)",
                    y.year
                )));
            }
            if let Some(d) = holidays.intersection(&workdays).next() {
                return Err(bad(format!(
                    "year {}: {d} is both a holiday and a working day",
                    y.year
                )));
            }
            let year = Year {
                source: y.source,
                holidays,
                workdays,
            };
            if years.insert(y.year, year).is_some() {
                return Err(bad(format!("year {} is given twice", y.year)));
            }
        }
        Ok(Calendar::index(years))
    }

    fn index(years: BTreeMap<i16, Year>) -> Calendar {
        let (Some(first), Some(last)) = (years.keys().next(), years.keys().next_back()) else {
            return Calendar::default();
        };
        let first_day = day_number(Date::constant(*first, 1, 1));
        let end = day_number(Date::constant(*last, 12, 31));
        let days = (first_day..=end)
            .map(|n| {
                let d = date_of(n)?;
                let y = years.get(&d.year())?;
                Some(!y.holidays.contains(&d) && (y.workdays.contains(&d) || !weekend(d)))
            })
            .collect();
        Calendar {
            years,
            first_day,
            days,
        }
    }

    /// This calendar with `other`'s years replacing or adding to its own.
    pub fn overridden_by(mut self, other: Calendar) -> Calendar {
        self.years.extend(other.years);
        Calendar::index(self.years)
    }

    /// The years covered, ascending.
    pub fn years(&self) -> impl Iterator<Item = (i16, &Year)> {
        self.years.iter().map(|(y, v)| (*y, v))
    }

    /// Whether the year is covered.
    pub fn covers(&self, year: i16) -> bool {
        self.years.contains_key(&year)
    }

    /// Whether `d` is a working day.
    pub fn is_workday(&self, d: Date) -> Result<bool, CalendarError> {
        self.workday(day_number(d))
    }

    /// Whether day number `day` (days since 1970-01-01) is a working day.
    pub fn workday(&self, day: i64) -> Result<bool, CalendarError> {
        usize::try_from(day - self.first_day)
            .ok()
            .and_then(|i| self.days.get(i).copied().flatten())
            .ok_or_else(|| {
                CalendarError::Uncovered(date_of(day).map(|d| d.year()).unwrap_or(i16::MAX))
            })
    }
}

/// The dates of a list of `YYYY-MM-DD` and `A..B` entries, all in `year`.
fn dates(list: &[String], year: i16) -> Result<BTreeSet<Date>, String> {
    let mut out = BTreeSet::new();
    let parse = |s: &str| -> Result<Date, String> {
        let d: Date = s
            .trim()
            .parse()
            .map_err(|_| format!("year {year}: `{s}` is not a date (YYYY-MM-DD)"))?;
        if d.year() != year {
            return Err(format!("year {year}: {d} is in another year"));
        }
        Ok(d)
    };
    for entry in list {
        match entry.split_once("..") {
            None => {
                out.insert(parse(entry)?);
            }
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                let days = (b - a).get_days() as i64;
                if b < a || days >= MAX_RANGE_DAYS {
                    return Err(format!(
                        "year {year}: `{entry}` must run forwards and span at most {MAX_RANGE_DAYS} days"
                    ));
                }
                let mut d = a;
                while d <= b {
                    out.insert(d);
                    d = d.tomorrow().map_err(|e| e.to_string())?;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().expect("test date")
    }

    #[test]
    fn shipped_calendar_reads_and_names_its_notices() {
        let cal = Calendar::shipped().expect("shipped calendar");
        for y in 2024..=2026 {
            assert!(cal.covers(y), "{y}");
        }
        assert!(cal.years().all(|(_, y)| y.source.contains("国办发明电")));
    }

    #[test]
    fn spring_festival_and_national_day_2026() {
        let cal = Calendar::shipped().expect("shipped calendar");
        // 春节 2026: 2月15日（周日）至23日（周一）放假，2月14日（周六）、2月28日（周六）上班.
        assert_eq!(cal.is_workday(d("2026-02-13")), Ok(true)); // Friday
        assert_eq!(cal.is_workday(d("2026-02-14")), Ok(true)); // make-up Saturday
        for day in 15..=23 {
            let date = d(&format!("2026-02-{day}"));
            assert_eq!(cal.is_workday(date), Ok(false), "{date}");
        }
        assert_eq!(cal.is_workday(d("2026-02-24")), Ok(true));
        assert_eq!(cal.is_workday(d("2026-02-28")), Ok(true)); // make-up Saturday
        assert_eq!(cal.is_workday(d("2026-03-01")), Ok(false)); // ordinary Sunday
        // 国庆 2026: 10月1日至7日放假，9月20日（周日）、10月10日（周六）上班.
        assert_eq!(cal.is_workday(d("2026-09-20")), Ok(true));
        assert_eq!(cal.is_workday(d("2026-09-30")), Ok(true));
        for day in 1..=7 {
            let date = d(&format!("2026-10-0{day}"));
            assert_eq!(cal.is_workday(date), Ok(false), "{date}");
        }
        assert_eq!(cal.is_workday(d("2026-10-08")), Ok(true));
        assert_eq!(cal.is_workday(d("2026-10-10")), Ok(true));
        assert_eq!(cal.is_workday(d("2026-10-11")), Ok(false));
    }

    #[test]
    fn a_year_not_covered_is_an_error() {
        let cal = Calendar::shipped().expect("shipped calendar");
        assert_eq!(
            cal.is_workday(d("2031-03-03")),
            Err(CalendarError::Uncovered(2031))
        );
    }

    #[test]
    fn an_override_replaces_and_extends_years() {
        let extra = Calendar::parse(
            r#"
[[year]]
year = 2031
source = "test notice"
holidays = ["2031-03-03..2031-03-04"]
workdays = ["2031-03-08"]

[[year]]
year = 2026
source = "a local decision"
holidays = ["2026-12-04"]
"#,
            "extra.toml",
        )
        .expect("override");
        let cal = Calendar::shipped().expect("shipped").overridden_by(extra);
        assert_eq!(cal.is_workday(d("2031-03-03")), Ok(false));
        assert_eq!(cal.is_workday(d("2031-03-05")), Ok(true));
        assert_eq!(cal.is_workday(d("2031-03-08")), Ok(true));
        // 2026 replaced whole: the Spring Festival is no longer in it.
        assert_eq!(cal.is_workday(d("2026-02-16")), Ok(true));
        assert_eq!(cal.is_workday(d("2026-12-04")), Ok(false));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("[[year]]\nyear = 2030\nsource = \"\"\n", "name the notice"),
            (
                "[[year]]\nyear = 2030\nsource = \"x\"\nworkdays = [\"2030-03-04\"]\n",
                "is a weekday",
            ),
            (
                "[[year]]\nyear = 2030\nsource = \"x\"\nholidays = [\"2031-01-01\"]\n",
                "another year",
            ),
            (
                "[[year]]\nyear = 2030\nsource = \"x\"\nholidays = [\"2030-05-05..2030-05-01\"]\n",
                "run forwards",
            ),
            (
                "[[year]]\nyear = 2030\nsource = \"x\"\nholidays = [\"May 1\"]\n",
                "not a date",
            ),
        ];
        for (text, want) in cases {
            let err = Calendar::parse(text, "cal.toml").expect_err(text);
            assert!(err.to_string().contains(want), "{err}");
            assert!(err.to_string().starts_with("cal.toml: "), "{err}");
        }
    }
}
