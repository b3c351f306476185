//! Batched delivery (issue 19): a destination with `batch` receives several records
//! per request, each case's records still in order; a record the receiver refuses is
//! dead-lettered alone (answered per record, or found by splitting a batch refused
//! as a whole); every record keeps its own Idempotency-Key and audit events.

mod common;

use common::*;
use hallgate::receiver::Script;
use serde_json::{Value, json};

const ROUTES: &str = r#"
[[routes]]
name = "all-to-city"
to = ["city"]
"#;

const CITY: &str = "level = \"city\"\ndestination = { ";

fn batching(t: String) -> String {
    t.replace(
        CITY,
        &format!("{CITY}batch = {{ max_records = 10, max_wait_ms = 30 }}, "),
    )
}

fn case_no(i: usize) -> String {
    format!("3502052612040{i:05}")
}

/// The batch size each record arrived in.
fn batch_size(a: &hallgate::receiver::Arrival) -> usize {
    a.headers
        .iter()
        .find(|(k, _)| k == "x-hallgate-batch")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The audit events of one case, in order.
fn events(h: &Harness, case: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
    let mut s = c
        .prepare("SELECT event FROM audit WHERE case_no = ?1 ORDER BY seq")
        .unwrap();
    s.query_map([case], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn states(h: &Harness) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..10 {
        let (_, case) = h.get(&format!("/v1/cases/{}", case_no(i))).await;
        for r in case["records"].as_array().into_iter().flatten() {
            for d in r["deliveries"].as_array().into_iter().flatten() {
                out.push((case_no(i), d["state"].as_str().unwrap_or("?").to_string()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_destination_gets_lists_with_each_case_in_order() {
    let h = Harness::with_config(ROUTES, batching).await;
    // 20 cases of an application, three steps and a result, in one body.
    let mut records = Vec::new();
    for i in 0..20 {
        let c = case_no(i);
        records.push(application(&c, "350205"));
        for s in 1..=3 {
            records.push(process(&c, "350205", s));
        }
        records.push(result(&c, "350205"));
    }
    let (status, _, body) = h.post("district-a", &Value::Array(records), None).await;
    assert_eq!(status, 202, "{body}");
    wait_until(20, "the city has all 100", || {
        h.city.accepted().len() == 100
    })
    .await;
    let got = h.city.accepted();
    // Several records per request, never more than max_records.
    let sizes: Vec<usize> = got.iter().map(batch_size).collect();
    assert!(sizes.iter().all(|s| (1..=10).contains(s)), "{sizes:?}");
    assert!(
        sizes.iter().any(|s| *s > 1),
        "no request carried a batch: {sizes:?}"
    );
    // Each record its own key; each case in order across batches.
    let keys: std::collections::HashSet<&str> =
        got.iter().map(|a| a.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), 100);
    for i in 0..20 {
        let order: Vec<String> = got
            .iter()
            .filter(|a| a.case_no == case_no(i))
            .map(|a| order_label(&a.body))
            .collect();
        assert_eq!(
            order,
            [
                "application",
                "process:1",
                "process:2",
                "process:3",
                "result"
            ],
            "case {i}"
        );
    }
    // The body was a list of canonical records.
    let raw: Value = serde_json::from_slice(&got[0].raw).unwrap();
    assert!(raw.is_array(), "{raw}");
}

async fn one_refused(batch_results: bool) {
    let h = Harness::with_config(ROUTES, batching).await;
    h.city.set_script(Script {
        refuse_cases: vec![case_no(3)],
        batch_results,
        ..Script::default()
    });
    let records: Vec<Value> = (0..10)
        .map(|i| application(&case_no(i), "350205"))
        .collect();
    let (status, _, body) = h.post("district-a", &Value::Array(records), None).await;
    assert_eq!(status, 202, "{body}");
    wait_until(20, "nine delivered, one dead", || {
        h.city.accepted().len() == 9
    })
    .await;
    let mut settled = Vec::new();
    for _ in 0..200 {
        settled = states(&h).await;
        if settled.iter().all(|(_, s)| s == "delivered" || s == "dead") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let dead: Vec<&String> = settled
        .iter()
        .filter(|(_, s)| s == "dead")
        .map(|(c, _)| c)
        .collect();
    assert_eq!(dead, [&case_no(3)], "{settled:?}");
    assert_eq!(
        settled.iter().filter(|(_, s)| s == "delivered").count(),
        9,
        "{settled:?}"
    );
    if !batch_results {
        // Refused whole, the batch was sent again in halves down to the bad record.
        let sizes: Vec<usize> = h
            .city
            .arrivals()
            .iter()
            .filter(|a| a.status == 422 && a.case_no == case_no(3))
            .map(batch_size)
            .collect();
        assert!(
            sizes.iter().any(|s| *s > 1) && sizes.contains(&1),
            "{sizes:?}"
        );
    }
    // Each record's own audit events: the refused one is dead-lettered, its
    // neighbour delivered.
    let refused = events(&h, &case_no(3));
    assert!(
        refused.contains(&"dead_lettered".to_string()),
        "{refused:?}"
    );
    let neighbour = events(&h, &case_no(4));
    assert!(
        neighbour.contains(&"delivered".to_string()),
        "{neighbour:?}"
    );
    assert!(
        !neighbour.contains(&"dead_lettered".to_string()),
        "{neighbour:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_in_a_batch_answered_per_record_is_dead_alone() {
    one_refused(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_a_whole_is_split_until_the_bad_record_is_alone() {
    one_refused(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_keeps_its_keys_and_doubles_nothing() {
    let h = Harness::with_config(ROUTES, batching).await;
    // The first attempt of every record fails (503): the batch is sent again with
    // the same per-record keys, and each record is accepted once.
    h.city.set_script(Script {
        fail_first: 1,
        ..Script::default()
    });
    let records: Vec<Value> = (0..10)
        .map(|i| application(&case_no(i), "350205"))
        .collect();
    let (status, _, body) = h.post("district-a", &json!(records), None).await;
    assert_eq!(status, 202, "{body}");
    wait_until(20, "all ten accepted", || h.city.accepted().len() == 10).await;
    let all = h.city.arrivals();
    let first: Vec<&str> = all
        .iter()
        .filter(|a| a.status == 503)
        .map(|a| a.idempotency_key.as_str())
        .collect();
    let acc = h.city.accepted();
    let accepted: std::collections::HashSet<&str> =
        acc.iter().map(|a| a.idempotency_key.as_str()).collect();
    assert_eq!(first.len(), 10, "every record failed once");
    assert!(
        first.iter().all(|k| accepted.contains(k)),
        "the keys changed on retry"
    );
    assert_eq!(accepted.len(), 10);
}
