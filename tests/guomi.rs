//! 国密 over real HTTP, against an independent implementation (the Python `gmssl`
//! package, installed by scripts/test.sh): SM2 node tokens made by gmssl and by
//! `hallgate token issue` are accepted; a tampered signature, a wrong key and an
//! SM2 name the node is not configured for are refused with 401, audited, and store
//! nothing. SM2-signed audit checkpoints verify with `hallgate audit verify`, and
//! gmssl verifies their signature.

mod common;

use std::path::Path;
use std::process::Command;

use common::gm::gm_peer;
use common::*;
use hallgate::guomi::sm2::{DEFAULT_USER_ID, Sm2Signer};
use serde_json::{Value, json};

const ONE_ROUTE: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

fn sm2_nodes(t: String) -> String {
    format!(
        "{t}
[nodes.district-a.auth]
algorithms = [\"SM2\"]
keys = [\"keys/district-a-sm2.pub.pem\"]

[nodes.district-b.auth]
algorithms = [\"ES256\", \"SM2\"]
sm2_alg_name = \"SM3withSM2\"
keys = [\"keys/district-b.pub.pem\", \"keys/district-b-sm2.pub.pem\"]

[audit]
checkpoint_alg = \"sm2\"
"
    )
    .replace("trust_node_header = true", "trust_node_header = false")
}

fn sm2_keys(dir: &Path) {
    for node in ["district-a", "district-b"] {
        hallgate::guomi::sm2::generate(
            &dir.join(format!("keys/{node}-sm2.key.pem")),
            &dir.join(format!("keys/{node}-sm2.pub.pem")),
        )
        .expect("SM2 key pair");
    }
    let gw = dir.join("certs/gateway-sm2.key.pem");
    hallgate::guomi::sm2::generate(&gw, &hallgate::keys::public_key_path(&gw)).expect("gw SM2");
}

fn key_hex(h: &Harness, node: &str) -> (String, String) {
    let signer = Sm2Signer::load(
        &h.dir.path().join(format!("keys/{node}-sm2.key.pem")),
        DEFAULT_USER_ID,
    )
    .unwrap();
    (signer.to_hex(), signer.verifier().to_hex())
}

fn claims(iss: &str) -> Value {
    let now = hallgate::time::now_ms() / 1000;
    json!({
        "iss": iss, "aud": "gw-test", "iat": now, "nbf": now, "exp": now + 300,
        "jti": uuid::Uuid::now_v7().to_string(),
    })
}

fn gmssl_token(h: &Harness, node: &str, alg: &str, claims: &Value) -> String {
    let (private, public) = key_hex(h, node);
    let out = gm_peer(&["token", &private, &public, alg, &claims.to_string()], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn post(h: &Harness, token: &str, case_no: &str) -> (u16, Value) {
    // district-a sends for 350205, district-b for 330122.
    let region = if case_no.starts_with("3301") {
        "330122"
    } else {
        "350205"
    };
    let auth = format!("Bearer {token}");
    h.post_with(
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        application(case_no, region).to_string(),
    )
    .await
}

fn hallgate(h: &Harness, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(h.dir.path().join("hallgate.toml"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_tokens_from_gmssl_and_from_the_cli_are_accepted_forgeries_refused() {
    let h = Harness::with_setup(ONE_ROUTE, sm2_nodes, sm2_keys).await;

    // Signed by the independent implementation, with the default name and the
    // name district-b's peers use.
    let token = gmssl_token(&h, "district-a", "SM2", &claims("district-a"));
    let (s, body) = post(&h, &token, "350205261204000001").await;
    assert_eq!(s, 202, "{body}");
    let token = gmssl_token(&h, "district-b", "SM3withSM2", &claims("district-b"));
    let (s, body) = post(&h, &token, "330122261204000002").await;
    assert_eq!(s, 202, "{body}");

    // Minted by the gateway's own command.
    let key = h.dir.path().join("keys/district-a-sm2.key.pem");
    let out = hallgate(
        &h,
        &[
            "token",
            "issue",
            "--node",
            "district-a",
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (s, body) = post(&h, &minted, "350205261204000003").await;
    assert_eq!(s, 202, "{body}");
    let stored = "SELECT count(*) FROM records";
    let before = h.count(stored);
    let refusals = h.count("SELECT count(*) FROM audit WHERE event = 'token_refused'");

    // A tampered signature: one bit of s flipped.
    let good = gmssl_token(&h, "district-a", "SM2", &claims("district-a"));
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut raw = base64_url(sig);
    raw[40] ^= 1;
    let (s, body) = post(
        &h,
        &format!("{head}.{}", encode_url(&raw)),
        "350205261204000004",
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body.to_string().contains("SM2 signature does not verify"),
        "{body}"
    );
    // Signed with another node's key (a wrong key).
    let (private_b, public_b) = key_hex(&h, "district-b");
    let out = gm_peer(
        &[
            "token",
            &private_b,
            &public_b,
            "SM2",
            &claims("district-a").to_string(),
        ],
        b"",
    );
    let wrong = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (s, body) = post(&h, &wrong, "350205261204000005").await;
    assert_eq!(s, 401, "{body}");
    // district-a's peers do not use the name SM3withSM2: not an algorithm it allows.
    let other_name = gmssl_token(&h, "district-a", "SM3withSM2", &claims("district-a"));
    let (s, body) = post(&h, &other_name, "350205261204000006").await;
    assert_eq!(s, 401, "{body}");
    assert!(body.to_string().contains("not allowed"), "{body}");
    // An expired SM2 token, validly signed.
    let mut old = claims("district-a");
    old["exp"] = json!(old["iat"].as_i64().unwrap() - 600);
    old["iat"] = json!(old["iat"].as_i64().unwrap() - 900);
    let (s, body) = post(
        &h,
        &gmssl_token(&h, "district-a", "SM2", &old),
        "350205261204000007",
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert!(body.to_string().contains("has expired"), "{body}");

    assert_eq!(h.count(stored), before, "a refused token stores nothing");
    assert!(
        h.count("SELECT count(*) FROM audit WHERE event = 'token_refused'") >= refusals + 4,
        "every refusal is audited"
    );
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn encode_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_checkpoints_verify_with_the_cli_and_with_gmssl() {
    let mut h = Harness::with_setup(ONE_ROUTE, sm2_nodes, sm2_keys).await;
    let token = gmssl_token(&h, "district-a", "SM2", &claims("district-a"));
    let (s, body) = post(&h, &token, "350205261204000011").await;
    assert_eq!(s, 202, "{body}");
    h.stop_gateway().await;
    let file = h.dir.path().join("cp.json");
    let out = hallgate(
        &h,
        &["audit", "checkpoint", "--out", file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cp: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(cp["sig_alg"], "SM2");
    let public = h.dir.path().join("certs/gateway-sm2.pub.pem");
    let verify = |cp_path: &Path| {
        hallgate(
            &h,
            &[
                "audit",
                "verify",
                "--checkpoint",
                cp_path.to_str().unwrap(),
                "--public-key",
                public.to_str().unwrap(),
            ],
        )
    };
    let out = verify(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // gmssl verifies the same signature over the same bytes.
    let c: hallgate::audit::checkpoint::Checkpoint = serde_json::from_value(cp.clone()).unwrap();
    let gw = Sm2Signer::load(
        &h.dir.path().join("certs/gateway-sm2.key.pem"),
        DEFAULT_USER_ID,
    )
    .unwrap();
    let out = gm_peer(
        &["verify", &gw.verifier().to_hex(), &c.signature],
        &c.signed_bytes(),
    );
    assert!(out.status.success(), "gmssl does not verify the checkpoint");

    // An altered checkpoint is a finding.
    let mut altered = cp.clone();
    altered["seq"] = json!(cp["seq"].as_i64().unwrap() - 1);
    let altered_path = h.dir.path().join("cp-altered.json");
    std::fs::write(&altered_path, altered.to_string()).unwrap();
    let out = verify(&altered_path);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
