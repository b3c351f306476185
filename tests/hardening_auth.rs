//! Tokens a hostile sender might bend: a `crit` header the gateway cannot honour, a
//! token used twice where a node takes each once (also after a restart), and a
//! certificate without the token bound to it (RFC 8705), each over real HTTP.

mod common;

use std::path::Path;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const ONE_ROUTE: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

fn once(t: String) -> String {
    format!(
        "{t}
[nodes.district-a.auth]
algorithms = [\"ES256\"]
keys = [\"keys/district-a.pub.pem\"]
one_time_jti = true
"
    )
    .replace("trust_node_header = true", "trust_node_header = false")
}

fn now() -> i64 {
    hallgate::time::now_ms() / 1000
}

fn claims(jti: &str) -> Value {
    json!({
        "iss": "district-a", "aud": "gw-test", "iat": now(), "nbf": now(), "exp": now() + 300,
        "jti": jti,
    })
}

fn key(dir: &Path) -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(dir.join("keys/district-a.key.pem")).unwrap()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = client
        .post(format!("{url}/v1/records"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (
        s,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

fn events(h: &Harness, event: &str) -> Vec<Value> {
    let c = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
    let mut stmt = c
        .prepare("SELECT node, detail FROM audit WHERE event = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([event], |r| {
        let node: Option<String> = r.get(0)?;
        let detail: String = r.get(1)?;
        Ok(json!({"node": node, "detail": serde_json::from_str::<Value>(&detail).unwrap()}))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crit_header_is_refused_and_a_one_time_jti_is_taken_once() {
    let mut h = Harness::with_config(ONE_ROUTE, once).await;
    let k = key(h.dir.path());
    // A header with `crit` naming an extension: signed correctly, still refused.
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "district-a",
                        "crit": ["urn:example:must-understand"], "urn:example:must-understand": true});
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims(&uuid::Uuid::now_v7().to_string())
            .to_string()
            .as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &k, Algorithm::ES256).unwrap();
    let crit = format!("{signing_input}.{sig}");
    let (s, b) = send(
        &h.client,
        &h.url,
        Some(&crit),
        &application("350205260401000930", "350205"),
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("critical"),
        "{b}"
    );
    // Audited on its own, naming the node.
    let refused = events(&h, "token_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["node"], "district-a");
    assert_eq!(
        refused[0]["detail"]["peer"]
            .as_str()
            .map(|p| p.starts_with("127.0.0.1")),
        Some(true)
    );

    // One-time tokens: the first use is served, the second refused.
    let jti = uuid::Uuid::now_v7().to_string();
    let t = encode(&Header::new(Algorithm::ES256), &claims(&jti), &k).unwrap();
    let (s, b) = send(
        &h.client,
        &h.url,
        Some(&t),
        &application("350205260401000931", "350205"),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = send(
        &h.client,
        &h.url,
        Some(&t),
        &application("350205260401000932", "350205"),
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("once"),
        "{b}"
    );
    // A read with a spent token is refused too.
    let r = h
        .client
        .get(format!("{}/v1/cases/350205260401000931", h.url))
        .header("authorization", format!("Bearer {t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // After a restart, a new token with the spent jti is still refused.
    h.stop_gateway().await;
    h.start_gateway().await;
    let mut c = claims(&jti);
    c["iat"] = json!(now() - 1);
    let again = encode(&Header::new(Algorithm::ES256), &c, &k).unwrap();
    let (s, b) = send(
        &h.client,
        &h.url,
        Some(&again),
        &application("350205260401000933", "350205"),
    )
    .await;
    assert_eq!(s, 401, "{b}");
    let fresh = encode(
        &Header::new(Algorithm::ES256),
        &claims(&uuid::Uuid::now_v7().to_string()),
        &k,
    )
    .unwrap();
    let (s, b) = send(
        &h.client,
        &h.url,
        Some(&fresh),
        &application("350205260401000934", "350205"),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let refused = events(&h, "token_refused");
    assert!(
        refused
            .iter()
            .filter(|e| e["node"] == "district-a")
            .filter(|e| e["detail"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("once"))
            .count()
            >= 2,
        "{refused:?}"
    );
}

/// Development certificates for district-a and district-b under certs/dev.
fn dev_certs(dir: &Path) {
    let text = r#"
[gateway]
id = "gw-test"
listen = "127.0.0.1:0"
[nodes.district-a]
name = "a"
level = "district"
accept = { kinds = ["application"] }
[nodes.district-b]
name = "b"
level = "district"
accept = { kinds = ["application"] }
"#;
    let c = hallgate::config::Config::parse(text, &dir.join("certs.toml")).expect("config");
    hallgate::auth::certs::dev(&c, &dir.join("certs/dev")).expect("dev certificates");
}

fn bound(t: String) -> String {
    format!(
        "{t}
[nodes.district-a.auth]
algorithms = [\"ES256\"]
keys = [\"keys/district-a.pub.pem\"]
"
    )
    .replace("trust_node_header = true", "trust_node_header = false")
    .replace(
        "shutdown_grace_seconds = 10\n",
        "shutdown_grace_seconds = 10\n\n[gateway.tls]\ncert = \"certs/dev/server.pem\"\nkey = \"certs/dev/server.key.pem\"\nclient_ca = \"certs/dev/ca.pem\"\n",
    )
    .replace(
        "[nodes.district-b]\n",
        "[nodes.district-a.client_cert]\nnames = [\"district-a.nodes.hallgate.test\"]\nbind_token = true\n\n[nodes.district-b]\n",
    )
}

fn client_as(dir: &Path, node: &str) -> reqwest::Client {
    let tls = hallgate::config::ClientTls {
        ca: Some("certs/dev/ca.pem".into()),
        cert: Some(format!("certs/dev/nodes/{node}.pem")),
        key: Some(format!("certs/dev/nodes/{node}.key.pem")),
    };
    hallgate::tls::client_builder(hallgate::tls::http_client(), &tls, dir)
        .unwrap()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bound_to_its_certificate_needs_a_token_bound_to_it_too() {
    let h = Harness::with_setup(ONE_ROUTE, bound, dev_certs).await;
    let dir = h.dir.path();
    let url = h.url.replace("127.0.0.1", "localhost");
    let a = client_as(dir, "district-a");
    let app = |n: u32| application(&format!("3502052604010009{n:02}"), "350205");
    // The certificate alone no longer names the node.
    let (s, b) = send(&a, &url, None, &app(40)).await;
    assert_eq!(s, 401, "{b}");
    // A token of the node, bound to nothing.
    let config = h.config();
    let key = dir.join("keys/district-a.key.pem");
    let plain = hallgate::auth::mint::issue(&config, "district-a", &key, 300, None).unwrap();
    let (s, b) = send(&a, &url, Some(&plain), &app(41)).await;
    assert_eq!(s, 401, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("bound"),
        "{b}"
    );
    // Bound to district-b's certificate, presented with district-a's.
    let other = dir.join("certs/dev/nodes/district-b.pem");
    let wrong =
        hallgate::auth::mint::issue(&config, "district-a", &key, 300, Some(&other)).unwrap();
    let (s, b) = send(&a, &url, Some(&wrong), &app(42)).await;
    assert_eq!(s, 401, "{b}");
    // Bound to the certificate it comes with: served.
    let own = dir.join("certs/dev/nodes/district-a.pem");
    let right = hallgate::auth::mint::issue(&config, "district-a", &key, 300, Some(&own)).unwrap();
    let (s, b) = send(&a, &url, Some(&right), &app(43)).await;
    assert_eq!(s, 202, "{b}");
    // The same token over another certificate is refused.
    let b_client = client_as(dir, "district-b");
    let (s, b) = send(&b_client, &url, Some(&right), &app(44)).await;
    assert_eq!(s, 401, "{b}");
}
