//! Inbound keys from a node's JWKS URL, served by a real HTTP server on loopback:
//! fetched on first use, fetched again (once) when a token names a new key id — the
//! node rotated its key — and not hammered by tokens with unknown key ids.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use base64::Engine;
use common::*;
use hallgate::receiver::Receiver;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};

struct Jwks {
    keys: Mutex<Vec<Value>>,
    hits: AtomicUsize,
}

fn jwk(kid: &str, key: &p256::ecdsa::SigningKey) -> Value {
    let point = key.verifying_key().to_encoded_point(false);
    let b64 = |b: Option<&p256::FieldBytes>| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b.unwrap())
    };
    json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
           "x": b64(point.x()), "y": b64(point.y())})
}

fn token(kid: &str, key: &p256::ecdsa::SigningKey) -> String {
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let now = hallgate::time::now_ms() / 1000;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let claims = json!({"iss": "district-a", "aud": "gw-test", "iat": now, "exp": now + 300,
                        "jti": uuid::Uuid::now_v7().to_string()});
    encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_the_jwks_url_and_follow_rotation() {
    let first = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let second = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let jwks = Arc::new(Jwks {
        keys: Mutex::new(vec![jwk("k1", &first)]),
        hits: AtomicUsize::new(0),
    });
    let served = jwks.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let served = served.clone();
            async move {
                served.hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"keys": *served.keys.lock().unwrap()}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let city = Receiver::start("city", "127.0.0.1:0").await.unwrap();
    let text = config_text(
        &dir.path().join("hallgate.db"),
        &city.url(),
        &city.url(),
        &city.url(),
        "[[routes]]\nname = \"r\"\nto = [\"city\"]\n",
    ) + &format!(
        "\n[nodes.district-a.auth]\nalgorithms = [\"ES256\"]\njwks_url = \"{jwks_url}\"\n"
    );
    let path = dir.path().join("hallgate.toml");
    std::fs::write(&path, text).unwrap();
    let config = hallgate::config::Config::load(&path).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = hallgate::gateway::start(config, Some(listener))
        .await
        .expect("gateway");
    let client = hallgate::tls::http_client().build().unwrap();
    let post = |token: String, case: &'static str| {
        let (client, url) = (client.clone(), gw.url());
        async move {
            client
                .post(format!("{url}/v1/records"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(application(case, "350205").to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    assert_eq!(post(token("k1", &first), "350205260401140001").await, 202);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1, "fetched on first use");
    assert_eq!(post(token("k1", &first), "350205260401140002").await, 202);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1, "then cached");

    // The node rotates: its JWKS now has k2. A token with k2 makes the gateway fetch
    // once more, and it is accepted.
    jwks.keys.lock().unwrap().push(jwk("k2", &second));
    assert_eq!(post(token("k2", &second), "350205260401140003").await, 202);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 2);

    // Unknown key ids do not make it fetch again and again.
    for case in [
        "350205260401140004",
        "350205260401140005",
        "350205260401140006",
    ] {
        assert_eq!(post(token("k9", &second), case).await, 401);
    }
    assert_eq!(
        jwks.hits.load(Ordering::SeqCst),
        2,
        "forced refreshes are rate-limited"
    );
    gw.shutdown().await;
    city.stop();
}
