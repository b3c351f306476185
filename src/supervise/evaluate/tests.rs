//! States and data-quality codes of hand-built cases, with times worked out by hand
//! from the 2026 calendar.

use super::*;

fn t(s: &str) -> i64 {
    crate::time::parse_time(s).expect("test time")
}

fn app(accepted: &str, value: i64, unit: &str) -> Fact {
    Fact::Application {
        item_code: Some("11350200MB0001".into()),
        item_name: Some("建设工程规划许可".into()),
        dept_code: Some("11350200003602000F".into()),
        dept_name: Some("规划局".into()),
        region: Some("350205".into()),
        accepted_at: Some(t(accepted)),
        submitted_at: None,
        promise: Some((value, unit.into())),
        withdrawn: false,
        flags: vec![],
        received_at: None,
    }
}

fn step(no: i64, result: &str, started: &str, ended: Option<&str>) -> Fact {
    Fact::Process {
        step_no: no,
        name: None,
        result: Some(result.into()),
        started_at: Some(t(started)),
        ended_at: ended.map(t),
        time_limit: None,
        flags: vec![],
    }
}

fn result(finished: &str) -> Fact {
    Fact::Result {
        finished_at: Some(t(finished)),
        outcome: Some("issued".into()),
        flags: vec![],
    }
}

fn rules() -> Rules {
    Rules {
        warn_days: 1.0,
        ..Rules::default()
    }
}

fn eval(facts: Vec<(&str, Fact)>, now: &str) -> Evaluation {
    let cal = Calendar::shipped().expect("calendar");
    let facts: Vec<(i64, Fact)> = facts.into_iter().map(|(r, f)| (t(r), f)).collect();
    evaluate(&cal, &rules(), &facts, t(now))
}

#[test]
fn on_time_then_warning_then_overdue() {
    // 3 working days from Fri 13 Feb 2026: deadline 26 Feb 00:00; warning one working
    // day before, at 25 Feb 00:00.
    let facts = || {
        vec![(
            "2026-02-13T10:05:00+08:00",
            app("2026-02-13T10:00:00+08:00", 3, "workday"),
        )]
    };
    let e = eval(facts(), "2026-02-24T09:00:00+08:00");
    assert_eq!(e.state, Some(State::OnTime));
    assert_eq!(e.deadline_ms, Some(t("2026-02-26T00:00:00+08:00")));
    assert_eq!(e.due_ms, Some(t("2026-02-25T00:00:00+08:00")));
    // Sat 14 Feb (调休上班) and the morning of the 24th: 1.38 working days.
    assert_eq!(e.used_days, Some(1.38));
    assert_eq!(e.promised_days, Some(3.0));
    let e = eval(facts(), "2026-02-25T09:00:00+08:00");
    assert_eq!(e.state, Some(State::Warning));
    assert_eq!(e.due_ms, Some(t("2026-02-26T00:00:00+08:00")));
    let e = eval(facts(), "2026-02-26T00:00:00+08:00");
    assert_eq!(e.state, Some(State::Overdue));
    assert_eq!(e.due_ms, None);
    assert_eq!(e.quality, vec!["0003"]);
}

#[test]
fn a_suspended_step_stops_the_clock_until_the_next_step() {
    let facts = vec![
        (
            "2026-09-28T09:00:00+08:00",
            app("2026-09-28T09:00:00+08:00", 5, "workday"),
        ),
        (
            "2026-09-30T12:00:00+08:00",
            step(
                1,
                "suspended",
                "2026-09-30T09:00:00+08:00",
                Some("2026-09-30T12:00:00+08:00"),
            ),
        ),
    ];
    let e = eval(facts.clone(), "2026-10-09T09:00:00+08:00");
    assert_eq!(e.state, Some(State::Suspended));
    assert_eq!(e.deadline_ms, None);
    let mut resumed = facts;
    resumed.push((
        "2026-10-09T12:00:00+08:00",
        step(2, "agree", "2026-10-09T12:00:00+08:00", None),
    ));
    let e = eval(resumed, "2026-10-09T13:00:00+08:00");
    assert_eq!(e.state, Some(State::OnTime));
    assert_eq!(e.deadline_ms, Some(t("2026-10-14T00:00:00+08:00")));
}

