//! The PostgreSQL engine of the 前置库 (and of Kingbase, openGauss and HighGo in
//! their PostgreSQL mode), over `tokio-postgres`: one connection, opened when first
//! needed and again after it breaks. Its session time zone is the node's zone.
//! Pending rows are read with the simple query protocol, so every value arrives as
//! its text whatever its type; marks are parameters given as text and cast to the
//! column's own type (`($1::text)::varchar(2)`), so a key or flag of any type
//! compares with its index.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::tls::pg::{Connector, Settings, SslMode};

use super::flag_counts_sql;
use super::{
    Column, ColumnType, DbFuture, FrontDb, FrontDbError, KEYS_TABLE, Mark, MarkWrite, PendingRead,
    RefusalRead, Refused, Row, Shape, TableWrite, Written, keys_ddl, pending_predicate,
    pending_where, quote, refused_sql, select_sql,
};
use crate::config::WriteMode;
use crate::config::{Driver, TableSettings};

pub struct PostgresDb {
    config: tokio_postgres::Config,
    /// TLS as `sslmode` and `sslrootcert` say (the store's PostgreSQL connector).
    tls: Connector,
    host: String,
    port: u16,
    timeout_ms: u64,
    zone: i32,
    client: Mutex<Option<Client>>,
}

impl PostgresDb {
    pub fn new(
        s: &TableSettings,
        password: String,
        zone: i32,
        base: &std::path::Path,
    ) -> Result<PostgresDb, FrontDbError> {
        let tls_err = |e: crate::tls::pg::PgTlsError| FrontDbError::Query(format!("TLS: {e}"));
        let mode = SslMode::parse(s.ssl_mode()).map_err(tls_err)?;
        let root_cert = s.sslrootcert.as_deref().map(|r| match r {
            "system" => std::path::PathBuf::from(r),
            _ => base.join(r),
        });
        let tls = Connector::new(&Settings {
            mode,
            root_cert,
            url: String::new(),
        })
        .map_err(tls_err)?;
        let mut config = tokio_postgres::Config::new();
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        config
            .host(&s.host)
            .port(s.port())
            .dbname(&s.database)
            .user(&s.user)
            .application_name("hallgate")
            .connect_timeout(Duration::from_millis(s.timeout_ms));
        if !password.is_empty() {
            config.password(password);
        }
        Ok(PostgresDb {
            config,
            tls,
            host: s.host.clone(),
            port: s.port(),
            timeout_ms: s.timeout_ms,
            zone,
            client: Mutex::new(None),
        })
    }

    /// Run `f` with the connection, opening it first if there is none; a broken
    /// connection is dropped, to be opened again by the next call.
    async fn with<T, F>(&self, f: F) -> Result<T, FrontDbError>
    where
        F: for<'c> FnOnce(
            &'c mut Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
        >,
    {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.connect().await?);
        }
        let Some(client) = guard.as_mut() else {
            return Err(FrontDbError::Query("no connection".into()));
        };
        let out = tokio::time::timeout(Duration::from_millis(self.timeout_ms), f(client)).await;
        match out {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if client.is_closed() {
                    *guard = None;
                }
                // Data exceptions (22…) and constraint violations (23…): the values
                // themselves are refused.
                let code = e.as_db_error().map(|d| d.code().code().to_string());
                if code.is_some_and(|c| c.starts_with("22") || c.starts_with("23")) {
                    Err(FrontDbError::Rejected(pg_error(&e)))
                } else {
                    Err(FrontDbError::Query(pg_error(&e)))
                }
            }
            Err(_) => {
                // A statement cut off mid-way leaves the connection in doubt.
                *guard = None;
                Err(FrontDbError::Timeout(self.timeout_ms))
            }
        }
    }

    async fn connect(&self) -> Result<Client, FrontDbError> {
        let fail = |reason: String| FrontDbError::Connect {
            driver: "postgres",
            host: self.host.clone(),
            port: self.port,
            reason,
        };
        let (client, connection) = self.config.connect(self.tls.clone()).await.map_err(|e| {
            let reason = pg_error(&e);
            fail(format!("{reason}{}", crate::tls::pg::hint(&reason)))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "前置库 connection closed");
            }
        });
        let sign = if self.zone < 0 { '-' } else { '+' };
        let z = self.zone.abs();
        client
            .batch_execute(&format!(
                "SET TIME ZONE INTERVAL '{sign}{:02}:{:02}' HOUR TO MINUTE; SET statement_timeout = {}",
                z / 3600,
                z % 3600 / 60,
                self.timeout_ms
            ))
            .await
            .map_err(|e| fail(pg_error(&e)))?;
        Ok(client)
    }
}

