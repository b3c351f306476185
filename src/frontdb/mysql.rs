//! The MySQL/MariaDB engine of the 前置库, over `mysql_async` (a pool of a few
//! connections; each connection's session time zone is the node's zone, so DATETIME
//! and TIMESTAMP text reads as local time there). Rows are read with the text
//! protocol: every value arrives as its text (a blob as its bytes), as PostgreSQL's
//! engine reads them, and `cell` turns it into a field.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts, TxOpts, Value};

use super::flag_counts_sql;
use super::{
    Column, ColumnType, DbFuture, FrontDb, FrontDbError, KEYS_TABLE, Mark, MarkWrite, PendingRead,
    RefusalRead, Refused, Row, Shape, TableWrite, Written, keys_ddl, pending_predicate,
    pending_where, quote, refused_sql, select_sql,
};
use crate::config::WriteMode;
use crate::config::{Driver, TableSettings};

/// TLS as `sslmode` says (checked by the config: disable, require, verify-ca,
/// verify-full). As in libpq, `require` checks the chain only when `sslrootcert`
/// is given; `verify-ca` checks the chain, not the host name.
fn ssl_opts(s: &TableSettings, base: &std::path::Path) -> Option<SslOpts> {
    let mode = s.ssl_mode();
    if mode == "disable" {
        return None;
    }
    let mut opts = SslOpts::default();
    if let Some(file) = s.sslrootcert.as_deref() {
        let path = match file {
            "system" => crate::tls::pg::system_bundle(),
            _ => base.join(file),
        };
        opts = opts
            .with_root_certs(vec![path.into()])
            .with_disable_built_in_roots(true);
    }
    if s.sslrootcert.is_none() {
        opts = opts
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true);
    } else if mode != "verify-full" {
        opts = opts.with_danger_skip_domain_validation(true);
    }
    Some(opts)
}

pub struct MysqlDb {
    pool: Pool,
    host: String,
    port: u16,
    timeout_ms: u64,
}

impl MysqlDb {
    pub fn new(
        s: &TableSettings,
        password: String,
        zone: i32,
        base: &std::path::Path,
    ) -> Result<MysqlDb, FrontDbError> {
        let constraints = PoolConstraints::new(0, s.connections.max(1))
            .ok_or_else(|| FrontDbError::Query("connections: at least 1".into()))?;
        let sign = if zone < 0 { '-' } else { '+' };
        let offset = format!(
            "{sign}{:02}:{:02}",
            zone.abs() / 3600,
            zone.abs() % 3600 / 60
        );
        let opts = OptsBuilder::default()
            .ip_or_hostname(s.host.clone())
            .tcp_port(s.port())
            .user(Some(s.user.clone()))
            .pass(Some(password))
            .db_name(Some(s.database.clone()))
            .prefer_socket(false)
            .ssl_opts(ssl_opts(s, base))
            .setup(vec![
                format!("SET time_zone = '{offset}'"),
                "SET NAMES utf8mb4".to_string(),
            ])
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_inactive_connection_ttl(Duration::from_secs(60)),
            );
        Ok(MysqlDb {
            pool: Pool::new(opts),
            host: s.host.clone(),
            port: s.port(),
            timeout_ms: s.timeout_ms,
        })
    }

    async fn conn(&self) -> Result<mysql_async::Conn, FrontDbError> {
        self.bounded(self.pool.get_conn())
            .await?
            .map_err(|e| FrontDbError::Connect {
                driver: "mysql",
                host: self.host.clone(),
                port: self.port,
                reason: e.to_string(),
            })
    }

    async fn bounded<F: std::future::Future>(&self, f: F) -> Result<F::Output, FrontDbError> {
        tokio::time::timeout(Duration::from_millis(self.timeout_ms), f)
            .await
            .map_err(|_| FrontDbError::Timeout(self.timeout_ms))
    }
}

fn query_error(e: mysql_async::Error) -> FrontDbError {
    match &e {
        // Values the table cannot take: NULL where none may be (1048), a NOT NULL
        // column without a default that the mapping leaves out (1364), an unknown
        // column (1054), a duplicate key (1062), a bad date or number (1292, 1366),
        // out of range (1264), truncated or too long (1265, 1406). Retrying the same
        // rows cannot succeed; the delivery dead-letters with the database's message.
        mysql_async::Error::Server(s)
            if [1048, 1054, 1062, 1264, 1265, 1292, 1364, 1366, 1406].contains(&s.code) =>
        {
            FrontDbError::Rejected(s.message.clone())
        }
        _ => FrontDbError::Query(e.to_string()),
    }
}

fn param(v: &Option<String>) -> Value {
    v.as_deref().map_or(Value::NULL, Value::from)
}