#[test]
fn a_late_result_is_finished_late_and_an_early_one_on_time() {
    let base = || {
        vec![
            (
                "2026-02-13T10:05:00+08:00",
                app("2026-02-13T10:00:00+08:00", 3, "workday"),
            ),
            (
                "2026-02-14T10:00:00+08:00",
                step(
                    1,
                    "agree",
                    "2026-02-14T09:00:00+08:00",
                    Some("2026-02-14T10:00:00+08:00"),
                ),
            ),
        ]
    };
    let mut late = base();
    late.push((
        "2026-02-26T09:00:00+08:00",
        result("2026-02-26T08:30:00+08:00"),
    ));
    let e = eval(late, "2026-02-27T00:00:00+08:00");
    assert_eq!(e.state, Some(State::FinishedLate));
    assert_eq!(e.quality, vec!["0002"]);
    assert_eq!(e.due_ms, None);
    let mut early = base();
    early.push((
        "2026-02-25T18:00:00+08:00",
        result("2026-02-25T17:00:00+08:00"),
    ));
    let e = eval(early, "2026-02-27T00:00:00+08:00");
    assert_eq!(e.state, Some(State::FinishedOnTime));
    assert!(e.quality.is_empty(), "{:?}", e.quality);
}

#[test]
fn data_quality_codes() {
    // Received two days after acceptance (0001); a result with no process (0005);
    // a flagged ID number (0006).
    let mut a = app("2026-03-02T09:00:00+08:00", 20, "workday");
    if let Fact::Application { flags, .. } = &mut a {
        flags.push("id_no_invalid".into());
    }
    let e = eval(
        vec![
            ("2026-03-04T10:00:00+08:00", a),
            (
                "2026-03-05T10:00:00+08:00",
                result("2026-03-05T09:00:00+08:00"),
            ),
        ],
        "2026-03-06T00:00:00+08:00",
    );
    assert_eq!(e.quality, vec!["0001", "0005", "0006"]);
    // Withdrawn with no result (0004).
    let mut w = app("2026-03-02T09:00:00+08:00", 20, "workday");
    if let Fact::Application { withdrawn, .. } = &mut w {
        *withdrawn = true;
    }
    let e = eval(
        vec![("2026-03-02T09:10:00+08:00", w)],
        "2026-03-03T00:00:00+08:00",
    );
    assert_eq!(e.quality, vec!["0004"]);
}

#[test]
fn missing_start_or_unknown_unit_is_a_problem_not_a_deadline() {
    let mut a = app("2026-03-02T09:00:00+08:00", 5, "workday");
    if let Fact::Application { accepted_at, .. } = &mut a {
        *accepted_at = None;
    }
    let e = eval(
        vec![("2026-03-02T09:10:00+08:00", a)],
        "2026-03-03T00:00:00+08:00",
    );
    assert_eq!(e.state, None);
    assert_eq!(e.deadline_ms, None);
    assert!(
        e.problem
            .as_deref()
            .is_some_and(|p| p.contains("accepted_at")),
        "{:?}",
        e.problem
    );
    let e = eval(
        vec![(
            "2026-03-02T09:10:00+08:00",
            app("2026-03-02T09:00:00+08:00", 5, "week"),
        )],
        "2026-03-03T00:00:00+08:00",
    );
    assert_eq!(e.state, None);
    assert!(e.problem.is_some());
}

#[test]
fn a_deadline_beyond_the_calendar_is_a_problem_looked_at_again() {
    let e = eval(
        vec![(
            "2026-12-30T10:00:00+08:00",
            app("2026-12-30T10:00:00+08:00", 5, "workday"),
        )],
        "2026-12-30T11:00:00+08:00",
    );
    assert_eq!(e.state, None);
    assert!(
        e.problem
            .as_deref()
            .is_some_and(|p| p.contains("no year 2027")),
        "{:?}",
        e.problem
    );
    assert_eq!(e.due_ms, Some(t("2026-12-30T12:00:00+08:00")));
}

#[test]
fn a_step_past_its_own_limit_while_the_case_is_not() {
    let mut s = step(1, "agree", "2026-03-02T09:00:00+08:00", None);
    if let Fact::Process { time_limit, .. } = &mut s {
        *time_limit = Some((1, "workday".into()));
    }
    let facts = vec![
        (
            "2026-03-02T09:00:00+08:00",
            app("2026-03-02T09:00:00+08:00", 20, "workday"),
        ),
        ("2026-03-02T09:00:00+08:00", s),
    ];
    let e = eval(facts.clone(), "2026-03-03T12:00:00+08:00");
    assert_eq!(e.state, Some(State::OnTime));
    assert!(e.late_steps.is_empty());
    // The step's own deadline (end of 3 Mar) is the next look.
    assert_eq!(e.due_ms, Some(t("2026-03-04T00:00:00+08:00")));
    let e = eval(facts, "2026-03-04T00:00:00+08:00");
    assert_eq!(e.state, Some(State::OnTime));
    assert_eq!(e.late_steps, vec![1]);
}
