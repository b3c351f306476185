//! 国密 on the wire, both ways, against the Python `gmssl` package:
//! - outbound, gmssl verifies the SM2 signature headers of the gateway's deliveries
//!   and decrypts their SM4-CBC bodies back to the record;
//! - inbound, bodies gmssl encrypted (SM4-CBC with the IV before the ciphertext, and
//!   SM4-ECB in a `{"data": …}` envelope) and signed are accepted and delivered;
//! - a tampered signature (401), a wrong key and bad padding (400) are each refused,
//!   audited, and store nothing.

mod common;

use base64::Engine;
use common::gm::gm_peer;
use common::*;
use hallgate::guomi::sm2::{DEFAULT_USER_ID, Sm2Signer};
use serde_json::Value;

const ONE_ROUTE: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";
const KEY_A: &str = "0123456789abcdeffedcba9876543210";
const KEY_B: &str = "31323334353637383930616263646566";
const WRONG: &str = "fedcba98765432100123456789abcdef";

fn wired(t: String) -> String {
    format!(
        "{t}
[nodes.district-a.sm2_sign]
key = \"keys/district-a-sm2.pub.pem\"

[nodes.district-a.sm4]
mode = \"cbc\"
secret_file = \"keys/district-a.sm4\"

[nodes.district-b.sm2_sign]
key = \"keys/district-b-sm2.pub.pem\"

[nodes.district-b.sm4]
mode = \"ecb\"
secret_file = \"keys/district-b.sm4\"
encoding = \"hex\"
field = \"data\"
"
    )
    .replace(
        "level = \"city\"\ndestination = { ",
        "level = \"city\"\ndestination = { sm2_sign = { app_id = \"hallgate-test\" }, \
         sm4 = { mode = \"cbc\", secret_file = \"keys/city.sm4\" }, ",
    )
}

fn keys(dir: &std::path::Path) {
    for node in ["district-a", "district-b"] {
        hallgate::guomi::sm2::generate(
            &dir.join(format!("keys/{node}-sm2.key.pem")),
            &dir.join(format!("keys/{node}-sm2.pub.pem")),
        )
        .expect("SM2 pair");
    }
    let gw = dir.join("certs/gateway-sm2.key.pem");
    hallgate::guomi::sm2::generate(&gw, &hallgate::keys::public_key_path(&gw)).expect("gw");
    std::fs::write(dir.join("keys/district-a.sm4"), KEY_A).unwrap();
    std::fs::write(dir.join("keys/district-b.sm4"), KEY_B).unwrap();
    std::fs::write(dir.join("keys/city.sm4"), KEY_A).unwrap();
}

fn sm2_hex(h: &Harness, file: &str) -> (String, String) {
    let s = Sm2Signer::load(&h.dir.path().join(file), DEFAULT_USER_ID).unwrap();
    (s.to_hex(), s.verifier().to_hex())
}

