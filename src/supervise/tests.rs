//! Supervision at intake: which new cases intake settles itself, and which it
//! leaves to the timer.

use super::*;
use crate::record::Record;

fn t(s: &str) -> i64 {
    crate::time::parse_time(s).expect("test time")
}

fn at_intake() -> AtIntake {
    AtIntake {
        calendar: Arc::new(Calendar::shipped().expect("calendar")),
        rules: Rules {
            warn_days: 1.0,
            ..Rules::default()
        },
    }
}

fn application(accepted: &str, promise: Option<(i64, &str)>) -> Record {
    let mut v = serde_json::json!({
        "kind": "application",
        "case_no": "350205260401000001",
        "item_code": "11350200MB0001",
        "item_name": "建设工程规划许可",
        "accepted_at": accepted,
        "accept_dept": {"code": "11350200003602000F", "name": "规划局"},
        "applicant": {"type": "legal", "name": "厦门某公司", "id_type": "uscc", "id_no": "91350200MA2XXXXX0X"},
        "project_name": "某项目",
    });
    if let Some((value, unit)) = promise {
        v["promise"] = serde_json::json!({"value": value, "unit": unit});
    }
    match Record::from_value(0, v, None) {
        Ok(r) => r,
        Err(e) => panic!("test record: {e:?}"),
    }
}

#[test]
fn a_new_case_on_time_is_settled_at_intake() {
    let now = t("2026-04-01T11:00:00+08:00");
    let r = application("2026-04-01T10:00:00+08:00", Some((5, "workday")));
    let f = at_intake().fact(&r, &[], now).expect("a fact");
    assert!(f.fact.contains(r#""k":"application""#), "{}", f.fact);
    assert_eq!(f.row.case_no, "350205260401000001");
    assert_eq!(f.row.state.as_deref(), Some("on_time"));
    assert_eq!((f.row.version, f.row.transitions), (1, 0));
    assert_eq!(f.row.promised_days, Some(5.0));
    assert_eq!(f.row.dept_code.as_deref(), Some("11350200003602000F"));
    // Next look: when it turns yellow, after today and before its deadline.
    let due = f.due_ms.expect("a next look");
    let deadline = f.row.deadline_ms.expect("a deadline");
    assert!(
        due > now && due < deadline,
        "due {due}, deadline {deadline}"
    );
}

#[test]
fn a_case_late_on_arrival_is_left_to_the_timer() {
    // Accepted in March with five working days: overdue when it arrives in April,
    // a transition the timer audits and alerts.
    let now = t("2026-04-01T11:00:00+08:00");
    let r = application("2026-03-02T10:00:00+08:00", Some((5, "workday")));
    let f = at_intake().fact(&r, &[], now).expect("a fact");
    assert_eq!(f.row.state, None);
    assert_eq!(f.row.deadline_ms, None);
    assert_eq!(f.row.version, 1);
    assert_eq!(f.due_ms, Some(0));
}

#[test]
fn a_case_without_a_promise_is_stored_unsupervised() {
    // No promise, no clock: the row keeps the item and department for the reports,
    // and the timer never looks (until another record comes).
    let now = t("2026-04-01T11:00:00+08:00");
    let r = application("2026-04-01T10:00:00+08:00", None);
    let f = at_intake().fact(&r, &[], now).expect("a fact");
    assert_eq!(f.row.state, None);
    assert_eq!(f.row.deadline_ms, None);
    assert_eq!(f.row.item_code.as_deref(), Some("11350200MB0001"));
    assert_eq!(f.due_ms, None);
}

#[test]
fn a_material_without_flags_says_nothing() {
    let v = serde_json::json!({
        "kind": "material", "case_no": "350205260401000001", "material_id": "M1",
        "name": "申请书", "file": {"name": "a.pdf", "sha256": "0".repeat(64), "size": 1}
    });
    let r = match Record::from_value(0, v, None) {
        Ok(r) => r,
        Err(e) => panic!("test record: {e:?}"),
    };
    assert!(at_intake().fact(&r, &[], 0).is_none());
}
