//! The table source against a real MariaDB and a real PostgreSQL (前置库): rows in
//! the Jiangsu `inf_apply` family are read through the node's mappings, stored,
//! delivered to a real receiver, and marked `1`, or `2` with the field and rule; a
//! row inserted later is read, a rewritten row is a new version, an older version
//! is refused; a config naming a column the table lacks does not start.
//!
//! Servers: `HALLGATE_TEST_MARIADB` and `HALLGATE_TEST_POSTGRES`, started by
//! `bash scripts/test.sh` (scripts/mariadb-test-server.sh, scripts/pg-test-server.sh).

mod common;

use std::path::Path;

use common::qzk::{DDL, Engine, Fresh, ID_OK, ITEM, Qzk, apply_row, fresh, gateway_head, step_row};
use hallgate::config::Config;
use hallgate::receiver::Receiver;

fn config(dir: &Path, f: &Fresh, city: &str, flag: &str) -> Config {
    let root = env!("CARGO_MANIFEST_DIR");
    let settings = f.settings_in(dir);
    let head = gateway_head(
        dir,
        "gw-tables",
        "127.0.0.1:0",
        "shutdown_grace_seconds = 5\n",
    );
    let text = format!(
        r#"
{head}
[nodes.qzk]
name = "江宁区市场监管局前置库"
level = "department"
region = "320115"
mappings = ["{root}/mappings/js-qzk/inf_apply.toml", "{root}/mappings/js-qzk/inf_apply_process.toml"]
accept = {{ kinds = ["application", "process"], regions = ["320115"] }}

[nodes.qzk.tables]
{settings}
[[nodes.qzk.tables.source]]
table = "inf_apply"
kind = "application"
keys = ["ROWGUID"]
flag = "{flag}"
version = "DATAVERSION"
batch = 3
interval_ms = 100

[[nodes.qzk.tables.source]]
table = "inf_apply_process"
kind = "process"
keys = ["ROWGUID"]
order = ["PROJID", "NO_ORD"]
batch = 50
interval_ms = 100

[nodes.city]
name = "市级平台"
level = "city"
destination = {{ url = "{city}", timeout_ms = 5000, concurrency = 2 }}

[[routes]]
name = "all-to-city"
kinds = ["application", "process"]
to = ["city"]
"#
    );
    let path = dir.join("hallgate.toml");
    std::fs::write(&path, text).expect("write config");
    Config::load(&path).expect("config is valid")
}

/// A fresh 前置库 with the Jiangsu tables, a folder for the config and store, and a
/// loopback city platform.
async fn setup(engine: Engine) -> (Fresh, tempfile::TempDir, Receiver) {
    let f = fresh(engine).await;
    f.db.exec(DDL).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    (f, dir, city)
}

fn stored(dir: &Path, case: &str) -> i64 {
    let c = rusqlite::Connection::open(dir.join("hallgate.db")).expect("store");
    c.query_row(
        "SELECT COUNT(*) FROM records WHERE case_no = ?1",
        [case],
        |r| r.get(0),
    )
    .expect("count")
}

