//! 前置库 throughput against a real MariaDB, each figure beside a bare loop with the
//! same driver (mysql_async) over the same rows in the same run:
//!
//! - drain: ROWS pending `inf_apply` rows read by the gateway binary (mapped,
//!   validated, stored, audited, marked; the records delivered to a loopback
//!   receiver meanwhile) against a bare loop that SELECTs 500 pending rows and
//!   UPDATEs each one's flag in a transaction, until none is left;
//! - write: WRITES records posted over HTTP (bodies of 100) and written by the table
//!   destination (rows and delivery key in one transaction each) against a bare loop
//!   of single-row INSERTs;
//! - the gateway's peak RSS (VmHWM) over the drain.
//!
//!   bash benches/qzk.sh                       # ROWS=50000 WRITES=20000
//!   ROWS=1000000 WRITES=0 bash benches/qzk.sh # the peak RSS over a million rows
//!
//! Needs HALLGATE_TEST_MARIADB (benches/qzk.sh starts the throwaway server) and BIN,
//! the gateway binary.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Pool, TxOpts, Value};

const DDL: &str = "CREATE TABLE inf_apply (
  ROWGUID VARCHAR(50) NOT NULL PRIMARY KEY, PROJID VARCHAR(50), PROJPWD VARCHAR(50),
  IMPLEMENTCODE VARCHAR(50), SERVICENAME VARCHAR(200), PROJECTNAME VARCHAR(200),
  AREACODE VARCHAR(12), APPLYERTYPE VARCHAR(2), APPLYERNAME VARCHAR(100),
  APPLYERPAGETYPE VARCHAR(10), APPLYERPAGECODE VARCHAR(50), CONTACTMAN VARCHAR(100),
  TELPHONE VARCHAR(50), APPLYDATE DATETIME, RECEIVETIME DATETIME, PROMISEDAY VARCHAR(10),
  PROMISETYPE VARCHAR(2), DATAVERSION INT,
  SYNC_SIGN VARCHAR(2), SYNC_DATE DATETIME, SYNC_ERROR_DESC VARCHAR(200),
  KEY pending (SYNC_SIGN, ROWGUID));
CREATE TABLE inf_apply_in LIKE inf_apply;
ALTER TABLE inf_apply_in DROP PRIMARY KEY, MODIFY ROWGUID VARCHAR(50) NULL, ADD PRIMARY KEY (PROJID);
CREATE TABLE bare_in LIKE inf_apply_in;";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn row_values(i: usize) -> String {
    format!(
        "('g{i:08}', '3201152612{i:08}', '558120', '11320115MB0000000X00001', '食品经营许可', '江宁区第{i}号店', '320115', '10', '王小明', '111', '350205195912280259', '王小明', '13912345678', '2026-12-05 09:00:00', '2026-12-05 09:15:00', '20', 'G', 1, '0')"
    )
}

const COLUMNS: &str = "(ROWGUID, PROJID, PROJPWD, IMPLEMENTCODE, SERVICENAME, PROJECTNAME, AREACODE, APPLYERTYPE, APPLYERNAME, APPLYERPAGETYPE, APPLYERPAGECODE, CONTACTMAN, TELPHONE, APPLYDATE, RECEIVETIME, PROMISEDAY, PROMISETYPE, DATAVERSION, SYNC_SIGN)";

async fn count(pool: &Pool, sql: &str) -> usize {
    let mut c = pool.get_conn().await.expect("conn");
    let n: Option<u64> = c.query_first(sql).await.expect("count");
    n.unwrap_or(0) as usize
}

/// The bare loop: SELECT a batch of pending rows, UPDATE each one's flag in one
/// transaction, until none is left.
async fn bare_drain(pool: &Pool) -> usize {
    let mut n = 0;
    loop {
        let mut c = pool.get_conn().await.expect("conn");
        let rows: Vec<mysql_async::Row> = c
            .query("SELECT * FROM inf_apply WHERE SYNC_SIGN IS NULL OR SYNC_SIGN IN ('0', '') ORDER BY ROWGUID LIMIT 500")
            .await
            .expect("select");
        if rows.is_empty() {
            return n;
        }
        let mut tx = c.start_transaction(TxOpts::default()).await.expect("tx");
        for r in &rows {
            let guid: String = r.get(0).expect("ROWGUID");
            tx.exec_drop(
                "UPDATE inf_apply SET SYNC_SIGN = '1', SYNC_DATE = ?, SYNC_ERROR_DESC = NULL WHERE ROWGUID = ? AND (SYNC_SIGN IS NULL OR SYNC_SIGN IN ('0', ''))",
                ("2026-12-05 10:00:00", guid),
            )
            .await
            .expect("update");
        }
        tx.commit().await.expect("commit");
        n += rows.len();
    }
}

