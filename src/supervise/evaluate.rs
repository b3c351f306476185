//! A case's supervision state from its facts at an instant: deadline, state, working
//! days promised and used, the steps past their own limits, the data-quality codes,
//! and when the state can next change on its own (the timer's next look).

use std::collections::BTreeMap;

use super::calendar::Calendar;
use super::deadline::{DAY_MS, DeadlineError, HOUR_MS, Promise, Timeline, Unit, working_before};
use super::facts::Fact;

/// How often a case the calendar cannot supervise is looked at again.
pub const RETRY_MS: i64 = HOUR_MS;

/// A case's state (DESIGN.md section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    OnTime,
    Warning,
    Overdue,
    Suspended,
    FinishedOnTime,
    FinishedLate,
}

impl State {
    pub const ALL: [State; 6] = [
        State::OnTime,
        State::Warning,
        State::Overdue,
        State::Suspended,
        State::FinishedOnTime,
        State::FinishedLate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::OnTime => "on_time",
            State::Warning => "warning",
            State::Overdue => "overdue",
            State::Suspended => "suspended",
            State::FinishedOnTime => "finished_on_time",
            State::FinishedLate => "finished_late",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The transitions into this state that raise an alert (黄牌, 红牌, 超期办结).
    pub fn alerts(self) -> bool {
        matches!(self, State::Warning | State::Overdue | State::FinishedLate)
    }

    /// The words of the console and the alert's reason.
    pub fn label(self) -> &'static str {
        match self {
            State::OnTime => "正常",
            State::Warning => "预警（黄牌）",
            State::Overdue => "超期（红牌）",
            State::Suspended => "暂停计时",
            State::FinishedOnTime => "按时办结",
            State::FinishedLate => "超期办结",
        }
    }
}

/// When a case turns yellow, and which items count from submission.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Warning when fewer than this many working days are left (0: off).
    pub warn_days: f64,
    /// Warning when less than this share of the promise is left (0: off).
    pub warn_share: f64,
    /// Item-code prefixes whose promise counts from `submitted_at`, not `accepted_at`.
    pub from_submission: Vec<String>,
}

/// What the timer concludes about a case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// `None`: not supervised (no application, promise or start yet).
    pub state: Option<State>,
    pub item_code: Option<String>,
    pub item_name: Option<String>,
    pub dept_code: Option<String>,
    pub dept_name: Option<String>,
    pub region: Option<String>,
    pub start_ms: Option<i64>,
    pub promise: Option<Promise>,
    pub deadline_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub promised_days: Option<f64>,
    pub used_days: Option<f64>,
    pub late_steps: Vec<i64>,
    pub quality: Vec<&'static str>,
    pub problem: Option<String>,
    /// When to look again without a new record.
    pub due_ms: Option<i64>,
}

#[derive(Default)]
struct Case<'a> {
    application: Option<(i64, &'a Fact)>,
    steps: BTreeMap<i64, &'a Fact>,
    result: Option<(i64, &'a Fact)>,
    id_flag: bool,
}

fn gather(facts: &[(i64, Fact)]) -> Case<'_> {
    let mut c = Case::default();
    for (received, f) in facts {
        let flags = match f {
            Fact::Application { flags, .. } => {
                c.application = Some((*received, f));
                flags
            }
            Fact::Process { step_no, flags, .. } => {
                c.steps.insert(*step_no, f);
                flags
            }
            Fact::Result { flags, .. } => {
                c.result = Some((*received, f));
                flags
            }
            Fact::Flags { flags } => flags,
        };
        c.id_flag |= flags.iter().any(|f| f == "id_no_invalid");
    }
    c
}

/// Clock stops: from a step whose result is `suspended` until the next step.
fn stops(steps: &BTreeMap<i64, &Fact>) -> Vec<(i64, Option<i64>)> {
    let at = |f: &Fact, start_first: bool| match f {
        Fact::Process {
            started_at,
            ended_at,
            ..
        } => {
            if start_first {
                started_at.or(*ended_at)
            } else {
                ended_at.or(*started_at)
            }
        }
        _ => None,
    };
    let list: Vec<&Fact> = steps.values().copied().collect();
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let Fact::Process { result, .. } = f else {
            continue;
        };
        if result.as_deref() != Some("suspended") {
            continue;
        }
        let Some(from) = at(f, false) else { continue };
        let resume = list.get(i + 1).and_then(|n| at(n, true));
        out.push((from, resume.map(|r| r.max(from))));
    }
    out
}

fn unit(u: &str) -> Option<Unit> {
    Unit::parse(u)
}

fn days(ms: i64) -> f64 {
    (ms as f64 / DAY_MS as f64 * 100.0).round() / 100.0
}

