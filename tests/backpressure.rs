//! Back-pressure (issue 19): a destination's `max_backlog` refuses intake of records
//! routed to it with 503 and Retry-After while its backlog is at the bound, lets
//! records for other destinations through, audits each crossing once, and accepts
//! again once the backlog has drained.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hallgate::receiver::Script;
use serde_json::Value;

const ROUTES: &str = r#"
[[routes]]
name = "applications"
kinds = ["application"]
to = ["city"]

[[routes]]
name = "steps"
kinds = ["process"]
to = ["province"]
"#;

const CITY: &str = "level = \"city\"\ndestination = { ";

fn bounded(t: String) -> String {
    t.replace(CITY, &format!("{CITY}max_backlog = {{ records = 3 }}, "))
        .replacen("poll_ms = 50\n", "poll_ms = 50\nbacklog_poll_ms = 50\n", 1)
}

fn events(h: &Harness, kind: &str) -> Vec<Value> {
    let c = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
    let mut s = c
        .prepare("SELECT node, detail FROM audit WHERE event = ?1 ORDER BY seq")
        .unwrap();
    s.query_map([kind], |r| {
        Ok(serde_json::json!({
            "node": r.get::<_, Option<String>>(0)?,
            "detail": serde_json::from_str::<Value>(&r.get::<_, String>(1)?).unwrap_or(Value::Null),
        }))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_destination_refuses_its_records_and_accepts_again_once_drained() {
    let h = Harness::with_config(ROUTES, bounded).await;
    // The city platform is down: its deliveries stay pending.
    h.city.set_script(Script {
        fail_first: 1_000_000,
        ..Script::default()
    });
    for i in 0..3 {
        let (s, _, b) = h
            .post(
                "district-a",
                &application(&format!("35020526040100010{i}"), "350205"),
                None,
            )
            .await;
        assert_eq!(s, 202, "{b}");
    }
    // Once the backlog is measured at the bound, the next application is refused.
    let started = Instant::now();
    let (headers, body) = loop {
        let (s, headers, body) = h
            .post(
                "district-a",
                &application("350205260401000199", "350205"),
                Some("the-fourth"),
            )
            .await;
        if s == 503 {
            break (headers, body);
        }
        assert_eq!(s, 202, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never refused: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["error"]["code"], "backlog_full", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("destination `city`") && message.contains("max_backlog records = 3"),
        "{message}"
    );
    let retry_after: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry_after >= 1);
    // Records for another destination still go through.
    let (s, _, b) = h
        .post(
            "district-a",
            &process("350205260401000150", "350205", 1),
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    wait_until(10, "the step delivered", || {
        h.province.accepted().len() == 1
    })
    .await;

    // The city platform is back: the backlog drains and the same body is taken.
    h.city.set_script(Script::default());
    let started = Instant::now();
    loop {
        let (s, _, body) = h
            .post(
                "district-a",
                &application("350205260401000199", "350205"),
                Some("the-fourth"),
            )
            .await;
        if s == 202 {
            break;
        }
        assert_eq!(body["error"]["code"], "backlog_full", "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never accepted again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(10, "all four applications delivered", || {
        h.city.accepted().len() >= 4
    })
    .await;
    wait_until(5, "the crossing back audited", || {
        events(&h, "backpressure").len() >= 2
    })
    .await;

    // Each crossing is one event, up then down; the refusals themselves are not
    // audited one by one.
    let crossings = events(&h, "backpressure");
    assert_eq!(crossings.len(), 2, "{crossings:?}");
    assert_eq!(crossings[0]["node"], "city");
    assert_eq!(crossings[0]["detail"]["state"], "on");
    assert!(crossings[0]["detail"]["records"].as_i64().unwrap_or(0) >= 3);
    assert_eq!(crossings[0]["detail"]["max_records"], 3);
    assert_eq!(crossings[1]["detail"]["state"], "off");
    let rejected = events(&h, "rejected");
    assert!(
        rejected
            .iter()
            .all(|e| e["detail"]["code"] != "backlog_full"),
        "{rejected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_backlog_without_a_bound_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9/records";
    let text = config_text(&dir.path().join("hallgate.db"), url, url, url, ROUTES)
        .replace(CITY, &format!("{CITY}max_backlog = {{ records = 0 }}, "));
    let err = hallgate::gateway::parse(&text, &dir.path().join("hallgate.toml"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("destination.max_backlog: give `records`, `bytes` or both, each at least 1"),
        "{err}"
    );
}
