//! Supervision across crashes and instances: an alert raised by a transition is
//! stored with it, so a SIGKILL between the transition and its delivery delivers it
//! once after the restart, under one Idempotency-Key; and two instances on one
//! PostgreSQL database raise each alert once, not twice.

mod common;

use std::time::Duration;

use common::load::*;
use common::*;
use hallgate::receiver::{Receiver, Script};
use hallgate::time::{Clock, now_ms, parse_time, rfc3339};
use serde_json::{Value, json};

const ROUTES: &str = "[[routes]]\nname = \"all\"\nto = [\"city\"]\n\n[[routes]]\nname = \"alerts\"\nkinds = [\"alert\"]\nto = [\"supervision\"]\n";

fn supervised(text: String) -> String {
    text.replace(
        "[nodes.supervision]\n",
        "[nodes.supervision]\nroles = [\"auditor\"]\n",
    ) + "\n[supervision]\nenabled = true\nsweep_ms = 100\n"
}

fn app(case_no: &str, accepted_ms: i64, value: i64, unit: &str) -> Value {
    let mut a = application(case_no, "350205");
    a["accepted_at"] = json!(rfc3339(accepted_ms));
    a["promise"] = json!({"value": value, "unit": unit});
    a["accept_dept"] = json!({"code": "11350200003602000F", "name": "厦门市规划局"});
    a
}

fn alert_arrivals(r: &Receiver, case_no: &str) -> Vec<hallgate::receiver::Arrival> {
    r.arrivals()
        .into_iter()
        .filter(|a| a.case_no == case_no && a.kind == "alert")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_the_transition_and_the_delivery_delivers_the_alert_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    let sv = Receiver::start("supervision", "127.0.0.1:0")
        .await
        .expect("receiver");
    // The supervision platform is down: the alert is stored and waits.
    sv.set_script(Script {
        fail_cases: vec!["SV-K".into()],
        ..Script::default()
    });
    let port = free_port();
    let text = supervised(
        config_text(
            &dir.path().join("hallgate.db"),
            &city.url(),
            &city.url(),
            &sv.url(),
            ROUTES,
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    );
    let config = dir.path().join("hallgate.toml");
    std::fs::write(&config, text).expect("config");
    let log = dir.path().join("gateway.log");
    let url = format!("http://127.0.0.1:{port}");
    let client = hallgate::tls::http_client().build().expect("client");
    let mut child = spawn_gateway(&config, &log);
    wait_healthy(&client, &url).await;
    // Accepted three hours ago, promised one hour: overdue at the first look.
    let body = app("SV-K", now_ms() - 3 * 3_600_000, 1, "hour");
    let resp = client
        .post(format!("{url}/v1/records"))
        .header("content-type", "application/json")
        .header("x-hallgate-node", "district-a")
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    wait_until(20, "the alert tried and refused", || {
        !alert_arrivals(&sv, "SV-K").is_empty()
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    sv.set_script(Script::default());
    let mut child = spawn_gateway(&config, &log);
    wait_healthy(&client, &url).await;
    wait_until(30, "the alert delivered", || {
        alert_arrivals(&sv, "SV-K").iter().any(|a| a.status == 200)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let arrivals = alert_arrivals(&sv, "SV-K");
    let accepted: Vec<_> = arrivals.iter().filter(|a| a.status == 200).collect();
    assert_eq!(accepted.len(), 1, "one alert delivered");
    assert_eq!(accepted[0].body["state"], "overdue");
    let keys: std::collections::BTreeSet<&str> = arrivals
        .iter()
        .map(|a| a.idempotency_key.as_str())
        .collect();
    assert_eq!(keys.len(), 1, "every attempt under one key: {keys:?}");
    // One transition, not a second one after the restart.
    let resp = client
        .get(format!("{url}/v1/supervision/cases/SV-K"))
        .header("x-hallgate-node", "supervision")
        .send()
        .await
        .expect("get");
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    assert_eq!(v["state"], "overdue", "{v}");
    assert_eq!(v["transitions"], 1, "{v}");
    sigterm(&child);
    child.wait().expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgresql_raise_each_alert_once() {
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    let sv = Receiver::start("supervision", "127.0.0.1:0")
        .await
        .expect("receiver");
    let clock = Clock::manual(parse_time("2026-03-02T10:00:00+08:00").expect("time"));
    let mut running = Vec::new();
    for name in ["a", "b"] {
        let hallgate_key = dir
            .path()
            .join(format!("{name}/certs/gateway-signing.key.pem"));
        hallgate::keys::generate_key(&hallgate_key).expect("key");
        let text = supervised(
            config_text(
                std::path::Path::new("UNUSED"),
                &city.url(),
                &city.url(),
                &sv.url(),
                ROUTES,
            )
            .replace("sqlite://UNUSED", &db)
            .replace("id = \"gw-test\"", &format!("id = \"gw-{name}\"")),
        );
        let path = dir.path().join(format!("{name}/hallgate.toml"));
        std::fs::write(&path, text).expect("config");
        let mut config = hallgate::config::Config::load(&path).expect("config");
        config.supervision.clock = clock.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        running.push(
            hallgate::gateway::start(config, Some(listener))
                .await
                .expect("gateway"),
        );
    }
    let client = hallgate::tls::http_client().build().expect("client");
    const CASES: usize = 30;
    for i in 0..CASES {
        // Half through each instance.
        let url = running[i % 2].url();
        let accepted = parse_time("2026-03-02T09:00:00+08:00").expect("time");
        let resp = client
            .post(format!("{url}/v1/records"))
            .header("content-type", "application/json")
            .header("x-hallgate-node", "district-a")
            .body(app(&format!("SV-PG-{i}"), accepted, 2, "workday").to_string())
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 202);
    }
    // Both timers see every case on time; then the clock passes every deadline.
    tokio::time::sleep(Duration::from_millis(600)).await;
    clock.set(parse_time("2026-03-05T10:00:00+08:00").expect("time"));
    wait_until(30, "an overdue alert per case", || {
        sv.accepted().iter().filter(|a| a.kind == "alert").count() >= CASES
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let alerts: Vec<_> = sv
        .accepted()
        .into_iter()
        .filter(|a| a.kind == "alert")
        .collect();
    assert_eq!(alerts.len(), CASES, "one alert per case, not two");
    let cases: std::collections::BTreeSet<String> =
        alerts.iter().map(|a| a.case_no.clone()).collect();
    assert_eq!(cases.len(), CASES);
    assert!(alerts.iter().all(|a| a.body["state"] == "overdue"));
    for r in running {
        r.shutdown().await;
    }
}
