//! Crash-test machinery: gateway binaries as child processes, senders that behave
//! like real sending systems (one record after another per case, each with its own
//! Idempotency-Key, resent to the next gateway until one answers 202), and the check
//! that every acknowledged record reached the receiver once per key, in order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hallgate::receiver::Receiver;
use serde_json::Value;

use super::{application, material, order_label, process, result};

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn spawn_gateway(config: &Path, log: &Path) -> Child {
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

pub async fn wait_healthy(client: &reqwest::Client, url: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gateway at {url} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn sigterm(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
}

/// The records of one case, in the order the sender produces them.
pub fn case_records(i: usize) -> Vec<Value> {
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

/// A record's identity at the receiver.
pub fn label(v: &Value) -> String {
    format!("{}-{}", v["case_no"].as_str().unwrap_or(""), order_label(v))
}

/// Start `workers` senders over `cases` cases. Record `j` of a sender goes first to
/// gateway `j % urls.len()`, then to the next one while unanswered. Returns the
/// count of acknowledged records (live) and the tasks (each yields its labels).
pub fn start_senders(
    client: &reqwest::Client,
    urls: &[String],
    cases: usize,
    workers: usize,
) -> (Arc<AtomicUsize>, tokio::task::JoinSet<Vec<String>>) {
    let acked = Arc::new(AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (client, urls, acked) = (client.clone(), urls.to_vec(), acked.clone());
        senders.spawn(async move {
            let mut acked_labels = Vec::new();
            let mut n = worker;
            for i in (worker..cases).step_by(workers) {
                for rec in case_records(i) {
                    let key = label(&rec);
                    let start = Instant::now();
                    let mut target = n;
                    n += 1;
                    loop {
                        assert!(
                            start.elapsed() < Duration::from_secs(90),
                            "sender gave up on {key}"
                        );
                        let url = &urls[target % urls.len()];
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
                            Err(_) => target += 1,
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
    (acked, senders)
}

pub async fn wait_acked(acked: &AtomicUsize, at_least: usize) {
    let start = Instant::now();
    while acked.load(Ordering::SeqCst) < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "load did not progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every acknowledged record reaches the receiver; each under one key; each case in
/// order. `log` is shown when something is missing.
pub async fn assert_all_delivered_once_in_order(
    receiver: &Receiver,
    senders: &mut tokio::task::JoinSet<Vec<String>>,
    cases: usize,
    log: &Path,
) {
    let mut all_acked = BTreeSet::new();
    while let Some(labels) = senders.join_next().await {
        all_acked.extend(labels.expect("sender task"));
    }
    let total = cases * case_records(0).len();
    assert_eq!(
        all_acked.len(),
        total,
        "every record was acknowledged in the end"
    );
    let start = Instant::now();
    loop {
        let got: BTreeSet<String> = receiver.accepted().iter().map(|a| label(&a.body)).collect();
        if all_acked.iter().all(|k| got.contains(k)) {
            break;
        }
        let missing: Vec<_> = all_acked
            .iter()
            .filter(|k| !got.contains(*k))
            .take(5)
            .collect();
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "records acknowledged but never delivered, e.g. {missing:?}; log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut first_seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in receiver.arrivals() {
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
    let repeats = receiver
        .arrivals()
        .iter()
        .filter(|a| a.status == 409)
        .count();
    eprintln!(
        "{} requests at the receiver for {total} records; {repeats} repeats after a crash answered 409",
        receiver.arrivals().len()
    );
    for (record, ks) in &keys {
        assert_eq!(ks.len(), 1, "{record} arrived under several keys: {ks:?}");
    }
    let expected: Vec<String> = case_records(0).iter().map(order_label).collect();
    assert_eq!(first_seen.len(), cases);
    for (case, order) in &first_seen {
        assert_eq!(order, &expected, "case {case} out of order");
    }
}