/// Evaluate a case at `now_ms`.
pub fn evaluate(cal: &Calendar, rules: &Rules, facts: &[(i64, Fact)], now_ms: i64) -> Evaluation {
    let case = gather(facts);
    let mut ev = Evaluation::default();
    let finished = case.result.map(|(received, f)| match f {
        Fact::Result { finished_at, .. } => finished_at.unwrap_or(received),
        _ => received,
    });
    ev.finished_ms = finished;
    let mut withdrawn = false;
    if let Some((
        received,
        Fact::Application {
            item_code,
            item_name,
            dept_code,
            dept_name,
            region,
            accepted_at,
            submitted_at,
            promise,
            withdrawn: w,
            received_at,
            ..
        },
    )) = case.application
    {
        ev.item_code = item_code.clone();
        ev.item_name = item_name.clone();
        ev.dept_code = dept_code.clone();
        ev.dept_name = dept_name.clone();
        ev.region = region.clone();
        withdrawn = *w;
        let received = received_at.unwrap_or(received);
        if accepted_at.is_some_and(|a| received - a > 24 * HOUR_MS) {
            ev.quality.push("0001");
        }
        let from_submission = item_code.as_deref().is_some_and(|code| {
            rules
                .from_submission
                .iter()
                .any(|p| code.starts_with(p.as_str()))
        });
        ev.start_ms = if from_submission {
            *submitted_at
        } else {
            *accepted_at
        };
        ev.promise = promise
            .as_ref()
            .and_then(|(v, u)| unit(u).map(|unit| Promise { value: *v, unit }));
        if promise.is_some() && ev.promise.is_none() {
            ev.problem =
                Some("the promise's unit is not one of workday, day, hour, minute, month".into());
        } else if ev.promise.is_some() && ev.start_ms.is_none() {
            ev.problem = Some(if from_submission {
                "the application has no submitted_at to count its promise from".into()
            } else {
                "the application has no accepted_at to count its promise from".into()
            });
        }
    }
    let step_stops = stops(&case.steps);
    if let (Some(start), Some(promise)) = (ev.start_ms, ev.promise)
        && let Err(e) = clock(cal, rules, &mut ev, start, promise, &step_stops, now_ms)
    {
        ev.problem = Some(e.to_string());
        ev.due_ms = Some(now_ms + RETRY_MS);
    }
    steps(cal, &case, &mut ev, now_ms);
    if ev.state == Some(State::FinishedLate) {
        ev.quality.push("0002");
    }
    if ev.state == Some(State::Overdue) {
        ev.quality.push("0003");
    }
    if withdrawn && case.result.is_none() {
        ev.quality.push("0004");
    }
    if case.result.is_some() && case.steps.is_empty() {
        ev.quality.push("0005");
    }
    if case.id_flag {
        ev.quality.push("0006");
    }
    ev.quality.sort_unstable();
    ev
}

/// Deadline, state, days and next look of a case with a promise and a start.
fn clock(
    cal: &Calendar,
    rules: &Rules,
    ev: &mut Evaluation,
    start: i64,
    promise: Promise,
    stops: &[(i64, Option<i64>)],
    now_ms: i64,
) -> Result<(), DeadlineError> {
    let line = Timeline::new(cal, start, promise, stops)?;
    let plain = Timeline::new(cal, start, promise, &[])?;
    let work = Timeline::new(
        cal,
        start,
        Promise {
            value: 0,
            unit: Unit::Workday,
        },
        stops,
    )?;
    let work_plain = Timeline::new(
        cal,
        start,
        Promise {
            value: 0,
            unit: Unit::Workday,
        },
        &[],
    )?;
    ev.promised_days = Some(match promise.unit {
        Unit::Workday => promise.value as f64,
        _ => match plain.deadline()? {
            Some(d) => days(work_plain.counted(d)?),
            None => 0.0,
        },
    });
    let deadline = line.deadline()?;
    ev.deadline_ms = deadline;
    // Days used are best effort: a case long past its deadline into a year the
    // calendar lacks is still overdue.
    if let Some(end) = ev.finished_ms {
        ev.used_days = work.counted(end).ok().map(days);
        // Finished after the deadline instant is late, even on a day that does not
        // count (a Saturday after a Friday deadline); with no deadline (finished
        // while stopped) it is the time counted that decides.
        let on_time = match deadline {
            Some(d) => end <= d,
            None => line.counted(end)? <= line.budget(),
        };
        ev.state = Some(if on_time {
            State::FinishedOnTime
        } else {
            State::FinishedLate
        });
        return Ok(());
    }
    ev.used_days = work.counted(now_ms).ok().map(days);
    let Some(deadline) = deadline else {
        ev.state = Some(State::Suspended);
        return Ok(());
    };
    if now_ms >= deadline {
        ev.state = Some(State::Overdue);
        return Ok(());
    }
    let mut warn = deadline;
    if rules.warn_days > 0.0 {
        let left = (rules.warn_days * DAY_MS as f64) as i64;
        warn = warn.min(working_before(cal, deadline, left)?);
    }
    if rules.warn_share > 0.0 {
        let used = ((1.0 - rules.warn_share) * line.budget() as f64) as i64;
        if let Some(at) = line.instant_after(used)? {
            warn = warn.min(at);
        }
    }
    if now_ms >= warn {
        ev.state = Some(State::Warning);
        ev.due_ms = Some(deadline);
    } else {
        ev.state = Some(State::OnTime);
        ev.due_ms = Some(warn);
    }
    Ok(())
}

/// Steps with their own time limit: late ones listed, the next one due looked at.
fn steps(cal: &Calendar, case: &Case<'_>, ev: &mut Evaluation, now_ms: i64) {
    for f in case.steps.values() {
        let Fact::Process {
            step_no,
            started_at: Some(started),
            ended_at,
            time_limit: Some((value, u)),
            ..
        } = f
        else {
            continue;
        };
        let Some(unit) = unit(u) else { continue };
        let limit = Promise {
            value: *value,
            unit,
        };
        let Ok(Some(deadline)) =
            Timeline::new(cal, *started, limit, &[]).and_then(|l| l.deadline())
        else {
            continue;
        };
        let late = match ended_at {
            Some(end) => *end > deadline,
            None => now_ms >= deadline,
        };
        if late {
            ev.late_steps.push(*step_no);
        } else if ended_at.is_none() && ev.finished_ms.is_none() {
            ev.due_ms = Some(ev.due_ms.map_or(deadline, |d| d.min(deadline)));
        }
    }
}

#[cfg(test)]
mod tests;
