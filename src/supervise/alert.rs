//! The `alert` record (监察预警, DESIGN.md section 3) a transition raises, and the
//! message that stores it: the gateway is its source, the routes naming `alert`
//! its destinations, `alert:CASE:N` its idempotency key (N counts the case's
//! transitions), so a retried settlement can never store it twice.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::Supervisor;
use super::deadline::Unit;
use super::evaluate::{Evaluation, State};
use crate::hash::sha256_hex;
use crate::record::{Kind, Obj, Record};
use crate::store::supervision::SvCase;
use crate::store::{Grants, NewMessage, NewRecord};

/// Why the alert was raised, in the words supervising departments use.
pub fn reason(state: State, ev: &Evaluation) -> String {
    let promised = ev
        .promise
        .map(|p| {
            let unit = match p.unit {
                Unit::Workday => "个工作日",
                Unit::Day => "天",
                Unit::Hour => "小时",
                Unit::Minute => "分钟",
                Unit::Month => "个月",
            };
            format!("{} {unit}", p.value)
        })
        .unwrap_or_default();
    let used = ev.used_days.map(|d| format!("{d}")).unwrap_or_default();
    match state {
        State::Warning => format!("临近承诺时限：承诺 {promised}，已用 {used} 个工作日"),
        State::Overdue => format!("超过承诺时限未办结：承诺 {promised}，已用 {used} 个工作日"),
        State::FinishedLate => format!("超期办结：承诺 {promised}，用时 {used} 个工作日"),
        _ => state.label().to_string(),
    }
}

/// The canonical alert record.
pub fn record(
    gateway_id: &str,
    row: &SvCase,
    ev: &Evaluation,
    state: State,
    n: i64,
    now_ms: i64,
) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("kind", Some(json!("alert")));
    put("case_no", Some(json!(row.case_no)));
    put(
        "record_id",
        Some(json!(format!("alert:{}:{n}", row.case_no))),
    );
    put("region", ev.region.clone().map(Value::from));
    put("source", Some(json!(gateway_id)));
    put("state", Some(json!(state.as_str())));
    put("item_code", ev.item_code.clone().map(Value::from));
    put("item_name", ev.item_name.clone().map(Value::from));
    let mut dept = Map::new();
    if let Some(c) = &ev.dept_code {
        dept.insert("code".into(), json!(c));
    }
    if let Some(c) = &ev.dept_name {
        dept.insert("name".into(), json!(c));
    }
    put("dept", (!dept.is_empty()).then_some(Value::Object(dept)));
    put(
        "accepted_at",
        ev.start_ms.map(|t| json!(crate::time::rfc3339(t))),
    );
    put(
        "deadline",
        ev.deadline_ms.map(|t| json!(crate::time::rfc3339(t))),
    );
    put(
        "promise",
        ev.promise
            .map(|p| json!({"value": p.value, "unit": p.unit.as_str()})),
    );
    put(
        "used",
        ev.used_days.map(|d| json!({"value": d, "unit": "workday"})),
    );
    put("reason", Some(json!(reason(state, ev))));
    put("raised_at", Some(json!(crate::time::rfc3339(now_ms))));
    Value::Object(m)
}

/// The message that stores transition `n` of a case's alert.
pub fn message(
    sv: &Supervisor,
    row: &SvCase,
    ev: &Evaluation,
    state: State,
    n: i64,
    now_ms: i64,
) -> NewMessage {
    let value = record(&sv.gateway_id, row, ev, state, n, now_ms);
    let canonical = value.to_string();
    let sha256 = sha256_hex(canonical.as_bytes());
    let destinations = match &value {
        Value::Object(m) => {
            let r = Record {
                kind: Kind::Alert,
                case_no: row.case_no.clone(),
                fields: Obj::from(m.clone()),
            };
            sv.router.route_alert(&sv.gateway_id, &r)
        }
        _ => Vec::new(),
    };
    let received = crate::time::now_ms();
    NewMessage {
        token: None,
        id: uuid::Uuid::now_v7().to_string(),
        source: sv.gateway_id.clone(),
        received_at_ms: received,
        content_type: Some("application/json".into()),
        idempotency_key: Some(format!("alert:{}:{n}", row.case_no)),
        body: Bytes::from(canonical.clone()),
        body_sha256: sha256.clone(),
        records: vec![NewRecord {
            index: 0,
            kind: Kind::Alert,
            case_no: row.case_no.clone(),
            identity: format!("id:alert:{}:{n}", row.case_no),
            version: None,
            step_no: 0,
            label: format!("alert {}", state.as_str()),
            canonical,
            sha256,
            destinations,
            flags: Vec::new(),
            region: ev.region.clone(),
            item_code: ev.item_code.clone(),
            fact: None,
        }],
        pull: None,
        // The gateway adds alerts to every case it supervises.
        grants: Grants {
            regions: vec![String::new()],
            item_codes: vec![String::new()],
        },
        request_id: Some(format!("supervision-{}", uuid::Uuid::now_v7().simple())),
    }
}
