//! Who may read what: a node reads the cases it sent or receives, the messages it
//! sent and the deliveries made to it; operators read everything and alone put dead
//! letters back; every refusal is 403 and audited; no credentials, 401.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

fn with_tokens(t: String) -> String {
    format!(
        "{t}
[nodes.district-a.auth]
algorithms = [\"ES256\"]
keys = [\"keys/district-a.pub.pem\"]

[nodes.district-b.auth]
algorithms = [\"ES256\"]
keys = [\"keys/district-b.pub.pem\"]
"
    )
    .replace("trust_node_header = true", "trust_node_header = false")
    .replace(
        "[nodes.district-b]\n",
        "[nodes.district-b]\nroles = [\"operator\"]\n",
    )
}

fn token(h: &Harness, node: &str) -> String {
    let now = hallgate::time::now_ms() / 1000;
    let claims = json!({
        "iss": node, "aud": "gw-test", "iat": now, "nbf": now, "exp": now + 300,
        "jti": uuid::Uuid::now_v7().to_string(),
    });
    let pem = std::fs::read(h.dir.path().join(format!("keys/{node}.key.pem"))).unwrap();
    encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

async fn call(
    h: &Harness,
    method: &str,
    path: &str,
    node: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", h.url);
    let mut req = if method == "POST" {
        h.client.post(url)
    } else {
        h.client.get(url)
    };
    if let Some(n) = node {
        req = req.header("authorization", format!("Bearer {}", token(h, n)));
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

fn refusals(h: &Harness) -> i64 {
    rusqlite::Connection::open(h.dir.path().join("hallgate.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM audit WHERE event = 'authorization_refused'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_read_their_own_cases_and_operators_everything() {
    let h = Harness::with_config(DEFAULT_ROUTES, with_tokens).await;
    let case_a = "350205260401000900";
    let (status, sent) = call(
        &h,
        "POST",
        "/v1/records",
        Some("district-a"),
        Some(&application(case_a, "350205")),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let message = sent["message_id"].as_str().unwrap().to_string();
    let case_b = "330122260401000901";
    let (status, _) = call(
        &h,
        "POST",
        "/v1/records",
        Some("district-b"),
        Some(&application(case_b, "330122")),
    )
    .await;
    assert_eq!(status, 202);

    // the sender reads its case and its message
    let (status, case) = call(
        &h,
        "GET",
        &format!("/v1/cases/{case_a}"),
        Some("district-a"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{case}");
    let (status, _) = call(
        &h,
        "GET",
        &format!("/v1/messages/{message}"),
        Some("district-a"),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // not another district's case: 403, audited
    let before = refusals(&h);
    let (status, body) = call(
        &h,
        "GET",
        &format!("/v1/cases/{case_b}"),
        Some("district-a"),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("neither sent nor receives")
    );
    // deliveries: only those made to it; asking for another destination's is refused
    let (status, list) = call(&h, "GET", "/v1/deliveries", Some("district-a"), None).await;
    assert_eq!(status, 200);
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 0, "{list}");
    let (status, _) = call(
        &h,
        "GET",
        "/v1/deliveries?destination=city",
        Some("district-a"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &h,
        "POST",
        "/v1/deliveries/1/retry",
        Some("district-a"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(refusals(&h), before + 3, "each refusal is audited");

    // the operator (district-b) reads everything
    let (status, _) = call(
        &h,
        "GET",
        &format!("/v1/cases/{case_a}"),
        Some("district-b"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &h,
        "GET",
        &format!("/v1/messages/{message}"),
        Some("district-b"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let d = loop {
        let (_, list) = call(
            &h,
            "GET",
            "/v1/deliveries?destination=city",
            Some("district-b"),
            None,
        )
        .await;
        if let Some(d) = list["deliveries"].as_array().and_then(|a| a.first()) {
            break d.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(d["destination"], "city");

    // no credentials at all
    let (status, _) = call(&h, "GET", &format!("/v1/cases/{case_a}"), None, None).await;
    assert_eq!(status, 401);
}
