//! A fresh database per test on the 前置库 test servers: MariaDB
//! (`HALLGATE_TEST_MARIADB`, scripts/mariadb-test-server.sh) or PostgreSQL
//! (`HALLGATE_TEST_POSTGRES`), with statements written once for both.

use mysql_async::prelude::Queryable;

#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Maria,
    Pg,
    /// An SQLite file: the demo's embedded 前置库.
    Sqlite,
}

/// A fresh database on the engine's test server: the department's 前置库.
pub enum Qzk {
    Maria(mysql_async::Pool),
    Pg(tokio_postgres::Client),
    Sqlite(std::path::PathBuf, tempfile::TempDir),
}

pub struct Fresh {
    pub db: Qzk,
    /// `[nodes.qzk.tables]` connection keys for it.
    pub settings: String,
    /// Its user's password, written to a file the config names.
    pub password: Option<String>,
}

impl Fresh {
    /// The `[nodes.ID.tables]` connection keys, the password written to a file
    /// beside the config in `dir`.
    pub fn settings_in(&self, dir: &std::path::Path) -> String {
        let mut settings = self.settings.clone();
        if let Some(p) = &self.password {
            std::fs::write(dir.join("qzk.pass"), format!("{p}\n")).expect("password file");
            settings.push_str("password_file = \"qzk.pass\"\n");
        }
        settings
    }
}

/// The head of a 前置库 test's config: `[gateway]` (its `id`, `listen`, an SQLite
/// store in `dir`, and `more` keys) and a quick `[delivery]`.
pub fn gateway_head(dir: &std::path::Path, id: &str, listen: &str, more: &str) -> String {
    format!(
        "[gateway]\nid = \"{id}\"\nlisten = \"{listen}\"\nstore = \"sqlite://{}\"\n{more}\n\
         [delivery]\nbase_backoff_ms = 40\nmax_backoff_ms = 400\npoll_ms = 50\n",
        dir.join("hallgate.db").display()
    )
}

fn sqlite(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open the 前置库 file");
    c.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    c
}

pub fn maria_url() -> String {
    std::env::var("HALLGATE_TEST_MARIADB").unwrap_or_else(|_| {
        panic!(
            "HALLGATE_TEST_MARIADB is not set: run the tests with `bash scripts/test.sh`, or start a \
             server with `eval \"$(bash scripts/mariadb-test-server.sh start)\"` first"
        )
    })
}

pub async fn fresh(engine: Engine) -> Fresh {
    let name = format!("qzk_{}", uuid::Uuid::now_v7().simple());
    match engine {
        Engine::Maria => {
            let url = maria_url();
            let opts = mysql_async::Opts::from_url(&url).expect("mysql url");
            let admin = mysql_async::Pool::new(opts.clone());
            let mut c = admin.get_conn().await.expect("connect to the test MariaDB");
            c.query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
                .await
                .expect("create database");
            drop(c);
            admin.disconnect().await.expect("disconnect");
            let pool = mysql_async::Pool::new(
                mysql_async::OptsBuilder::from_opts(opts.clone()).db_name(Some(name.clone())),
            );
            let settings = format!(
                "driver = \"mysql\"\nhost = \"{}\"\nport = {}\ndatabase = \"{name}\"\nuser = \"{}\"\n",
                opts.ip_or_hostname(),
                opts.tcp_port(),
                opts.user().unwrap_or_default(),
            );
            Fresh {
                db: Qzk::Maria(pool),
                settings,
                password: opts.pass().map(str::to_string),
            }
        }
        Engine::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(format!("{name}.db"));
            let settings = format!("driver = \"sqlite\"\ndatabase = \"{}\"\n", path.display());
            Fresh {
                db: Qzk::Sqlite(path, dir),
                settings,
                password: None,
            }
        }
        Engine::Pg => {
            let url = super::pg::fresh_database().await;
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test PostgreSQL");
            tokio::spawn(conn);
            let cfg: tokio_postgres::Config = url.parse().expect("pg url");
            let host = match cfg.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                _ => "127.0.0.1".into(),
            };
            let settings = format!(
                "driver = \"postgres\"\nhost = \"{host}\"\nport = {}\ndatabase = \"{}\"\nuser = \"{}\"\n",
                cfg.get_ports().first().copied().unwrap_or(5432),
                cfg.get_dbname().unwrap_or_default(),
                cfg.get_user().unwrap_or_default(),
            );
            Fresh {
                db: Qzk::Pg(client),
                settings,
                password: None,
            }
        }
    }
}

