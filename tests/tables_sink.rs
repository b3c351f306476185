//! Table destinations against a real MariaDB and a real PostgreSQL (前置库): records
//! pushed over HTTP are rendered by the department's mapping into its exchange
//! table with the consumer's flag pending; a consumer's `2` is a dead-lettered
//! delivery with its reason, which an operator's retry writes again; a gateway killed
//! with SIGKILL while writing leaves every record written once (a trigger logs each
//! insert), thanks to the delivery keys written in the same transaction.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::load::{free_port, spawn_gateway, wait_healthy};
use common::qzk::{Engine, Fresh, Qzk, fresh, gateway_head};
use serde_json::{Value, json};

/// The department's inbound table, one row per case, and a log of every insert.
fn ddl(engine: Engine) -> String {
    let mut sql = r#"
CREATE TABLE "inf_apply_in" (
  "PROJID" VARCHAR(50) NOT NULL PRIMARY KEY,
  "ROWGUID" VARCHAR(50),
  "PROJPWD" VARCHAR(50),
  "IMPLEMENTCODE" VARCHAR(50),
  "SERVICENAME" VARCHAR(200),
  "PROJECTNAME" VARCHAR(200),
  "AREACODE" VARCHAR(12),
  "APPLYERTYPE" VARCHAR(2),
  "APPLYERNAME" VARCHAR(100),
  "APPLYERPAGETYPE" VARCHAR(10),
  "APPLYERPAGECODE" VARCHAR(50),
  "CONTACTMAN" VARCHAR(100),
  "TELPHONE" VARCHAR(50),
  "APPLYDATE" {dt},
  "RECEIVETIME" {dt},
  "PROMISEDAY" VARCHAR(10),
  "PROMISETYPE" VARCHAR(2),
  "DATAVERSION" INT,
  "SYNC_SIGN" VARCHAR(2),
  "SYNC_DATE" {dt},
  "SYNC_ERROR_DESC" VARCHAR(200)
);
CREATE TABLE "write_log" ("PROJID" VARCHAR(50));
"#
    .to_string();
    sql.push_str(match engine {
        Engine::Maria => "CREATE TRIGGER log_write AFTER INSERT ON \"inf_apply_in\" FOR EACH ROW INSERT INTO \"write_log\" VALUES (NEW.\"PROJID\");",
        Engine::Pg => "CREATE FUNCTION log_write() RETURNS trigger AS $$ BEGIN INSERT INTO \"write_log\" VALUES (NEW.\"PROJID\"); RETURN NEW; END $$ LANGUAGE plpgsql; \
                       CREATE TRIGGER log_write AFTER INSERT ON \"inf_apply_in\" FOR EACH ROW EXECUTE FUNCTION log_write();",
        Engine::Sqlite => "CREATE TRIGGER log_write AFTER INSERT ON \"inf_apply_in\" FOR EACH ROW BEGIN INSERT INTO \"write_log\" VALUES (NEW.\"PROJID\"); END;",
    });
    sql
}

fn config_text(dir: &Path, f: &Fresh, listen: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let settings = f.settings_in(dir);
    let head = gateway_head(
        dir,
        "gw-table-sink",
        listen,
        "trust_node_header = true\nshutdown_grace_seconds = 2\n",
    );
    format!(
        r#"
{head}
[nodes.hall]
name = "江宁区政务服务中心"
level = "district"
region = "320115"
accept = {{ kinds = ["application"], regions = ["320115"] }}

[nodes.ops]
name = "运维"
level = "department"
roles = ["operator"]

[nodes.scjg]
name = "江宁区市场监管局"
level = "department"
mappings = ["{root}/mappings/js-qzk/inf_apply.toml"]
destination = {{ concurrency = 2 }}

[nodes.scjg.tables]
{settings}
[[nodes.scjg.tables.destination]]
table = "inf_apply_in"
kind = "application"
keys = ["PROJID"]
receipt_interval_ms = 100

[[routes]]
name = "applications-to-scjg"
kinds = ["application"]
to = ["scjg"]
"#
    )
}

