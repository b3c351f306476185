//! Signed tokens over real HTTP: a valid token is accepted (also one made by an
//! independent implementation, PyJWT with an openssl key); every forgery is refused
//! with 401 or 403, audited, and stores nothing.

mod common;

use std::process::Command;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const ONE_ROUTE: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

fn with_tokens(t: String) -> String {
    format!(
        "{t}
[nodes.district-a.auth]
algorithms = [\"ES256\"]
keys = [\"keys/district-a.pub.pem\"]
max_lifetime_seconds = 3600
clock_skew_seconds = 60

[nodes.district-b.auth]
algorithms = [\"ES256\"]
keys = [\"keys/district-b.pub.pem\"]
"
    )
    .replace("trust_node_header = true", "trust_node_header = false")
}

fn now() -> i64 {
    hallgate::time::now_ms() / 1000
}

fn claims(iss: &str) -> Value {
    json!({
        "iss": iss, "aud": "gw-test", "iat": now(), "nbf": now(), "exp": now() + 300,
        "jti": uuid::Uuid::now_v7().to_string(),
    })
}

fn sign(h: &Harness, node: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(h.dir.path().join(format!("keys/{node}.key.pem"))).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

async fn post(h: &Harness, token: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    h.post_with(
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.to_string(),
    )
    .await
}

fn count_events(h: &Harness, event: &str) -> i64 {
    rusqlite::Connection::open(h.dir.path().join("hallgate.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM audit WHERE event = ?1",
            [event],
            |r| r.get(0),
        )
        .unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_are_accepted_and_every_forgery_refused() {
    let mut h = Harness::with_config(ONE_ROUTE, with_tokens).await;
    let app = |n: u32| application(&format!("35020526040109{n:04}"), "350205");

    // Valid, with and without kid; the same token again is fine (cached).
    let good = sign(&h, "district-a", Some("district-a"), &claims("district-a"));
    assert_eq!(post(&h, &good, &app(1)).await.0, 202);
    assert_eq!(post(&h, &good, &app(2)).await.0, 202);
    let no_kid = sign(&h, "district-a", None, &claims("district-a"));
    assert_eq!(post(&h, &no_kid, &app(3)).await.0, 202);
    // No token at all, with the node header switched off.
    let r = h
        .client
        .post(format!("{}/v1/records", h.url))
        .header("x-hallgate-node", "district-a")
        .body(app(4).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "the header alone no longer names a sender"
    );

    let refused_before = count_events(&h, "token_refused");
    let mut cases: Vec<(&str, String)> = Vec::new();
    // alg: none
    let c = claims("district-a");
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&c)
        ),
    ));
    // HS256 signed with the node's public key as the secret
    let public = std::fs::read(h.dir.path().join("keys/district-a.pub.pem")).unwrap();
    cases.push((
        "HS256 with the public key",
        encode(
            &Header::new(Algorithm::HS256),
            &claims("district-a"),
            &EncodingKey::from_secret(&public),
        )
        .unwrap(),
    ));
    // unknown kid
    cases.push((
        "unknown kid",
        sign(
            &h,
            "district-a",
            Some("someone-else"),
            &claims("district-a"),
        ),
    ));
    // expired (beyond the 60 s skew)
    let mut c = claims("district-a");
    c["iat"] = json!(now() - 600);
    c["exp"] = json!(now() - 120);
    cases.push(("expired", sign(&h, "district-a", None, &c)));
    // not yet valid
    let mut c = claims("district-a");
    c["nbf"] = json!(now() + 600);
    cases.push(("nbf in the future", sign(&h, "district-a", None, &c)));
    // wrong audience
    let mut c = claims("district-a");
    c["aud"] = json!("another-gateway");
    cases.push(("wrong aud", sign(&h, "district-a", None, &c)));
    // wrong issuer: claims to be district-b, signed with district-a's key
    cases.push((
        "wrong iss",
        sign(&h, "district-a", None, &claims("district-b")),
    ));
    cases.push((
        "unknown iss",
        sign(&h, "district-a", None, &claims("nobody")),
    ));
    // lifetime over the maximum
    let mut c = claims("district-a");
    c["exp"] = json!(now() + 7200);
    cases.push(("lifetime over max", sign(&h, "district-a", None, &c)));
    // no jti
    let mut c = claims("district-a");
    c.as_object_mut().unwrap().remove("jti");
    cases.push(("no jti", sign(&h, "district-a", None, &c)));
    // tampered payload: the region claim of a valid token changed after signing
    let valid = sign(&h, "district-a", None, &claims("district-a"));
    let parts: Vec<&str> = valid.split('.').collect();
    let mut forged_claims = claims("district-a");
    forged_claims["iss"] = json!("district-a");
    forged_claims["sub"] = json!("admin");
    cases.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64(&forged_claims), parts[2]),
    ));
    // replayed jti: a second token with the jti of the first good one
    let mut c: Value = {
        use base64::Engine;
        let p = good.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap(),
        )
        .unwrap()
    };
    c["iat"] = json!(now() - 1);
    let replay = sign(&h, "district-a", None, &c);
    cases.push(("replayed jti", replay.clone()));

    for (n, (what, token)) in cases.iter().enumerate() {
        let (status, body) = post(&h, token, &app(100 + n as u32)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            !body.to_string().contains(token.as_str()),
            "{what}: the token is not echoed"
        );
        // What a partner reads is a sentence, not a library's error name.
        let expected = match *what {
            "wrong aud" => Some("aud must be `gw-test`"),
            "expired" => Some("the token has expired"),
            _ => None,
        };
        if let Some(e) = expected {
            assert!(body.to_string().contains(e), "{what}: {body}");
        }
        assert!(
            !body.to_string().contains("InvalidAudience"),
            "{what}: {body}"
        );
    }
    // Two different tokens in one request.
    let r = h
        .client
        .post(format!("{}/v1/records", h.url))
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", format!("Bearer {no_kid}"))
        .body(app(200).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Authorisation: a valid token of district-b sending district-a's region, or a
    // kind it may not send.
    let b = sign(&h, "district-b", None, &claims("district-b"));
    let (s, body) = post(&h, &b, &app(300)).await;
    assert_eq!(s, 403, "{body}");
    let (s, _) = post(&h, &b, &result("330122260401090301", "330122")).await;
    assert_eq!(s, 403);

    // Audited, and nothing of the refused requests stored. A token that names a
    // configured node is audited on its own (every case but the unknown issuer); the
    // refusals that name no node (the unknown issuer, two tokens, the header alone)
    // are one event for the peer, written when the tally is flushed (at shutdown here).
    assert_eq!(
        count_events(&h, "token_refused") - refused_before,
        cases.len() as i64 - 1
    );
    assert_eq!(count_events(&h, "authorization_refused"), 2);
    let received = count_events(&h, "received");
    assert_eq!(received, 3, "only the three good requests were stored");

    // The replay is refused after a restart too (the jti is in the store).
    h.stop_gateway().await;
    let tallied: Vec<(String, i64)> = {
        let c = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
        let mut stmt = c
            .prepare(
                "SELECT json_extract(detail, '$.peer'), json_extract(detail, '$.count') FROM audit
                 WHERE event = 'token_refused' AND json_extract(detail, '$.count') IS NOT NULL",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(tallied.len(), 1, "{tallied:?}");
    assert_eq!(tallied[0].0, "127.0.0.1");
    assert!(tallied[0].1 >= 3, "{tallied:?}");
    h.start_gateway().await;
    assert_eq!(post(&h, &replay, &app(400)).await.0, 401);
    assert_eq!(
        post(&h, &good, &app(401)).await.0,
        202,
        "the original token still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_pyjwt_with_openssl_keys_are_accepted() {
    let mut h = Harness::with_config(ONE_ROUTE, with_tokens).await;
    // Replace district-a's key pair with one made by openssl, then restart the
    // gateway so it loads the new public key.
    let keys = h.dir.path().join("keys");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&keys)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "openssl.ec.pem",
    ]);
    run(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "openssl.ec.pem",
        "-out",
        "district-a.key.pem",
    ]);
    run(&[
        "ec",
        "-in",
        "openssl.ec.pem",
        "-pubout",
        "-out",
        "district-a.pub.pem",
    ]);
    h.stop_gateway().await;
    h.start_gateway().await;
    let script = r#"