/// Statements with their parameters (text or NULL), run in order.
type Plan = Vec<(String, Vec<Option<String>>)>;

fn params(p: &[Option<String>]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    p.iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// The statements that write `w`'s rows: the delete (by keys or case), the inserts.
fn write_plan(w: &TableWrite<'_>) -> Plan {
    let d = Driver::Postgres;
    let table = quote(d, &w.shape.table);
    let cast = |name: &str| -> String {
        w.shape
            .column(name, d)
            .map_or_else(|| "text".to_string(), |c| c.type_name.clone())
    };
    let mut plan = Plan::new();
    match (&w.mode, &w.case) {
        (WriteMode::ReplaceCase, Some((column, value))) => plan.push((
            format!(
                "DELETE FROM {table} WHERE {} = ($1::text)::{}",
                quote(d, column),
                cast(column)
            ),
            vec![Some(value.clone())],
        )),
        _ => {
            let cond: Vec<String> = w
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{} = (${}::text)::{}", quote(d, k), i + 1, cast(k)))
                .collect();
            let sql = format!("DELETE FROM {table} WHERE {}", cond.join(" AND "));
            for row in &w.rows {
                let values = w
                    .keys
                    .iter()
                    .map(|k| {
                        row.iter()
                            .find(|(c, _)| c == k)
                            .and_then(|(_, v)| v.clone())
                    })
                    .collect();
                plan.push((sql.clone(), values));
            }
        }
    }
    for row in &w.rows {
        let cols: Vec<String> = row.iter().map(|(c, _)| quote(d, c)).collect();
        let values: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, (c, _))| format!("(${}::text)::{}", i + 1, cast(c)))
            .collect();
        plan.push((
            format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                cols.join(", "),
                values.join(", ")
            ),
            row.iter().map(|(_, v)| v.clone()).collect(),
        ));
    }
    plan
}

/// The server's message where there is one (it names the column or table).
/// The server's code and message, or the error with its causes (a TLS handshake's
/// reason is in its source).
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            text
        }
    }
}

fn column_type(typname: &str) -> ColumnType {
    match typname {
        "int2" | "int4" | "int8" => ColumnType::Integer,
        "numeric" => ColumnType::Decimal,
        "float4" | "float8" => ColumnType::Float,
        "bool" => ColumnType::Bool,
        "text" | "varchar" | "bpchar" | "name" | "json" | "jsonb" | "uuid" => ColumnType::Text,
        "timestamp" | "timestamptz" => ColumnType::DateTime,
        "date" => ColumnType::Date,
        "time" | "timetz" => ColumnType::Time,
        "bytea" => ColumnType::Blob,
        _ => ColumnType::Other,
    }
}

/// `bytea` text output (`\x0a1b…`) as bytes.
fn bytea(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.strip_prefix("\\x")?).ok()
}

impl FrontDb for PostgresDb {
    fn driver(&self) -> Driver {
        Driver::Postgres
    }

    fn shape<'a>(&'a self, table: &'a str) -> DbFuture<'a, Option<Shape>> {
        Box::pin(async move {
            let qualified = quote(Driver::Postgres, table);
            let rows = self
                .with(move |c| {
                    Box::pin(async move {
                        c.query(
                            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text, \
                                    NOT a.attnotnull, \
                                    CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 \
                                         THEN (a.atttypmod - 4)::int8 END \
                             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                             ORDER BY a.attnum",
                            &[&qualified],
                        )
                        .await
                    })
                })
                .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut columns = Vec::with_capacity(rows.len());
            for r in rows {
                let typname: String = r
                    .try_get(2)
                    .map_err(|e| FrontDbError::Query(e.to_string()))?;
                let max: Option<i64> = r
                    .try_get(4)
                    .map_err(|e| FrontDbError::Query(e.to_string()))?;
                columns.push(Column {
                    name: r
                        .try_get(0)
                        .map_err(|e| FrontDbError::Query(e.to_string()))?,
                    type_name: r
                        .try_get(1)
                        .map_err(|e| FrontDbError::Query(e.to_string()))?,
                    ty: column_type(&typname),
                    nullable: r
                        .try_get(3)
                        .map_err(|e| FrontDbError::Query(e.to_string()))?,
                    max_chars: max.and_then(|m| u64::try_from(m).ok()),
                });
            }
            Ok(Some(Shape {
                table: table.to_string(),
                columns,
            }))
        })
    }

