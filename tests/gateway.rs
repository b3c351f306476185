//! The gateway over real HTTP: intake, routing, delivery to real receivers, retries,
//! dead letters, idempotency, versions, graceful shutdown and the operator's API.

mod common;

use std::time::Duration;

use common::*;
use hallgate::receiver::Script;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_then_delivers_with_receipt() {
    let h = Harness::start().await;
    let (status, _, body) = h
        .post(
            "district-a",
            &application("350205260401000001", "350205"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let message_id = body["message_id"].as_str().expect("message id").to_string();
    assert_eq!(
        body["records"][0]["destinations"],
        json!(["city", "province"])
    );

    wait_until(10, "city delivery", || h.city.accepted().len() == 1).await;
    let got = &h.city.accepted()[0];
    assert_eq!(got.case_no, "350205260401000001");
    assert_eq!(got.body["source"], "district-a", "the gateway sets source");
    assert!(
        got.idempotency_key.starts_with("hg-"),
        "{}",
        got.idempotency_key
    );

    wait_until(10, "both delivered", || h.province.accepted().len() == 1).await;
    let (status, msg) = h.get(&format!("/v1/messages/{message_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(msg["source"], "district-a");
    // personal data is masked in API answers, kept whole in the store
    assert_eq!(
        msg["records"][0]["record"]["applicant"]["id_no"],
        "350205********0259"
    );
    assert_eq!(
        msg["records"][0]["record"]["contact"]["mobile"],
        "186****1234"
    );
    assert_eq!(msg["records"][0]["record"]["case_pwd"], "******");
    let mut delivered = false;
    for _ in 0..200 {
        let (_, case) = h.get("/v1/cases/350205260401000001").await;
        let ds = case["records"][0]["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if ds.len() == 2 && ds.iter().all(|d| d["state"] == "delivered") {
            assert!(ds[0]["receipt"].as_str().unwrap_or("").contains("接收成功"));
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(delivered, "case shows both deliveries delivered");
    let full = h.city.accepted()[0].body.clone();
    assert_eq!(
        full["applicant"]["id_no"], "350205195912280259",
        "destinations get the whole record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_fans_out_to_three_destinations() {
    let h = Harness::start().await;
    let (status, _, body) = h
        .post("district-a", &result("350205260401000002", "350205"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["records"][0]["destinations"],
        json!(["city", "province", "supervision"])
    );
    wait_until(10, "three deliveries", || {
        h.city.accepted().len() == 1
            && h.province.accepted().len() == 1
            && h.supervision.accepted().len() == 1
    })
    .await;
    let keys: Vec<String> = [&h.city, &h.province, &h.supervision]
        .iter()
        .map(|r| r.accepted()[0].idempotency_key.clone())
        .collect();
    assert!(
        keys[0] != keys[1] && keys[1] != keys[2],
        "each destination has its own key: {keys:?}"
    );
}

const IN_ORDER: [&str; 5] = [
    "application",
    "material:m-1",
    "process:1",
    "process:2",
    "result",
];

/// The records of a case a receiver acknowledged, in arrival order.
fn case_order(r: &hallgate::receiver::Receiver, case: &str) -> Vec<String> {
    r.accepted()
        .iter()
        .filter(|a| a.case_no == case)
        .map(|a| order_label(&a.body))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_order_holds_while_another_case_is_failing() {
    let h = Harness::start().await;
    let stuck = "350205260401000100";
    let flowing = "350205260401000200";
    h.city.set_script(Script {
        fail_cases: vec![stuck.to_string()],
        ..Script::default()
    });
    // Both cases posted out of order in one body each: result first, application last.
    for case in [stuck, flowing] {
        let body = json!([
            result(case, "350205"),
            process(case, "350205", 2),
            material(case, "350205", "m-1"),
            process(case, "350205", 1),
            application(case, "350205"),
        ]);
        let (status, _, resp) = h.post("district-a", &body, None).await;
        assert_eq!(status, 202, "{resp}");
    }
    wait_until(10, "the flowing case delivered to the city", || {
        case_order(&h.city, flowing).len() == 5
    })
    .await;
    assert_eq!(case_order(&h.city, flowing), IN_ORDER);
    // The stuck case: only its application has been tried, again and again.
    let tried: Vec<String> = h
        .city
        .arrivals()
        .iter()
        .filter(|a| a.case_no == stuck)
        .map(|a| a.kind.clone())
        .collect();
    assert!(
        !tried.is_empty() && tried.iter().all(|k| k == "application"),
        "{tried:?}"
    );

    // The receiver recovers: the stuck case arrives, in order.
    h.city.set_script(Script::default());
    wait_until(15, "the stuck case delivered", || {
        case_order(&h.city, stuck).len() == 5
    })
    .await;
    assert_eq!(case_order(&h.city, stuck), IN_ORDER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_503_then_succeeds_with_the_same_key() {
    let h = Harness::with_routes("[[routes]]\nname = \"r\"\nto = [\"city\"]\n").await;
    h.city.set_script(Script {
        fail_first: 2,
        fail_status: 503,
        ..Script::default()
    });
    let (status, _, _) = h
        .post(
            "district-a",
            &application("350205260401000003", "350205"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    wait_until(10, "delivery after two 503s", || {
        h.city.accepted().len() == 1
    })
    .await;
    let all = h.city.arrivals();
    assert_eq!(
        all.iter().map(|a| a.status).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    assert!(
        all.iter()
            .all(|a| a.idempotency_key == all[0].idempotency_key)
    );
    let mut attempts = 0;
    for _ in 0..200 {
        let (_, list) = h
            .get("/v1/deliveries?state=delivered&destination=city")
            .await;
        if let Some(d) = list["deliveries"].as_array().and_then(|a| a.first()) {
            attempts = d["attempts"].as_u64().unwrap_or(0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(attempts, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_on_400_and_retries_by_hand() {
    let h = Harness::with_routes("[[routes]]\nname = \"r\"\nto = [\"city\"]\n").await;
    h.city.set_script(Script {
        status: 400,
        ..Script::default()
    });
    let (status, _, _) = h
        .post(
            "district-a",
            &application("350205260401000004", "350205"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let dead = h.first_delivery("/v1/deliveries?state=dead").await;
    assert_eq!(dead["state"], "dead", "dead-lettered: {dead}");
    assert_eq!(dead["attempts"], 1, "a 400 is not retried");
    assert_eq!(dead["last_status"], 400);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("HTTP 400"),
        "{dead}"
    );
    assert_eq!(h.city.arrivals().len(), 1);

    // Retrying a delivery that is not dead is refused; an unknown one is 404.
    let id = dead["id"].as_i64().expect("id");
    let resp = h
        .client
        .post(format!("{}/v1/deliveries/999999/retry", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    h.city.set_script(Script::default());
    let resp = h
        .client
        .post(format!("{}/v1/deliveries/{id}/retry", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    wait_until(10, "manual retry delivered", || {
        h.city.accepted().len() == 1
    })
    .await;
    let resp = h
        .client
        .post(format!("{}/v1/deliveries/{id}/retry", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        409,
        "a delivered delivery cannot be retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_the_configured_number_of_attempts() {
    let h = Harness::with_config("[[routes]]\nname = \"r\"\nto = [\"city\"]\n", |t| {
        t.replace(
            "timeout_ms = 5000, concurrency = 4 }",
            "timeout_ms = 5000, concurrency = 4, max_attempts = 3 }",
        )
    })
    .await;
    h.city.set_script(Script {
        status: 503,
        ..Script::default()
    });
    let (status, _, _) = h
        .post(
            "district-a",
            &application("350205260401000014", "350205"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let dead = h
        .first_delivery("/v1/deliveries?state=dead&destination=city")
        .await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap_or("")
            .starts_with("gave up after 3 attempts"),
        "{dead}"
    );
    assert_eq!(h.city.arrivals().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_resend_gets_the_first_answer_and_nothing_new() {
    let h = Harness::with_routes("[[routes]]\nname = \"r\"\nto = [\"city\"]\n").await;
    let rec = application("350205260401000005", "350205");
    let (s1, h1, b1) = h.post("district-a", &rec, Some("send-0005")).await;
    let (s2, h2, b2) = h.post("district-a", &rec, Some("send-0005")).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(b1, b2, "the same answer, the same message id");
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(
        h2.get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );
    // Another sender's key space is its own.
    let rec_b = application("330122260401000005", "330122");
    let (s3, _, b3) = h.post("district-b", &rec_b, Some("send-0005")).await;
    assert_eq!(s3, 202);
    assert_ne!(b3["message_id"], b1["message_id"]);

    // Without a key: the same record id and version gets the first answer too.
    let mut with_id = application("350205260401000006", "350205");
    with_id["record_id"] = json!("UNID-6");
    with_id["version"] = json!(1);
    let (_, _, c1) = h.post("district-a", &with_id, None).await;
    let (s4, h4, c2) = h.post("district-a", &with_id, None).await;
    assert_eq!(s4, 202);
    assert_eq!(c1, c2);
    assert_eq!(
        h4.get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );

    wait_until(10, "three deliveries", || h.city.accepted().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.city.arrivals().len(),
        3,
        "resends were not delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_version_is_refused_and_equal_version_is_a_duplicate() {
    let h = Harness::with_routes("[[routes]]\nname = \"r\"\nto = [\"city\"]\n").await;
    let mut v3 = application("350205260401000007", "350205");
    v3["version"] = json!(3);
    let (s, _, _) = h.post("district-a", &v3, None).await;
    assert_eq!(s, 202);
    let mut v2 = v3.clone();
    v2["version"] = json!(2);
    let (s, _, body) = h.post("district-a", &v2, None).await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["code"], "stale_version");
    let d = &body["error"]["details"][0];
    assert_eq!(
        (
            d["record"].as_u64(),
            d["field"].as_str(),
            d["rule"].as_str()
        ),
        (Some(0), Some("version"), Some("stale_version"))
    );
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .contains("version 2 is older than version 3")
    );

    // The same version again (in a new message) is a duplicate: stored, not delivered.
    let (s, _, body) = h.post("district-a", &v3, None).await;
    assert_eq!(s, 202);
    assert_eq!(body["records"][0]["status"], "duplicate");
    assert_eq!(body["records"][0]["destinations"], json!([]));
    // A newer version goes through.
    let mut v4 = v3.clone();
    v4["version"] = json!(4);
    let (s, _, body) = h.post("district-a", &v4, None).await;
    assert_eq!(
        (s, body["records"][0]["status"].as_str()),
        (202, Some("accepted"))
    );
    wait_until(10, "v3 and v4 delivered", || h.city.accepted().len() == 2).await;
    let versions: Vec<u64> = h
        .city
        .accepted()
        .iter()
        .map(|a| a.body["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_store_nothing() {
    let h = Harness::start().await;
    let url = format!("{}/v1/records", h.url);
    // no sender
    let r = h.raw(&url, None, Some("application/json"), "{}").await;
    assert_eq!(r.status().as_u16(), 401);
    // unknown sender
    let r = h.raw(&url, Some("nobody"), None, "{}").await;
    assert_eq!(r.status().as_u16(), 401);
    // unsupported type
    let r = h
        .raw(&url, Some("district-a"), Some("text/csv"), "a,b")
        .await;
    assert_eq!(r.status().as_u16(), 415);
    // not JSON
    let r = h
        .raw(
            &url,
            Some("district-a"),
            Some("application/json"),
            "{\"kind\":",
        )
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json_value().await;
    assert_eq!(body["error"]["code"], "bad_body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{body}"
    );
    // too large
    let big = format!(
        "[{}]",
        vec![application("1", "350205").to_string(); 400].join(",")
    );
    let r = h
        .raw(&url, Some("district-a"), Some("application/json"), big)
        .await;
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.json_value().await["error"]["code"], "body_too_large");
    // too many records (under the byte limit)
    let many = format!(
        "[{}]",
        vec![json!({"kind": "result"}).to_string(); 101].join(",")
    );
    let r = h
        .raw(&url, Some("district-a"), Some("application/json"), many)
        .await;
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.json_value().await["error"]["code"], "too_many_records");
    // invalid records: every problem named, nothing stored even for the good one
    let body = json!([
        application("350205260401000008", "350205"),
        {"kind": "process", "region": "35", "step_no": "one"},
    ]);
    let (s, _, resp) = h.post("district-a", &body, None).await;
    assert_eq!(s, 422);
    let details = resp["error"]["details"].as_array().unwrap();
    let got: Vec<(u64, &str, &str)> = details
        .iter()
        .map(|d| {
            (
                d["record"].as_u64().unwrap(),
                d["field"].as_str().unwrap(),
                d["rule"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(got.contains(&(1, "case_no", "required")), "{got:?}");
    assert!(got.contains(&(1, "region", "region_code")), "{got:?}");
    assert!(got.contains(&(1, "step_no", "type")), "{got:?}");
    let (s, _) = h.get("/v1/cases/350205260401000008").await;
    assert_eq!(s, 404, "the valid record of a refused body is not stored");
    // another district's region: 403 naming record and field
    let (s, _, resp) = h
        .post(
            "district-b",
            &json!([
                application("330122260401000009", "330122"),
                application("350205260401000009", "350205")
            ]),
            None,
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(resp["error"]["details"][0]["record"], 1);
    assert_eq!(resp["error"]["details"][0]["field"], "region");
    // a kind the node may not send
    let (s, _, _) = h
        .post("district-b", &result("330122260401000010", "330122"), None)
        .await;
    assert_eq!(s, 403);
    // an unknown kind path
    let r = h
        .raw(format!("{url}/licence"), Some("district-a"), None, "{}")
        .await;
    assert_eq!(r.status().as_u16(), 404);
    // kind path and body disagree
    let r = h
        .raw(
            format!("{url}/result"),
            Some("district-a"),
            Some("application/json"),
            application("350205260401000011", "350205").to_string(),
        )
        .await;
    assert_eq!(r.status().as_u16(), 422);
    assert!(h.city.arrivals().is_empty() && h.province.arrivals().is_empty());
    // error messages never carry personal data
    assert!(!resp.to_string().contains("350205195912280259"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_records_are_rejected_not_dropped() {
    let h = Harness::with_routes(
        "[[routes]]\nname = \"results-only\"\nkinds = [\"result\"]\nto = [\"supervision\"]\n",
    )
    .await;
    let (s, _, body) = h
        .post(
            "district-a",
            &application("350205260401000012", "350205"),
            None,
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(body["error"]["code"], "no_route");
    assert_eq!(body["error"]["details"][0]["rule"], "no_route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_kind_endpoint_and_probes() {
    let h = Harness::start().await;
    let lines = format!(
        "{}\n{}\n",
        process("350205260401000013", "350205", 1),
        process("350205260401000013", "350205", 2)
    );
    let r = h
        .raw(
            format!("{}/v1/records/process", h.url),
            Some("district-a"),
            Some("application/x-ndjson"),
            lines,
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let r = h
        .client
        .get(format!("{}/healthz", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, ready) = h.get("/readyz").await;
    assert_eq!((s, ready["ready"].as_bool()), (200, Some(true)));
    wait_until(10, "two steps delivered", || h.city.accepted().len() == 2).await;
    let metrics = h
        .client
        .get(format!("{}/metrics", h.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "hallgate_records_received_total{node=\"district-a\"}",
        "hallgate_records_accepted_total{node=\"district-a\"}",
        "hallgate_deliveries_delivered_total{destination=\"city\"}",
        "hallgate_queue_depth{destination=\"city\"}",
        "hallgate_accept_seconds_bucket",
        "hallgate_delivery_seconds_bucket",
    ] {
        assert!(
            metrics.contains(series),
            "metrics lack {series}:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_and_restart_delivers_the_rest() {
    let mut h = Harness::with_routes("[[routes]]\nname = \"r\"\nto = [\"city\"]\n").await;
    h.city.set_script(Script {
        delay: Duration::from_millis(600),
        ..Script::default()
    });
    let mut cases = Vec::new();
    for i in 0..10 {
        let case = format!("35020526040102{i:04}");
        let (s, _, _) = h
            .post("district-a", &application(&case, "350205"), None)
            .await;
        assert_eq!(s, 202);
        cases.push(case);
    }
    // Let the first deliveries get under way (concurrency 4, 600 ms each), then stop.
    wait_until(10, "deliveries in flight", || h.city.started() >= 1).await;
    assert!(h.city.accepted().is_empty(), "none answered yet");
    let url = h.url.clone();
    h.stop_gateway().await;
    // In-flight requests completed during shutdown: the receiver has them, and the
    // gateway no longer accepts connections.
    let after_stop = h.city.accepted().len();
    assert!(
        after_stop >= 1,
        "in-flight deliveries were finished, not cut off"
    );
    assert!(
        reqwest::get(format!("{url}/healthz")).await.is_err(),
        "stopped accepting"
    );

    h.city.set_script(Script::default());
    h.start_gateway().await;
    wait_until(15, "all ten delivered after restart", || {
        h.city.accepted().len() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got: Vec<String> = h
        .city
        .accepted()
        .iter()
        .map(|a| a.case_no.clone())
        .collect();
    got.sort();
    assert_eq!(got, cases, "each record delivered exactly once");
    assert!(
        h.city.arrivals().iter().all(|a| a.status == 200),
        "nothing finished before shutdown was sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_covers_intake_and_delivery() {
    let h = Harness::with_routes("[[routes]]\nname = \"r\"\nto = [\"city\"]\n").await;
    for i in 0..5 {
        let (s, _, _) = h
            .post(
                "district-a",
                &application(&format!("35020526040103{i:04}"), "350205"),
                None,
            )
            .await;
        assert_eq!(s, 202);
    }
    let (s, _, _) = h
        .post("district-a", &json!({"kind": "nonsense"}), None)
        .await;
    assert_eq!(s, 422);
    wait_until(10, "deliveries", || h.city.accepted().len() == 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (report, _) = hallgate::audit::verify_store(h.running().store.as_ref(), None, None, |_| {})
        .await
        .expect("chain intact");
    // config loaded + 5 × (received, accepted, routed, attempted, delivered) + 1 rejected
    assert_eq!(report.live, 27, "{report:?}");
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap_or(Value::Null)
    }
}
