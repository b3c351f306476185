//! 电子监察 (layer 4): time limits of cases on the working-day calendar, their states
//! on a durable timer, alerts on transitions, data-quality codes and reports.
//!
//! Intake stores each record's [`facts`] with it and marks its case due; a new
//! case it settles at once where that needs no transition ([`AtIntake`]). The
//! [`Supervisor`] takes the cases due (the store keeps each case's next look, so no
//! sweep reads every case), [`evaluate`]s them, and settles each in one transaction:
//! its new row and next look, and on a transition the audit event and the `alert`
//! record with its deliveries. A settlement computed from facts that have changed
//! since, or by an instance that lost the race, applies nothing; so each transition
//! is audited and alerted once, across restarts and instances.

pub mod alert;
pub mod calendar;
pub mod deadline;
pub mod evaluate;
pub mod facts;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::{Event, EventKind};
use crate::route::Router;
use crate::store::supervision::{DueCase, IntakeFact, Settlement, SvCase, SvOp, SvOut, Transition};
use crate::store::{Store, StoreError};
use crate::time::Clock;

pub use calendar::{Calendar, CalendarError};
pub use evaluate::{Evaluation, Rules, State};

/// Why supervision cannot start or answer.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("supervision.calendar: cannot read {path}: {reason}")]
    CalendarFile { path: String, reason: String },
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store answered a supervision question with the wrong kind of answer")]
    Answer,
    #[error("the report has more than {0} groups; narrow its range or group by department")]
    TooManyGroups(usize),
}

/// The calendar a config asks for: the shipped one, with the config's file over it.
pub fn calendar(config: &Config) -> Result<Calendar, SuperviseError> {
    let shipped = Calendar::shipped()?;
    let Some(path) = &config.supervision.calendar else {
        return Ok(shipped);
    };
    let path = config.base_dir().join(path);
    let text = std::fs::read_to_string(&path).map_err(|e| SuperviseError::CalendarFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(shipped.overridden_by(Calendar::parse(&text, &path.display().to_string())?))
}

/// The warning rules of a config.
pub fn rules(config: &Config) -> Rules {
    Rules {
        warn_days: config.supervision.warn_days,
        warn_share: config.supervision.warn_share,
        from_submission: config.supervision.from_submission.clone(),
    }
}

/// What `hallgate check` and /metrics say about the calendar at `now_ms`: the last
/// year covered, and a warning when this year or (from November) the next is not.
pub fn calendar_warning(cal: &Calendar, now_ms: i64) -> Option<String> {
    let today = calendar::date_of(deadline::day_of(now_ms))?;
    let mut want = vec![today.year()];
    if today.month() >= 11 {
        want.push(today.year() + 1);
    }
    let missing: Vec<String> = want
        .into_iter()
        .filter(|y| !cal.covers(*y))
        .map(|y| y.to_string())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "supervision.calendar: the working-day calendar does not cover {}; deadlines there cannot be computed until the State Council's notice is added (docs/supervision.md)",
            missing.join(" and ")
        )
    })
}

/// The timer: settles due cases until cancelled.
pub struct Supervisor {
    pub store: Arc<dyn Store>,
    pub calendar: Arc<Calendar>,
    pub rules: Rules,
    pub router: Arc<Router>,
    pub clock: Clock,
    /// The gateway's id: the alerts' source.
    pub gateway_id: String,
    pub sweep: Duration,
    pub batch: usize,
    /// Wakes the delivery workers of an alert's destinations.
    pub wake: Option<crate::delivery::Wake>,
}