impl Qzk {
    /// Run statements written with double-quoted identifiers (backticks on MariaDB),
    /// `{dt}` for the engine's date-time type, `{blob}` for its bytes type and
    /// ` X'…'` for bytes in hex.
    pub async fn exec(&self, sql: &str) {
        match self {
            Qzk::Maria(pool) => {
                let sql = sql
                    .replace('"', "`")
                    .replace("{dt}", "DATETIME")
                    .replace("{blob}", "LONGBLOB");
                let mut c = pool.get_conn().await.expect("conn");
                c.query_drop(sql).await.expect("mariadb statement");
            }
            Qzk::Pg(c) => {
                let sql = sql
                    .replace("{dt}", "TIMESTAMP")
                    .replace("{blob}", "BYTEA")
                    .replace(" X'", " '\\x");
                c.batch_execute(&sql).await.expect("postgres statement");
            }
            Qzk::Sqlite(path, _) => {
                let c = sqlite(path);
                c.execute_batch(&sql.replace("{dt}", "DATETIME").replace("{blob}", "BLOB"))
                    .expect("sqlite statement");
            }
        }
    }

    /// The rows of a query, every value as text.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Qzk::Maria(pool) => {
                let sql = sql.replace('"', "`");
                let mut c = pool.get_conn().await.expect("conn");
                let rows: Vec<mysql_async::Row> = c.query(sql).await.expect("query");
                rows.into_iter()
                    .map(|r| {
                        r.unwrap_raw()
                            .into_iter()
                            .map(|v| match v {
                                None | Some(mysql_async::Value::NULL) => None,
                                Some(mysql_async::Value::Bytes(b)) => {
                                    Some(String::from_utf8_lossy(&b).into_owned())
                                }
                                Some(other) => Some(other.as_sql(true)),
                            })
                            .collect()
                    })
                    .collect()
            }
            Qzk::Sqlite(path, _) => {
                let c = sqlite(path);
                let mut stmt = c.prepare(sql).expect("prepare");
                let width = stmt.column_count();
                stmt.query_map([], |r| {
                    (0..width)
                        .map(|i| {
                            r.get_ref(i).map(|v| match v {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                                rusqlite::types::ValueRef::Real(x) => Some(x.to_string()),
                                rusqlite::types::ValueRef::Text(t)
                                | rusqlite::types::ValueRef::Blob(t) => {
                                    Some(String::from_utf8_lossy(t).into_owned())
                                }
                            })
                        })
                        .collect()
                })
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
            }
            Qzk::Pg(c) => c
                .simple_query(sql)
                .await
                .expect("query")
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect(),
        }
    }

    /// `(PROJID, SYNC_SIGN, SYNC_ERROR_DESC, SYNC_DATE is set)` of a table's rows.
    pub async fn marks(&self, table: &str) -> Vec<(String, String, String, bool)> {
        self.rows(&format!(
            "SELECT \"ROWGUID\", \"SYNC_SIGN\", \"SYNC_ERROR_DESC\", \"SYNC_DATE\" FROM \"{table}\" ORDER BY \"ROWGUID\""
        ))
        .await
        .into_iter()
        .map(|r| {
            let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            (get(0), get(1), get(2), r.get(3).is_some_and(Option::is_some))
        })
        .collect()
    }

    pub async fn pending(&self, table: &str) -> usize {
        self.rows(&format!(
            "SELECT \"ROWGUID\" FROM \"{table}\" WHERE \"SYNC_SIGN\" IS NULL OR \"SYNC_SIGN\" IN ('0', '')"
        ))
        .await
        .len()
    }
}

