//! The efficiency report (效能评估) over 10,000 generated cases sent over HTTP equals
//! an independent computation written here: its own working-day count from the
//! 2026 notice's dates typed in by hand, its own deadlines, rates, means,
//! percentiles and quality counts.

mod common;

use std::collections::BTreeMap;

use common::*;
use hallgate::time::{Clock, parse_time, rfc3339};
use serde_json::{Value, json};

const CASES: usize = 10_000;
const DAY: i64 = 86_400_000;
const CST: i64 = 8 * 3_600_000;

/// Working days of March to May 2026 by the published calendar: 4–6 April (清明)
/// and 1–5 May (劳动节) off, Saturday 9 May worked.
fn workday(day: i64) -> bool {
    let date = jiff::civil::Date::constant(1970, 1, 1)
        .checked_add(jiff::Span::new().days(day))
        .expect("date");
    let s = date.to_string();
    if ["2026-04-04", "2026-04-05", "2026-04-06"].contains(&s.as_str())
        || ("2026-05-01".."2026-05-06").contains(&s.as_str())
    {
        return false;
    }
    if s == "2026-05-09" {
        return true;
    }
    !matches!(
        date.weekday(),
        jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
    )
}

fn day_of(ms: i64) -> i64 {
    (ms + CST).div_euclid(DAY)
}

/// The end of the `n`th working day after the day of acceptance.
fn deadline(accepted: i64, n: i64) -> i64 {
    let mut day = day_of(accepted);
    let mut left = n;
    while left > 0 {
        day += 1;
        if workday(day) {
            left -= 1;
        }
    }
    (day + 1) * DAY - CST
}

/// Working time from the midnight after acceptance until `end`, in days, rounded to
/// 0.01 as a case's figure is.
fn used(accepted: i64, end: i64) -> f64 {
    let mut ms = 0;
    let mut day = day_of(accepted) + 1;
    while day * DAY - CST < end {
        if workday(day) {
            ms += ((day + 1) * DAY - CST).min(end) - (day * DAY - CST);
        }
        day += 1;
    }
    (ms as f64 / DAY as f64 * 100.0).round() / 100.0
}

fn uscc(base: &str) -> String {
    const C: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
    const W: [usize; 17] = [
        1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
    ];
    let sum: usize = base
        .chars()
        .zip(W)
        .map(|(c, w)| C.find(c).expect("uscc char") * w)
        .sum();
    format!("{base}{}", &C[(31 - sum % 31) % 31..][..1])
}

#[derive(Default)]
struct Want {
    received: u64,
    finished: u64,
    on_time: u64,
    overdue_open: u64,
    used: Vec<f64>,
    promised: Vec<f64>,
    quality: BTreeMap<String, u64>,
}

fn mean_p90(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let idx = (v.len() * 9).div_ceil(10) - 1;
    ((mean * 100.0).round() / 100.0, v[idx])
}

