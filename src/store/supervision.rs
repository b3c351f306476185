//! What the store keeps for supervision (电子监察): per case, one row with the facts
//! its records gave (appended with the records, in the same transaction: one line
//! each, `received_ms TAB json`) and the state last settled, with the next time the
//! timer must look again. A new case's row is settled by intake where that needs no
//! transition ([`IntakeFact`]); every later fact leaves the case to the timer. The
//! store does not interpret facts; `crate::supervise` does.

use super::types::NewMessage;
use crate::event::Event;

/// A case's supervision row as the timer and the reports read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SvCase {
    pub case_no: String,
    /// `on_time`, `warning`, `overdue`, `suspended`, `finished_on_time`,
    /// `finished_late`; `None` when not supervised (no promise or no start).
    pub state: Option<String>,
    /// Transitions so far (each one audited, most with an alert).
    pub transitions: i64,
    /// Bumped by every new fact: a settlement computed from older facts is refused.
    pub version: i64,
    pub item_code: Option<String>,
    pub item_name: Option<String>,
    pub dept_code: Option<String>,
    pub dept_name: Option<String>,
    pub region: Option<String>,
    pub accepted_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// Working days promised and used (special procedures excluded).
    pub promised_days: Option<f64>,
    pub used_days: Option<f64>,
    /// Data-quality codes (`0001`…`0006`), comma-separated.
    pub quality: String,
    /// Why the case cannot be supervised now (a year the calendar lacks…).
    pub problem: Option<String>,
    /// Process steps past their own time limit, comma-separated step numbers.
    pub late_steps: String,
    pub updated_ms: i64,
}

/// What an accepted record gives its case's supervision row, stored with it in one
/// transaction. A case with a row already gets the fact appended, its version bumped
/// and is due now (the timer looks). A case without one gets `row` and `due_ms`:
/// settled by intake when the case enters supervision on time, suspended or not at
/// all (no transition, so no event or alert), else an empty row due now.
#[derive(Debug, Clone)]
pub struct IntakeFact {
    /// The fact as stored JSON (see `crate::supervise::facts`).
    pub fact: String,
    /// The row of a new case, with `version` 1 and no transition.
    pub row: SvCase,
    pub due_ms: Option<i64>,
}

/// A case the timer must look at, with its facts in the order they were stored,
/// each with the time its record was received.
#[derive(Debug, Clone)]
pub struct DueCase {
    pub row: SvCase,
    pub facts: Vec<(i64, String)>,
}

/// The outcome of looking at a case: its new row and next look, and, on a
/// transition, its audit event and the alert message (stored with the row in one
/// transaction, or not at all).
#[derive(Debug, Clone)]
pub struct Settlement {
    /// `row.version` and `row.transitions` as read: a case changed since is left
    /// for the next look.
    pub row: SvCase,
    pub due_ms: Option<i64>,
    pub transition: Option<Transition>,
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub event: Event,
    pub alert: Option<Box<NewMessage>>,
}

/// Which cases a listing wants.
#[derive(Debug, Clone, Default)]
pub struct SvFilter {
    pub states: Vec<String>,
    pub dept_code: Option<String>,
    /// Accepted in `[from, to)`.
    pub accepted_from_ms: Option<i64>,
    pub accepted_to_ms: Option<i64>,
    /// Keyset paging: cases after this one, by case number.
    pub after: Option<String>,
    pub limit: usize,
}

/// One supervision question or change.
#[derive(Debug, Clone)]
pub enum SvOp {
    /// Take or keep the timer's lease (one instance sweeps at a time); `false` while
    /// another instance holds it.
    Lease {
        owner: String,
        now_ms: i64,
        until_ms: i64,
    },
    /// Up to `limit` cases due at `now_ms`, earliest first.
    Due { now_ms: i64, limit: usize },
    /// Store these settlements in one transaction; answers how many applied.
    Settle(Vec<Settlement>),
    /// Cases matching a filter, by case number.
    Cases(SvFilter),
    /// Open cases by state and department (for gauges).
    Counts,
    /// One case's row.
    Case(String),
}

#[derive(Debug, Clone)]
pub enum SvOut {
    Leased(bool),
    Due(Vec<DueCase>),
    Settled(usize),
    Cases(Vec<SvCase>),
    Counts(Vec<(String, String, i64)>),
    Case(Option<Box<SvCase>>),
}

/// The SQL column list of [`SvCase`], in its field order (both engines).
pub const SV_COLUMNS: &str = "case_no, state, transitions, version, item_code, item_name, dept_code, dept_name, region,
     accepted_at, deadline, finished_at, promised_days, used_days, quality, problem, late_steps, updated_at";

/// The statement that stores an [`IntakeFact`]: parameters 1 to 18 are its row in
/// [`SV_COLUMNS`] order, 19 its next look and 20 its fact line; `mark` is the
/// engine's parameter mark (`?` or `$`).
pub fn intake_sql(mark: char) -> String {
    let params: Vec<String> = (1..=20).map(|i| format!("{mark}{i}")).collect();
    format!(
        "INSERT INTO sv_cases ({SV_COLUMNS}, due_at, facts) VALUES ({})
         ON CONFLICT (case_no) DO UPDATE SET version = sv_cases.version + 1, due_at = 0,
             facts = sv_cases.facts || excluded.facts",
        params.join(", ")
    )
}

/// States of a case still open.
pub const OPEN_STATES: [&str; 4] = ["on_time", "warning", "overdue", "suspended"];

/// One stored fact line: when its record was received, and the fact.
pub fn fact_line(received_ms: i64, fact: &str) -> String {
    // A fact is JSON on one line (serde_json never writes a raw newline or tab).
    format!("{received_ms}\t{fact}\n")
}

/// The facts of a case's stored lines, in the order they were stored; a line that
/// does not read is skipped (the evaluation says what is missing).
pub fn fact_lines(text: &str) -> Vec<(i64, String)> {
    text.lines()
        .filter_map(|l| {
            let (at, fact) = l.split_once('\t')?;
            Some((at.parse().ok()?, fact.to_string()))
        })
        .collect()
}
