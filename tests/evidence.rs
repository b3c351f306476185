//! `hallgate audit verify` proves that what the store holds is what was received: it
//! hashes every retained body and stored record again against the `received` and
//! `accepted` events that vouch for them, in SQLite, in PostgreSQL, and for messages
//! whose events were archived.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const ONE_ROUTE: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

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

/// A stopped gateway whose store holds `n` accepted applications.
async fn populated(n: usize, edit: fn(String) -> String) -> Harness {
    let mut h = Harness::with_config(ONE_ROUTE, edit).await;
    for i in 0..n {
        let (s, _, b) = h
            .post(
                "district-a",
                &application(&format!("35020526040105{i:04}"), "350205"),
                None,
            )
            .await;
        assert_eq!(s, 202, "{b}");
    }
    wait_until(10, "deliveries", || h.city.accepted().len() == n).await;
    h.stop_gateway().await;
    h
}

fn verify(h: &Harness, extra: &[&str]) -> Output {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    hallgate(&h.dir.path().join("hallgate.toml"), &args)
}

fn first_message(db: &rusqlite::Connection) -> String {
    db.query_row("SELECT id FROM messages ORDER BY id LIMIT 1", [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// `audit verify` exits 1 and its output holds `needle`.
fn fails_naming(h: &Harness, needle: &str) {
    let out = verify(h, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(needle), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_body_or_record_in_sqlite_fails_verification_by_name() {
    let h = populated(3, |t| t).await;
    let out = verify(&h, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("evidence intact: 3 message(s), 3 body(ies) and 3 record(s)"),
        "{}",
        text(&out)
    );

    let db = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
    let id = first_message(&db);
    // A stored body edited in the file: the chain itself is untouched.
    let body: Vec<u8> = db
        .query_row("SELECT body FROM messages WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    let edited = String::from_utf8(body.clone())
        .unwrap()
        .replace("林晓东", "林晓冬");
    db.execute(
        "UPDATE messages SET body = ?1 WHERE id = ?2",
        rusqlite::params![edited.as_bytes(), id],
    )
    .unwrap();
    let out = verify(&h, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("audit log intact"), "the chain holds: {t}");
    assert!(t.contains("audit log NOT intact: evidence: "), "{t}");
    assert!(
        t.contains(&format!("message {id}: its stored body does not hash")),
        "{t}"
    );
    assert!(t.contains("event "), "names the event that vouches: {t}");
    // --chain-only does not look.
    let out = verify(&h, &["--chain-only"]);
    assert!(out.status.success(), "{}", text(&out));
    // Edited as the sqlite3 shell does it, `replace()` on the blob stores text: still a
    // mismatch named by message, not a read error.
    db.execute(
        "UPDATE messages SET body = replace(body, '林晓冬', '林晓东东') WHERE id = ?1",
        [&id],
    )
    .unwrap();
    let kind: String = db
        .query_row(
            "SELECT typeof(body) FROM messages WHERE id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kind, "text");
    fails_naming(&h, &format!("message {id}: its stored body does not hash"));

    // Put the body back; edit a stored record instead.
    db.execute(
        "UPDATE messages SET body = ?1 WHERE id = ?2",
        rusqlite::params![body, id],
    )
    .unwrap();
    assert!(verify(&h, &[]).status.success());
    let canonical: String = db
        .query_row(
            "SELECT canonical FROM records WHERE message_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "UPDATE records SET canonical = ?1 WHERE message_id = ?2",
        rusqlite::params![
            canonical.replace("公共场所卫生许可", "公共场所卫生许可（已改）"),
            id
        ],
    )
    .unwrap();
    fails_naming(
        &h,
        &format!("record 0 of message {id}: its stored content does not hash"),
    );
    // A record removed is named too.
    db.execute(
        "UPDATE records SET canonical = ?1 WHERE message_id = ?2",
        rusqlite::params![canonical, id],
    )
    .unwrap();
    db.execute("DELETE FROM deliveries WHERE message_id = ?1", [&id])
        .unwrap();
    db.execute("DELETE FROM records WHERE message_id = ?1", [&id])
        .unwrap();
    fails_naming(&h, "is missing from the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_whose_events_are_archived_are_checked_with_the_archives() {
    let h = populated(2, |t| t).await;
    let cfg = h.dir.path().join("hallgate.toml");
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
    let db = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
    let id = first_message(&db);
    db.execute(
        "UPDATE messages SET body = CAST('[]' AS BLOB) WHERE id = ?1",
        [&id],
    )
    .unwrap();
    // Without the archives the message cannot be checked, and says so.
    let out = verify(&h, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("were not checked (pass --archives DIR)"),
        "{}",
        text(&out)
    );
    // With them, the edit is found.
    let out = verify(&h, &["--archives", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("message {id}: its stored body does not hash")),
        "{}",
        text(&out)
    );
}

/// The PostgreSQL database of the test below (the harness's config edit is a plain
/// function, so it reads the URL from here).
static PG_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn on_postgres(t: String) -> String {
    let url = PG_URL.get().expect("database URL");
    let line = t
        .lines()
        .find(|l| l.starts_with("store = "))
        .unwrap()
        .to_string();
    t.replace(&line, &format!("store = \"{url}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_body_or_record_in_postgresql_fails_verification_by_name() {
    let url = pg::fresh_database().await;
    PG_URL.set(url.clone()).expect("one test sets it");
    let h = populated(2, on_postgres).await;
    let out = verify(&h, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("evidence intact: 2 message(s)"),
        "{}",
        text(&out)
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let id: String = client
        .query_one("SELECT id FROM messages ORDER BY id LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let body: Vec<u8> = client
        .query_one("SELECT body FROM messages WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "UPDATE messages SET body = convert_to('[{}]', 'UTF8') WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    fails_naming(&h, &format!("message {id}: its stored body does not hash"));
    // The body back, a record changed instead.
    client
        .execute("UPDATE messages SET body = $1 WHERE id = $2", &[&body, &id])
        .await
        .unwrap();
    client
        .execute(
            "UPDATE records SET canonical = replace(canonical, '公共场所', '公共 场所') WHERE message_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    fails_naming(
        &h,
        &format!("record 0 of message {id}: its stored content does not hash"),
    );
}