fn send(h: &Harness, batch: &mut Vec<Value>) -> impl std::future::Future<Output = ()> {
    let body = json!(std::mem::take(batch));
    let url = format!("{}/v1/records", h.url);
    let client = h.client.clone();
    async move {
        let resp = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-hallgate-node", "district-a")
            .body(body.to_string())
            .send()
            .await
            .expect("post");
        assert_eq!(
            resp.status().as_u16(),
            202,
            "{}",
            resp.text().await.unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_on_ten_thousand_cases_equals_an_independent_computation() {
    let now = parse_time("2026-04-15T00:00:00+08:00").expect("time");
    let clock = Clock::manual(now);
    let h = Harness::with_clock(
        "[[routes]]\nname = \"all\"\nto = [\"city\"]\n",
        |t| {
            t.replace("max_body_bytes = 65536", "max_body_bytes = 1048576")
                .replace("max_records_per_body = 100", "max_records_per_body = 200")
                .replace(
                    "[nodes.supervision]\n",
                    "[nodes.supervision]\nroles = [\"auditor\"]\n",
                )
                + "\n[supervision]\nenabled = true\nsweep_ms = 100\nbatch = 2000\n"
        },
        |_| {},
        Some(clock),
    )
    .await;
    let depts: Vec<String> = (0..5)
        .map(|i| uscc(&format!("1135020000360200{i}")))
        .collect();
    let mut rng = fastrand::Rng::with_seed(20261204);
    let first = parse_time("2026-03-02T00:00:00+08:00").expect("time");
    let mut want: BTreeMap<String, Want> = BTreeMap::new();
    let (mut apps, mut later) = (Vec::new(), Vec::new());
    for i in 0..CASES {
        let case_no = format!("RPT-{i:05}");
        let dept = &depts[rng.usize(0..depts.len())];
        // Accepted on a day of March, between 08:00 and 18:00.
        let accepted = first + rng.i64(0..30) * DAY + rng.i64(0..36_000) * 1000;
        let promise = rng.i64(1..=20);
        apps.push(json!({
            "kind": "application", "case_no": case_no, "region": "350205",
            "item_code": "11350200MB0000000X01XK0010100Y0001",
            "accepted_at": rfc3339(accepted),
            "promise": {"value": promise, "unit": "workday"},
            "accept_dept": {"code": dept, "name": "部门"},
        }));
        let w = want.entry(dept.clone()).or_default();
        w.received += 1;
        w.promised.push(promise as f64);
        let due = deadline(accepted, promise);
        let mut codes = vec!["0001"]; // all received on 15 April, weeks after acceptance
        let finished = (rng.u8(0..10) < 7).then(|| accepted + rng.i64(0..now - accepted));
        let with_step = rng.u8(0..10) < 8;
        if let Some(f) = finished {
            if with_step {
                later.push(json!({
                    "kind": "process", "case_no": case_no, "region": "350205", "step_no": 1,
                    "result": "agree", "started_at": rfc3339(accepted + 3_600_000),
                }));
            } else {
                codes.push("0005");
            }
            later.push(json!({
                "kind": "result", "case_no": case_no, "region": "350205",
                "outcome": "issued", "finished_at": rfc3339(f),
            }));
            w.finished += 1;
            if f <= due {
                w.on_time += 1;
            } else {
                codes.push("0002");
            }
            w.used.push(used(accepted, f));
        } else {
            if now >= due {
                w.overdue_open += 1;
                codes.push("0003");
            }
            w.used.push(used(accepted, now));
        }
        for c in codes {
            *w.quality.entry(c.to_string()).or_default() += 1;
        }
    }
    // Applications first, then steps and results, 200 records a body.
    let mut batch = Vec::new();
    for r in apps.into_iter().chain(later) {
        batch.push(r);
        if batch.len() == 200 {
            send(&h, &mut batch).await;
        }
    }
    if !batch.is_empty() {
        send(&h, &mut batch).await;
    }

    let mut expected: Vec<Value> = Vec::new();
    for (code, mut w) in want {
        let (um, up) = mean_p90(&mut w.used);
        let (pm, pp) = mean_p90(&mut w.promised);
        let rate = (w.on_time as f64 / w.finished as f64 * 100.0).round() / 100.0;
        expected.push(json!({
            "code": code, "received": w.received, "finished": w.finished,
            "finished_on_time": w.on_time, "on_time_rate": rate,
            "used_days_mean": um, "used_days_p90": up,
            "promised_days_mean": pm, "promised_days_p90": pp,
            "overdue_open": w.overdue_open, "quality": w.quality,
        }));
    }
    let strip = |rows: &Value| -> Vec<Value> {
        rows.as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let mut r = r.clone();
                        r.as_object_mut().map(|m| m.remove("name"));
                        r
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut got = Vec::new();
    for _ in 0..600 {
        let resp = h
            .client
            .get(format!(
                "{}/v1/supervision/report?from=2026-03-01&to=2026-04-01&by=dept",
                h.url
            ))
            .header("x-hallgate-node", "supervision")
            .send()
            .await
            .expect("report");
        let v: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
        got = strip(&v["rows"]);
        if got == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        serde_json::to_string_pretty(&got).expect("json"),
        serde_json::to_string_pretty(&expected).expect("json")
    );
}
