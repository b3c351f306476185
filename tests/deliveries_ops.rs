//! Dead letters and deliveries as an operator handles them, over real HTTP and from
//! the command line: a bulk retry of 1,000 dead letters delivers each once; one
//! delivery shows its attempts; the CLI lists, shows and retries (asking first);
//! every retry names who asked and what; unknown paths and ids answer 404 in the
//! JSON error shape.

mod common;

use std::process::Command;

use common::*;
use hallgate::receiver::Script;
use serde_json::{Value, json};

const TO_CITY: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

/// Refuse everything (422: dead at once) until told otherwise.
fn refusing() -> Script {
    Script {
        status: 422,
        ..Script::default()
    }
}

async fn send(h: &Harness, first: usize, n: usize) {
    let records: Vec<Value> = (first..first + n)
        .map(|i| application(&format!("350205261204{i:06}"), "350205"))
        .collect();
    let (status, _, body) = h.post("district-a", &json!(records), None).await;
    assert_eq!(status, 202, "{body}");
}

async fn wait_dead(h: &Harness, n: i64) {
    wait_until(60, &format!("{n} dead letters"), || {
        h.count("SELECT count(*) FROM deliveries WHERE state = 'dead'") == n
    })
    .await;
}

fn hallgate(h: &Harness, args: &[&str], stdin: &str) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hallgate"));
    cmd.arg("--config")
        .arg(h.dir.path().join("hallgate.toml"))
        .args(args)
        .env("USER", "ops-zhang");
    let out = run_with_stdin(cmd, stdin.as_bytes());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// 电子监察 runs the exchange here: it is the operator.