    fn pending<'a>(&'a self, read: &'a PendingRead<'a>) -> DbFuture<'a, Vec<Row>> {
        Box::pin(async move {
            let sql = select_sql(read, false, Driver::Postgres);
            let messages = self
                .with(move |c| Box::pin(async move { c.simple_query(&sql).await }))
                .await?;
            let blobs: Vec<bool> = read
                .shape
                .columns
                .iter()
                .map(|c| c.ty == ColumnType::Blob)
                .collect();
            let mut rows = Vec::new();
            for m in messages {
                if let SimpleQueryMessage::Row(r) = m {
                    let mut row = Vec::with_capacity(blobs.len());
                    for (i, blob) in blobs.iter().enumerate() {
                        let v = r
                            .try_get(i)
                            .map_err(|e| FrontDbError::Query(e.to_string()))?;
                        row.push(v.map(|t| {
                            if *blob {
                                bytea(t).unwrap_or_else(|| t.as_bytes().to_vec())
                            } else {
                                t.as_bytes().to_vec()
                            }
                        }));
                    }
                    rows.push(row);
                }
            }
            Ok(rows)
        })
    }

    fn count_pending<'a>(&'a self, read: &'a PendingRead<'a>) -> DbFuture<'a, u64> {
        Box::pin(async move {
            let sql = select_sql(read, true, Driver::Postgres);
            let row = self
                .with(move |c| Box::pin(async move { c.query_one(&sql, &[]).await }))
                .await?;
            let n: i64 = row
                .try_get(0)
                .map_err(|e| FrontDbError::Query(e.to_string()))?;
            Ok(u64::try_from(n).unwrap_or(0))
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
            let col = read.shape.column(case, Driver::Postgres);
            let sql = format!(
                "SELECT DISTINCT {c}::text FROM {} WHERE {} AND {c} = ANY(($1::text[])::{}[])",
                quote(Driver::Postgres, &read.shape.table),
                pending_where(read, Driver::Postgres),
                col.map_or("text", |c| c.type_name.as_str()),
                c = quote(Driver::Postgres, case),
            );
            let cases = cases.to_vec();
            let rows = self
                .with(move |c| Box::pin(async move { c.query(&sql, &[&cases]).await }))
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let v: Option<String> = r
                    .try_get(0)
                    .map_err(|e| FrontDbError::Query(e.to_string()))?;
                out.extend(v);
            }
            Ok(out)
        })
    }

    fn flag_counts<'a>(
        &'a self,
        shape: &'a Shape,
        flag: &'a str,
    ) -> DbFuture<'a, Vec<(Option<String>, u64)>> {
        Box::pin(async move {
            let sql = flag_counts_sql(shape, flag, Driver::Postgres);
            let rows = self
                .with(move |c| Box::pin(async move { c.query(&sql, &[]).await }))
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let get = |e: tokio_postgres::Error| FrontDbError::Query(e.to_string());
                let n: i64 = r.try_get(1).map_err(get)?;
                out.push((r.try_get(0).map_err(get)?, u64::try_from(n).unwrap_or(0)));
            }
            Ok(out)
        })
    }

    fn ensure_keys<'a>(&'a self) -> DbFuture<'a, ()> {
        Box::pin(async move {
            let ddl = keys_ddl();
            self.with(move |c| Box::pin(async move { c.batch_execute(&ddl).await }))
                .await
        })
    }

    fn write<'a>(&'a self, w: &'a TableWrite<'a>) -> DbFuture<'a, Written> {
        Box::pin(async move {
            let plan = write_plan(w);
            let key = w.delivery_key.to_string();
            let record = vec![
                Some(w.delivery_key.to_string()),
                Some(w.delivery_id.to_string()),
                Some(w.shape.table.clone()),
                Some(w.row_key.clone()),
                Some(w.at.clone()),
            ];
            self.with(move |c| {
                    Box::pin(async move {
                        let tx = c.transaction().await?;
                        let before = tx
                            .query_opt(
                                &format!("SELECT delivery_id FROM {KEYS_TABLE} WHERE delivery_key = $1 FOR UPDATE"),
                                &[&key],
                            )
                            .await?;
                        if before.is_some() {
                            tx.commit().await?;
                            return Ok(Written::Before);
                        }
                        let mut written = 0;
                        for (sql, p) in &plan {
                            let n = tx.execute(sql.as_str(), &params(p)).await?;
                            if sql.starts_with("INSERT") {
                                written += n;
                            }
                        }
                        tx.execute(
                            &format!("INSERT INTO {KEYS_TABLE} (delivery_key, delivery_id, table_name, row_key, written_at) VALUES ($1, ($2::text)::int8, $3, $4, $5)"),
                            &params(&record),
                        )
                        .await?;
                        tx.commit().await?;
                        Ok(Written::Now(written))
                    })
                })
                .await
        })
    }

    fn refused<'a>(&'a self, r: &'a RefusalRead<'a>) -> DbFuture<'a, Vec<Refused>> {
        Box::pin(async move {
            let sql = refused_sql(r, Driver::Postgres);
            let rows = self
                .with(move |c| Box::pin(async move { c.query(&sql, &[]).await }))
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let get = |e: tokio_postgres::Error| FrontDbError::Query(e.to_string());
                let error: Option<String> = row.try_get(2).map_err(get)?;
                out.push(Refused {
                    delivery_id: row.try_get(0).map_err(get)?,
                    delivery_key: row.try_get(1).map_err(get)?,
                    error: error.unwrap_or_default(),
                });
            }
            Ok(out)
        })
    }

    fn forget<'a>(&'a self, delivery_key: &'a str) -> DbFuture<'a, ()> {
        Box::pin(async move {
            let key = delivery_key.to_string();
            self.with(move |c| {
                Box::pin(async move {
                    c.execute(
                        &format!("DELETE FROM {KEYS_TABLE} WHERE delivery_key = $1"),
                        &[&key],
                    )
                    .await
                    .map(|_| ())
                })
            })
            .await
        })
    }

    fn mark<'a>(&'a self, w: &'a MarkWrite<'a>, marks: &'a [Mark]) -> DbFuture<'a, u64> {
        Box::pin(async move {
            let cast = |name: &str| -> String {
                w.shape
                    .column(name, Driver::Postgres)
                    .map_or_else(|| "text".to_string(), |c| c.type_name.clone())
            };
            let flag_ty = w
                .shape
                .column(w.flag, Driver::Postgres)
                .map_or(ColumnType::Text, |c| c.ty);
            let mut sql = format!(
                "UPDATE {} SET {} = ($1::text)::{}, {} = ($2::text)::{}, {} = ($3::text)::{} WHERE ",
                quote(Driver::Postgres, &w.shape.table),
                quote(Driver::Postgres, w.flag),
                cast(w.flag),
                quote(Driver::Postgres, w.sync_date),
                cast(w.sync_date),
                quote(Driver::Postgres, w.error),
                cast(w.error),
            );
            let mut n = 3;
            for k in w.keys {
                n += 1;
                sql.push_str(&format!(
                    "{} = (${n}::text)::{} AND ",
                    quote(Driver::Postgres, k),
                    cast(k)
                ));
            }
            sql.push_str(&pending_predicate(
                &quote(Driver::Postgres, w.flag),
                flag_ty,
                w.pending,
            ));
            if let Some(v) = w.version {
                n += 1;
                sql.push_str(&format!(
                    " AND {}::text IS NOT DISTINCT FROM ${n}::text",
                    quote(Driver::Postgres, v)
                ));
            }
            let at = w.at.clone();
            let with_version = w.version.is_some();
            let marks = marks.to_vec();
            self.with(move |c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    let stmt = tx.prepare(&sql).await?;
                    let mut marked = 0;
                    for m in &marks {
                        let mut params: Vec<Option<String>> =
                            vec![Some(m.flag.clone()), Some(at.clone()), m.error.clone()];
                        params.extend(m.key.iter().cloned().map(Some));
                        if with_version {
                            params.push(m.version.clone());
                        }
                        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                            .iter()
                            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                            .collect();
                        marked += tx.execute(&stmt, &refs).await?;
                    }
                    tx.commit().await?;
                    Ok(marked)
                })
            })
            .await
        })
    }
}
