//! One hostile sender must not stall, flood or read across the gateway: each test
//! here is one hole a hostile-input review found, tried over real HTTP against the
//! real gateway (docs/security.md).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ONE_ROUTE: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

fn big_bodies(t: String) -> String {
    let zj = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/zj/application.toml");
    t.replace("max_body_bytes = 65536", "max_body_bytes = 16777216")
        .replace(
            "accept = { kinds = [\"application\", \"material\"], regions = [\"330122\"] }",
            &format!(
                "accept = {{ kinds = [\"application\", \"material\"], regions = [\"330122\"] }}\nmappings = [\"{zj}\"]"
            ),
        )
}

async fn status_and_body(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let b = r.bytes().await.unwrap_or_default();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_many_attributes_is_refused_at_once_and_health_answers_meanwhile() {
    let h = Harness::with_config(ONE_ROUTE, big_bodies).await;
    // 300,000 attributes on one record element (about 3.6 MB): quadratic before.
    let mut body = String::from("<RECORDS><RECORD");
    for i in 0..300_000 {
        body.push_str(&format!(" a{i}=\"1\""));
    }
    body.push_str("><PROJID>330122260324000001</PROJID></RECORD></RECORDS>");
    let started = Instant::now();
    let mut posts = Vec::new();
    for _ in 0..8 {
        let req = h
            .client
            .post(format!("{}/v1/records", h.url))
            .header("x-hallgate-node", "district-b")
            .header("content-type", "application/xml")
            .body(body.clone());
        posts.push(tokio::spawn(async move {
            status_and_body(req.send().await.unwrap()).await
        }));
    }
    // Health answers while the bodies are read and refused.
    let mut slowest = Duration::ZERO;
    while posts.iter().any(|p| !p.is_finished()) {
        let t = Instant::now();
        let r = h
            .client
            .get(format!("{}/healthz", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in posts {
        let (s, b) = p.await.unwrap();
        assert_eq!(s, 400, "{b}");
        assert_eq!(b["error"]["code"], "too_many_attributes", "{b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_attributes"),
            "{b}"
        );
    }
    assert!(slowest < Duration::from_secs(1), "healthz took {slowest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "eight bodies took {:?}",
        started.elapsed()
    );
    // Too many elements in one body, and a JSON object with too many keys.
    let many = format!(
        "<RECORDS><RECORD>{}</RECORD></RECORDS>",
        "<X/>".repeat(250_000)
    );
    let (s, b) = status_and_body(
        h.raw(
            format!("{}/v1/records", h.url),
            Some("district-b"),
            Some("application/xml"),
            many,
        )
        .await,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "too_many_elements", "{b}");
    let keys: String = (0..300_000).map(|i| format!("\"k{i}\":1,")).collect();
    let json_body = format!("{{{keys}\"kind\":\"application\"}}");
    let (s, b) = status_and_body(
        h.raw(
            format!("{}/v1/records", h.url),
            Some("district-a"),
            Some("application/json"),
            json_body,
        )
        .await,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "too_many_elements", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_limits_and_identifier_syntax_hold_for_canonical_json() {
    let h = Harness::with_config(ONE_ROUTE, big_bodies).await;
    // A 3 MB item name from a node that sends canonical JSON.
    let mut app = application("350205260401000901", "350205");
    app["item_name"] = json!("许".repeat(1_000_000));
    let (s, _, b) = h.post("district-a", &app, None).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "string_too_long", "{b}");
    // Case numbers: 100 KB, NUL, a right-to-left override, SQL.
    for (what, case_no, rule) in [
        ("100 KB", "9".repeat(100_000), "case_no"),
        ("NUL", "350205260401\u{0}000902".to_string(), "control_char"),
        (
            "RLO",
            "350205260401\u{202e}000903".to_string(),
            "control_char",
        ),
        ("SQL", "1'; DROP TABLE records; --".to_string(), "case_no"),
    ] {
        let (s, _, b) = h
            .post("district-a", &application(&case_no, "350205"), None)
            .await;
        assert_eq!(s, 422, "{what}: {b}");
        let details = b["error"]["details"].as_array().unwrap();
        assert!(
            details
                .iter()
                .any(|d| d["field"] == "case_no" && d["rule"] == rule),
            "{what}: {b}"
        );
        // The message never repeats the value.
        assert!(!b.to_string().contains("DROP TABLE"), "{what}: {b}");
    }
    // Bidi overrides and control characters in any field; line breaks kept.
    let mut app = application("350205260401000904", "350205");
    app["project_name"] = json!("卫生许可\u{202e}gpj.exe");
    let (s, _, b) = h.post("district-a", &app, None).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["details"][0]["field"], "project_name", "{b}");
    let mut app = application("350205260401000905", "350205");
    app["project_name"] = json!("第一行\n第二行\t附注");
    let (s, _, b) = h.post("district-a", &app, None).await;
    assert_eq!(s, 202, "{b}");
    // Nothing of the refused ones was stored.
    let c = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
    let stored: i64 = c
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 1);
}

fn parties(t: String) -> String {
    format!(
        "{t}
[nodes.inspector]
name = \"海沧区市场监管\"
level = \"department\"
accept = {{ kinds = [\"process\"], regions = [\"3502\"] }}
"
    )
    .replace(
        "destination = { url = \"",
        "accept = { kinds = [\"process\", \"result\"] }\ndestination = { url = \"",
    )
}

async fn get_as(h: &Harness, node: &str, path: &str) -> (u16, Value) {
    let r = h
        .client
        .get(format!("{}{path}", h.url))
        .header("x-hallgate-node", node)
        .send()
        .await
        .unwrap();
    status_and_body(r).await
}

/// Everything to the city; what the city sends back goes to the province.
const BACK_ROUTES: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n\n[[routes]]\nname = \"back\"\nsources = [\"city\"]\nto = [\"province\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_neither_adds_to_nor_reads_a_case_it_is_not_a_party_of() {
    let h = Harness::with_config(BACK_ROUTES, parties).await;
    let case = "350205260401000910";
    let (s, _, b) = h
        .post("district-a", &application(case, "350205"), None)
        .await;
    assert_eq!(s, 202, "{b}");
    // district-b (330122) adds a material of its own region to district-a's case.
    let (s, _, b) = h
        .post("district-b", &material(case, "330122", "M-1"), None)
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "not_a_party", "{b}");
    assert_eq!(b["error"]["details"][0]["field"], "case_no", "{b}");
    // ...nor reads it.
    let (s, b) = get_as(&h, "district-b", &format!("/v1/cases/{case}")).await;
    assert_eq!(s, 403, "{b}");
    // The department the application was routed to posts its steps and result.
    let (s, _, b) = h.post("city", &process(case, "350205", 1), None).await;
    assert_eq!(s, 202, "{b}");
    let (s, _, b) = h.post("city", &result(case, "350205"), None).await;
    assert_eq!(s, 202, "{b}");
    // A node its config grants the region joins too, and reads the case.
    let (s, _, b) = h.post("inspector", &process(case, "350205", 2), None).await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = get_as(&h, "inspector", &format!("/v1/cases/{case}")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["records"].as_array().unwrap().len(), 4, "{b}");
    // district-b opens its own cases as before.
    let (s, _, b) = h
        .post(
            "district-b",
            &material("330122260401000911", "330122", "M-1"),
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    // Both refusals are evidence.
    let c = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
    let refused: Vec<String> = c
        .prepare("SELECT detail FROM audit WHERE event = 'authorization_refused' AND node = 'district-b' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].contains("not_a_party"), "{}", refused[0]);
}

fn slow_limits(t: String) -> String {
    t.replace(
        "max_records_per_body = 100",
        "max_records_per_body = 100\nmax_in_flight = 24\nbody_timeout_seconds = 2\nheader_timeout_seconds = 2",
    )
}

/// Open a connection, send a request head for a 2,000-byte body and ten bytes of it,
/// then one byte every 300 ms until answered; the status line's code.
async fn drip(addr: String, node: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/records HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-hallgate-node: {node}\r\ncontent-length: 2000\r\n\r\n[{{\"kind\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            n = s.read(&mut buf) => {
                let n = n.unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]);
                return text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if s.write_all(b" ").await.is_err() {
                    return 0;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_are_cut_and_hold_only_their_own_share() {
    let h = Harness::with_config(ONE_ROUTE, slow_limits).await;
    let addr = h.url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let drippers: Vec<_> = (0..20)
        .map(|_| tokio::spawn(drip(addr.clone(), "district-a")))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another node is served while district-a's drippers hold its share.
    let (s, _, b) = h
        .post(
            "district-b",
            &application("330122260401000920", "330122"),
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let mut codes = Vec::new();
    for d in drippers {
        codes.push(d.await.unwrap());
    }
    let cut = codes.iter().filter(|c| **c == 408).count();
    let turned_away = codes.iter().filter(|c| **c == 503).count();
    assert_eq!(cut + turned_away, 20, "{codes:?}");
    // A quarter of the 24 slots is district-a's share.
    assert_eq!(cut, 6, "{codes:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // A head dripped a byte at a time is cut at the header timeout.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let t = Instant::now();
    let mut closed = false;
    for b in b"POST /v1/records HTTP/1.1\r\nhost: x\r\nx-hallgate-node: district-a\r\n".iter() {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut one = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), s.read(&mut one)).await
        {
            closed = n == 0 || one[..n].starts_with(b"HTTP/1.1 408");
            if closed {
                break;
            }
        }
    }
    assert!(closed, "the connection stayed open for {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_without_a_node_cost_a_bounded_number_of_audit_events() {
    let mut h = Harness::with_config(ONE_ROUTE, |t| t).await;
    let before: i64 = {
        let c = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
        c.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap()
    };
    let url = format!("{}/v1/records", h.url);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = h.client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::<u16, u32>::new();
            for _ in 0..625 {
                let r = client
                    .post(&url)
                    .header("authorization", "Bearer not.a.token")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                *codes.entry(r.status().as_u16()).or_default() += 1;
            }
            codes
        }));
    }
    let mut codes = std::collections::BTreeMap::<u16, u32>::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *codes.entry(k).or_default() += v;
        }
    }
    assert_eq!(codes.values().sum::<u32>(), 5000);
    assert!(codes.contains_key(&401), "{codes:?}");
    assert!(
        codes.contains_key(&429),
        "past its budget the peer is turned away: {codes:?}"
    );
    // A request head of 1 MiB is refused with 431 and counted the same way.
    let r = h
        .client
        .get(format!("{}/healthz", h.url))
        .header("x-padding", "x".repeat(1 << 20))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 431);
    }
    // The cut is tallied when its connection task ends, which may be after the client
    // read the 431: wait for the connection's metric (counted just before the tally)
    // before stopping, or a loaded machine stops the gateway first.
    for _ in 0..200 {
        let text = match h.client.get(format!("{}/metrics", h.url)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains("hallgate_connections_cut_total{reason=\"header_too_large\"}") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    h.stop_gateway().await;
    let c = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
    let added: Vec<(String, String)> = c
        .prepare("SELECT event, detail FROM audit WHERE seq > ?1 AND event != 'config_loaded'")
        .unwrap()
        .query_map([before], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // One tally per reason: refused, turned away, head too large.
    assert!(added.len() <= 3, "{added:?}");
    let counted: i64 = added
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter(|d| d["code"] != "header_too_large")
        .map(|d| d["count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(counted, 5000, "{added:?}");
    assert!(
        added
            .iter()
            .all(|(_, d)| d.contains("\"peer\":\"127.0.0.1\"")),
        "{added:?}"
    );
    assert!(
        added.iter().any(|(_, d)| d.contains("header_too_large")),
        "{added:?}"
    );
}
