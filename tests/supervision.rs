//! 电子监察 over real HTTP with a real receiver for the supervision platform, and a
//! clock the test moves (no sleeping for days): the timer turns a case yellow and
//! red without any new record, each transition is audited and alerted once, a late
//! result finishes late, and the API answers auditors only.

mod common;

use common::*;
use hallgate::time::{Clock, parse_time};
use serde_json::{Value, json};

const ROUTES: &str = r#"
[[routes]]
name = "all-to-city"
to = ["city"]

[[routes]]
name = "alerts-to-supervision"
kinds = ["alert"]
to = ["supervision"]
"#;

fn supervised(text: String) -> String {
    text.replace(
        "[nodes.supervision]\n",
        "[nodes.supervision]\nroles = [\"auditor\"]\n",
    ) + "\n[supervision]\nenabled = true\nsweep_ms = 100\n"
}

fn t(s: &str) -> i64 {
    parse_time(s).expect("test time")
}

/// An application accepted at `accepted` promising `days` working days, from 规划局.
fn app(case_no: &str, accepted: &str, days: i64) -> Value {
    let mut a = application(case_no, "350205");
    a["accepted_at"] = json!(accepted);
    a["promise"] = json!({"value": days, "unit": "workday"});
    a["accept_dept"] = json!({"code": "11350200003602000F", "name": "厦门市规划局"});
    a
}

async fn harness(now: &str) -> (Harness, Clock) {
    let clock = Clock::manual(t(now));
    let h = Harness::with_clock(ROUTES, supervised, |_| {}, Some(clock.clone())).await;
    (h, clock)
}

async fn sv_get(h: &Harness, path: &str, node: &str) -> (u16, Value) {
    let resp = h
        .client
        .get(format!("{}{path}", h.url))
        .header("x-hallgate-node", node)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The case's supervision once the timer has put it in `state` with `transitions`
/// audited changes (entering on time is not one).
async fn state_after(h: &Harness, case_no: &str, state: &str, transitions: i64) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, v) = sv_get(
            h,
            &format!("/v1/supervision/cases/{case_no}"),
            "supervision",
        )
        .await;
        if status == 200 && v["state"] == state && v["transitions"].as_i64() == Some(transitions) {
            return v;
        }
        last = v;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("case {case_no} did not reach {state} after {transitions} changes: {last}");
}

