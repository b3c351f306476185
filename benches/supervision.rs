//! 电子监察 over a large store: 1,000,000 open cases (one application each, from 50
//! departments, accepted over March 2026, promised 1 to 20 working days) are stored
//! through the store's own accept path with their supervision facts, in an SQLite
//! file. Then, on a clock standing at 10 March 2026:
//! - the timer's catch-up sweep: every case is due (as after downtime) and is looked
//!   at and settled (state, deadline, next look, audit event), in rounds of 500;
//! - a second sweep with nothing due (what the timer costs when idle: no scan);
//! - the efficiency report by department over all of them.
//!
//! Reported: the time of each, and the peak RSS of each (VmHWM, reset before each
//! phase through /proc/self/clear_refs), beside the store's fill time in the same run
//! as a baseline.
//!
//!   cargo bench --bench supervision              # CASES = 1000000
//!   CASES=100000 cargo bench --bench supervision

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hallgate::record::{Kind, Record};
use hallgate::store::supervision::{IntakeFact, SvCase};
use hallgate::store::{NewMessage, NewRecord, OpenMode};
use hallgate::supervise::report::{By, report};
use hallgate::supervise::{Supervisor, facts};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const DAY_MS: i64 = 86_400_000;

/// Peak RSS since the last reset, in MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak() {
    // "5" resets the peak resident set size (Linux 4.0 and later).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn dept(c: usize) -> String {
    const C: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
    const W: [usize; 17] = [
        1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
    ];
    let base = format!("113502000036020{:02}", c % 50);
    let sum: usize = base
        .chars()
        .zip(W)
        .map(|(ch, w)| C.find(ch).unwrap_or(0) * w)
        .sum();
    format!("{base}{}", &C[(31 - sum % 31) % 31..][..1])
}

fn message(first: usize, n: usize, start: i64, now: i64) -> NewMessage {
    let mut records = Vec::with_capacity(n);
    for c in first..first + n {
        let case_no = format!("3502052603{c:08}");
        let accepted = start + (c % 30) as i64 * DAY_MS / 3 + (c % 7) as i64 * 3_600_000;
        let value = serde_json::json!({
            "kind": "application", "case_no": case_no, "region": "350205",
            "item_code": format!("11350200MB0000000X{:04}", c % 500),
            "accepted_at": hallgate::time::rfc3339(accepted),
            "promise": {"value": 1 + (c % 20), "unit": "workday"},
            "accept_dept": {"code": dept(c), "name": format!("部门{}", c % 50)},
        });
        let Ok(r) = Record::from_value(0, value, None) else {
            panic!("bench record is valid");
        };
        let canonical = r.to_json();
        records.push(NewRecord {
            index: records.len(),
            kind: Kind::Application,
            case_no: case_no.clone(),
            identity: format!("case:{case_no}"),
            version: None,
            step_no: 0,
            label: "application".into(),
            sha256: hallgate::hash::sha256_hex(canonical.as_bytes()),
            // Stored as if the timer had never looked (intake settles a new case at
            // once; here every case waits for the catch-up sweep).
            fact: facts::of(&r, &[], now).map(|fact| IntakeFact {
                fact,
                row: SvCase {
                    case_no: case_no.clone(),
                    version: 1,
                    ..SvCase::default()
                },
                due_ms: Some(0),
            }),
            canonical,
            destinations: vec!["city".into()],
            flags: vec![],
            region: Some("350205".into()),
            item_code: r.str_field("item_code").map(str::to_string),
        });
    }
    NewMessage {
        token: None,
        id: format!("bench-{first}"),
        source: "district".into(),
        received_at_ms: now,
        content_type: Some("application/json".into()),
        idempotency_key: None,
        body: Bytes::from_static(b"{}"),
        body_sha256: String::new(),
        records,
        pull: None,
        grants: Default::default(),
        request_id: None,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cases = env("CASES", 1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[gateway]\nid = \"bench\"\nlisten = \"127.0.0.1:0\"\nstore = \"sqlite://{}/sv.db\"\n\n[nodes.district]\nname = \"区\"\nlevel = \"district\"\nregion = \"350205\"\naccept = {{ kinds = [\"application\"] }}\n\n[nodes.city]\nname = \"市\"\nlevel = \"city\"\ndestination = {{ url = \"http://127.0.0.1:9/\" }}\n\n[[routes]]\nname = \"all\"\nto = [\"city\"]\n\n[supervision]\nenabled = true\n",
        dir.path().display()
    );
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, text).expect("config");
    let mut config = hallgate::config::Config::load(&path).expect("config");
    let start = hallgate::time::parse_time("2026-03-02T09:00:00+08:00").expect("time");
    let now = hallgate::time::parse_time("2026-03-10T12:00:00+08:00").expect("time");
    config.supervision.clock = hallgate::time::Clock::manual(now);
    let store = hallgate::store::open_config(&config, OpenMode::Serve)
        .await
        .expect("store");

    let t = Instant::now();
    const PER: usize = 1000;
    for first in (0..cases).step_by(PER) {
        store
            .accept(message(first, PER.min(cases - first), start, now))
            .await
            .expect("accept");
    }
    let fill = t.elapsed();
    println!(
        "filled {cases} cases (application + facts) in {:.1} s",
        fill.as_secs_f64()
    );

    let router = Arc::new(hallgate::route::Router::new(&config));
    let sv = Supervisor::new(&config, store.clone(), router).expect("supervisor");
    reset_peak();
    let t = Instant::now();
    let mut settled = 0;
    loop {
        let n = sv.round("bench").await.expect("round");
        settled += n;
        if n < sv.batch {
            break;
        }
    }
    let sweep = t.elapsed();
    let sweep_peak = peak_mib();
    println!(
        "catch-up sweep: {settled} cases settled in {:.1} s ({:.0} cases/s), peak RSS {sweep_peak:.0} MiB",
        sweep.as_secs_f64(),
        settled as f64 / sweep.as_secs_f64()
    );
    reset_peak();
    let t = Instant::now();
    let idle = sv.round("bench").await.expect("round");
    println!(
        "idle sweep: {idle} cases due, {:.2} ms, peak RSS {:.0} MiB",
        t.elapsed().as_secs_f64() * 1000.0,
        peak_mib()
    );
    reset_peak();
    let t = Instant::now();
    let rows = report(
        store.as_ref(),
        By::Dept,
        start - DAY_MS,
        now + 30 * DAY_MS,
        |_| {},
    )
    .await
    .expect("report");
    let received: u64 = rows.iter().map(|r| r.received).sum();
    println!(
        "report by department: {} groups, {received} cases in {:.1} s, peak RSS {:.0} MiB",
        rows.len(),
        t.elapsed().as_secs_f64(),
        peak_mib()
    );
    println!(
        "ratios against the fill of the same run: sweep {:.2}, report {:.2}",
        sweep.as_secs_f64() / fill.as_secs_f64(),
        t.elapsed().as_secs_f64() / fill.as_secs_f64()
    );
    store.close().await.expect("close");
}
