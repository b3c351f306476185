//! Deadline arithmetic against dates worked out by hand from the published calendar
//! (国办发明电〔2025〕7号 for 2026), and properties that hold for any promise.

use super::*;
use proptest::prelude::*;

fn cal() -> Calendar {
    Calendar::shipped().expect("shipped calendar")
}

fn t(s: &str) -> i64 {
    crate::time::parse_time(s).expect("test time")
}

fn deadline(start: &str, value: i64, unit: Unit, stops: &[(&str, Option<&str>)]) -> Option<i64> {
    let cal = cal();
    let stops: Vec<(i64, Option<i64>)> = stops.iter().map(|(a, b)| (t(a), b.map(t))).collect();
    Timeline::new(&cal, t(start), Promise { value, unit }, &stops)
        .expect("timeline")
        .deadline()
        .expect("deadline")
}

#[test]
fn three_workdays_from_the_friday_before_spring_festival() {
    // Accepted Fri 13 Feb 2026: Sat 14 (调休上班) is day 1, 15–23 are off, Tue 24 day 2,
    // Wed 25 day 3: the deadline is the end of 25 Feb.
    assert_eq!(
        deadline("2026-02-13T10:00:00+08:00", 3, Unit::Workday, &[]),
        Some(t("2026-02-26T00:00:00+08:00"))
    );
}

#[test]
fn three_workdays_from_the_eve_of_national_day() {
    // Accepted Wed 30 Sep 2026: 1–7 Oct off, Thu 8 day 1, Fri 9 day 2, Sat 10 (调休) day 3.
    assert_eq!(
        deadline("2026-09-30T16:00:00+08:00", 3, Unit::Workday, &[]),
        Some(t("2026-10-11T00:00:00+08:00"))
    );
}

#[test]
fn a_suspension_spanning_national_day() {
    // 5 working days from Mon 28 Sep 2026 would end with Sat 10 Oct. Suspended from
    // 30 Sep 12:00 to 9 Oct 12:00 loses half of 30 Sep, all of 8 Oct and half of
    // 9 Oct (the holiday never counted): two working days, so Mon 12 and Tue 13.
    assert_eq!(
        deadline("2026-09-28T09:00:00+08:00", 5, Unit::Workday, &[]),
        Some(t("2026-10-11T00:00:00+08:00"))
    );
    assert_eq!(
        deadline(
            "2026-09-28T09:00:00+08:00",
            5,
            Unit::Workday,
            &[(
                "2026-09-30T12:00:00+08:00",
                Some("2026-10-09T12:00:00+08:00")
            )]
        ),
        Some(t("2026-10-14T00:00:00+08:00"))
    );
}

#[test]
fn a_case_still_suspended_has_no_deadline() {
    assert_eq!(
        deadline(
            "2026-03-02T09:00:00+08:00",
            5,
            Unit::Workday,
            &[("2026-03-03T10:00:00+08:00", None)]
        ),
        None
    );
}

#[test]
fn hours_and_minutes_count_through_holidays_from_the_instant() {
    assert_eq!(
        deadline("2026-02-13T16:30:00+08:00", 48, Unit::Hour, &[]),
        Some(t("2026-02-15T16:30:00+08:00"))
    );
    assert_eq!(
        deadline(
            "2026-02-13T16:30:00+08:00",
            48,
            Unit::Hour,
            &[(
                "2026-02-14T10:00:00+08:00",
                Some("2026-02-14T12:00:00+08:00")
            )]
        ),
        Some(t("2026-02-15T18:30:00+08:00"))
    );
    assert_eq!(
        deadline("2026-05-06T10:00:00+08:00", 30, Unit::Minute, &[]),
        Some(t("2026-05-06T10:30:00+08:00"))
    );
}

#[test]
fn calendar_days_and_months_count_from_the_next_day() {
    // 10 calendar days from 13 Feb: 14 Feb to 23 Feb, holidays included.
    assert_eq!(
        deadline("2026-02-13T10:00:00+08:00", 10, Unit::Day, &[]),
        Some(t("2026-02-24T00:00:00+08:00"))
    );
    // One month from 31 Jan 2026 is 28 Feb, counted to its end.
    assert_eq!(
        deadline("2026-01-31T10:00:00+08:00", 1, Unit::Month, &[]),
        Some(t("2026-03-01T00:00:00+08:00"))
    );
    // 即办: zero working days ends with the day of acceptance.
    assert_eq!(
        deadline("2026-01-05T10:00:00+08:00", 0, Unit::Workday, &[]),
        Some(t("2026-01-06T00:00:00+08:00"))
    );
}