fn alerts(h: &Harness, case_no: &str) -> Vec<Value> {
    h.supervision
        .accepted()
        .into_iter()
        .filter(|a| a.case_no == case_no && a.kind == "alert")
        .map(|a| a.body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_turns_yellow_then_red_on_the_timer_and_each_alert_arrives_once() {
    // 3 working days from Mon 2 Mar 2026: the deadline is the end of Thu 5 Mar, the
    // warning (one working day left) from the start of Thu 5 Mar.
    let (h, clock) = harness("2026-03-02T10:00:00+08:00").await;
    let (status, _, body) = h
        .post(
            "district-a",
            &app("SV-1", "2026-03-02T09:30:00+08:00", 3),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let v = state_after(&h, "SV-1", "on_time", 0).await;
    assert_eq!(v["state"], "on_time");
    assert_eq!(v["deadline"], "2026-03-06T00:00:00.000+08:00");
    // The rest of Monday and three whole working days.
    assert_eq!(v["days_left"], 3.58);
    assert!(alerts(&h, "SV-1").is_empty(), "no alert while on time");

    // No new record: only the clock moves.
    clock.set(t("2026-03-05T09:00:00+08:00"));
    let v = state_after(&h, "SV-1", "warning", 1).await;
    assert_eq!(v["state"], "warning");
    clock.set(t("2026-03-06T08:00:00+08:00"));
    let v = state_after(&h, "SV-1", "overdue", 2).await;
    assert_eq!(v["state"], "overdue");
    assert_eq!(v["quality"], json!(["0003"]));
    wait_until(10, "two alerts delivered", || alerts(&h, "SV-1").len() >= 2).await;
    // More sweeps change nothing and send nothing again.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let got = alerts(&h, "SV-1");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["state"], "warning");
    assert_eq!(got[1]["state"], "overdue");
    let a = &got[1];
    assert_eq!(a["kind"], "alert");
    assert_eq!(a["item_code"], "11350200MB0000000X01XK0010100Y0001");
    assert_eq!(a["dept"]["name"], "厦门市规划局");
    assert_eq!(a["deadline"], "2026-03-06T00:00:00.000+08:00");
    assert_eq!(a["promise"], json!({"value": 3, "unit": "workday"}));
    assert_eq!(a["used"]["unit"], "workday");
    assert!(
        a["reason"]
            .as_str()
            .is_some_and(|r| r.contains("超过承诺时限")),
        "{a}"
    );
    assert!(
        a.get("applicant").is_none(),
        "no personal data in an alert: {a}"
    );
    // Alerts go where a rule names them, not to the city's catch-all route.
    assert!(h.city.accepted().iter().all(|x| x.kind != "alert"));

    // Each transition is in the case's audit timeline.
    let (status, tl) = sv_get(&h, "/v1/cases/SV-1/timeline", "supervision").await;
    assert_eq!(status, 200, "{tl}");
    let changes: Vec<&Value> = tl["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["event"] == "supervision_changed")
        .collect();
    assert_eq!(changes.len(), 2, "entering on time is not a change: {tl}");
    assert!(
        changes[1]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("supervision: warning → overdue")
                && s.contains("alert to supervision")),
        "{tl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_result_finishes_late_and_the_report_counts_it() {
    let (h, clock) = harness("2026-03-02T10:00:00+08:00").await;
    for (case, days) in [("SV-LATE", 1), ("SV-ONTIME", 10)] {
        let (status, _, body) = h
            .post(
                "district-a",
                &app(case, "2026-03-02T09:30:00+08:00", days),
                None,
            )
            .await;
        assert_eq!(status, 202, "{body}");
        state_after(&h, case, "on_time", 0).await;
    }
    clock.set(t("2026-03-04T10:00:00+08:00"));
    assert_eq!(
        state_after(&h, "SV-LATE", "overdue", 1).await["state"],
        "overdue"
    );
    for case in ["SV-LATE", "SV-ONTIME"] {
        let mut p = process(case, "350205", 1);
        p["started_at"] = json!("2026-03-03T09:00:00+08:00");
        p["result"] = json!("agree");
        let mut r = result(case, "350205");
        r["finished_at"] = json!("2026-03-04T09:30:00+08:00");
        let (status, _, body) = h.post("district-a", &json!([p, r]), None).await;
        assert_eq!(status, 202, "{body}");
    }
    let v = state_after(&h, "SV-LATE", "finished_late", 2).await;
    assert_eq!(v["state"], "finished_late");
    assert_eq!(v["quality"], json!(["0002"]));
    assert_eq!(
        state_after(&h, "SV-ONTIME", "finished_on_time", 1).await["state"],
        "finished_on_time"
    );
    wait_until(10, "alerts delivered", || alerts(&h, "SV-LATE").len() >= 2).await;
    assert_eq!(alerts(&h, "SV-LATE")[1]["state"], "finished_late");
    assert!(alerts(&h, "SV-ONTIME").is_empty());

    let (status, rep) = sv_get(
        &h,
        "/v1/supervision/report?from=2026-03-01&to=2026-04-01&by=dept",
        "supervision",
    )
    .await;
    assert_eq!(status, 200, "{rep}");
    let row = &rep["rows"][0];
    assert_eq!(row["code"], "11350200003602000F");
    assert_eq!(row["received"], 2);
    assert_eq!(row["finished"], 2);
    assert_eq!(row["finished_on_time"], 1);
    assert_eq!(row["on_time_rate"], 0.5);
    assert_eq!(row["quality"], json!({"0002": 1}));
    // Only auditors read supervision.
    let (status, body) = sv_get(&h, "/v1/supervision/cases?state=overdue", "district-a").await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_promises_are_refused_or_flagged_never_a_wrong_deadline() {
    let (h, _clock) = harness("2026-03-02T10:00:00+08:00").await;
    let mut unknown = app("SV-BAD-1", "2026-03-02T09:30:00+08:00", 3);
    unknown["promise"]["unit"] = json!("week");
    let mut negative = app("SV-BAD-2", "2026-03-02T09:30:00+08:00", 3);
    negative["promise"]["value"] = json!(-2);
    for (body, field, rule) in [
        (unknown, "promise.unit", "enum"),
        (negative, "promise.value", "range"),
    ] {
        let (status, _, answer) = h.post("district-a", &body, None).await;
        assert_eq!(status, 422, "{answer}");
        let d = &answer["error"]["details"][0];
        assert_eq!(d["field"], field, "{answer}");
        assert_eq!(d["rule"], rule, "{answer}");
    }
    // No accepted_at: the record is good and stored; the case is not supervised and
    // says why.
    let mut missing = app("SV-BAD-3", "2026-03-02T09:30:00+08:00", 3);
    missing.as_object_mut().map(|m| m.remove("accepted_at"));
    let (status, _, answer) = h.post("district-a", &missing, None).await;
    assert_eq!(status, 202, "{answer}");
    let mut v = Value::Null;
    for _ in 0..100 {
        let (_, got) = sv_get(&h, "/v1/supervision/cases/SV-BAD-3", "supervision").await;
        if got["problem"].is_string() {
            v = got;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        v["problem"]
            .as_str()
            .is_some_and(|p| p.contains("accepted_at")),
        "{v}"
    );
    assert_eq!(v["state"], Value::Null);
    assert_eq!(v["deadline"], Value::Null);
    // A node cannot send an alert.
    let fake = json!({"kind": "alert", "case_no": "SV-1", "region": "350205", "state": "overdue"});
    let (status, _, answer) = h.post("district-a", &fake, None).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.to_string().contains("made by the gateway"),
        "{answer}"
    );
}

fn supervised_flagging_ids(text: String) -> String {
    supervised(text).replace(
        "[nodes.district-a]\n",
        "[nodes.district-a]\nid_checks = \"flag\"\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_id_number_a_flagging_node_let_through_is_quality_code_0006() {
    let clock = Clock::manual(t("2026-03-02T10:00:00+08:00"));
    let h = Harness::with_clock(ROUTES, supervised_flagging_ids, |_| {}, Some(clock)).await;
    let mut a = app("SV-ID", "2026-03-02T09:30:00+08:00", 5);
    // The check digit of this resident ID number is wrong (…0259 is right).
    a["applicant"]["id_no"] = json!("350205195912280250");
    let (status, _, body) = h.post("district-a", &a, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["records"][0]["flags"],
        json!(["id_no_invalid"]),
        "{body}"
    );
    let v = state_after(&h, "SV-ID", "on_time", 0).await;
    assert_eq!(v["quality"], json!(["0006"]), "{v}");
    // Any other problem still refuses the record, and a node that does not flag
    // refuses the ID number as before.
    let mut bad = app("SV-ID-2", "2026-03-02T09:30:00+08:00", 5);
    bad["applicant"]["id_no"] = json!("350205195912280250");
    bad["contact"]["mobile"] = json!("123");
    let (status, _, body) = h.post("district-a", &bad, None).await;
    assert_eq!(status, 422, "{body}");
    let (status, _, body) = h
        .post(
            "district-b",
            &json!({"kind": "application", "case_no": "SV-ID-3",
        "region": "330122", "item_code": "X1", "applicant": {"type": "person", "id_type": "111",
        "id_no": "350205195912280250"}}),
            None,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"][0]["rule"], "id_no", "{body}");
}