fn column_type(data_type: &str) -> ColumnType {
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
            ColumnType::Integer
        }
        "decimal" | "numeric" => ColumnType::Decimal,
        "float" | "double" | "real" => ColumnType::Float,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
        | "json" => ColumnType::Text,
        "datetime" | "timestamp" => ColumnType::DateTime,
        "date" => ColumnType::Date,
        "time" => ColumnType::Time,
        "tinyblob" | "blob" | "mediumblob" | "longblob" | "binary" | "varbinary" => {
            ColumnType::Blob
        }
        _ => ColumnType::Other,
    }
}

fn text(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(b),
        // The text protocol sends text; anything else is written as SQL would.
        other => Some(other.as_sql(true).trim_matches('\'').as_bytes().to_vec()),
    }
}

impl FrontDb for MysqlDb {
    fn driver(&self) -> Driver {
        Driver::Mysql
    }

    fn shape<'a>(&'a self, table: &'a str) -> DbFuture<'a, Option<Shape>> {
        Box::pin(async move {
            let (schema, name) = match table.split_once('.') {
                Some((s, t)) => (Some(s.to_string()), t.to_string()),
                None => (None, table.to_string()),
            };
            let mut conn = self.conn().await?;
            let rows: Vec<(String, String, String, String, Option<u64>)> = self
                .bounded(conn.exec(
                    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_MAXIMUM_LENGTH \
                     FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
                     ORDER BY ORDINAL_POSITION",
                    (schema, name),
                ))
                .await?
                .map_err(query_error)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let columns = rows
                .into_iter()
                .map(
                    |(name, data_type, column_type_text, nullable, max)| Column {
                        ty: column_type(&data_type),
                        name,
                        type_name: column_type_text,
                        nullable: nullable == "YES",
                        max_chars: max,
                    },
                )
                .collect();
            Ok(Some(Shape {
                table: table.to_string(),
                columns,
            }))
        })
    }

