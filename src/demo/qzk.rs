//! The demo's 前置库: a market-regulation department (江宁区市场监督管理局) that
//! exchanges through exchange tables instead of an HTTP API. The demo may start no
//! database server, so its 前置库 is an SQLite file in the data folder
//! (`driver = "sqlite"`). The department has left three applications pending in
//! `inf_apply` (one with a wrong ID check digit); the gateway reads them, delivers
//! the good ones as cases and marks each row `1` or `2`. The Jiangning hall's result
//! is routed to the department and written into `inf_apply_result_in` with the flag
//! `0`, which the department then reads and sets to `1`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::DemoError;
use crate::config::{Config, Node, Route};
use crate::gateway::Running;

pub const NODE: &str = "js-scjg";

const DDL: &str = r#"
CREATE TABLE inf_apply (
  ROWGUID VARCHAR(50) NOT NULL PRIMARY KEY, PROJID VARCHAR(50), PROJPWD VARCHAR(50),
  IMPLEMENTCODE VARCHAR(50), SERVICENAME VARCHAR(200), PROJECTNAME VARCHAR(200),
  AREACODE VARCHAR(12), APPLYERTYPE VARCHAR(2), APPLYERNAME VARCHAR(100),
  APPLYERPAGETYPE VARCHAR(10), APPLYERPAGECODE VARCHAR(50), CONTACTMAN VARCHAR(100),
  TELPHONE VARCHAR(50), APPLYDATE DATETIME, RECEIVETIME DATETIME, PROMISEDAY VARCHAR(10),
  PROMISETYPE VARCHAR(2), DATAVERSION INT,
  SYNC_SIGN VARCHAR(2), SYNC_DATE DATETIME, SYNC_ERROR_DESC VARCHAR(200));
CREATE TABLE inf_apply_result_in (
  PROJID VARCHAR(50) NOT NULL PRIMARY KEY, ROWGUID VARCHAR(50), AREACODE VARCHAR(12),
  RESULTCODE VARCHAR(2), RESULTDATE DATETIME, DATAVERSION INT,
  CERTIFICATENAME VARCHAR(200), CERTIFICATENO VARCHAR(100),
  SYNC_SIGN VARCHAR(2), SYNC_DATE DATETIME, SYNC_ERROR_DESC VARCHAR(200));
INSERT INTO inf_apply (ROWGUID, PROJID, IMPLEMENTCODE, SERVICENAME, PROJECTNAME, AREACODE,
  APPLYERTYPE, APPLYERNAME, APPLYERPAGETYPE, APPLYERPAGECODE, TELPHONE, RECEIVETIME,
  PROMISEDAY, PROMISETYPE, DATAVERSION, SYNC_SIGN) VALUES
 ('8f1c-0001', '320115261205000101', '11320115MB0000000X00001', '食品经营许可', '江宁区东山街道便利店', '320115', '10', '王小明', '111', '350205195912280259', '13912345678', '2026-12-05 09:15:00', '20', 'G', 1, '0'),
 ('8f1c-0002', '320115261205000102', '11320115MB0000000X00002', '药品零售许可', '江宁区秣陵街道药房', '320115', '10', '李华', '111', '11010519491231002X', '13812345678', '2026-12-05 09:40:00', '15', 'G', 1, '0'),
 ('8f1c-0003', '320115261205000103', '11320115MB0000000X00001', '食品经营许可', '江宁区淳化街道小吃店', '320115', '10', '张伟', '111', '350205195912280250', '13712345678', '2026-12-05 10:05:00', '20', 'G', 1, NULL);
"#;

const NODE_TOML: &str = r#"
name = "南京市江宁区市场监督管理局"
level = "department"
region = "320115"
accept = { kinds = ["application"], regions = ["320115"] }
mappings = ["mappings/js-qzk/inf_apply.toml", "mappings/js-qzk/inf_apply_result.toml"]
destination = { concurrency = 1 }

[tables]
driver = "sqlite"
database = "qzk.db"

[[tables.source]]
table = "inf_apply"
kind = "application"
keys = ["ROWGUID"]
case = "PROJID"
version = "DATAVERSION"
interval_ms = 300

[[tables.destination]]
table = "inf_apply_result_in"
kind = "result"
keys = ["PROJID"]
receipt_interval_ms = 300
"#;

const ROUTE_TOML: &str = r#"
name = "jiangning-results-to-market-regulation"
kinds = ["result"]
sources = ["js-jiangning"]
to = ["js-scjg"]
"#;