fn peer_ok(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = gm_peer(args, stdin);
    assert!(
        out.status.success(),
        "gm_peer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// SM4-CBC by gmssl: IV ‖ ciphertext.
fn cbc(key: &str, iv: &str, plain: &[u8]) -> Vec<u8> {
    let mut out = hex::decode(iv).unwrap();
    out.extend(peer_ok(&["sm4", "enc", "cbc", key, iv], plain));
    out
}

/// POST `body` as `node`, signed by gmssl with the node's SM2 key.
async fn send(h: &Harness, node: &str, body: &[u8], ctype: &str) -> (u16, Value) {
    let (private, public) = sm2_hex(h, &format!("keys/{node}-sm2.key.pem"));
    let ts = hallgate::time::now_ms().to_string();
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    let sig = String::from_utf8(peer_ok(
        &["sign-request", &private, &public, &ts, &nonce],
        body,
    ))
    .unwrap();
    send_signed(h, node, body, ctype, &ts, &nonce, sig.trim()).await
}

async fn send_signed(
    h: &Harness,
    node: &str,
    body: &[u8],
    ctype: &str,
    ts: &str,
    nonce: &str,
    sig: &str,
) -> (u16, Value) {
    h.post_with(
        &[
            ("content-type", ctype),
            ("x-hallgate-node", node),
            ("x-timestamp", ts),
            ("x-nonce", nonce),
            ("x-signature", sig),
        ],
        body.to_vec(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmssl_bodies_are_opened_and_deliveries_sealed_for_gmssl() {
    let h = Harness::with_setup(ONE_ROUTE, wired, keys).await;

    // Inbound: CBC with a random IV before the ciphertext, base64.
    let plain = application("350205261204000101", "350205").to_string();
    let sealed = cbc(KEY_A, "000102030405060708090a0b0c0d0e0f", plain.as_bytes());
    let body = base64::engine::general_purpose::STANDARD.encode(&sealed);
    let (s, answer) = send(&h, "district-a", body.as_bytes(), "text/plain").await;
    assert_eq!(s, 202, "{answer}");
    // ECB, hex, in a {"data": …} envelope.
    let plain_b = application("330122261204000102", "330122").to_string();
    let ecb = peer_ok(&["sm4", "enc", "ecb", KEY_B], plain_b.as_bytes());
    let body_b = serde_json::json!({ "data": hex::encode(ecb) }).to_string();
    let (s, answer) = send(&h, "district-b", body_b.as_bytes(), "application/json").await;
    assert_eq!(s, 202, "{answer}");

    // Outbound: the city receives both records sealed; gmssl checks and opens them.
    wait_until(10, "two deliveries", || h.city.arrivals().len() >= 2).await;
    let (_, gw_public) = sm2_hex(&h, "certs/gateway-sm2.key.pem");
    let mut opened = Vec::new();
    for a in h.city.arrivals() {
        let header = |n: &str| hallgate::receiver::Receiver::header(&a, n).unwrap_or_default();
        assert_eq!(header("x-app-id"), "hallgate-test");
        assert_eq!(header("content-type"), "text/plain");
        peer_ok(
            &[
                "verify-request",
                &gw_public,
                &header("x-signature"),
                &header("x-timestamp"),
                &header("x-nonce"),
            ],
            &a.raw,
        );
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&a.raw)
            .unwrap();
        let (iv, ct) = sealed.split_at(16);
        let plain = peer_ok(&["sm4", "dec", "cbc", KEY_A, &hex::encode(iv)], ct);
        let record: Value = serde_json::from_slice(&plain).expect("the record, decrypted");
        opened.push(record["case_no"].as_str().unwrap().to_string());
    }
    opened.sort();
    assert_eq!(opened, ["330122261204000102", "350205261204000101"]);
    // A tampered body no longer verifies for gmssl either.
    let a = &h.city.arrivals()[0];
    let header = |n: &str| hallgate::receiver::Receiver::header(a, n).unwrap_or_default();
    let mut tampered = a.raw.clone();
    tampered[0] ^= 1;
    let out = gm_peer(
        &[
            "verify-request",
            &gw_public,
            &header("x-signature"),
            &header("x-timestamp"),
            &header("x-nonce"),
        ],
        &tampered,
    );
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_signature_a_wrong_key_and_bad_padding_are_refused_and_audited() {
    let h = Harness::with_setup(ONE_ROUTE, wired, keys).await;
    let records = "SELECT count(*) FROM records";
    let iv = "0f0e0d0c0b0a09080706050403020100";
    let plain = application("350205261204000201", "350205").to_string();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    // A tampered signature: the body changed after signing.
    let body = b64(&cbc(KEY_A, iv, plain.as_bytes()));
    let (private, public) = sm2_hex(&h, "keys/district-a-sm2.key.pem");
    let (ts, nonce) = (hallgate::time::now_ms().to_string(), "n-1".to_string());
    let sig = String::from_utf8(peer_ok(
        &["sign-request", &private, &public, &ts, &nonce],
        body.as_bytes(),
    ))
    .unwrap();
    let altered = b64(&cbc(
        KEY_A,
        iv,
        plain
            .replace("350205261204000201", "350205261204000209")
            .as_bytes(),
    ));
    let (s, answer) = send_signed(
        &h,
        "district-a",
        altered.as_bytes(),
        "text/plain",
        &ts,
        &nonce,
        sig.trim(),
    )
    .await;
    assert_eq!(s, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_signature", "{answer}");
    // Missing signature headers.
    let r = h
        .client
        .post(format!("{}/v1/records", h.url))
        .header("x-hallgate-node", "district-a")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // A wrong key: validly signed, encrypted under another key; refused on its
    // padding, never read as a record.
    let wrong = b64(&cbc(WRONG, iv, plain.as_bytes()));
    let (s, answer) = send(&h, "district-a", wrong.as_bytes(), "text/plain").await;
    assert_eq!(s, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_ciphertext", "{answer}");
    assert!(answer.to_string().contains("padding"), "{answer}");

    // Bad padding under the right key: the last byte of the next-to-last block
    // flipped high, so the last block's padding byte is over 16.
    let mut sealed = cbc(KEY_A, iv, plain.as_bytes());
    let at = sealed.len() - 17;
    sealed[at] ^= 0x80;
    let (s, answer) = send(&h, "district-a", b64(&sealed).as_bytes(), "text/plain").await;
    assert_eq!(s, 400, "{answer}");
    assert!(answer.to_string().contains("bad padding"), "{answer}");
    // Not base64 at all.
    let (s, answer) = send(&h, "district-a", b"%%%", "text/plain").await;
    assert_eq!(s, 400, "{answer}");
    assert!(answer.to_string().contains("base64"), "{answer}");

    assert_eq!(h.count(records), 0, "nothing refused is stored");
    assert!(
        h.count("SELECT count(*) FROM audit WHERE event = 'token_refused' AND detail LIKE '%bad_signature%'"
        ) >= 1
    );
    assert!(
        h.count(
            "SELECT count(*) FROM audit WHERE event = 'rejected' AND detail LIKE '%bad_ciphertext%'"
        ) >= 3
    );
    // The right key and an intact body still go through.
    let (s, answer) = send(&h, "district-a", body.as_bytes(), "text/plain").await;
    assert_eq!(s, 202, "{answer}");
}
