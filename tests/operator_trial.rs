//! Frictions an operator trial found, each a wrong answer fixed (issue 21, item 7):
//! - a duplicate is not counted as accepted (`records_duplicate_total` counts it);
//! - every node's and destination's series start at 0, and requests are counted
//!   by status;
//! - `hallgate check` loads the TLS files as `serve` does;
//! - a destination that refuses connections says "connection refused to host:port".

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

const TO_CITY: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

/// The value of one series in the Prometheus text.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_counted_apart_and_quiet_series_show_zero() {
    let h = Harness::with_routes(TO_CITY).await;
    let m = h.metrics().await;
    // Nobody in this test binary sends as district-b or delivers to the province.
    assert_eq!(
        series(&m, "hallgate_records_accepted_total{node=\"district-b\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        series(
            &m,
            "hallgate_deliveries_delivered_total{destination=\"province\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        series(&m, "hallgate_queue_depth{destination=\"province\"}"),
        Some(0.0)
    );

    let accepted = "hallgate_records_accepted_total{node=\"district-a\"}";
    let duplicate = "hallgate_records_duplicate_total{node=\"district-a\"}";
    let before = h.metrics().await;
    let (a0, d0) = (
        series(&before, accepted).unwrap_or(0.0),
        series(&before, duplicate).unwrap_or(0.0),
    );
    let mut record = application("350205261204000801", "350205");
    record["version"] = json!(3);
    // The first time accepted; the same body under the same key replayed; the same
    // record under another key recognised as a duplicate.
    assert_eq!(h.post("district-a", &record, Some("k-1")).await.0, 202);
    assert_eq!(h.post("district-a", &record, Some("k-1")).await.0, 202);
    let (s, _, body) = h.post("district-a", &json!([record]), Some("k-2")).await;
    assert_eq!(s, 202);
    assert_eq!(body["records"][0]["status"], "duplicate", "{body}");
    let after = h.metrics().await;
    assert_eq!(series(&after, accepted).unwrap_or(0.0) - a0, 1.0, "{after}");
    assert_eq!(
        series(&after, duplicate).unwrap_or(0.0) - d0,
        2.0,
        "{after}"
    );
    assert!(
        series(&after, "hallgate_requests_total{status=\"202\"}").unwrap_or(0.0) >= 3.0,
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_loads_the_tls_files_as_serve_does() {
    let h = Harness::with_routes(TO_CITY).await;
    let dir = h.dir.path();
    std::fs::write(dir.join("server.pem"), "not a certificate\n").unwrap();
    std::fs::write(dir.join("server.key.pem"), "not a key\n").unwrap();
    let config = dir.join("hallgate.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "shutdown_grace_seconds = 10",
        "shutdown_grace_seconds = 10\n\n[gateway.tls]\ncert = \"server.pem\"\nkey = \"server.key.pem\"",
    );
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(&broken)
        .arg("check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check must fail: {err}");
    assert!(err.contains("gateway.tls"), "{err}");
}

/// `hallgate check` on `text`: its success and what it printed.
fn check(dir: &std::path::Path, text: &str) -> (bool, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_problem_at_its_keys_own_line() {
    let h = Harness::with_routes(TO_CITY).await;
    let dir = h.dir.path();
    let good = std::fs::read_to_string(dir.join("hallgate.toml")).unwrap();

    // A value problem under a table header: at the key's line, not the header's.
    let text = good.replace("concurrency = 2 }", "concurrency = 0 }");
    let (ok, err) = check(dir, &text);
    assert!(!ok);
    let line = line_of(&text, "concurrency = 0");
    assert!(
        err.contains(&format!(
            "check.toml:{line}: nodes.supervision.destination.concurrency"
        )),
        "{err}"
    );
    // A setting with no span of its own (checked after parsing).
    let text = good.replace(
        "trust_node_header = true",
        "trust_node_header = true
metrics = \"everyone\"",
    );
    let (ok, err) = check(dir, &text);
    assert!(!ok);
    let line = line_of(&text, "metrics = ");
    assert!(
        err.contains(&format!("check.toml:{line}: gateway.metrics")),
        "{err}"
    );
    // A type error names its key.
    let text = good.replace(
        "shutdown_grace_seconds = 10",
        "shutdown_grace_seconds = \"ten\"",
    );
    let (ok, err) = check(dir, &text);
    assert!(!ok);
    let line = line_of(&text, "shutdown_grace_seconds");
    assert!(
        err.contains(&format!(
            "check.toml:{line}: gateway.shutdown_grace_seconds: invalid type"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_named_as_such() {
    fn closed_port(t: String) -> String {
        // The city's URL points at a port nobody listens on.
        let at = t.find("[nodes.city]").unwrap();
        let (head, tail) = t.split_at(at);
        let start = tail.find("url = \"").unwrap() + 7;
        let end = start + tail[start..].find('"').unwrap();
        format!(
            "{head}{}http://127.0.0.1:9/records{}",
            &tail[..start],
            &tail[end..]
        )
    }
    let h = Harness::with_config(TO_CITY, closed_port).await;
    let (s, _, _) = h
        .post(
            "district-a",
            &application("350205261204000901", "350205"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    let d = h.first_delivery("/v1/deliveries?destination=city").await;
    let mut error = String::new();
    for _ in 0..200 {
        let (_, list) = h.get("/v1/deliveries?destination=city").await;
        error = list["deliveries"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if !error.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(!d.is_null());
    assert_eq!(error, "connection refused to 127.0.0.1:9", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_kept_for_operators() {
    fn operator_metrics(t: String) -> String {
        t.replace(
            "trust_node_header = true",
            "trust_node_header = true\nmetrics = \"operator\"",
        )
        .replace(
            "level = \"department\"\ndestination",
            "level = \"department\"\nroles = [\"operator\"]\ndestination",
        )
    }
    let h = Harness::with_config(TO_CITY, operator_metrics).await;
    let get = |node: &'static str| {
        h.client
            .get(format!("{}/metrics", h.url))
            .header("x-hallgate-node", node)
            .send()
    };
    let r = get("district-a").await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("roles = [\\\"operator\\\"]"), "{text}");
    let r = get("supervision").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("hallgate_requests_total"));
}