#[test]
fn a_year_beyond_the_table_is_reported() {
    let cal = cal();
    let line = Timeline::new(
        &cal,
        t("2026-12-30T10:00:00+08:00"),
        Promise {
            value: 5,
            unit: Unit::Workday,
        },
        &[],
    )
    .expect("timeline");
    assert_eq!(
        line.deadline(),
        Err(DeadlineError::Calendar(CalendarError::Uncovered(2027)))
    );
}

#[test]
fn negative_and_huge_promises_are_errors() {
    let cal = cal();
    let start = t("2026-03-02T09:00:00+08:00");
    let p = |value, unit| Timeline::new(&cal, start, Promise { value, unit }, &[]).err();
    assert_eq!(p(-1, Unit::Workday), Some(DeadlineError::Negative(-1)));
    assert_eq!(p(i64::MAX, Unit::Hour), Some(DeadlineError::TooLong));
    assert_eq!(p(1_000_000, Unit::Month), Some(DeadlineError::TooLong));
}

#[test]
fn working_time_counted_and_left() {
    let cal = cal();
    let line = Timeline::new(
        &cal,
        t("2026-09-28T09:00:00+08:00"),
        Promise {
            value: 5,
            unit: Unit::Workday,
        },
        &[],
    )
    .expect("timeline");
    // 29 Sep, 30 Sep, 8 Oct and half of 9 Oct.
    assert_eq!(
        line.counted(t("2026-10-09T12:00:00+08:00")),
        Ok(DAY_MS * 7 / 2)
    );
    // Counted until a holiday: the two working days before it, no more, no less.
    assert_eq!(line.counted(t("2026-10-03T12:00:00+08:00")), Ok(2 * DAY_MS));
    let end = t("2026-02-26T00:00:00+08:00");
    assert_eq!(
        working_before(&cal, end, DAY_MS),
        Ok(t("2026-02-25T00:00:00+08:00"))
    );
    assert_eq!(
        working_before(&cal, end, 2 * DAY_MS),
        Ok(t("2026-02-24T00:00:00+08:00"))
    );
    // Two and a half: back over the holiday to noon on the make-up Saturday.
    assert_eq!(
        working_before(&cal, end, 5 * DAY_MS / 2),
        Ok(t("2026-02-14T12:00:00+08:00"))
    );
}

proptest! {
    #[test]
    fn the_deadline_is_where_the_promise_is_used_up(
        start in 1_704_038_400_000i64..1_788_000_000_000i64,
        value in 0i64..40,
        unit in 0usize..5,
        stop_at in 0i64..(30 * DAY_MS),
        stop_len in 0i64..(10 * DAY_MS),
    ) {
        let cal = cal();
        let unit = [Unit::Workday, Unit::Day, Unit::Hour, Unit::Minute, Unit::Month][unit];
        let promise = Promise { value, unit };
        let plain = Timeline::new(&cal, start, promise, &[]).expect("timeline");
        let stops = [(start + stop_at, Some(start + stop_at + stop_len))];
        let stopped = Timeline::new(&cal, start, promise, &stops).expect("timeline");
        for line in [&plain, &stopped] {
            match line.deadline() {
                Ok(Some(d)) => {
                    prop_assert_eq!(line.counted(d), Ok(line.budget()));
                    // Counting never runs backwards, whatever day it stops on.
                    let mid = start + (d - start) / 3;
                    let (a, b) = (line.counted(mid), line.counted(mid + DAY_MS / 2));
                    prop_assert!(matches!((&a, &b), (Ok(x), Ok(y)) if 0 <= *x && x <= y), "{:?} {:?}", a, b);
                    prop_assert!(d >= start);
                }
                Ok(None) => prop_assert!(false, "closed stops never leave a case without a deadline"),
                Err(DeadlineError::Calendar(CalendarError::Uncovered(y))) => prop_assert!(y >= 2027),
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
        if let (Ok(Some(a)), Ok(Some(b))) = (plain.deadline(), stopped.deadline()) {
            prop_assert!(b >= a, "a stop never brings a deadline forward");
        }
        let longer = Timeline::new(&cal, start, Promise { value: value + 1, unit }, &[]).expect("timeline");
        if let (Ok(Some(a)), Ok(Some(b))) = (plain.deadline(), longer.deadline()) {
            prop_assert!(b > a, "a longer promise ends later");
        }
    }
}