/// The bare loop: one INSERT per row, each its own transaction.
async fn bare_insert(pool: &Pool, n: usize) {
    let mut c = pool.get_conn().await.expect("conn");
    let stmt = c
        .prep(format!("INSERT INTO bare_in {COLUMNS} VALUES (?, ?, '558120', '11320115MB0000000X00001', '食品经营许可', ?, '320115', '10', '王小明', '111', '350205195912280259', '王小明', '13912345678', '2026-12-05 09:00:00', '2026-12-05 09:15:00', '20', 'G', 1, '0')"))
        .await
        .expect("prepare");
    for i in 0..n {
        c.exec_drop(
            &stmt,
            vec![
                Value::from(format!("w{i:08}")),
                Value::from(format!("3201152613{i:08}")),
                Value::from(format!("江宁区第{i}号店")),
            ],
        )
        .await
        .expect("insert");
    }
}

fn config(
    dir: &Path,
    url: &mysql_async::Opts,
    db: &str,
    port: u16,
    city: &str,
) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(dir.join("qzk.pass"), url.pass().unwrap_or_default()).expect("password");
    let text = format!(
        r#"
[gateway]
id = "gw-qzk-bench"
listen = "127.0.0.1:{port}"
store = "sqlite://{store}"
trust_node_header = true
shutdown_grace_seconds = 2

[limits]
max_records_per_body = 1000
max_body_bytes = 8388608

[delivery]
poll_ms = 50

[nodes.hall]
name = "江宁区政务服务中心"
level = "district"
region = "320115"
accept = {{ kinds = ["application"], regions = ["320115"] }}

[nodes.qzk]
name = "江宁区市场监管局前置库"
level = "department"
region = "320115"
mappings = ["{root}/mappings/js-qzk/inf_apply.toml"]
accept = {{ kinds = ["application"], regions = ["320115"] }}
destination = {{ concurrency = 4 }}

[nodes.qzk.tables]
driver = "mysql"
host = "{host}"
port = {dbport}
database = "{db}"
user = "{user}"
password_file = "qzk.pass"

[[nodes.qzk.tables.source]]
table = "inf_apply"
kind = "application"
keys = ["ROWGUID"]
batch = 500
interval_ms = 50

[[nodes.qzk.tables.destination]]
table = "inf_apply_in"
kind = "application"
keys = ["PROJID"]

[nodes.city]
name = "市级平台"
level = "city"
destination = {{ url = "{city}", concurrency = 8 }}

[[routes]]
name = "table-rows-to-the-city"
sources = ["qzk"]
to = ["city"]

[[routes]]
name = "hall-records-to-the-department"
sources = ["hall"]
to = ["qzk"]
"#,
        store = dir.join("hallgate.db").display(),
        host = url.ip_or_hostname(),
        dbport = url.tcp_port(),
        user = url.user().unwrap_or_default(),
    );
    let path = dir.join("hallgate.toml");
    std::fs::write(&path, text).expect("config");
    hallgate::keys::generate_key(&dir.join("certs/gateway-signing.key.pem")).expect("key");
    path
}

