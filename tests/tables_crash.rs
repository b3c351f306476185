//! 前置库 crash test: 5,000 rows across the apply, process and result tables of a real
//! MariaDB and a real PostgreSQL are drained by the gateway binary while it is
//! killed with SIGKILL twice. Afterwards every row is `1`; every row's record is in
//! the store; every record reached the receiver under one Idempotency-Key, and each
//! case in order (application, its steps, its result) although the three tables are
//! read separately.
//!
//! Two gateway instances on one PostgreSQL store, both configured with the same
//! table sources, drain the same 前置库: each table is leased to one of them at a
//! time, so every row is read (in the audit's `table_read` events) exactly once,
//! and when the first stops the other takes the tables over once the leases lapse.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::load::{free_port, sigterm, spawn_gateway, wait_healthy};
use common::qzk::{
    DDL, Engine, Fresh, ID_OK, Qzk, RESULT_COLUMNS, apply_row, fresh, gateway_head, result_values,
    step_row,
};
use hallgate::receiver::Receiver;

const CASES: usize = 1250;
const ROWS: usize = CASES * 4;

fn config_file(dir: &Path, f: &Fresh, port: u16, city: &str) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let settings = f.settings_in(dir);
    let head = gateway_head(
        dir,
        "gw-tables-crash",
        &format!("127.0.0.1:{port}"),
        "shutdown_grace_seconds = 2\n",
    );
    let key = dir.join("certs/gateway-signing.key.pem");
    if !key.exists() {
        hallgate::keys::generate_key(&key).expect("key");
    }
    let text = format!(
        r#"
{head}
[nodes.qzk]
name = "江宁区市场监管局前置库"
level = "department"
region = "320115"
mappings = ["{root}/mappings/js-qzk/inf_apply.toml", "{root}/mappings/js-qzk/inf_apply_process.toml", "{root}/mappings/js-qzk/inf_apply_result.toml"]
accept = {{ kinds = ["application", "process", "result"], regions = ["320115"] }}

[nodes.qzk.tables]
{settings}
[[nodes.qzk.tables.source]]
table = "inf_apply"
kind = "application"
keys = ["ROWGUID"]
case = "PROJID"
order = ["PROJID"]
batch = 200
interval_ms = 50

[[nodes.qzk.tables.source]]
table = "inf_apply_process"
kind = "process"
keys = ["ROWGUID"]
case = "PROJID"
order = ["PROJID", "NO_ORD"]
batch = 300
interval_ms = 50

[[nodes.qzk.tables.source]]
table = "inf_apply_result"
kind = "result"
keys = ["ROWGUID"]
case = "PROJID"
order = ["PROJID"]
batch = 500
interval_ms = 50

[nodes.city]
name = "市级平台"
level = "city"
destination = {{ url = "{city}", timeout_ms = 5000, concurrency = 4 }}

[[routes]]
name = "all-to-city"
to = ["city"]
"#
    );
    let path = dir.join("hallgate.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The tables with their rows, written as a producer would: every case's
/// application, its two steps and its result.
async fn fill(db: &Qzk) {
    db.exec(DDL).await;
    let mut apply = String::new();
    let mut steps = String::new();
    let mut results = Vec::new();
    for c in 0..CASES {
        let case = format!("3201152604{c:08}");
        apply.push_str(&apply_row(&format!("a{c:05}"), &case, ID_OK, "20", 1));
        steps.push_str(&step_row(&format!("p{c:05}-1"), &case, 1));
        steps.push_str(&step_row(&format!("p{c:05}-2"), &case, 2));
        results.push(result_values(&format!("r{c:05}"), &case));
    }
    db.exec(&apply).await;
    db.exec(&steps).await;
    for chunk in results.chunks(250) {
        db.exec(&format!("{RESULT_COLUMNS}{};", chunk.join(", ")))
            .await;
    }
}

async fn done(db: &Qzk) -> usize {
    let mut n = 0;
    for t in ["inf_apply", "inf_apply_process", "inf_apply_result"] {
        n += db
            .rows(&format!(
                "SELECT \"ROWGUID\" FROM \"{t}\" WHERE \"SYNC_SIGN\" IN ('1', '2')"
            ))
            .await
            .len();
    }
    n
}

async fn wait_done(db: &Qzk, at_least: usize, log: &Path) {
    let start = Instant::now();
    while done(db).await < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "fewer than {at_least} rows marked in 120 s; log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

async fn crash_drain(engine: Engine) {
    let f = fresh(engine).await;
    fill(&f.db).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    let port = free_port();
    let config = config_file(dir.path(), &f, port, &city.url());
    let log = dir.path().join("gateway.log");
    let url = format!("http://127.0.0.1:{port}");
    let client = hallgate::tls::http_client().build().expect("client");
    // Killed twice while draining.
    for at_least in [ROWS / 5, ROWS * 3 / 5] {
        let child = spawn_gateway(&config, &log);
        wait_healthy(&client, &url).await;
        wait_done(&f.db, at_least, &log).await;
        kill(child);
    }
    let child = spawn_gateway(&config, &log);
    wait_healthy(&client, &url).await;
    wait_done(&f.db, ROWS, &log).await;

    // Every row is 1, and its record is in the store.
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    for t in ["inf_apply", "inf_apply_process", "inf_apply_result"] {
        for r in
            f.db.rows(&format!(
                "SELECT \"ROWGUID\", \"SYNC_SIGN\", \"SYNC_ERROR_DESC\" FROM \"{t}\""
            ))
            .await
        {
            let guid = r.first().cloned().flatten().unwrap_or_default();
            let sign = r.get(1).cloned().flatten().unwrap_or_default();
            assert_eq!(sign, "1", "{engine:?}: row {guid}: {:?}", r.get(2));
            flags.insert(guid, sign);
        }
    }
    assert_eq!(flags.len(), ROWS);
    let store = rusqlite::Connection::open(dir.path().join("hallgate.db")).expect("store");
    let mut stmt = store
        .prepare("SELECT json_extract(canonical, '$.ext.rowguid') FROM records WHERE status != 'duplicate'")
        .expect("prepare");
    let stored: BTreeSet<String> = stmt
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .expect("query")
        .filter_map(|r| r.ok().flatten())
        .collect();
    let unstored: Vec<&String> = flags
        .keys()
        .filter(|g| !stored.contains(*g))
        .take(5)
        .collect();
    assert!(
        unstored.is_empty(),
        "{engine:?}: rows marked 1 without their record: {unstored:?}"
    );

    // Each record delivered under one key, each case in order.
    let start = Instant::now();
    loop {
        let got: BTreeSet<String> = city
            .accepted()
            .iter()
            .filter_map(|a| a.body["ext"]["rowguid"].as_str().map(str::to_string))
            .collect();
        if got.len() >= ROWS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{engine:?}: {} of {ROWS} records delivered",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in city.arrivals() {
        let guid = a.body["ext"]["rowguid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        keys.entry(guid.clone())
            .or_default()
            .insert(a.idempotency_key.clone());
        if (200..300).contains(&a.status) {
            order.entry(a.case_no.clone()).or_default().push(guid);
        }
    }
    let twice: Vec<_> = keys.iter().filter(|(_, k)| k.len() > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "{engine:?}: records under two keys: {twice:?}"
    );
    assert_eq!(order.len(), CASES);
    for (case, seen) in &order {
        let kinds: Vec<char> = seen.iter().filter_map(|g| g.chars().next()).collect();
        assert_eq!(
            kinds,
            ['a', 'p', 'p', 'r'],
            "{engine:?}: case {case} in order: {seen:?}"
        );
        assert!(
            seen[1].ends_with("-1") && seen[2].ends_with("-2"),
            "{case}: {seen:?}"
        );
    }
    kill(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_drain_survives_two_sigkills() {
    crash_drain(Engine::Maria).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_drain_survives_two_sigkills() {
    crash_drain(Engine::Pg).await;
}

/// Two instances, one store, one 前置库: each row read once, each record delivered
/// under one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_tables_through_the_lease() {
    let f = fresh(Engine::Maria).await;
    fill(&f.db).await;
    let store = common::pg::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    let client = hallgate::tls::http_client().build().expect("client");
    let mut children = Vec::new();
    let mut logs = Vec::new();
    for name in ["a", "b"] {
        let port = free_port();
        let one = config_file(dir.path(), &f, port, &city.url());
        let text = std::fs::read_to_string(&one)
            .expect("config")
            .replace(
                &format!("sqlite://{}", dir.path().join("hallgate.db").display()),
                &store,
            )
            .replace("gw-tables-crash", &format!("gw-{name}"));
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).expect("config");
        let log = dir.path().join(format!("{name}.log"));
        children.push(spawn_gateway(&config, &log));
        wait_healthy(&client, &format!("http://127.0.0.1:{port}")).await;
        logs.push(log);
    }
    // Instance a, which took the leases first, stops mid-drain (finishing the batch
    // it holds); b takes the tables over when a's leases run out.
    wait_done(&f.db, ROWS / 4, &logs[0]).await;
    let a = children.remove(0);
    sigterm(&a);
    let mut a = a;
    assert!(a.wait().expect("a exits").success());
    wait_done(&f.db, ROWS, &logs[1]).await;
    for t in ["inf_apply", "inf_apply_process", "inf_apply_result"] {
        let marks = f.db.marks(t).await;
        let bad: Vec<_> = marks.iter().filter(|m| m.1 != "1").take(3).collect();
        assert!(bad.is_empty(), "{t}: {bad:?}");
    }

    // Every row was read once: never by both instances at the same time.
    let (pg, conn) = tokio_postgres::connect(&store, tokio_postgres::NoTls)
        .await
        .expect("store");
    tokio::spawn(conn);
    let mut reads: BTreeMap<String, usize> = BTreeMap::new();
    let mut readers: BTreeSet<String> = BTreeSet::new();
    for row in pg
        .query("SELECT detail FROM audit WHERE event = 'table_read'", &[])
        .await
        .expect("audit")
    {
        let detail: serde_json::Value =
            serde_json::from_str(&row.get::<_, String>(0)).expect("detail");
        readers.insert(detail["reader"].as_str().unwrap_or_default().to_string());
        for key in detail["keys"].as_array().into_iter().flatten() {
            let key = format!("{}/{}", detail["table"], key.as_str().unwrap_or_default());
            *reads.entry(key).or_default() += 1;
        }
    }
    assert_eq!(reads.len(), ROWS, "readers: {readers:?}");
    let twice: Vec<_> = reads.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "rows read twice: {twice:?}");
    for name in ["gw-a-", "gw-b-"] {
        assert!(
            readers.iter().any(|r| r.starts_with(name)),
            "{name} read: {readers:?}"
        );
    }

    // Each record reached the city under one key.
    common::wait_until(60, "every record delivered", || {
        city.accepted_total() >= ROWS as u64
    })
    .await;
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in city.accepted() {
        let guid = a.body["ext"]["rowguid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        keys.entry(guid)
            .or_default()
            .insert(a.idempotency_key.clone());
    }
    assert_eq!(keys.len(), ROWS);
    assert!(keys.values().all(|k| k.len() == 1));
    for child in children {
        kill(child);
    }
}