/// The Jiangsu exchange tables, as docs/exchange-tables.md gives them.
pub const DDL: &str = r#"
CREATE TABLE "inf_apply" (
  "ROWGUID" VARCHAR(50) NOT NULL PRIMARY KEY,
  "PROJID" VARCHAR(50),
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
  "SYNC_ERROR_DESC" VARCHAR(60)
);
CREATE TABLE "inf_apply_process" (
  "ROWGUID" VARCHAR(50) NOT NULL PRIMARY KEY,
  "PROJID" VARCHAR(50),
  "AREACODE" VARCHAR(12),
  "NO_ORD" INT,
  "NODENAME" VARCHAR(100),
  "NODESTATE" VARCHAR(2),
  "HANDLERESULT" VARCHAR(2),
  "HANDLEUSERNAME" VARCHAR(100),
  "ENDTIME" {dt},
  "SYNC_SIGN" VARCHAR(2),
  "SYNC_DATE" {dt},
  "SYNC_ERROR_DESC" VARCHAR(200)
);
CREATE TABLE "inf_apply_attachment" (
  "ROWGUID" VARCHAR(50) NOT NULL PRIMARY KEY,
  "PROJID" VARCHAR(50),
  "AREACODE" VARCHAR(12),
  "ATTRGUID" VARCHAR(50),
  "ATTRNAME" VARCHAR(200),
  "TAKETYPE" VARCHAR(2),
  "TAKETIME" {dt},
  "FILENAME" VARCHAR(200),
  "FILETYPE" VARCHAR(100),
  "FILECONTENT" {blob},
  "DATAVERSION" INT,
  "SYNC_SIGN" VARCHAR(2),
  "SYNC_DATE" {dt},
  "SYNC_ERROR_DESC" VARCHAR(200)
);
CREATE TABLE "inf_apply_result" (
  "ROWGUID" VARCHAR(50) NOT NULL PRIMARY KEY,
  "PROJID" VARCHAR(50),
  "AREACODE" VARCHAR(12),
  "RESULTCODE" VARCHAR(2),
  "RESULTDATE" {dt},
  "SYNC_SIGN" VARCHAR(2),
  "SYNC_DATE" {dt},
  "SYNC_ERROR_DESC" VARCHAR(200)
);
"#;

pub const ITEM: &str = "11320115MB0000000X00001";
pub const ID_OK: &str = "350205195912280259";

pub fn apply_row(guid: &str, case: &str, id_no: &str, promise: &str, version: u32) -> String {
    format!(
        "INSERT INTO \"inf_apply\" (\"ROWGUID\", \"PROJID\", \"IMPLEMENTCODE\", \"SERVICENAME\", \"AREACODE\", \"APPLYERTYPE\", \"APPLYERNAME\", \"APPLYERPAGETYPE\", \"APPLYERPAGECODE\", \"TELPHONE\", \"RECEIVETIME\", \"PROMISEDAY\", \"PROMISETYPE\", \"DATAVERSION\", \"SYNC_SIGN\") \
         VALUES ('{guid}', '{case}', '{ITEM}', '食品经营许可', '320115', '10', '王小明', '111', '{id_no}', '13912345678', '2026-04-03 09:15:00', '{promise}', 'G', {version}, '0');"
    )
}

pub fn step_row(guid: &str, case: &str, no: u32) -> String {
    format!(
        "INSERT INTO \"inf_apply_process\" (\"ROWGUID\", \"PROJID\", \"AREACODE\", \"NO_ORD\", \"NODENAME\", \"NODESTATE\", \"HANDLERESULT\", \"ENDTIME\") \
         VALUES ('{guid}', '{case}', '320115', {no}, '审查{no}', '1', '1', '2026-04-04 10:00:00');"
    )
}

/// A row of `inf_apply_attachment` whose file is `bytes`.
pub fn attachment_row(guid: &str, case: &str, name: Option<&str>, bytes: &[u8]) -> String {
    let name = name.map_or("NULL".to_string(), |n| format!("'{n}'"));
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "INSERT INTO \"inf_apply_attachment\" (\"ROWGUID\", \"PROJID\", \"AREACODE\", \"ATTRGUID\", \"ATTRNAME\", \"TAKETYPE\", \"TAKETIME\", \"FILENAME\", \"FILETYPE\", \"FILECONTENT\", \"SYNC_SIGN\") \
         VALUES ('{guid}', '{case}', '320115', 'M-{guid}', {name}, '2', '2026-04-03 09:20:00', '{guid}.pdf', 'application/pdf', X'{hex}', '0');"
    )
}

/// The `VALUES (…)` of a result row, for a multi-row insert.
pub fn result_values(guid: &str, case: &str) -> String {
    format!("('{guid}', '{case}', '320115', '1', '2026-04-10 16:30:00', '0')")
}

pub const RESULT_COLUMNS: &str = "INSERT INTO \"inf_apply_result\" (\"ROWGUID\", \"PROJID\", \"AREACODE\", \"RESULTCODE\", \"RESULTDATE\", \"SYNC_SIGN\") VALUES ";