fn peak_rss_mb(child: &Child) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; nothing else is read from the arguments.
    let rows = env_usize("ROWS", 50_000);
    let writes = env_usize("WRITES", 20_000);
    let bin = std::env::var("BIN").unwrap_or_else(|_| "target/release/hallgate".into());
    let url =
        std::env::var("HALLGATE_TEST_MARIADB").expect("HALLGATE_TEST_MARIADB (benches/qzk.sh)");
    let opts = mysql_async::Opts::from_url(&url).expect("url");
    let db = format!("qzk_bench_{}", std::process::id());
    {
        let admin = Pool::new(opts.clone());
        let mut c = admin.get_conn().await.expect("connect");
        c.query_drop(format!("CREATE DATABASE {db} CHARACTER SET utf8mb4"))
            .await
            .expect("create");
    }
    let pool =
        Pool::new(mysql_async::OptsBuilder::from_opts(opts.clone()).db_name(Some(db.clone())));
    let mut c = pool.get_conn().await.expect("conn");
    c.query_drop(DDL).await.expect("ddl");
    let t = Instant::now();
    for start in (0..rows).step_by(1000) {
        let values: Vec<String> = (start..(start + 1000).min(rows)).map(row_values).collect();
        c.query_drop(format!(
            "INSERT INTO inf_apply {COLUMNS} VALUES {}",
            values.join(", ")
        ))
        .await
        .expect("insert");
    }
    drop(c);
    println!(
        "{rows} pending rows inserted in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The bare loop first (when the rows fit a comparison), then the flags back.
    let bare_rate = if rows <= 200_000 {
        let t = Instant::now();
        let n = bare_drain(&pool).await;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        println!(
            "bare SELECT-then-UPDATE loop: {n} rows in {:.2} s = {rate:.0} rows/s",
            t.elapsed().as_secs_f64()
        );
        let mut c = pool.get_conn().await.expect("conn");
        c.query_drop("UPDATE inf_apply SET SYNC_SIGN = '0', SYNC_DATE = NULL")
            .await
            .expect("reset");
        Some(rate)
    } else {
        None
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let city = hallgate::receiver::Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    city.limit_log(1000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let path = config(dir.path(), &opts, &db, port, &city.url());
    let mut child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&path)
        .env(
            "RUST_LOG",
            std::env::var("QZK_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let t = Instant::now();
    let pending =
        "SELECT COUNT(*) FROM inf_apply WHERE SYNC_SIGN IS NULL OR SYNC_SIGN IN ('0', '')";
    loop {
        if count(&pool, pending).await == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3600),
            "not drained in an hour"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let done = count(
        &pool,
        "SELECT COUNT(*) FROM inf_apply WHERE SYNC_SIGN = '1'",
    )
    .await;
    let rate = rows as f64 / secs;
    println!(
        "gateway drain: {rows} rows ({done} marked 1) in {secs:.2} s = {rate:.0} rows/s, peak RSS {:.0} MB",
        peak_rss_mb(&child)
    );
    if let Some(bare) = bare_rate {
        println!("  ratio to the bare loop: {:.2}", rate / bare);
    }

    if writes > 0 {
        let t = Instant::now();
        bare_insert(&pool, writes).await;
        let bare = writes as f64 / t.elapsed().as_secs_f64();
        println!(
            "bare INSERT loop: {writes} rows in {:.2} s = {bare:.0} rows/s",
            t.elapsed().as_secs_f64()
        );
        let client = hallgate::tls::http_client().build().expect("client");
        let gw = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        for start in (0..writes).step_by(100) {
            let body: Vec<serde_json::Value> = (start..(start + 100).min(writes))
                .map(|i| serde_json::json!({
                    "kind": "application", "case_no": format!("3201152614{i:08}"), "region": "320115",
                    "item_code": "11320115MB0000000X00001", "item_name": "食品经营许可",
                    "project_name": format!("江宁区第{i}号店"), "accepted_at": "2026-12-05T09:15:00+08:00",
                    "applicant": {"type": "person", "name": "王小明", "id_type": "111", "id_no": "350205195912280259"},
                    "promise": {"value": 20, "unit": "workday"}, "case_pwd": "558120"
                }))
                .collect();
            let r = client
                .post(format!("{gw}/v1/records"))
                .header("content-type", "application/json")
                .header("x-hallgate-node", "hall")
                .body(serde_json::Value::Array(body).to_string())
                .send()
                .await
                .expect("post");
            assert_eq!(r.status().as_u16(), 202);
        }
        loop {
            if count(&pool, "SELECT COUNT(*) FROM inf_apply_in").await >= writes {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(3600),
                "not written in an hour"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let rate = writes as f64 / secs;
        println!(
            "gateway table destination: {writes} records in {secs:.2} s = {rate:.0} rows/s (intake over HTTP included)"
        );
        println!("  ratio to the bare loop: {:.2}", rate / bare);
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut c = pool.get_conn().await.expect("conn");
    c.query_drop(format!("DROP DATABASE {db}"))
        .await
        .expect("drop");
}