    fn pending<'a>(&'a self, read: &'a PendingRead<'a>) -> DbFuture<'a, Vec<Row>> {
        Box::pin(async move {
            let sql = select_sql(read, false, Driver::Mysql);
            let mut conn = self.conn().await?;
            let rows: Vec<mysql_async::Row> =
                self.bounded(conn.query(sql)).await?.map_err(query_error)?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    r.unwrap_raw()
                        .into_iter()
                        .map(|v| v.and_then(text))
                        .collect()
                })
                .collect())
        })
    }

    fn count_pending<'a>(&'a self, read: &'a PendingRead<'a>) -> DbFuture<'a, u64> {
        Box::pin(async move {
            let sql = select_sql(read, true, Driver::Mysql);
            let mut conn = self.conn().await?;
            let n: Option<u64> = self
                .bounded(conn.query_first(sql))
                .await?
                .map_err(query_error)?;
            Ok(n.unwrap_or(0))
        })
    }

    fn pending_cases<'a>(
        &'a self,
        read: &'a PendingRead<'a>,
        case: &'a str,
        cases: &'a [String],
    ) -> DbFuture<'a, Vec<String>> {
        Box::pin(async move {
            if cases.is_empty() {
                return Ok(Vec::new());
            }
            let marks = vec!["?"; cases.len()].join(", ");
            let sql = format!(
                "SELECT DISTINCT {c} FROM {} WHERE {} AND {c} IN ({marks})",
                quote(Driver::Mysql, &read.shape.table),
                pending_where(read, Driver::Mysql),
                c = quote(Driver::Mysql, case),
            );
            let params: Vec<Value> = cases.iter().map(|c| Value::from(c.as_str())).collect();
            let mut conn = self.conn().await?;
            let rows: Vec<Option<Vec<u8>>> = self
                .bounded(conn.exec(sql, params))
                .await?
                .map_err(query_error)?;
            Ok(rows
                .into_iter()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .collect())
        })
    }

    fn flag_counts<'a>(
        &'a self,
        shape: &'a Shape,
        flag: &'a str,
    ) -> DbFuture<'a, Vec<(Option<String>, u64)>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let rows: Vec<(Option<Vec<u8>>, u64)> = self
                .bounded(conn.query(flag_counts_sql(shape, flag, Driver::Mysql)))
                .await?
                .map_err(query_error)?;
            Ok(rows
                .into_iter()
                .map(|(f, n)| (f.map(|b| String::from_utf8_lossy(&b).into_owned()), n))
                .collect())
        })
    }

    fn ensure_keys<'a>(&'a self) -> DbFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            self.bounded(conn.query_drop(keys_ddl()))
                .await?
                .map_err(query_error)
        })
    }

    fn write<'a>(&'a self, w: &'a TableWrite<'a>) -> DbFuture<'a, Written> {
        Box::pin(async move {
            let pool = self.pool.clone();
            let table = quote(Driver::Mysql, &w.shape.table);
            let work = async move {
                let mut tx = pool.start_transaction(TxOpts::default()).await?;
                let before: Option<i64> = tx
                    .exec_first(
                        format!(
                            "SELECT delivery_id FROM {KEYS_TABLE} WHERE delivery_key = ? FOR UPDATE"
                        ),
                        (w.delivery_key,),
                    )
                    .await?;
                if before.is_some() {
                    tx.commit().await?;
                    return Ok(Written::Before);
                }
                match (&w.mode, &w.case) {
                    (WriteMode::ReplaceCase, Some((column, value))) => {
                        tx.exec_drop(
                            format!(
                                "DELETE FROM {table} WHERE {} = ?",
                                quote(Driver::Mysql, column)
                            ),
                            (value.as_str(),),
                        )
                        .await?;
                    }
                    _ => {
                        let cond: Vec<String> = w
                            .keys
                            .iter()
                            .map(|k| format!("{} = ?", quote(Driver::Mysql, k)))
                            .collect();
                        let sql = format!("DELETE FROM {table} WHERE {}", cond.join(" AND "));
                        for row in &w.rows {
                            let params: Vec<Value> = w
                                .keys
                                .iter()
                                .map(|k| {
                                    row.iter()
                                        .find(|(c, _)| c.eq_ignore_ascii_case(k))
                                        .map_or(Value::NULL, |(_, v)| param(v))
                                })
                                .collect();
                            tx.exec_drop(sql.as_str(), params).await?;
                        }
                    }
                }
                let mut written = 0;
                for row in &w.rows {
                    let cols: Vec<String> =
                        row.iter().map(|(c, _)| quote(Driver::Mysql, c)).collect();
                    let marks = vec!["?"; row.len()].join(", ");
                    let params: Vec<Value> = row.iter().map(|(_, v)| param(v)).collect();
                    tx.exec_drop(
                        format!("INSERT INTO {table} ({}) VALUES ({marks})", cols.join(", ")),
                        params,
                    )
                    .await?;
                    written += tx.affected_rows();
                }
                tx.exec_drop(
                    format!("INSERT INTO {KEYS_TABLE} (delivery_key, delivery_id, table_name, row_key, written_at) VALUES (?, ?, ?, ?, ?)"),
                    (w.delivery_key, w.delivery_id, w.shape.table.as_str(), w.row_key.as_str(), w.at.as_str()),
                )
                .await?;
                tx.commit().await?;
                Ok::<Written, mysql_async::Error>(Written::Now(written))
            };
            self.bounded(work).await?.map_err(query_error)
        })
    }

    fn refused<'a>(&'a self, r: &'a RefusalRead<'a>) -> DbFuture<'a, Vec<Refused>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let rows: Vec<(i64, String, Option<String>)> = self
                .bounded(conn.query(refused_sql(r, Driver::Mysql)))
                .await?
                .map_err(query_error)?;
            Ok(rows
                .into_iter()
                .map(|(delivery_id, delivery_key, error)| Refused {
                    delivery_id,
                    delivery_key,
                    error: error.unwrap_or_default(),
                })
                .collect())
        })
    }

    fn forget<'a>(&'a self, delivery_key: &'a str) -> DbFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            self.bounded(conn.exec_drop(
                format!("DELETE FROM {KEYS_TABLE} WHERE delivery_key = ?"),
                (delivery_key,),
            ))
            .await?
            .map_err(query_error)
        })
    }

    fn mark<'a>(&'a self, w: &'a MarkWrite<'a>, marks: &'a [Mark]) -> DbFuture<'a, u64> {
        Box::pin(async move {
            let flag_ty = w
                .shape
                .column(w.flag, Driver::Mysql)
                .map_or(ColumnType::Text, |c| c.ty);
            let mut sql = format!(
                "UPDATE {} SET {} = ?, {} = ?, {} = ? WHERE ",
                quote(Driver::Mysql, &w.shape.table),
                quote(Driver::Mysql, w.flag),
                quote(Driver::Mysql, w.sync_date),
                quote(Driver::Mysql, w.error)
            );
            for k in w.keys {
                sql.push_str(&format!("{} = ? AND ", quote(Driver::Mysql, k)));
            }
            sql.push_str(&pending_predicate(
                &quote(Driver::Mysql, w.flag),
                flag_ty,
                w.pending,
            ));
            if let Some(v) = w.version {
                sql.push_str(&format!(" AND {} <=> ?", quote(Driver::Mysql, v)));
            }
            let pool = self.pool.clone();
            let work = async move {
                let mut tx = pool.start_transaction(TxOpts::default()).await?;
                let stmt = tx.prep(sql).await?;
                let mut marked = 0;
                for m in marks {
                    let mut params: Vec<Value> = vec![
                        Value::from(m.flag.as_str()),
                        Value::from(w.at.as_str()),
                        m.error.as_deref().map_or(Value::NULL, Value::from),
                    ];
                    params.extend(m.key.iter().map(|k| Value::from(k.as_str())));
                    if w.version.is_some() {
                        params.push(m.version.as_deref().map_or(Value::NULL, Value::from));
                    }
                    tx.exec_drop(&stmt, params).await?;
                    marked += tx.affected_rows();
                }
                tx.commit().await?;
                Ok::<u64, mysql_async::Error>(marked)
            };
            self.bounded(work).await?.map_err(query_error)
        })
    }
}