impl Supervisor {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        router: Arc<Router>,
    ) -> Result<Supervisor, SuperviseError> {
        Ok(Supervisor {
            store,
            calendar: Arc::new(calendar(config)?),
            rules: rules(config),
            router,
            clock: config.supervision.clock.clone(),
            gateway_id: config.gateway.id.clone(),
            sweep: Duration::from_millis(config.supervision.sweep_ms),
            batch: config.supervision.batch,
            wake: None,
        })
    }

    /// Look at due cases until none is due, then every `sweep`, until cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let owner = format!("{}-supervision-{}", self.gateway_id, uuid::Uuid::now_v7());
        let mut gauges_at = 0i64;
        let mut shown = std::collections::BTreeSet::new();
        loop {
            let more = match self.round(&owner).await {
                Ok(n) => n >= self.batch,
                Err(e) => {
                    tracing::warn!(error = %e, "supervision round failed; trying again");
                    false
                }
            };
            let now = crate::time::now_ms();
            if now - gauges_at >= 15_000 {
                gauges_at = now;
                if let Err(e) = self.gauges(&mut shown).await {
                    tracing::warn!(error = %e, "supervision gauges not refreshed");
                }
            }
            if more && !stop.is_cancelled() {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.sweep), if !more => {}
            }
        }
        // Give the lease back, so that the next generation (after a reload) or
        // another instance takes the timer at once rather than when it expires.
        let release = SvOp::Lease {
            owner,
            now_ms: crate::time::now_ms(),
            until_ms: 0,
        };
        if let Err(e) = self.store.supervision(release).await {
            tracing::debug!(error = %e, "supervision lease not given back; it expires");
        }
    }

    /// One round: take the lease, settle up to `batch` due cases. How many were due.
    pub async fn round(&self, owner: &str) -> Result<usize, SuperviseError> {
        let real = crate::time::now_ms();
        let lease = SvOp::Lease {
            owner: owner.to_string(),
            now_ms: real,
            until_ms: real + 4 * self.sweep.as_millis() as i64 + 5_000,
        };
        match self.store.supervision(lease).await? {
            SvOut::Leased(true) => {}
            SvOut::Leased(false) => return Ok(0),
            _ => return Err(SuperviseError::Answer),
        }
        let now = self.clock.now_ms();
        let due = match self
            .store
            .supervision(SvOp::Due {
                now_ms: now,
                limit: self.batch,
            })
            .await?
        {
            SvOut::Due(d) => d,
            _ => return Err(SuperviseError::Answer),
        };
        let n = due.len();
        if n == 0 {
            return Ok(0);
        }
        let settlements: Vec<Settlement> = due.into_iter().map(|c| self.settle(c, now)).collect();
        let mut to_wake: Vec<String> = settlements
            .iter()
            .filter_map(|s| s.transition.as_ref()?.alert.as_ref())
            .flat_map(|m| m.records.iter().flat_map(|r| r.destinations.clone()))
            .collect();
        to_wake.sort_unstable();
        to_wake.dedup();
        self.store.supervision(SvOp::Settle(settlements)).await?;
        if let Some(w) = &self.wake {
            for d in &to_wake {
                w.wake(d);
            }
        }
        Ok(n)
    }

    /// Evaluate one case and say what to store.
    pub fn settle(&self, case: DueCase, now_ms: i64) -> Settlement {
        let facts: Vec<(i64, facts::Fact)> = case
            .facts
            .iter()
            .filter_map(|(at, f)| facts::parse(f).map(|f| (*at, f)))
            .collect();
        let (ev, row, to) = judge(&self.calendar, &self.rules, &case.row, &facts, now_ms);
        let transition = to.map(|to| {
            let alert = to
                .alerts()
                .then(|| alert::message(self, &row, &ev, to, case.row.transitions + 1, now_ms));
            let mut event = Event::new(crate::time::now_ms(), EventKind::SupervisionChanged);
            event.case_no = Some(case.row.case_no.clone());
            event.kind = Some("alert".into());
            event.message_id = alert.as_ref().map(|m| m.id.clone());
            event.detail = serde_json::json!({
                "from": case.row.state.as_deref().and_then(State::parse).map(State::as_str),
                "to": to.as_str(),
                "deadline": ev.deadline_ms.map(crate::time::rfc3339),
                "promised_days": ev.promised_days,
                "used_days": ev.used_days,
                "at": crate::time::rfc3339(now_ms),
                "alert_to": alert.as_ref().map(|m| m.records.iter().flat_map(|r| r.destinations.clone()).collect::<Vec<_>>()),
            });
            Transition {
                event,
                alert: alert.map(Box::new),
            }
        });
        Settlement {
            row,
            due_ms: ev.due_ms,
            transition,
        }
    }

    /// What intake stores for its records' cases (see [`AtIntake`]).
    pub fn at_intake(&self) -> AtIntake {
        AtIntake {
            calendar: self.calendar.clone(),
            rules: self.rules.clone(),
        }
    }

    /// Refresh the gauges of open cases by state and department.
    /// `shown`: the (state, department) pairs set before, so that one with no open
    /// case left reads 0 rather than its last count.
    pub async fn gauges(
        &self,
        shown: &mut std::collections::BTreeSet<(String, String)>,
    ) -> Result<(), SuperviseError> {
        let SvOut::Counts(counts) = self.store.supervision(SvOp::Counts).await? else {
            return Err(SuperviseError::Answer);
        };
        let now: std::collections::BTreeSet<(String, String)> = counts
            .iter()
            .map(|(s, d, _)| (s.clone(), d.clone()))
            .collect();
        for (state, dept) in shown.difference(&now) {
            metrics::gauge!("hallgate_supervision_open_cases", "state" => state.clone(), "dept" => dept.clone())
                .set(0.0);
        }
        *shown = now;
        for (state, dept, n) in counts {
            metrics::gauge!("hallgate_supervision_open_cases", "state" => state, "dept" => dept)
                .set(n as f64);
        }
        let last = self.calendar.years().last().map(|(y, _)| y).unwrap_or(0);
        metrics::gauge!("hallgate_supervision_calendar_last_year").set(f64::from(last));
        metrics::gauge!("hallgate_supervision_calendar_uncovered").set(
            if calendar_warning(&self.calendar, self.clock.now_ms()).is_some() {
                1.0
            } else {
                0.0
            },
        );
        Ok(())
    }
}