async fn wait_drained(db: &Qzk) {
    let start = std::time::Instant::now();
    while db.pending("inf_apply").await + db.pending("inf_apply_process").await > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the tables were not drained in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn drains_marks_and_delivers(engine: Engine) {
    let (f, dir, city) = setup(engine).await;
    // Good rows, a bad check digit, NULL in a required column, text in a number
    // column, and (MariaDB) a zero date.
    let mut rows = String::new();
    for (g, case) in [("a1", "C1"), ("a2", "C2"), ("a3", "C3")] {
        rows.push_str(&apply_row(g, case, ID_OK, "20", 1));
    }
    rows.push_str(&apply_row("a4", "C4", "350205195912280250", "20", 1));
    rows.push_str(&apply_row("a5", "C5", ID_OK, "二十", 1));
    rows.push_str(&apply_row("a6", "C6", ID_OK, "20", 1).replace("'C6'", "NULL"));
    for (g, no) in [("p2", 2), ("p1", 1), ("p3", 3)] {
        rows.push_str(&step_row(g, "C1", no));
    }
    f.db.exec(&rows).await;
    if let Engine::Maria = engine {
        f.db.exec("SET SESSION sql_mode = ''; INSERT INTO \"inf_apply\" (\"ROWGUID\", \"PROJID\", \"IMPLEMENTCODE\", \"AREACODE\", \"RECEIVETIME\", \"SYNC_SIGN\") VALUES ('a7', 'C7', 'X', '320115', '0000-00-00 00:00:00', '0');")
            .await;
    }
    let running = hallgate::gateway::start(config(dir.path(), &f, &city.url(), "SYNC_SIGN"), None)
        .await
        .expect("gateway starts");
    wait_drained(&f.db).await;

    let marks = f.db.marks("inf_apply").await;
    let flag = |g: &str| marks.iter().find(|m| m.0 == g).cloned().expect("row");
    for g in ["a1", "a2", "a3"] {
        let (_, sign, err, dated) = flag(g);
        assert_eq!(
            (sign.as_str(), err.as_str(), dated),
            ("1", "", true),
            "{engine:?} row {g}"
        );
    }
    let (_, sign, err, _) = flag("a4");
    assert_eq!(sign, "2", "{engine:?}: a bad check digit is refused");
    assert!(
        err.contains("applicant.id_no") && err.contains("id_no:"),
        "{engine:?}: {err}"
    );
    assert!(
        !err.contains("350205"),
        "{engine:?}: the ID number is masked: {err}"
    );
    assert!(
        err.chars().count() <= 60,
        "{engine:?}: cut to the column: {err}"
    );
    assert_eq!(
        stored(dir.path(), "C4"),
        0,
        "nothing is stored for a refused row"
    );
    let (_, sign, err, _) = flag("a5");
    assert_eq!(sign, "2");
    assert!(
        err.contains("promise.value"),
        "{engine:?}: text in a number column: {err}"
    );
    let (_, sign, err, _) = flag("a6");
    assert_eq!(sign, "2");
    assert!(
        err.contains("case_no") && err.contains("required"),
        "{engine:?}: NULL: {err}"
    );
    if let Engine::Maria = engine {
        let (_, sign, err, _) = flag("a7");
        assert_eq!(sign, "2");
        assert!(
            err.contains("RECEIVETIME") && err.contains("0000-00-00"),
            "zero date: {err}"
        );
        assert_eq!(stored(dir.path(), "C7"), 0);
    }
    let steps = f.db.marks("inf_apply_process").await;
    assert!(steps.iter().all(|s| s.1 == "1"), "{engine:?}: {steps:?}");

    // Delivered: each stored record once, the steps of C1 in order.
    common::wait_until(20, "deliveries", || city.accepted().len() >= 6).await;
    let got = city.accepted();
    let c1: Vec<String> = got
        .iter()
        .filter(|a| a.case_no == "C1")
        .map(|a| format!("{}:{}", a.kind, a.body["step_no"]))
        .collect();
    assert_eq!(
        c1,
        ["application:null", "process:1", "process:2", "process:3"],
        "{engine:?}"
    );
    let accepted_at = got
        .iter()
        .find(|a| a.case_no == "C2")
        .map(|a| a.body["accepted_at"].clone());
    assert_eq!(
        accepted_at,
        Some(serde_json::json!("2026-04-03T09:15:00+08:00"))
    );

    // A row inserted while it runs is read.
    f.db.exec(&apply_row("a8", "C8", ID_OK, "20", 1)).await;
    common::wait_until(20, "the new row", || {
        city.accepted().iter().any(|a| a.case_no == "C8")
    })
    .await;
    wait_drained(&f.db).await;

    // A rewritten row (a higher version, the flag back to pending) is delivered again;
    // an older version than the one stored is refused.
    f.db.exec("UPDATE \"inf_apply\" SET \"PROJECTNAME\" = '新店', \"DATAVERSION\" = 2, \"SYNC_SIGN\" = '0' WHERE \"ROWGUID\" = 'a2';")
        .await;
    common::wait_until(20, "the new version", || {
        city.accepted()
            .iter()
            .any(|a| a.case_no == "C2" && a.body["version"] == 2)
    })
    .await;
    wait_drained(&f.db).await;
    f.db.exec("UPDATE \"inf_apply\" SET \"DATAVERSION\" = 1, \"SYNC_SIGN\" = '0' WHERE \"ROWGUID\" = 'a2';")
        .await;
    wait_drained(&f.db).await;
    let (_, sign, err, _) =
        f.db.marks("inf_apply")
            .await
            .into_iter()
            .find(|m| m.0 == "a2")
            .expect("a2");
    assert_eq!(sign, "2", "{engine:?}: a stale version is refused");
    assert!(err.contains("stale"), "{err}");
    let c2 = city.accepted().iter().filter(|a| a.case_no == "C2").count();
    assert_eq!(
        c2, 2,
        "{engine:?}: versions 1 and 2, not the stale one again"
    );

    // The operator's view: rows by flag, counted in the tables.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(dir.path().join("hallgate.toml"))
        .args(["sync", "status", "--json"])
        .output()
        .expect("hallgate sync status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let apply = status["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == "inf_apply"))
        .cloned()
        .expect("inf_apply in sync status");
    let marks = f.db.marks("inf_apply").await;
    let count = |flag: &str| marks.iter().filter(|m| m.1 == flag).count() as u64;
    assert_eq!(apply["pending"], 0, "{engine:?}: {apply}");
    assert_eq!(apply["failed"], count("2"), "{engine:?}: {apply}");
    assert_eq!(apply["done"], count("1"), "{engine:?}: {apply}");
    assert!(count("1") == 3 && count("2") >= 4, "{engine:?}: {marks:?}");
    assert!(
        apply["records_stored"].as_i64().unwrap_or(0) >= 5,
        "{apply}"
    );
    running.shutdown().await;
}

