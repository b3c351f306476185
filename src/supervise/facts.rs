//! The facts supervision needs from a record, taken at intake and stored with it
//! (a few dozen bytes: item, department, times, promise, step results). The timer
//! works from these alone, so payload retention and encryption at rest do not
//! touch it, and no personal data is kept.

use serde::{Deserialize, Serialize};

use crate::record::{Kind, Record};

/// What one record says about its case's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Fact {
    Application {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item_code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dept_code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dept_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accepted_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        submitted_at: Option<i64>,
        /// `(value, unit)` as the record gives them (checked by the schema).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        promise: Option<(i64, String)>,
        /// `op = delete`: the case was withdrawn or voided at the source.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        withdrawn: bool,
        /// Flags the record was accepted with (`id_no_invalid`, …).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        flags: Vec<String>,
        /// When the gateway received it, on supervision's clock.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        received_at: Option<i64>,
    },
    Process {
        step_no: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ended_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_limit: Option<(i64, String)>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        flags: Vec<String>,
    },
    Result {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finished_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        flags: Vec<String>,
    },
    /// Another kind of record that carried flags (a material with a bad ID number).
    Flags { flags: Vec<String> },
}

/// A fact with the time the gateway received its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub fact: Fact,
    pub received_ms: i64,
}

fn time(r: &Record, path: &str) -> Option<i64> {
    r.path_text(path).and_then(|s| crate::time::parse_time(&s))
}

fn text(r: &Record, path: &str) -> Option<String> {
    r.path_text(path)
}

fn limit(r: &Record, prefix: &str) -> Option<(i64, String)> {
    let value = r.path_text(&format!("{prefix}.value"))?.parse().ok()?;
    Some((value, r.path_text(&format!("{prefix}.unit"))?))
}

/// The fact a record gives, as stored JSON; `None` for a record that says nothing
/// about the clock. `flags` are those it was accepted with; `now_ms` is when it was
/// received, on supervision's clock.
pub fn of(r: &Record, flags: &[String], now_ms: i64) -> Option<String> {
    serde_json::to_string(&fact(r, flags, now_ms)?).ok()
}

/// The fact a record gives (see [`of`]).
pub fn fact(r: &Record, flags: &[String], now_ms: i64) -> Option<Fact> {
    let flags = flags.to_vec();
    let fact = match r.kind {
        Kind::Application => Fact::Application {
            item_code: text(r, "item_code"),
            item_name: text(r, "item_name"),
            dept_code: text(r, "accept_dept.code"),
            dept_name: text(r, "accept_dept.name"),
            region: text(r, "region"),
            accepted_at: time(r, "accepted_at"),
            submitted_at: time(r, "submitted_at"),
            promise: limit(r, "promise"),
            withdrawn: r.str_field("op") == Some("delete"),
            flags,
            received_at: Some(now_ms),
        },
        Kind::Process => Fact::Process {
            step_no: r.step_no(),
            name: text(r, "node_name"),
            result: text(r, "result"),
            started_at: time(r, "started_at"),
            ended_at: time(r, "ended_at"),
            time_limit: limit(r, "time_limit"),
            flags,
        },
        Kind::Result => Fact::Result {
            finished_at: time(r, "finished_at"),
            outcome: text(r, "outcome"),
            flags,
        },
        Kind::Material if !flags.is_empty() => Fact::Flags { flags },
        Kind::Material | Kind::Alert => return None,
    };
    Some(fact)
}

/// Read a stored fact back; a row that does not parse is skipped by the caller.
pub fn parse(text: &str) -> Option<Fact> {
    serde_json::from_str(text).ok()
}
