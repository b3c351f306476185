//! The audit log as an auditor uses it: tampering is detected and located, the
//! chain holds under concurrency and beside command-line tools, checkpoints prove a
//! log was not rewritten, archives verify as one chain with the live log, queries
//! respect the auditor role, exports mask personal data unless asked and audited.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use rusqlite::{Connection, params};
use serde_json::{Value, json};

const ONE_ROUTE: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

fn with_auditor(t: String) -> String {
    t.replace(
        "[nodes.supervision]\n",
        "[nodes.supervision]\nroles = [\"auditor\"]\n",
    )
}

fn hallgate(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run hallgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A stopped gateway whose store holds a few delivered cases.
async fn populated() -> Harness {
    let mut h = Harness::with_config(ONE_ROUTE, with_auditor).await;
    for i in 0..4 {
        let (s, _, _) = h
            .post(
                "district-a",
                &application(&format!("35020526040104{i:04}"), "350205"),
                None,
            )
            .await;
        assert_eq!(s, 202);
    }
    wait_until(10, "deliveries", || h.city.accepted().len() == 4).await;
    h.stop_gateway().await;
    h
}

fn db(h: &Harness) -> Connection {
    Connection::open(h.dir.path().join("hallgate.db")).expect("open db")
}

fn config_path(h: &Harness) -> std::path::PathBuf {
    h.dir.path().join("hallgate.toml")
}

fn assert_broken_at(h: &Harness, seq: i64) {
    let out = hallgate(&config_path(h), &["audit", "verify"]);
    assert!(!out.status.success(), "verify must fail: {}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!("audit event {seq}:")),
        "names event {seq}: {t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_changed_deleted_inserted_or_swapped_event() {
    // changed payload
    let h = populated().await;
    let ok = hallgate(&config_path(&h), &["audit", "verify"]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("audit log intact"));
    db(&h)
        .execute(
            "UPDATE audit SET detail = json_set(detail, '$.status', 'forged') WHERE seq = 5",
            [],
        )
        .unwrap();
    assert_broken_at(&h, 5);

    // deleted
    let h = populated().await;
    db(&h)
        .execute("DELETE FROM audit WHERE seq = 7", [])
        .unwrap();
    assert_broken_at(&h, 7);

    // inserted: events from 6 on moved up by one, a forged event put at 6
    let h = populated().await;
    let c = db(&h);
    let max: i64 = c
        .query_row("SELECT max(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    for seq in (6..=max).rev() {
        c.execute("UPDATE audit SET seq = seq + 1 WHERE seq = ?1", [seq])
            .unwrap();
    }
    c.execute(
        "INSERT INTO audit (seq, at, event, node, detail, hash)
         SELECT 6, at, 'delivered', 'city', '{}', hash FROM audit WHERE seq = 5",
        [],
    )
    .unwrap();
    assert_broken_at(&h, 6);

    // swapped: the contents of events 8 and 9 exchanged
    let h = populated().await;
    let c = db(&h);
    c.execute_batch(
        "UPDATE audit SET seq = -1 WHERE seq = 8;
         UPDATE audit SET seq = 8 WHERE seq = 9;
         UPDATE audit SET seq = 9 WHERE seq = -1;",
    )
    .unwrap();
    assert_broken_at(&h, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_catches_a_rewritten_chain() {
    let h = populated().await;
    let cfg = config_path(&h);
    let key = h.dir.path().join("keys/gw.key.pem");
    let out = hallgate(&cfg, &["keys", "generate", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let cp = h.dir.path().join("cp.json");
    let out = hallgate(
        &cfg,
        &[
            "audit",
            "checkpoint",
            "--key",
            key.to_str().unwrap(),
            "--out",
            cp.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let public = h.dir.path().join("keys/gw.pub.pem");
    let args = [
        "audit",
        "verify",
        "--checkpoint",
        cp.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ];
    let out = hallgate(&cfg, &args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is in the log unaltered"));

    // Another key than the one that signed: nothing is found either way (exit 2).
    let other = h.dir.path().join("keys/other.key.pem");
    let out = hallgate(
        &cfg,
        &["keys", "generate", "--out", other.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let other_public = h.dir.path().join("keys/other.pub.pem");
    let mut wrong = args;
    wrong[5] = other_public.to_str().unwrap();
    let out = hallgate(&cfg, &wrong);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "audit log not verified: checkpoint not checked: signed with a different key"
        ),
        "{}",
        text(&out)
    );

    // A careful forger changes event 3 and recomputes every hash after it: the chain
    // alone verifies again, the checkpoint does not.
    let c = db(&h);
    c.execute(
        "UPDATE audit SET detail = json_set(detail, '$.status', 'forged') WHERE seq = 3",
        [],
    )
    .unwrap();
    let mut stmt = c
        .prepare("SELECT seq, at, event, node, case_no, kind, message_id, delivery_id, detail FROM audit ORDER BY seq")
        .unwrap();
    let rows: Vec<hallgate::event::AuditRow> = stmt
        .query_map([], |r| {
            Ok(hallgate::event::AuditRow {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                event: r.get(2)?,
                node: r.get(3)?,
                case_no: r.get(4)?,
                kind: r.get(5)?,
                message_id: r.get(6)?,
                delivery_id: r.get(7)?,
                detail: serde_json::from_str(&r.get::<_, String>(8)?).unwrap(),
                hash: String::new(),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev = hallgate::event::GENESIS;
    for row in &rows {
        prev = hallgate::hash::HashAlg::Sha256.chain(&prev, &row.canonical_bytes());
        c.execute(
            "UPDATE audit SET hash = ?1 WHERE seq = ?2",
            params![prev.as_slice(), row.seq],
        )
        .unwrap();
    }
    let out = hallgate(&cfg, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "the rewritten chain is self-consistent: {}",
        text(&out)
    );
    let out = hallgate(&cfg, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("differs from the signed checkpoint"),
        "{}",
        text(&out)
    );

    // A checkpoint that was itself edited fails its signature.
    let mut edited: Value = serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    edited["seq"] = json!(2);
    std::fs::write(&cp, edited.to_string()).unwrap();
    let out = hallgate(&cfg, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("signature does not match"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_and_the_live_log_verify_as_one_chain() {
    let mut h = populated().await;
    let cfg = config_path(&h);
    let dir = h.dir.path().join("archive");
    let out = hallgate(
        &cfg,
        &[
            "audit",
            "archive",
            "--before",
            "2099-01-01",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("archived"));
    let live: i64 = db(&h)
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        live, 2,
        "the newest event and the `archived` event stay live"
    );

    // The gateway goes on appending after the archive.
    h.start_gateway().await;
    let (s, _, _) = h
        .post(
            "district-a",
            &application("350205260401049999", "350205"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    wait_until(10, "delivery", || h.city.accepted().len() == 5).await;
    h.stop_gateway().await;
    // A second archive chains to the first.
    let out = hallgate(
        &cfg,
        &[
            "audit",
            "archive",
            "--before",
            "2099-01-01",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);

    let out = hallgate(
        &cfg,
        &["audit", "verify", "--archives", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("archived,"), "{}", text(&out));
    let out = hallgate(&cfg, &["audit", "verify"]);
    assert!(out.status.success());
    assert!(text(&out).contains("were not checked"));

    // A damaged archive is found.
    let first = hallgate::audit::archive::list(&dir).unwrap().remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let out = hallgate(
        &cfg,
        &["audit", "verify", "--archives", dir.to_str().unwrap()],
    );
    // (Depending on where the flipped byte lands: a changed event, or an archive
    // that no longer reads.)
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("audit log NOT intact: "),
        "{}",
        text(&out)
    );

    // A folder that is not there is no finding about the log: it was not verified.
    let missing = dir.join("no-such-folder");
    let out = hallgate(
        &cfg,
        &["audit", "verify", "--archives", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("audit log not verified: archive folder "),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_and_tools_make_one_chain() {
    let h = Harness::with_config(ONE_ROUTE, with_auditor).await;
    let cfg = config_path(&h);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let (client, url) = (h.client.clone(), h.url.clone());
        tasks.spawn(async move {
            let r = client
                .post(format!("{url}/v1/records"))
                .header("content-type", "application/json")
                .header("x-hallgate-node", "district-a")
                .body(application(&format!("35020526040105{i:04}"), "350205").to_string())
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        });
    }
    // A command-line tool appends to the same chain while the gateway writes.
    let cfg2 = cfg.clone();
    let tool = tokio::task::spawn_blocking(move || {
        (0..3).all(|_| {
            hallgate(&cfg2, &["audit", "export", "--format", "jsonl"])
                .status
                .success()
        })
    });
    while let Some(s) = tasks.join_next().await {
        assert_eq!(s.unwrap(), 202);
    }
    assert!(tool.await.unwrap(), "exports ran");
    wait_until(15, "deliveries", || h.city.accepted().len() == 60).await;
    let out = hallgate(&cfg, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let c = db(&h);
    let (n, max): (i64, i64) = c
        .query_row("SELECT count(*), max(seq) FROM audit", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(n, max, "no gaps");
    let exported: i64 = c
        .query_row(
            "SELECT count(*) FROM audit WHERE event = 'exported'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(exported, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_see_beyond_their_own_events() {
    let h = Harness::with_config(ONE_ROUTE, with_auditor).await;
    let (s, _, _) = h
        .post(
            "district-a",
            &application("350205260401060001", "350205"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    let (s, _, _) = h
        .post(
            "district-b",
            &application("330122260401060002", "330122"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    wait_until(10, "deliveries", || h.city.accepted().len() == 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let get = |node: &'static str, path: String| {
        let (client, url) = (h.client.clone(), h.url.clone());
        async move {
            let r = client
                .get(format!("{url}{path}"))
                .header("x-hallgate-node", node)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
            )
        }
    };
    // The auditor sees both districts' events.
    let (s, all) = get("supervision", "/v1/audit?event=received".into()).await;
    assert_eq!(s, 200);
    let nodes: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["node"].as_str())
        .collect();
    assert!(
        nodes.contains(&"district-a") && nodes.contains(&"district-b"),
        "{nodes:?}"
    );
    // A district sees only its own, and may not ask for another's.
    let (s, own) = get("district-b", "/v1/audit".into()).await;
    assert_eq!(s, 200);
    assert!(
        own["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["node"] == "district-b")
    );
    let (s, _) = get("district-b", "/v1/audit?node=district-a".into()).await;
    assert_eq!(s, 403);
    let (s, _) = get("district-b", "/v1/cases/350205260401060001/timeline".into()).await;
    assert_eq!(s, 404, "another district's case is not visible");
    let r = h
        .client
        .get(format!("{}/v1/audit", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The auditor's timeline tells the case.
    let (s, tl) = get(
        "supervision",
        "/v1/cases/350205260401060001/timeline".into(),
    )
    .await;
    assert_eq!(s, 200);
    let events: Vec<&str> = tl["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(
        events,
        ["received", "accepted", "routed", "attempted", "delivered"]
    );
    let story = tl["text"].as_str().unwrap();
    assert!(
        story.contains("application delivered to city 市级平台"),
        "{story}"
    );
    // A bad query is a clear 400.
    let (s, e) = get("supervision", "/v1/audit?from=yesterday".into()).await;
    assert_eq!(s, 400);
    assert!(e["error"]["message"].as_str().unwrap().contains("from"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_mask_personal_data_unless_full_and_full_is_audited() {
    let h = populated().await;
    let cfg = config_path(&h);
    let out = hallgate(&cfg, &["audit", "export", "--format", "jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    let masked = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(masked.contains("350205********0259"), "masked ID in export");
    assert!(
        !masked.contains("350205195912280259")
            && !masked.contains("18659201234")
            && !masked.contains("558120")
    );
    let csv_out = h.dir.path().join("audit.csv");
    let out = hallgate(
        &cfg,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--full",
            "--out",
            csv_out.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let csv = std::fs::read_to_string(&csv_out).unwrap();
    assert!(
        csv.starts_with("seq,at,event,node,case_no"),
        "{}",
        &csv[..80]
    );
    assert!(
        csv.contains("350205195912280259"),
        "a full export has the whole record"
    );
    let full: String = db(&h)
        .query_row(
            "SELECT detail FROM audit WHERE event = 'exported' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let full: Value = serde_json::from_str(&full).unwrap();
    assert_eq!(full["full"], true);
    assert_eq!(full["format"], "csv");
    // The timeline on the command line masks too, and reads as a story.
    let out = hallgate(&cfg, &["audit", "timeline", "350205260401040000"]);
    let t = text(&out);
    assert!(
        t.contains("办件 350205260401040000") && t.contains("delivered to city"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm3_chains_verify_and_the_hash_cannot_change_later() {
    let mut h =
        Harness::with_config(ONE_ROUTE, |t| format!("{t}\n[audit]\nhash = \"sm3\"\n")).await;
    let (s, _, _) = h
        .post(
            "district-a",
            &application("350205260401070001", "350205"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    wait_until(10, "delivery", || h.city.accepted().len() == 1).await;
    h.stop_gateway().await;
    let out = hallgate(&config_path(&h), &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sm3 chain"));
    // The same store opened with SHA-256 configured is refused, not silently mixed.
    let text = std::fs::read_to_string(config_path(&h))
        .unwrap()
        .replace("hash = \"sm3\"", "hash = \"sha256\"");
    let cfg = hallgate::config::Config::parse(&text, &config_path(&h)).unwrap();
    let err = hallgate::gateway::start(cfg, None)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("uses sm3"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_audited_with_their_reason() {
    let mut h = Harness::with_config(ONE_ROUTE, with_auditor).await;
    let r = h
        .client
        .post(format!("{}/v1/records", h.url))
        .header("x-hallgate-node", "stranger")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, _, _) = h
        .post(
            "district-b",
            &application("350205260401080001", "350205"),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = h.post("district-a", &json!({"kind": "result"}), None).await;
    assert_eq!(s, 422);
    // A refusal that names no configured node is tallied per peer and written when
    // the tally is flushed (every refusal_audit_seconds, and at shutdown).
    h.stop_gateway().await;
    let c = db(&h);
    let events: Vec<(String, String)> = c
        .prepare("SELECT event, detail FROM audit WHERE event IN ('token_refused', 'authorization_refused', 'rejected') ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        kinds,
        ["authorization_refused", "rejected", "token_refused"]
    );
    assert!(events[0].1.contains("region"), "{}", events[0].1);
    assert!(events[1].1.contains("case_no"), "{}", events[1].1);
    let tally: serde_json::Value = serde_json::from_str(&events[2].1).unwrap();
    assert_eq!(tally["count"], 1, "{tally}");
    assert_eq!(tally["peer"], "127.0.0.1", "{tally}");
    assert!(
        tally["first"]["message"]
            .as_str()
            .unwrap()
            .contains("stranger"),
        "{tally}"
    );
}