import sys, time, uuid, jwt
key = open(sys.argv[1]).read()
now = int(time.time())
print(jwt.encode({"iss": "district-a", "aud": "gw-test", "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
                 key, algorithm="ES256", headers={"kid": "district-a"}))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(keys.join("district-a.key.pem"))
        .output()
        .expect("python3 with PyJWT (Debian: python3-jwt)");
    assert!(
        out.status.success(),
        "PyJWT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (s, body) = post(&h, &token, &application("350205260401099999", "350205")).await;
    assert_eq!(s, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_issue_prints_a_token_the_gateway_accepts() {
    let h = Harness::with_config(ONE_ROUTE, with_tokens).await;
    let out = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(h.dir.path().join("hallgate.toml"))
        .args([
            "token",
            "issue",
            "--node",
            "district-a",
            "--ttl",
            "5m",
            "--key",
        ])
        .arg(h.dir.path().join("keys/district-a.key.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (s, body) = post(&h, &token, &application("350205260401098888", "350205")).await;
    assert_eq!(s, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_id_set_in_the_config_names_the_key() {
    fn named(t: String) -> String {
        with_tokens(t).replace(
            "keys = [\"keys/district-a.pub.pem\"]",
            "keys = [{ file = \"keys/district-a.pub.pem\", id = \"tonglu-2026\" }]",
        )
    }
    let h = Harness::with_config(ONE_ROUTE, named).await;
    let (s, body) = post(
        &h,
        &sign(&h, "district-a", Some("tonglu-2026"), &claims("district-a")),
        &application("350205260401097701", "350205"),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    // The file name is no longer the key's id.
    let (s, body) = post(
        &h,
        &sign(&h, "district-a", Some("district-a"), &claims("district-a")),
        &application("350205260401097702", "350205"),
    )
    .await;
    assert_eq!(s, 401, "{body}");
    // `token issue` names the configured id.
    let out = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(h.dir.path().join("hallgate.toml"))
        .args(["token", "issue", "--node", "district-a", "--key"])
        .arg(h.dir.path().join("keys/district-a.key.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("tonglu-2026"));
    let (s, body) = post(&h, &token, &application("350205260401097703", "350205")).await;
    assert_eq!(s, 202, "{body}");
}