fn supervision_operates(t: String) -> String {
    t.replace(
        "level = \"department\"\ndestination",
        "level = \"department\"\nroles = [\"operator\"]\ndestination",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_retry_of_1000_dead_letters_delivers_each_once() {
    let h = Harness::with_config(TO_CITY, supervision_operates).await;
    h.city.set_script(refusing());
    for b in 0..10 {
        send(&h, b * 100, 100).await;
    }
    wait_dead(&h, 1000).await;
    h.city.set_script(Script::default());

    let retry_as = |node: &'static str, body: Value| {
        h.client
            .post(format!("{}/v1/deliveries/retry", h.url))
            .header("x-hallgate-node", node)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let retry = |body: Value| retry_as("supervision", body);
    let read = |r: reqwest::Response| async move {
        serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
    };
    // A sender is not an operator: refused, naming the role it lacks.
    let refused = retry_as(
        "district-a",
        json!({"destination": "city", "state": "dead"}),
    )
    .await
    .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let text = read(refused).await.to_string();
    assert!(text.contains("roles = [\\\"operator\\\"]"), "{text}");
    let answer = read(
        retry(json!({"destination": "city", "state": "dead"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer["matched"], 1000, "{answer}");
    assert_eq!(answer["retried"], 1000, "{answer}");
    wait_until(60, "1000 deliveries", || h.city.accepted().len() >= 1000).await;
    // A second bulk retry finds nothing to put back.
    let again = read(
        retry(json!({"destination": "city", "state": "dead"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again["matched"], 0, "{again}");
    // Only dead letters: another state is a clear refusal.
    let r = retry(json!({"destination": "city", "state": "pending"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let accepted = h.city.accepted();
    let mut keys: Vec<&str> = accepted
        .iter()
        .map(|a| a.idempotency_key.as_str())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        (accepted.len(), keys.len()),
        (1000, 1000),
        "each delivered once"
    );
    assert_eq!(
        h.city.arrivals().iter().filter(|a| a.status == 409).count(),
        0,
        "nothing sent twice"
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM audit WHERE event = 'manually_retried'
             AND json_extract(detail, '$.by') = 'node supervision'
             AND json_extract(detail, '$.asked') = 'retry dead deliveries to city'"
        ),
        1000,
        "every retry names who asked and what"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_its_attempts_and_the_command_line() {
    let h = Harness::with_routes(TO_CITY).await;
    h.city.set_script(refusing());
    send(&h, 0, 3).await;
    wait_dead(&h, 3).await;

    // One delivery, with its attempts.
    let (s, list) = h.get("/v1/deliveries?state=dead").await;
    assert_eq!(s, 200);
    let id = list["deliveries"][0]["id"].as_i64().unwrap();
    let (s, one) = h.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(s, 200, "{one}");
    let events: Vec<&str> = one["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["attempted", "dead_lettered"], "{one}");
    assert_eq!(one["steps"][0]["detail"]["status"], 422, "{one}");
    // Unknown ids and paths: 404 in the JSON error shape.
    let (s, missing) = h.get("/v1/deliveries/999999").await;
    assert_eq!(
        (s, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, nowhere) = h.get("/v1/no-such-thing").await;
    assert_eq!(
        (s, nowhere["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, bad) = h.get("/v1/deliveries?state=stuck").await;
    assert_eq!((s, bad["error"]["code"].as_str()), (400, Some("bad_query")));
    let (s, leased) = h.get("/v1/deliveries?state=leased").await;
    assert_eq!(s, 200);
    assert_eq!(leased["deliveries"].as_array().unwrap().len(), 0);

    // The command line: list, show, then a retry that asks first.
    let (ok, text) = hallgate(
        &h,
        &[
            "deliveries",
            "list",
            "--destination",
            "city",
            "--state",
            "dead",
            "--json",
        ],
        "",
    );
    assert!(ok, "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let (ok, text) = hallgate(&h, &["deliveries", "show", &id.to_string()], "");
    assert!(
        ok && text.contains("dead_lettered") && text.contains("status 422"),
        "{text}"
    );
    let (ok, text) = hallgate(
        &h,
        &[
            "deliveries",
            "retry",
            "--destination",
            "city",
            "--state",
            "dead",
        ],
        "n\n",
    );
    assert!(
        ok && text.contains("3 dead letter(s)") && text.contains("nothing retried"),
        "{text}"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM deliveries WHERE state = 'dead'"),
        3
    );

    h.city.set_script(Script::default());
    let (ok, text) = hallgate(
        &h,
        &[
            "deliveries",
            "retry",
            "--destination",
            "city",
            "--state",
            "dead",
            "--yes",
        ],
        "",
    );
    assert!(ok && text.contains("3 delivery(ies) put back"), "{text}");
    wait_until(30, "3 deliveries", || h.city.accepted().len() >= 3).await;
    let by: Vec<String> = rusqlite::Connection::open(h.dir.path().join("hallgate.db"))
        .unwrap()
        .prepare("SELECT json_extract(detail, '$.by') FROM audit WHERE event = 'manually_retried'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(by.len(), 3);
    assert!(by.iter().all(|b| b.starts_with("cli ops-zhang@")), "{by:?}");
    // The single retry of a delivery that is not dead is a conflict, named.
    let r = h
        .client
        .post(format!("{}/v1/deliveries/{id}/retry", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_destination_holds_its_deliveries_until_resumed_across_a_restart() {
    let mut h = Harness::with_config(TO_CITY, supervision_operates).await;
    let control = |node: &'static str, dest: &'static str, action: &'static str| {
        h.client
            .post(format!("{}/v1/destinations/{dest}/{action}", h.url))
            .header("x-hallgate-node", node)
            .send()
    };
    assert_eq!(
        control("district-a", "city", "pause")
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        control("supervision", "nowhere", "pause")
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        control("supervision", "city", "pause")
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // Paused within a second (the watcher reads the store every second).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    send(&h, 0, 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(h.city.arrivals().is_empty(), "nothing sent while paused");
    assert_eq!(
        h.count("SELECT count(*) FROM deliveries WHERE state = 'pending'"),
        3
    );
    let (_, list) = h.get("/v1/destinations").await;
    let city = list["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "city")
        .unwrap()
        .clone();
    assert_eq!(
        (city["paused"].as_bool(), city["pending"].as_i64()),
        (Some(true), Some(3))
    );

    // Still paused after a restart, from its first lease on.
    h.stop_gateway().await;
    h.start_gateway().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        h.city.arrivals().is_empty(),
        "still paused after the restart"
    );

    // Resumed from the command line: delivered, each once.
    let (ok, text) = hallgate(&h, &["deliveries", "resume", "--destination", "city"], "");
    assert!(ok && text.contains("city: resumed"), "{text}");
    wait_until(20, "3 deliveries after resume", || {
        h.city.accepted().len() >= 3
    })
    .await;
    let by: Vec<String> = rusqlite::Connection::open(h.dir.path().join("hallgate.db"))
        .unwrap()
        .prepare(
            "SELECT json_extract(detail, '$.action') || ' by ' || json_extract(detail, '$.by')
             FROM audit WHERE event = 'destination_controlled' ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(by.len(), 2, "{by:?}");
    assert_eq!(by[0], "pause by node supervision");
    assert!(by[1].starts_with("resume by cli ops-zhang@"), "{by:?}");
}