fn application(case: &str) -> Value {
    json!({
        "kind": "application", "case_no": case, "region": "320115",
        "item_code": "11320115MB0000000X00001", "item_name": "食品经营许可",
        "accepted_at": "2026-04-03T01:15:00Z",
        "applicant": {"type": "person", "name": "王小明", "id_type": "111", "id_no": "350205195912280259"},
        "promise": {"value": 20, "unit": "workday"},
    })
}

async fn post(client: &reqwest::Client, url: &str, records: &[Value]) {
    let resp = client
        .post(format!("{url}/v1/records"))
        .header("content-type", "application/json")
        .header("x-hallgate-node", "hall")
        .body(Value::Array(records.to_vec()).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
}

async fn count(db: &Qzk, sql: &str) -> usize {
    db.rows(sql)
        .await
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

async fn wait_rows(db: &Qzk, n: usize) {
    let start = Instant::now();
    while count(db, "SELECT COUNT(*) FROM \"inf_apply_in\"").await < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{n} rows not written in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn store_delivery(dir: &Path, case: &str) -> (i64, String, String) {
    let c = rusqlite::Connection::open(dir.join("hallgate.db")).expect("store");
    c.query_row(
        "SELECT id, state, COALESCE(last_error, '') FROM deliveries WHERE case_no = ?1",
        [case],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .expect("delivery")
}

async fn written_refused_and_retried(engine: Engine) {
    let f = fresh(engine).await;
    f.db.exec(&ddl(engine)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    hallgate::keys::generate_key(&dir.path().join("certs/gateway-signing.key.pem")).expect("key");
    let path = dir.path().join("hallgate.toml");
    std::fs::write(&path, config_text(dir.path(), &f, "127.0.0.1:0")).expect("config");
    let config = hallgate::config::Config::load(&path).expect("config");
    let running = hallgate::gateway::start(config, None)
        .await
        .expect("starts");
    let url = running.url();
    let client = hallgate::tls::http_client().build().expect("client");
    let cases: Vec<String> = (0..20).map(|i| format!("3201152604030{i:05}")).collect();
    let records: Vec<Value> = cases.iter().map(|c| application(c)).collect();
    post(&client, &url, &records).await;
    wait_rows(&f.db, 20).await;

    let rows = f
        .db
        .rows(&format!(
            "SELECT \"SYNC_SIGN\", \"RECEIVETIME\", \"APPLYERPAGECODE\", \"PROMISETYPE\" FROM \"inf_apply_in\" WHERE \"PROJID\" = '{}'",
            cases[0]
        ))
        .await;
    let row: Vec<String> = rows[0]
        .iter()
        .map(|v| v.clone().unwrap_or_default())
        .collect();
    assert_eq!(row[0], "0", "{engine:?}: pending for the consumer");
    assert!(
        row[1].starts_with("2026-04-03 09:15:00"),
        "{engine:?}: local time: {}",
        row[1]
    );
    assert_eq!(row[2], "350205195912280259");
    assert_eq!(
        row[3], "G",
        "{engine:?}: rendered through the mapping's code table"
    );
    assert_eq!(
        count(&f.db, "SELECT COUNT(*) FROM hallgate_delivery_keys").await,
        20
    );

    // The consumer refuses one: the delivery is dead-lettered with its reason.
    f.db.exec(&format!(
        "UPDATE \"inf_apply_in\" SET \"SYNC_SIGN\" = '2', \"SYNC_ERROR_DESC\" = '事项编码不在本部门目录' WHERE \"PROJID\" = '{}';",
        cases[3]
    ))
    .await;
    let start = Instant::now();
    let id = loop {
        let (id, state, error) = store_delivery(dir.path(), &cases[3]);
        if state == "dead" {
            assert!(
                error.contains("事项编码不在本部门目录"),
                "{engine:?}: {error}"
            );
            break id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{engine:?}: still {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // An operator retries it: written again, pending for the consumer.
    let resp = client
        .post(format!("{url}/v1/deliveries/{id}/retry"))
        .header("x-hallgate-node", "ops")
        .send()
        .await
        .expect("retry");
    assert!(
        resp.status().is_success(),
        "{engine:?}: retry: {}",
        resp.status()
    );
    let start = Instant::now();
    loop {
        let sign =
            f.db.rows(&format!(
                "SELECT \"SYNC_SIGN\" FROM \"inf_apply_in\" WHERE \"PROJID\" = '{}'",
                cases[3]
            ))
            .await;
        if sign
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .as_deref()
            == Some("0")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{engine:?}: not written again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store_delivery(dir.path(), &cases[3]).1, "delivered");
    assert_eq!(
        count(&f.db, "SELECT COUNT(*) FROM \"write_log\"").await,
        21,
        "{engine:?}: 20 writes and the retry"
    );

    // A NOT NULL column without a default that the mapping leaves out: the database
    // refuses the values (MariaDB 1364, PostgreSQL 23502), and the delivery is
    // dead-lettered naming the column instead of being tried again forever. (SQLite
    // cannot add such a column to a table with rows.)
    if !matches!(engine, Engine::Sqlite) {
        f.db.exec(
            "ALTER TABLE \"inf_apply_in\" ADD COLUMN \"CHECKER\" VARCHAR(20) NOT NULL DEFAULT 'x';",
        )
        .await;
        f.db.exec("ALTER TABLE \"inf_apply_in\" ALTER COLUMN \"CHECKER\" DROP DEFAULT;")
            .await;
        let case = "320115260403099999";
        post(&client, &url, &[application(case)]).await;
        let start = Instant::now();
        loop {
            let (_, state, error) = store_delivery(dir.path(), case);
            if state == "dead" {
                assert!(
                    error.contains("refused by the database") && error.contains("CHECKER"),
                    "{engine:?}: {error}"
                );
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{engine:?}: still {state}: {error}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    running.shutdown().await;
}

async fn killed_mid_write_holds_each_once(engine: Engine) {
    const CASES: usize = 600;
    let f = fresh(engine).await;
    f.db.exec(&ddl(engine)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    hallgate::keys::generate_key(&dir.path().join("certs/gateway-signing.key.pem")).expect("key");
    let port = free_port();
    let path = dir.path().join("hallgate.toml");
    std::fs::write(
        &path,
        config_text(dir.path(), &f, &format!("127.0.0.1:{port}")),
    )
    .expect("config");
    let log = dir.path().join("gateway.log");
    let url = format!("http://127.0.0.1:{port}");
    let client = hallgate::tls::http_client().build().expect("client");
    let child = spawn_gateway(&path, &log);
    wait_healthy(&client, &url).await;
    let records: Vec<Value> = (0..CASES)
        .map(|i| application(&format!("3201152604040{i:05}")))
        .collect();
    for chunk in records.chunks(100) {
        post(&client, &url, chunk).await;
    }
    // Killed twice while it writes.
    let mut child = child;
    for at_least in [CASES / 5, CASES / 2] {
        wait_rows(&f.db, at_least).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        child = spawn_gateway(&path, &log);
        wait_healthy(&client, &url).await;
    }
    wait_rows(&f.db, CASES).await;
    // Every delivery delivered in the store…
    let start = Instant::now();
    loop {
        let c = rusqlite::Connection::open(dir.path().join("hallgate.db")).expect("store");
        let delivered: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        if delivered as usize == CASES {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{engine:?}: {delivered} delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …and each record written into the table once.
    assert_eq!(
        count(&f.db, "SELECT COUNT(*) FROM \"write_log\"").await,
        CASES,
        "{engine:?}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        count(
            &f.db,
            "SELECT COUNT(DISTINCT \"PROJID\") FROM \"write_log\""
        )
        .await,
        CASES
    );
    assert_eq!(
        count(&f.db, "SELECT COUNT(*) FROM hallgate_delivery_keys").await,
        CASES
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_table_destination() {
    written_refused_and_retried(Engine::Maria).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_destination() {
    written_refused_and_retried(Engine::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_table_destination() {
    written_refused_and_retried(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_table_destination_killed_mid_write() {
    killed_mid_write_holds_each_once(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_table_destination_killed_mid_write() {
    killed_mid_write_holds_each_once(Engine::Maria).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_destination_killed_mid_write() {
    killed_mid_write_holds_each_once(Engine::Pg).await;
}
