//! Files in a 前置库: rows of `inf_apply_attachment` whose BLOB column holds a
//! material's bytes are read as material records with the file's SHA-256 and size,
//! against a real MariaDB, a real PostgreSQL and an SQLite file. With payloads kept
//! (`[audit] retain_payloads`, the default) the stored message holds the bytes; a
//! batch's body stays under `[limits] max_body_bytes` (the rest of the rows wait for
//! the next batch), and a row over the limit by itself is marked `2` naming it.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::qzk::{DDL, Engine, Fresh, attachment_row, fresh, gateway_head};
use hallgate::config::Config;
use hallgate::receiver::Receiver;

/// The largest body of a batch in this test.
const MAX_BODY: usize = 8_000;

fn config(dir: &Path, f: &Fresh, city: &str) -> Config {
    let root = env!("CARGO_MANIFEST_DIR");
    let settings = f.settings_in(dir);
    let head = gateway_head(
        dir,
        "gw-files",
        "127.0.0.1:0",
        "shutdown_grace_seconds = 5\n",
    );
    let text = format!(
        r#"
{head}
[limits]
max_body_bytes = {MAX_BODY}
[nodes.qzk]
name = "江宁区市场监管局前置库"
level = "department"
region = "320115"
mappings = ["{root}/mappings/js-qzk/inf_apply_attachment.toml"]
accept = {{ kinds = ["material"], regions = ["320115"] }}

[nodes.qzk.tables]
{settings}
[[nodes.qzk.tables.source]]
table = "inf_apply_attachment"
kind = "material"
keys = ["ROWGUID"]
case = "PROJID"
batch = 10
interval_ms = 50

[nodes.city]
name = "市级平台"
level = "city"
destination = {{ url = "{city}", timeout_ms = 5000, concurrency = 2 }}

[[routes]]
name = "materials-to-city"
kinds = ["material"]
to = ["city"]
"#
    );
    let path = dir.join("hallgate.toml");
    std::fs::write(&path, text).expect("write config");
    Config::load(&path).expect("config is valid")
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn files_become_materials(engine: Engine) {
    let f = fresh(engine).await;
    f.db.exec(DDL).await;
    let small = "%PDF-1.7 申请书".as_bytes().to_vec();
    let (mid_a, mid_b) = (bytes(3_000, 1), bytes(3_000, 2));
    let huge = bytes(20_000, 3);
    let mut rows = String::new();
    rows.push_str(&attachment_row("m1", "C1", Some("营业执照申请书"), &small));
    rows.push_str(&attachment_row("m2", "C1", Some("身份证明"), &mid_a));
    rows.push_str(&attachment_row("m3", "C1", Some("场所证明"), &mid_b));
    rows.push_str(&attachment_row("m4", "C1", Some("平面图"), &huge));
    rows.push_str(&attachment_row("m5", "C1", None, &small));
    f.db.exec(&rows).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    let running = hallgate::gateway::start(config(dir.path(), &f, &city.url()), None)
        .await
        .expect("gateway starts");
    let start = std::time::Instant::now();
    while f.db.pending("inf_apply_attachment").await > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{engine:?}: the attachments were not drained"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let marks = f.db.marks("inf_apply_attachment").await;
    let mark = |g: &str| marks.iter().find(|m| m.0 == g).cloned().expect("row");
    for g in ["m1", "m2", "m3"] {
        assert_eq!(mark(g).1, "1", "{engine:?}: {g}: {:?}", mark(g));
    }
    let (_, sign, err, _) = mark("m4");
    assert_eq!(sign, "2", "{engine:?}: a row over the body limit alone");
    assert!(err.contains("max_body_bytes"), "{engine:?}: {err}");
    let (_, sign, err, _) = mark("m5");
    assert_eq!(sign, "2");
    assert!(
        err.contains("name") && err.contains("required"),
        "{engine:?}: {err}"
    );

    // The materials reach the city with the file's SHA-256 and size.
    common::wait_until(20, "three materials", || city.accepted().len() >= 3).await;
    for (g, data) in [("m1", &small), ("m2", &mid_a), ("m3", &mid_b)] {
        let got = city
            .accepted()
            .into_iter()
            .find(|a| a.body["ext"]["rowguid"] == g)
            .unwrap_or_else(|| panic!("{engine:?}: {g} delivered"));
        assert_eq!(got.kind, "material");
        assert_eq!(got.body["material_id"], format!("M-{g}"));
        assert_eq!(got.body["file"]["sha256"], hallgate::hash::sha256_hex(data));
        assert_eq!(got.body["file"]["size"], data.len());
        assert!(
            got.body["file"].get("base64").is_none(),
            "{engine:?}: the record names the file; the bytes stay in the stored message"
        );
    }

    // The stored messages keep the bytes, and no batch body passed the limit.
    let store = rusqlite::Connection::open(dir.path().join("hallgate.db")).expect("store");
    let mut stmt = store
        .prepare("SELECT body FROM messages WHERE source = 'qzk'")
        .expect("query");
    let bodies: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get(0))
        .expect("bodies")
        .collect::<Result<_, _>>()
        .expect("bodies");
    assert!(
        bodies.len() >= 2,
        "{engine:?}: the rows took more than one batch"
    );
    assert!(bodies.iter().all(|b| b.len() <= MAX_BODY), "{engine:?}");
    let all = bodies
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect::<String>();
    for data in [&small, &mid_a, &mid_b] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        assert!(all.contains(&b64), "{engine:?}: the bytes are kept");
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_files_become_materials() {
    files_become_materials(Engine::Maria).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_files_become_materials() {
    files_become_materials(Engine::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_become_materials() {
    files_become_materials(Engine::Sqlite).await;
}
