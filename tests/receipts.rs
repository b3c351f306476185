//! Receipts back to senders (回执推送, issue 21, item 5), over real HTTP: a sending
//! node's `receipt_url` gets one signed receipt per record once each of its
//! deliveries is settled (delivered, or dead-lettered), carrying the record, the
//! destinations, the outcome, the times and each receiver's receipt hash; also
//! after the gateway is killed with SIGKILL between delivery and receipt.

mod common;

use std::collections::BTreeSet;
use std::process::Child;

use common::load::{free_port, spawn_gateway, wait_healthy};
use common::*;
use hallgate::hash::sha256_hex;
use hallgate::receiver::{Receiver, Script};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};

const ROUTES: &str = r#"
[[routes]]
name = "all-to-city"
to = ["city"]

[[routes]]
name = "apps-to-province"
kinds = ["application"]
to = ["province"]
"#;

/// district-a takes its receipts at the supervision receiver's URL (a receiver
/// like any other; nothing is routed to supervision here).
fn receipts_at_supervision(text: String) -> String {
    let at = text.find("[nodes.supervision]").expect("supervision");
    let url_at = text[at..].find("url = \"").expect("url") + at + 7;
    let url = &text[url_at..url_at + text[url_at..].find('"').expect("end")];
    text.replacen(
        "[nodes.district-b]",
        &format!("receipt_url = \"{url}\"\n\n[nodes.district-b]"),
        1,
    )
}

fn batch(first: usize) -> Value {
    let mut records = Vec::new();
    for i in first..first + 10 {
        let case = format!("350205261204{i:06}");
        records.push(application(&case, "350205"));
        records.push(material(&case, "350205", &format!("M{i}")));
    }
    json!(records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_gets_one_signed_receipt_with_its_outcomes() {
    let h = Harness::with_config(ROUTES, receipts_at_supervision).await;
    // The province refuses what it gets: applications end dead-lettered there.
    h.province.set_script(Script {
        status: 422,
        ..Script::default()
    });
    let (status, _, body) = h.post("district-a", &batch(0), None).await;
    assert_eq!(status, 202, "{body}");
    // district-b asked for no receipts.
    let (status, _, body) = h
        .post(
            "district-b",
            &json!([application("330122261204000001", "330122")]),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    wait_until(60, "20 receipts", || h.supervision.accepted_total() >= 20).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let receipts = h.supervision.accepted();
    assert_eq!(receipts.len(), 20, "one per record of district-a");

    // What the city answered, as the store kept it.
    let db = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).expect("store");
    let mut q = db
        .prepare("SELECT receipt FROM deliveries WHERE destination = 'city'")
        .expect("query");
    let city_answers: BTreeSet<String> = q
        .query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|r| sha256_hex(r.expect("row").as_bytes()))
        .collect();
    let public = std::fs::read(h.dir.path().join("certs/gateway-signing.pub.pem")).expect("pub");
    let mut seen = BTreeSet::new();
    for r in &receipts {
        let b = &r.body;
        assert_eq!(b["receipt"], "hallgate.receipt.v1", "{b}");
        assert_eq!(b["gateway"], "gw-test");
        let kind = b["record"]["kind"].as_str().expect("kind");
        let dests = b["destinations"].as_array().expect("destinations");
        assert!(
            b["accepted_at"].is_string() && b["settled_at"].is_string(),
            "{b}"
        );
        assert!(
            b["record"]["sha256"]
                .as_str()
                .is_some_and(|s| s.len() == 64)
        );
        match kind {
            "application" => {
                assert_eq!(b["outcome"], "dead_lettered", "{b}");
                assert_eq!(dests.len(), 2);
                let prov = dests
                    .iter()
                    .find(|d| d["destination"] == "province")
                    .expect("province");
                assert_eq!(prov["state"], "dead");
                assert_eq!(prov["status"], 422);
            }
            "material" => {
                assert_eq!(b["outcome"], "delivered", "{b}");
                assert_eq!(dests.len(), 1);
            }
            other => panic!("receipt for a {other}"),
        }
        let at_city = dests
            .iter()
            .find(|d| d["destination"] == "city")
            .expect("city");
        assert_eq!(at_city["state"], "delivered");
        let hash = at_city["receipt_sha256"].as_str().expect("receipt hash");
        assert!(city_answers.contains(hash), "{b}");
        // No personal data travels back: only the record's references and hash.
        let raw = String::from_utf8_lossy(&r.raw);
        assert!(
            !raw.contains("350205195912280259") && !raw.contains("林晓东"),
            "{raw}"
        );
        assert!(
            seen.insert(r.idempotency_key.clone()),
            "a second receipt for one record"
        );
        // Signed with the gateway's key, for district-a.
        let auth = Receiver::header(r, "authorization").expect("signed");
        let token = auth.strip_prefix("Bearer ").expect("bearer");
        let mut v = Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&["district-a"]);
        v.set_issuer(&["gw-test"]);
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_ec_pem(&public).expect("pem"), &v)
            .expect("the receipt's token verifies");
    }
    // Each receipt attempt is audited like any delivery.
    assert_eq!(
        h.count(
            "SELECT count(*) FROM audit WHERE event = 'delivered' AND node = 'receipt:district-a'"
        ),
        20
    );
}

fn kill9(child: &mut Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("SIGKILL");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_survive_a_sigkill_between_delivery_and_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    let sender = Receiver::start("district-a", "127.0.0.1:0")
        .await
        .expect("receiver");
    // The sender's receipt endpoint is down at first.
    sender.set_script(Script {
        status: 503,
        ..Script::default()
    });
    hallgate::keys::generate_key(&dir.path().join("certs/gateway-signing.key.pem")).expect("key");
    let port = free_port();
    let text = config_text(
        &dir.path().join("hallgate.db"),
        &city.url(),
        &city.url(),
        &city.url(),
        "[[routes]]\nname = \"r\"\nto = [\"city\"]\n",
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    .replacen(
        "[nodes.district-b]",
        &format!("receipt_url = \"{}\"\n\n[nodes.district-b]", sender.url()),
        1,
    );
    let config = dir.path().join("hallgate.toml");
    std::fs::write(&config, text).expect("config");
    let url = format!("http://127.0.0.1:{port}");
    let client = hallgate::tls::http_client().build().expect("client");
    let mut gw = spawn_gateway(&config, &dir.path().join("log"));
    wait_healthy(&client, &url).await;
    let r = client
        .post(format!("{url}/v1/records"))
        .header("x-hallgate-node", "district-a")
        .header("content-type", "application/json")
        .body(batch(0).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    wait_until(60, "city has all 20", || city.accepted_total() >= 20).await;
    wait_until(30, "a receipt attempted", || sender.arrival_count() > 0).await;
    // Delivered, receipts not yet: kill it where it stands.
    kill9(&mut gw);
    assert_eq!(sender.accepted_total(), 0);

    sender.set_script(Script::default());
    let mut gw = spawn_gateway(&config, &dir.path().join("log"));
    wait_healthy(&client, &url).await;
    wait_until(60, "20 receipts", || sender.accepted_total() >= 20).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let got = sender.accepted();
    assert_eq!(got.len(), 20);
    let records: BTreeSet<String> = got
        .iter()
        .map(|a| {
            format!(
                "{}#{}",
                a.body["record"]["message_id"], a.body["record"]["index"]
            )
        })
        .collect();
    assert_eq!(records.len(), 20, "one receipt per record");
    assert_eq!(city.accepted_total(), 20, "nothing delivered twice");
    common::load::sigterm(&gw);
    let _ = gw.wait();
}