fn bad(e: impl std::fmt::Display) -> DemoError {
    DemoError::Send(format!("the demo's 前置库: {e}"))
}

/// Make the department's 前置库 file with its pending rows, and add the department
/// and its route to the config.
pub fn prepare(config: &mut Config, data_dir: &Path) -> Result<PathBuf, DemoError> {
    let path = data_dir.join("qzk.db");
    let conn = rusqlite::Connection::open(&path).map_err(bad)?;
    conn.execute_batch(DDL).map_err(bad)?;
    drop(conn);
    let mut node: Node = toml::from_str(NODE_TOML).map_err(bad)?;
    if let Some(t) = node.tables.as_mut() {
        t.database = path.display().to_string();
    }
    config
        .nodes
        .insert(NODE.to_string(), toml::Spanned::new(0..0, node));
    let route: Route = toml::from_str(ROUTE_TOML).map_err(bad)?;
    config.routes.push(toml::Spanned::new(0..0, route));
    Ok(path)
}

/// The department's rows as they stand: key, case, flag, error.
fn rows(path: &Path, sql: &str) -> Result<Vec<Vec<String>>, DemoError> {
    let conn = rusqlite::Connection::open(path).map_err(bad)?;
    let mut stmt = conn.prepare(sql).map_err(bad)?;
    let width = stmt.column_count();
    let out = stmt
        .query_map([], |r| {
            (0..width)
                .map(|i| {
                    r.get_ref(i).map(|v| match v {
                        rusqlite::types::ValueRef::Null => String::new(),
                        rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                        rusqlite::types::ValueRef::Real(x) => x.to_string(),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                    })
                })
                .collect()
        })
        .map_err(bad)?
        .collect::<Result<Vec<Vec<String>>, _>>()
        .map_err(bad)?;
    Ok(out)
}

/// Wait for the rows to be read and the result written, and show both.
pub async fn show(running: &Running, path: &Path) -> Result<(), DemoError> {
    println!(
        "\n— 前置库: {NODE} exchanges through its tables (an SQLite file here: {}) —",
        path.display()
    );
    let started = Instant::now();
    let pending =
        "SELECT COUNT(*) FROM inf_apply WHERE SYNC_SIGN IS NULL OR SYNC_SIGN IN ('0', '')";
    let written = "SELECT COUNT(*) FROM inf_apply_result_in";
    while started.elapsed() < Duration::from_secs(20) {
        let left = rows(path, pending)?;
        let results = rows(path, written)?;
        let n = |r: &Vec<Vec<String>>| {
            r.first()
                .and_then(|r| r.first())
                .cloned()
                .unwrap_or_default()
        };
        if n(&left) == "0" && n(&results) != "0" && super::all_delivered(running).await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("inf_apply (the department's applications, read by the gateway):");
    for r in rows(
        path,
        "SELECT ROWGUID, PROJID, SYNC_SIGN, SYNC_DATE, SYNC_ERROR_DESC FROM inf_apply ORDER BY ROWGUID",
    )? {
        let [guid, case, sign, date, error] = r.as_slice() else {
            continue;
        };
        let to: Vec<String> = running
            .store
            .case(case)
            .await?
            .iter()
            .flat_map(|rec| rec.deliveries.iter())
            .map(|d| format!("{} ({})", d.destination, d.state.as_str()))
            .collect();
        println!("  {guid}  办件 {case}  SYNC_SIGN={sign}  SYNC_DATE={date}");
        if to.is_empty() {
            println!("      not stored: {error}");
        } else {
            println!("      delivered as a case → {}", to.join(", "));
        }
    }
    println!("inf_apply_result_in (results routed to the department, written by the gateway):");
    for r in rows(
        path,
        "SELECT PROJID, RESULTCODE, RESULTDATE, CERTIFICATENO, SYNC_SIGN FROM inf_apply_result_in",
    )? {
        let [case, code, at, cert, sign] = r.as_slice() else {
            continue;
        };
        println!(
            "  办件 {case}  RESULTCODE={code}  RESULTDATE={at}  证照 {cert}  SYNC_SIGN={sign} (waiting for the department)"
        );
    }
    // The department's system reads the result and says so.
    let conn = rusqlite::Connection::open(path).map_err(bad)?;
    let read = conn
        .execute(
            "UPDATE inf_apply_result_in SET SYNC_SIGN = '1', SYNC_DATE = datetime('now', '+8 hours') WHERE SYNC_SIGN = '0'",
            [],
        )
        .map_err(bad)?;
    println!("  the department read {read} result(s) and set SYNC_SIGN=1");
    Ok(())
}