/// A case's evaluation from its facts, the row to store, and the state it moves to
/// when that is a transition (audited, most with an alert). A case entering
/// supervision on time (or suspended) only starts its clock: its row says so, and
/// the first change from there is the first transition. A case no longer
/// supervisable keeps the state it last had.
fn judge(
    cal: &Calendar,
    rules: &Rules,
    read: &SvCase,
    facts: &[(i64, facts::Fact)],
    now_ms: i64,
) -> (Evaluation, SvCase, Option<State>) {
    let ev = evaluate::evaluate(cal, rules, facts, now_ms);
    let before = read.state.as_deref().and_then(State::parse);
    let mut row = row_of(read, &ev, crate::time::now_ms());
    let entering = before.is_none() && matches!(ev.state, Some(State::OnTime | State::Suspended));
    let to = ev.state.filter(|to| Some(*to) != before && !entering);
    if ev.state.is_none() {
        row.state = read.state.clone();
    }
    (ev, row, to)
}

/// Supervision at intake: each record's fact, and for a case that has no row yet
/// the row the timer would settle it to, when that needs no transition (the case
/// enters on time, suspended, or not supervisable). The timer then has nothing to
/// do for the new case until its next look; a case arriving already late is left
/// to the timer, which audits and alerts it.
#[derive(Debug, Clone)]
pub struct AtIntake {
    pub calendar: Arc<Calendar>,
    pub rules: Rules,
}

impl AtIntake {
    /// What to store for record `r`, accepted with `flags`, at `now_ms` on
    /// supervision's clock; `None` for a record that says nothing about the clock.
    pub fn fact(
        &self,
        r: &crate::record::Record,
        flags: &[String],
        now_ms: i64,
    ) -> Option<IntakeFact> {
        let fact = facts::fact(r, flags, now_ms)?;
        let stored = serde_json::to_string(&fact).ok()?;
        let new = SvCase {
            case_no: r.case_no.clone(),
            version: 1,
            ..SvCase::default()
        };
        let (ev, row, to) = judge(&self.calendar, &self.rules, &new, &[(now_ms, fact)], now_ms);
        Some(match to {
            None => IntakeFact {
                fact: stored,
                row,
                due_ms: ev.due_ms,
            },
            Some(_) => IntakeFact {
                fact: stored,
                row: new,
                due_ms: Some(0),
            },
        })
    }
}

/// The row to store: the evaluation's columns over the row as read (its version and
/// transitions are the guard).
fn row_of(read: &SvCase, ev: &Evaluation, now_ms: i64) -> SvCase {
    SvCase {
        case_no: read.case_no.clone(),
        state: ev.state.map(|s| s.as_str().to_string()),
        transitions: read.transitions,
        version: read.version,
        item_code: ev.item_code.clone(),
        item_name: ev.item_name.clone(),
        dept_code: ev.dept_code.clone(),
        dept_name: ev.dept_name.clone(),
        region: ev.region.clone(),
        accepted_ms: ev.start_ms,
        deadline_ms: ev.deadline_ms,
        finished_ms: ev.finished_ms,
        promised_days: ev.promised_days,
        used_days: ev.used_days,
        quality: ev.quality.join(","),
        problem: ev.problem.clone(),
        late_steps: ev
            .late_steps
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        updated_ms: now_ms,
    }
}

/// A case's supervision as the API, the CLI and the console show it: its row with
/// times in CST, the state's Chinese name, and the working days left (negative:
/// past the deadline) at `now_ms`. No personal data is in it.
pub fn view(cal: &Calendar, r: &SvCase, now_ms: i64) -> serde_json::Value {
    let open = r
        .state
        .as_deref()
        .is_some_and(|s| crate::store::supervision::OPEN_STATES.contains(&s));
    let days_left = r
        .deadline_ms
        .filter(|_| open)
        .and_then(|d| deadline::working_between(cal, now_ms, d).ok())
        .map(|ms| (ms as f64 / deadline::DAY_MS as f64 * 100.0).round() / 100.0);
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    serde_json::json!({
        "case_no": r.case_no,
        "state": r.state,
        "state_label": r.state.as_deref().and_then(State::parse).map(State::label),
        "item_code": r.item_code,
        "item_name": r.item_name,
        "dept": {"code": r.dept_code, "name": r.dept_name},
        "region": r.region,
        "accepted_at": r.accepted_ms.map(crate::time::rfc3339),
        "deadline": r.deadline_ms.map(crate::time::rfc3339),
        "finished_at": r.finished_ms.map(crate::time::rfc3339),
        "promised_days": r.promised_days,
        "used_days": r.used_days,
        "days_left": days_left,
        "late_steps": list(&r.late_steps),
        "quality": list(&r.quality),
        "problem": r.problem,
        "transitions": r.transitions,
    })
}

#[cfg(test)]
mod tests;
