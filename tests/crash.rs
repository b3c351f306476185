//! Crash safety: the gateway binary is killed with SIGKILL while records stream in
//! and deliveries run, then restarted on the same data. Every record that got a 202
//! must reach the receiver, in order per case, never under two different
//! Idempotency-Keys.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hallgate::receiver::{Receiver, Script};
use serde_json::Value;

const CASES: usize = 60;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn spawn_gateway(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the gateway binary")
}

async fn wait_healthy(client: &reqwest::Client, url: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gateway did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The records of one case, in the order the sender produces them.
fn case_records(i: usize) -> Vec<Value> {
    let case = format!("3502052604020{i:05}");
    vec![
        application(&case, "350205"),
        material(&case, "350205", "m-1"),
        material(&case, "350205", "m-2"),
        process(&case, "350205", 1),
        process(&case, "350205", 2),
        result(&case, "350205"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    city.set_script(Script {
        delay: Duration::from_millis(3),
        ..Script::default()
    });
    // Province and supervision exist in the config but are routed nothing here.
    let idle = Receiver::start("idle", "127.0.0.1:0")
        .await
        .expect("receiver");
    let port = free_port();
    let text = config_text(
        &dir.path().join("hallgate.db"),
        &city.url(),
        &idle.url(),
        &idle.url(),
        "[[routes]]\nname = \"all\"\nto = [\"city\"]\n",
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config = dir.path().join("hallgate.toml");
    std::fs::write(&config, text).expect("config");
    let log = dir.path().join("gateway.log");
    let url = format!("http://127.0.0.1:{port}");
    let client = hallgate::delivery::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    let mut child = spawn_gateway(&config, &log);
    wait_healthy(&client, &url).await;

    // Senders: each case's records posted one after another, each with its own
    // Idempotency-Key, retried (same key) until the gateway answers 202 — as a real
    // sending system does.
    let acked = Arc::new(AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
        senders.spawn(async move {
            let mut acked_labels = Vec::new();
            for i in (worker..CASES).step_by(4) {
                for rec in case_records(i) {
                    let key = format!("{}-{}", rec["case_no"].as_str().unwrap(), order_label(&rec));
                    let start = Instant::now();
                    loop {
                        assert!(
                            start.elapsed() < Duration::from_secs(60),
                            "sender gave up on {key}"
                        );
                        let sent = client
                            .post(format!("{url}/v1/records"))
                            .header("content-type", "application/json")
                            .header("x-hallgate-node", "district-a")
                            .header("idempotency-key", &key)
                            .body(rec.to_string())
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status().as_u16() == 202 => break,
                            Ok(r) => assert!(
                                r.status().is_server_error(),
                                "unexpected {} for {key}",
                                r.status()
                            ),
                            Err(_) => {}
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                    acked_labels.push(key);
                }
            }
            acked_labels
        });
    }

    let total = CASES * 6;
    for kill_at in [total / 4, total * 3 / 5] {
        let start = Instant::now();
        while acked.load(Ordering::SeqCst) < kill_at {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "load did not progress"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        tokio::time::sleep(Duration::from_millis(100)).await;
        child = spawn_gateway(&config, &log);
        wait_healthy(&client, &url).await;
    }
    let mut all_acked = BTreeSet::new();
    while let Some(labels) = senders.join_next().await {
        all_acked.extend(labels.expect("sender task"));
    }
    assert_eq!(
        all_acked.len(),
        total,
        "every record was acknowledged in the end"
    );

    // Every acknowledged record reaches the receiver.
    let label = |v: &Value| format!("{}-{}", v["case_no"].as_str().unwrap_or(""), order_label(v));
    let start = Instant::now();
    loop {
        let got: BTreeSet<String> = city.accepted().iter().map(|a| label(&a.body)).collect();
        if all_acked.iter().all(|k| got.contains(k)) {
            break;
        }
        let missing: Vec<_> = all_acked
            .iter()
            .filter(|k| !got.contains(*k))
            .take(5)
            .collect();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "records acknowledged but never delivered, e.g. {missing:?}; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // In order per case, and one Idempotency-Key per record.
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut first_seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in city.arrivals() {
        keys.entry(label(&a.body))
            .or_default()
            .insert(a.idempotency_key.clone());
        if (200..300).contains(&a.status) {
            first_seen
                .entry(a.case_no.clone())
                .or_default()
                .push(order_label(&a.body));
        }
    }
    let repeats = city.arrivals().iter().filter(|a| a.status == 409).count();
    eprintln!(
        "{} requests at the receiver for {} records; {repeats} repeats after a crash answered 409",
        city.arrivals().len(),
        total
    );
    for (record, ks) in &keys {
        assert_eq!(ks.len(), 1, "{record} arrived under several keys: {ks:?}");
    }
    let expected: Vec<String> = case_records(0).iter().map(order_label).collect();
    assert_eq!(first_seen.len(), CASES);
    for (case, order) in &first_seen {
        assert_eq!(order, &expected, "case {case} out of order");
    }

    // Stop the last instance cleanly (SIGTERM) and check the store it leaves.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let exit = child.wait().expect("exit");
    assert!(exit.success(), "graceful exit on SIGTERM: {exit:?}");
    let store = hallgate::store::SqliteStore::open(
        &dir.path().join("hallgate.db"),
        &hallgate::store::StoreOptions::default(),
        hallgate::store::OpenMode::Serve,
    )
    .expect("reopen");
    use hallgate::store::Store;
    let pending = store
        .deliveries(hallgate::store::DeliveryFilter {
            state: Some(hallgate::store::DeliveryState::Pending),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("query");
    assert!(pending.is_empty(), "nothing left pending: {pending:?}");
    hallgate::audit::verify_store(&store, None, None, |_| {})
        .await
        .expect("audit chain intact after two SIGKILLs");
    city.stop();
    idle.stop();
}
