//! One record followed by its request id, as an operator would with grep: the
//! gateway binary runs with `--log-format json`; the id the sender chose comes back
//! in the answer and appears in the intake's access log line, in the audit events of
//! the intake, in the delivery's log line, and in the `X-Request-Id` the receiver
//! saw. A request without one gets a new one. Log lines are JSON, one per line, with
//! +08:00 times, no colour codes, and no personal data.

mod common;

use std::process::{Command, Stdio};

use common::load::{free_port, wait_healthy};
use common::*;
use hallgate::receiver::Receiver;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_follows_its_record_from_intake_to_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let city = Receiver::start("city", "127.0.0.1:0").await.unwrap();
    let other = Receiver::start("other", "127.0.0.1:0").await.unwrap();
    let port = free_port();
    let text = config_text(
        &dir.path().join("hallgate.db"),
        &city.url(),
        &other.url(),
        &other.url(),
        "[[routes]]\nname = \"r\"\nto = [\"city\"]\n",
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    ) + "\n[log]\nformat = \"json\"\n";
    let config = dir.path().join("hallgate.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("gateway.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = hallgate::tls::http_client().build().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&client, &url).await;

    let post = |id: Option<&'static str>, case: &'static str| {
        let mut req = client
            .post(format!("{url}/v1/records"))
            .header("x-hallgate-node", "district-a")
            .header("content-type", "application/json")
            .body(application(case, "350205").to_string());
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let r = post(Some("req-7f3a-hall"), "350205261204000001")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.headers()["x-request-id"], "req-7f3a-hall");
    // Without one, a new id.
    let r = post(None, "350205261204000002").await.unwrap();
    let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(made.len() >= 32 && made != "req-7f3a-hall", "{made}");

    wait_until(20, "two deliveries", || city.accepted().len() >= 2).await;
    let seen: Vec<String> = city
        .accepted()
        .iter()
        .map(|a| Receiver::header(a, "x-request-id").unwrap_or_default())
        .collect();
    assert!(seen.contains(&"req-7f3a-hall".to_string()), "{seen:?}");
    assert!(seen.contains(&made), "{seen:?}");
    // The delivery's log line is written after the receiver answers.
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    wait_until(10, "the delivered line", || {
        lines()
            .iter()
            .any(|l| l["message"] == "delivered" && l["request_id"] == "req-7f3a-hall")
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let lines = lines();
    let access = lines
        .iter()
        .find(|l| l["message"] == "request" && l["span"]["request_id"] == "req-7f3a-hall")
        .expect("the access log line");
    assert_eq!(access["status"], 202, "{access}");
    assert_eq!(access["span"]["node"], "district-a", "{access}");
    assert!(access["span"]["message_id"].is_string(), "{access}");
    assert!(access["duration_ms"].is_number(), "{access}");
    let delivered = lines
        .iter()
        .find(|l| l["message"] == "delivered" && l["request_id"] == "req-7f3a-hall")
        .unwrap();
    assert_eq!(delivered["destination"], "city", "{delivered}");
    // Times in +08:00, no colour codes, no personal data in any line.
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(
        access["timestamp"].as_str().unwrap().ends_with("+08:00"),
        "{access}"
    );
    assert!(!raw.contains('\u{1b}'), "no ANSI codes in a file");
    for clear in ["350205195912280259", "18659201234", "林晓东"] {
        assert!(!raw.contains(clear), "{clear} in the log");
    }

    // The intake's audit events carry the id.
    let db = rusqlite::Connection::open(dir.path().join("hallgate.db")).unwrap();
    let events: Vec<String> = db
        .prepare(
            "SELECT event FROM audit WHERE json_extract(detail, '$.request_id') = 'req-7f3a-hall'
             ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events, ["received", "accepted", "routed"], "{events:?}");
}
