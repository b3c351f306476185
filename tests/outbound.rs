//! How the gateway proves itself to destinations, checked at a real receiver: its
//! own short-lived ES256 tokens, verifiable with the keys it publishes at
//! /.well-known/jwks.json, and the legacy schemes departments still use.

mod common;

use std::path::Path;

use common::*;
use hallgate::receiver::Receiver;
use hmac::Mac;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

const ONE_ROUTE: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

async fn deliver_one(h: &Harness) -> hallgate::receiver::Arrival {
    let (s, _, _) = h
        .post(
            "district-a",
            &application("350205260401130001", "350205"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    wait_until(10, "delivery", || h.city.accepted().len() == 1).await;
    h.city.accepted().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tokens_verify_with_the_published_jwks() {
    let h = Harness::with_setup(
        ONE_ROUTE,
        |t| {
            t.replace(
                "destination = { url = \"",
                "destination = { auth = { scheme = \"jwt\" }, url = \"",
            )
            .replace(
                "shutdown_grace_seconds = 10",
                "shutdown_grace_seconds = 10\nnext_signing_key = \"certs/next.key.pem\"",
            )
        },
        |dir: &Path| {
            hallgate::keys::generate_key(&dir.join("certs/next.key.pem")).expect("next key");
        },
    )
    .await;
    let got = deliver_one(&h).await;
    let auth = Receiver::header(&got, "authorization").expect("Authorization header");
    let token = auth.strip_prefix("Bearer ").expect("bearer");
    let (s, jwks) = h.get("/.well-known/jwks.json").await;
    assert_eq!(s, 200);
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "current and next key: {jwks}");
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(
        keys.iter()
            .find(|k| k["kid"].as_str() == header.kid.as_deref())
            .cloned()
            .expect("kid published"),
    )
    .unwrap();
    let mut v = Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["city"]);
    v.set_issuer(&["gw-test"]);
    let data = jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &v)
        .expect("verifies");
    let c = data.claims;
    assert!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 300,
        "at most five minutes: {c}"
    );
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_header() {
    let h = Harness::with_setup(
        ONE_ROUTE,
        |t| {
            t.replace(
                "destination = { url = \"",
                "destination = { auth = { scheme = \"static\", header = \"X-Token\", secret_file = \"secrets/token\" }, url = \"",
            )
        },
        |dir: &Path| {
            std::fs::create_dir_all(dir.join("secrets")).unwrap();
            std::fs::write(dir.join("secrets/token"), "tok-3502-city\n").unwrap();
        },
    )
    .await;
    let got = deliver_one(&h).await;
    assert_eq!(
        Receiver::header(&got, "x-token").as_deref(),
        Some("tok-3502-city")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_id_and_md5_sign() {
    let h = Harness::with_setup(
        ONE_ROUTE,
        |t| {
            t.replace(
                "destination = { url = \"",
                "destination = { auth = { scheme = \"app_sign\", app_id = \"xm-hall\", secret_file = \"secrets/app\", api_code = \"receiveCase\" }, url = \"",
            )
        },
        |dir: &Path| {
            std::fs::create_dir_all(dir.join("secrets")).unwrap();
            std::fs::write(dir.join("secrets/app"), "s3cret").unwrap();
        },
    )
    .await;
    let got = deliver_one(&h).await;
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .strftime("%Y%m%d")
        .to_string();
    let expected = hex::encode(<md5::Md5 as md5::Digest>::digest(format!(
        "xm-halls3cret{today}receiveCase"
    )));
    assert_eq!(Receiver::header(&got, "appid").as_deref(), Some("xm-hall"));
    assert_eq!(Receiver::header(&got, "sign"), Some(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_of_the_body() {
    let h = Harness::with_setup(
        ONE_ROUTE,
        |t| {
            t.replace(
                "destination = { url = \"",
                "destination = { auth = { scheme = \"hmac_body\", header = \"X-Signature\", secret_file = \"secrets/hmac\" }, url = \"",
            )
        },
        |dir: &Path| {
            std::fs::create_dir_all(dir.join("secrets")).unwrap();
            std::fs::write(dir.join("secrets/hmac"), "k3y").unwrap();
        },
    )
    .await;
    let got = deliver_one(&h).await;
    let sig = Receiver::header(&got, "x-signature").expect("signature header");
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(b"k3y").unwrap();
    mac.update(&got.raw);
    assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
}