/// The store's sync source of a table: `(cursor)`.
fn cursor_of(dir: &Path, table: &str) -> Option<String> {
    let c = rusqlite::Connection::open(dir.join("hallgate.db")).expect("store");
    c.query_row(
        "SELECT cursor FROM sync_sources WHERE node = ?1",
        [format!("qzk/{table}")],
        |r| r.get(0),
    )
    .ok()
}

/// A batch reads on from the cursor the last one left, not from the top. Rows
/// behind the cursor (written after a pass went by them) are read when the pass
/// ends; a step behind the cursor whose case has a later step ahead holds that
/// case, and the next batch starts from the top, so the case stays in order.
async fn reads_on_from_the_cursor(engine: Engine) {
    let (f, dir, city) = setup(engine).await;
    config(dir.path(), &f, &city.url(), "SYNC_SIGN");
    let path = dir.path().join("hallgate.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace(
        "order = [\"PROJID\", \"NO_ORD\"]\nbatch = 50",
        "case = \"PROJID\"\norder = [\"PROJID\", \"NO_ORD\"]\nbatch = 2",
    );
    std::fs::write(&path, text).expect("config");
    let load = || Config::load(&path).expect("config is valid");

    // A first run over empty tables makes their sync sources.
    let running = hallgate::gateway::start(load(), None)
        .await
        .expect("gateway starts");
    common::wait_until(20, "the sync sources", || {
        cursor_of(dir.path(), "inf_apply").is_some()
            && cursor_of(dir.path(), "inf_apply_process").is_some()
    })
    .await;
    running.shutdown().await;

    // Pending rows on both sides of cursors left as if a pass had gone by a5 and by
    // step 1 of C1 before those rows were written.
    let mut rows = String::new();
    for i in 1..=9 {
        rows.push_str(&apply_row(
            &format!("a{i}"),
            &format!("C{i}"),
            ID_OK,
            "20",
            1,
        ));
    }
    for (g, case, no) in [("p1", "C1", 1), ("p2", "C1", 2), ("p3", "C2", 1)] {
        rows.push_str(&step_row(g, case, no));
    }
    f.db.exec(&rows).await;
    let store = rusqlite::Connection::open(dir.path().join("hallgate.db")).expect("store");
    for (table, cursor) in [
        ("inf_apply", r#"{"after":["a5"]}"#),
        ("inf_apply_process", r#"{"after":["C1","1","p1"]}"#),
    ] {
        let n = store
            .execute(
                "UPDATE sync_sources SET cursor = ?2, lease_owner = NULL, lease_until = NULL WHERE node = ?1",
                [format!("qzk/{table}"), cursor.to_string()],
            )
            .expect("set the cursor");
        assert_eq!(n, 1);
    }
    drop(store);

    let running = hallgate::gateway::start(load(), None)
        .await
        .expect("gateway starts again");
    wait_drained(&f.db).await;
    for table in ["inf_apply", "inf_apply_process"] {
        let marks = f.db.marks(table).await;
        let not_done: Vec<_> = marks.iter().filter(|m| m.1 != "1").collect();
        assert!(not_done.is_empty(), "{engine:?}: {table}: {not_done:?}");
    }
    assert_eq!(f.db.marks("inf_apply").await.len(), 9);
    common::wait_until(20, "every record delivered", || city.accepted().len() >= 12).await;
    let c1: Vec<String> = city
        .arrivals()
        .iter()
        .filter(|a| a.case_no == "C1" && (200..300).contains(&a.status))
        .filter_map(|a| a.body["ext"]["rowguid"].as_str().map(str::to_string))
        .filter(|g| g.starts_with('p'))
        .collect();
    assert_eq!(c1, ["p1", "p2"], "{engine:?}: C1's steps in order");
    // The passes ended: the next starts from the top.
    common::wait_until(20, "the cursors back at the top", || {
        cursor_of(dir.path(), "inf_apply").as_deref() == Some("{}")
            && cursor_of(dir.path(), "inf_apply_process").as_deref() == Some("{}")
    })
    .await;
    running.shutdown().await;
}

/// A row refused only because its item is not in the item catalogue gets the
/// source's `not_in_catalogue` flag (`9`); refused for more than that, `2`.
async fn unknown_item_is_9(engine: Engine) {
    let (f, dir, city) = setup(engine).await;
    let hall = hallgate::receiver::hall::Hall::start("province", "127.0.0.1:0")
        .await
        .expect("hall");
    hall.set_items(vec![hallgate::store::CatalogueItem {
        item_code: ITEM.into(),
        item_name: "食品经营许可".into(),
        item_type: None,
        version: None,
        region: None,
        valid_from: None,
        valid_to: None,
        status: "active".into(),
    }]);
    config(dir.path(), &f, &city.url(), "SYNC_SIGN");
    let path = dir.path().join("hallgate.toml");
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replacen(
            "regions = [\"320115\"] }\n",
            "regions = [\"320115\"] }\ncatalogue = \"refuse\"\n",
            1,
        )
        .replacen(
            "flag = \"SYNC_SIGN\"\n",
            "flag = \"SYNC_SIGN\"\nnot_in_catalogue = \"9\"\n",
            1,
        )
        + &format!(
            "\n[nodes.province]\nname = \"省平台\"\nlevel = \"province\"\n\
             [nodes.province.sync]\ncatalogue_url = \"{}/api/items\"\n\
             catalogue_interval_seconds = 1\n\n[catalogue]\nsource = \"province\"\n",
            hall.base()
        );
    std::fs::write(&path, text).expect("config");
    let running = hallgate::gateway::start(Config::load(&path).expect("config"), None)
        .await
        .expect("gateway starts");
    common::wait_until(20, "the item catalogue", || {
        let c = rusqlite::Connection::open(dir.path().join("hallgate.db")).expect("store");
        c.query_row("SELECT COUNT(*) FROM catalogue", [], |r| r.get::<_, i64>(0))
            .is_ok_and(|n| n > 0)
    })
    .await;
    let other = "11320115MB0000000X09999";
    let mut rows = apply_row("a1", "C1", ID_OK, "20", 1);
    rows.push_str(&apply_row("a2", "C2", ID_OK, "20", 1).replace(ITEM, other));
    rows.push_str(&apply_row("a3", "C3", "350205195912280250", "20", 1).replace(ITEM, other));
    f.db.exec(&rows).await;
    wait_drained(&f.db).await;
    let marks = f.db.marks("inf_apply").await;
    let mark = |g: &str| marks.iter().find(|m| m.0 == g).cloned().expect("row");
    assert_eq!(mark("a1").1, "1", "{engine:?}: {:?}", mark("a1"));
    let (_, sign, err, _) = mark("a2");
    assert_eq!(sign, "9", "{engine:?}: {err}");
    assert!(err.contains("item_code: item_unknown"), "{engine:?}: {err}");
    let (_, sign, err, _) = mark("a3");
    assert_eq!(
        sign, "2",
        "{engine:?}: refused for its ID number too: {err}"
    );
    assert_eq!(stored(dir.path(), "C2"), 0);
    running.shutdown().await;
}

async fn wrong_column_refused(engine: Engine) {
    let f = fresh(engine).await;
    f.db.exec(DDL).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &f, "http://127.0.0.1:9/", "SYNC_SIGNAL");
    let err = match hallgate::gateway::start(config, None).await {
        Ok(_) => panic!("{engine:?}: a gateway started with a column the table lacks"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("inf_apply") && err.contains("SYNC_SIGNAL"),
        "{engine:?}: the error names table and column: {err}"
    );
    // `hallgate tables check` says the same, and that the other table is fine.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(dir.path().join("hallgate.toml"))
        .args(["tables", "check", "--node", "qzk"])
        .output()
        .expect("hallgate tables check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{engine:?}: {text}");
    assert!(
        text.contains("FAIL  inf_apply (source): table `inf_apply` has no column `SYNC_SIGNAL`"),
        "{engine:?}: {text}"
    );
    assert!(
        text.contains("ok    inf_apply_process (source)"),
        "{engine:?}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_rows_are_read_marked_and_delivered() {
    drains_marks_and_delivers(Engine::Maria).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_are_read_marked_and_delivered() {
    drains_marks_and_delivers(Engine::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_are_read_marked_and_delivered() {
    drains_marks_and_delivers(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wrong_column_is_refused_at_start() {
    wrong_column_refused(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_wrong_column_is_refused_at_start() {
    wrong_column_refused(Engine::Maria).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wrong_column_is_refused_at_start() {
    wrong_column_refused(Engine::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_reads_on_from_the_cursor() {
    reads_on_from_the_cursor(Engine::Maria).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_on_from_the_cursor() {
    reads_on_from_the_cursor(Engine::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_on_from_the_cursor() {
    reads_on_from_the_cursor(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_unknown_item_is_9() {
    unknown_item_is_9(Engine::Maria).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unknown_item_is_9() {
    unknown_item_is_9(Engine::Sqlite).await;
}
