//! Reloading the configuration while serving (issue 21, item 1), over real HTTP to
//! the real binary and in process:
//! - a node added to the file and a SIGHUP: it is accepted without a restart, while
//!   another node's load goes on with no failed request;
//! - a broken file: the old configuration keeps serving, `hallgate reload` prints
//!   file:line, a setting that cannot change at runtime is refused by name, and a
//!   node without the operator role gets 403 naming it;
//! - a removed destination's backlog is reported and kept, and delivered once it is
//!   added back;
//! - every reload, done or refused, is audited with the SHA-256 of the files read.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::load::{free_port, spawn_gateway, wait_healthy};
use common::*;
use hallgate::receiver::{Receiver, Script};
use serde_json::{Value, json};

const TO_CITY: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

/// An operator node that signs its tokens with an ES256 key.
const OPS: &str = r#"
[nodes.ops]
name = "运维值班"
level = "city"
roles = ["operator"]

[nodes.ops.auth]
algorithms = ["ES256"]
keys = ["keys/ops.pub.pem"]
"#;

const DISTRICT_C: &str = r#"
[nodes.district-c]
name = "同安区"
level = "district"
region = "350212"
accept = { kinds = ["application"], regions = ["350212"] }
"#;

fn hup(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
}

/// A config folder with the gateway's and the operator's keys, its file listening
/// on `port`, routed to `city`.
fn setup(dir: &Path, port: u16, city: &Receiver, extra: &str) -> String {
    hallgate::keys::generate_key(&dir.join("certs/gateway-signing.key.pem")).expect("key");
    hallgate::keys::generate_key(&dir.join("keys/ops.key.pem")).expect("key");
    let text = config_text(
        &dir.join("hallgate.db"),
        &city.url(),
        &city.url(),
        &city.url(),
        TO_CITY,
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let text = format!("{text}{OPS}{extra}");
    std::fs::write(dir.join("hallgate.toml"), &text).expect("config");
    text
}

async fn post_as(client: &reqwest::Client, url: &str, node: &str, body: &Value) -> (u16, Value) {
    let r = client
        .post(format!("{url}/v1/records"))
        .header("x-hallgate-node", node)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn reload_cli(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(dir.join("hallgate.toml"))
        .arg("reload")
        .args(args)
        .output()
        .expect("hallgate reload");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The `config_reloaded` events' details, read from the store file.
fn reload_events(dir: &Path) -> Vec<Value> {
    let db = rusqlite::Connection::open(dir.join("hallgate.db")).expect("store");
    let mut q = db
        .prepare("SELECT detail FROM audit WHERE event = 'config_reloaded' ORDER BY seq")
        .expect("query");
    q.query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|d| serde_json::from_str(&d.expect("row")).expect("json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_by_sighup_is_accepted_while_another_nodes_load_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    let port = free_port();
    let text = setup(dir.path(), port, &city, "");
    let url = format!("http://127.0.0.1:{port}");
    let mut child = spawn_gateway(&dir.path().join("hallgate.toml"), &dir.path().join("log"));
    let client = hallgate::tls::http_client().build().expect("client");
    wait_healthy(&client, &url).await;

    let newcomer = json!(application("350212261204000001", "350212"));
    let (status, body) = post_as(&client, &url, "district-c", &newcomer).await;
    assert!(status == 401 || status == 403, "{status} {body}");

    // district-a sends one body after another throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, sent, client, url) = (stop.clone(), sent.clone(), client.clone(), url.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = json!([application(&format!("350205261204{i:06}"), "350205")]);
                let (status, answer) = post_as(&client, &url, "district-a", &body).await;
                if status != 202 {
                    failures.push(format!("{status} {answer}"));
                }
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            failures
        })
    };
    wait_until(30, "some load before the reload", || {
        sent.load(Ordering::Relaxed) >= 20
    })
    .await;

    std::fs::write(
        dir.path().join("hallgate.toml"),
        format!("{text}{DISTRICT_C}"),
    )
    .expect("edit");
    hup(&child);
    let started = std::time::Instant::now();
    loop {
        let (status, body) = post_as(&client, &url, "district-c", &newcomer).await;
        if status == 202 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 20,
            "district-c still refused after SIGHUP: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let at_reload = sent.load(Ordering::Relaxed);
    wait_until(30, "load after the reload", || {
        sent.load(Ordering::Relaxed) >= at_reload + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let failures = load.await.expect("load task");
    assert!(
        failures.is_empty(),
        "failed requests during the reload: {failures:?}"
    );
    let total = sent.load(Ordering::Relaxed) as u64 + 1;
    wait_until(60, "every record delivered", || {
        city.accepted_total() >= total
    })
    .await;

    // Audited with who asked and the config file's SHA-256.
    let events = reload_events(dir.path());
    let done = events
        .iter()
        .find(|e| e["reloaded"] == json!(true))
        .unwrap_or_else(|| panic!("no config_reloaded event: {events:?}"));
    assert_eq!(done["by"], "SIGHUP");
    assert_eq!(done["nodes"]["added"], json!(["district-c"]));
    let config_bytes = std::fs::read(dir.path().join("hallgate.toml")).expect("config");
    let sha = hallgate::hash::sha256_hex(&config_bytes);
    assert!(
        done["files"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["sha256"] == json!(sha))),
        "{done}"
    );
    common::load::sigterm(&child);
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_leaves_the_old_one_serving_and_reload_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    let port = free_port();
    let text = setup(dir.path(), port, &city, "");
    let url = format!("http://127.0.0.1:{port}");
    let mut child = spawn_gateway(&dir.path().join("hallgate.toml"), &dir.path().join("log"));
    let client = hallgate::tls::http_client().build().expect("client");
    wait_healthy(&client, &url).await;
    let key = dir.path().join("keys/ops.key.pem");
    let key = key.to_str().expect("path");
    let as_ops = ["--node", "ops", "--key", key];

    // A route to a destination that does not exist, on a line of its own.
    let broken = format!("{text}\n[[routes]]\nname = \"typo\"\nto = [\"citty\"]\n");
    let line = broken
        .lines()
        .position(|l| l.contains("citty"))
        .expect("line")
        + 1;
    std::fs::write(dir.path().join("hallgate.toml"), &broken).expect("edit");
    hup(&child);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (status, body) = post_as(
        &client,
        &url,
        "district-a",
        &json!(application("350205261204000001", "350205")),
    )
    .await;
    assert_eq!(status, 202, "the old configuration serves: {body}");

    let (ok, out) = reload_cli(dir.path(), &as_ops);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("hallgate.toml:{line}")),
        "no file:line in: {out}"
    );
    assert!(out.contains("citty"), "{out}");

    // A setting that cannot change while running is refused by name.
    let moved = text.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:1");
    std::fs::write(dir.path().join("hallgate.toml"), &moved).expect("edit");
    let (ok, out) = reload_cli(dir.path(), &["--url", &url, "--node", "ops", "--key", key]);
    assert!(!ok, "{out}");
    assert!(out.contains("gateway.listen cannot change"), "{out}");

    // Only operators reload: a sending node is told which role it lacks.
    let r = client
        .post(format!("{url}/v1/admin/reload"))
        .header("x-hallgate-node", "district-a")
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 403);
    let body: Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("operator")),
        "{body}"
    );

    // Fixed, it reloads; the report names what changed.
    std::fs::write(
        dir.path().join("hallgate.toml"),
        format!("{text}{DISTRICT_C}"),
    )
    .expect("edit");
    let (ok, out) = reload_cli(dir.path(), &as_ops);
    assert!(ok, "{out}");
    assert!(out.contains("nodes: added district-c"), "{out}");
    let events = reload_events(dir.path());
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["reloaded"] == json!(false))
        .collect();
    assert_eq!(
        refused.len(),
        3,
        "SIGHUP, the CLI, the listen change: {events:?}"
    );
    assert!(events.iter().any(|e| e["by"] == json!("node ops")));
    common::load::sigterm(&child);
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_destinations_backlog_is_reported_and_kept() {
    let routes = "[[routes]]\nname = \"r\"\nto = [\"city\", \"province\"]\n";
    let h = Harness::with_routes(routes).await;
    h.province.set_script(Script {
        status: 503,
        ..Script::default()
    });
    let records: Vec<Value> = (0..30)
        .map(|i| application(&format!("350205261204{i:06}"), "350205"))
        .collect();
    let (status, _, body) = h.post("district-a", &json!(records), None).await;
    assert_eq!(status, 202, "{body}");
    wait_until(30, "the city has all 30", || h.city.accepted_total() >= 30).await;

    // The province leaves the configuration while 30 deliveries wait for it.
    let path = h.dir.path().join("hallgate.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let start = text.find("[nodes.province]").expect("province");
    let end = text[start..].find("[nodes.supervision]").expect("next") + start;
    let without = format!("{}{}", &text[..start], &text[end..])
        .replace("to = [\"city\", \"province\"]", "to = [\"city\"]");
    std::fs::write(&path, &without).expect("edit");
    let report = h.running().reload("test").await.expect("reloaded");
    assert_eq!(
        report["destinations"]["removed"],
        json!(["province"]),
        "{report}"
    );
    let kept = &report["kept_backlog"][0];
    assert_eq!(kept["destination"], "province");
    assert_eq!(kept["pending"], 30, "{report}");
    assert_eq!(
        h.count(
            "SELECT count(*) FROM deliveries WHERE destination = 'province' AND state = 'pending'"
        ),
        30
    );

    // Back in the file, and answering: each delivered once.
    h.province.set_script(Script::default());
    std::fs::write(&path, &text).expect("edit");
    let report = h.running().reload("test").await.expect("reloaded");
    assert_eq!(
        report["destinations"]["added"],
        json!(["province"]),
        "{report}"
    );
    wait_until(60, "the province has all 30", || {
        h.province.accepted_total() >= 30
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(h.province.accepted_total(), 30);
    assert_eq!(
        h.count(
            "SELECT count(*) FROM deliveries WHERE destination = 'province' AND state = 'delivered'"
        ),
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes() {
    let h = Harness::with_config(TO_CITY, |t| {
        t.replace(
            "trust_node_header = true",
            "trust_node_header = true\nwatch_config = true",
        )
    })
    .await;
    let newcomer = json!(application("350212261204000001", "350212"));
    let (status, _) = post_as(&h.client, &h.url, "district-c", &newcomer).await;
    assert!(status == 401 || status == 403, "{status}");
    let path = h.dir.path().join("hallgate.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, format!("{text}{DISTRICT_C}")).expect("edit");
    let started = std::time::Instant::now();
    loop {
        let (status, body) = post_as(&h.client, &h.url, "district-c", &newcomer).await;
        if status == 202 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 20,
            "not reloaded: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let events = reload_events(h.dir.path());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["by"], "watch_config (a file changed)");
}
