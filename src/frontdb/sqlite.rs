//! The SQLite engine of the 前置库: an embedded file, for the demo (which may start
//! no database server) and for trying a mapping on a laptop. One connection behind a
//! mutex, used on the blocking pool. Values are read as SQLite holds them (integers
//! and reals as their text, text, blobs) and `cell` reads them by the declared type,
//! as for the other engines.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::{
    Column, ColumnType, DbFuture, FrontDb, FrontDbError, KEYS_TABLE, Mark, MarkWrite, PendingRead,
    RefusalRead, Refused, Row, Shape, TableWrite, Written, flag_counts_sql, keys_ddl,
    pending_predicate, pending_where, quote, refused_sql, select_sql,
};
use crate::config::{Driver, WriteMode};

const D: Driver = Driver::Sqlite;

pub struct SqliteDb {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteDb {
    pub fn open(path: &Path, timeout_ms: u64) -> Result<SqliteDb, FrontDbError> {
        let conn = Connection::open(path).map_err(|e| FrontDbError::Connect {
            driver: "sqlite",
            host: path.display().to_string(),
            port: 0,
            reason: e.to_string(),
        })?;
        conn.busy_timeout(Duration::from_millis(timeout_ms))
            .map_err(|e| FrontDbError::Query(e.to_string()))?;
        // Others (the department's system, the demo) use the file at the same time.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| FrontDbError::Query(e.to_string()))?;
        Ok(SqliteDb {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Run `f` with the connection on the blocking pool.
    fn run<'a, T: Send + 'static>(
        &'a self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> DbFuture<'a, T> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = match conn.lock() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                f(&mut guard).map_err(sqlite_error)
            })
            .await
            .map_err(|e| FrontDbError::Query(e.to_string()))?
        })
    }
}

fn sqlite_error(e: rusqlite::Error) -> FrontDbError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => FrontDbError::Rejected(e.to_string()),
        _ => FrontDbError::Query(e.to_string()),
    }
}

/// The gateway's reading of a declared type (SQLite keeps the words it was given).
fn column_type(declared: &str) -> ColumnType {
    let t = declared.to_ascii_uppercase();
    let has = |w: &str| t.contains(w);
    if has("DATETIME") || has("TIMESTAMP") {
        ColumnType::DateTime
    } else if has("DATE") {
        ColumnType::Date
    } else if has("TIME") {
        ColumnType::Time
    } else if has("INT") {
        ColumnType::Integer
    } else if has("DEC") || has("NUMERIC") {
        ColumnType::Decimal
    } else if has("REAL") || has("FLOA") || has("DOUB") {
        ColumnType::Float
    } else if has("BOOL") {
        ColumnType::Bool
    } else if has("BLOB") {
        ColumnType::Blob
    } else if has("CHAR") || has("TEXT") || has("CLOB") || t.is_empty() {
        ColumnType::Text
    } else {
        ColumnType::Other
    }
}

/// `VARCHAR(200)` → 200.
fn max_chars(declared: &str) -> Option<u64> {
    let (_, rest) = declared.split_once('(')?;
    rest.split([')', ',']).next()?.trim().parse().ok()
}

fn raw(v: ValueRef<'_>) -> Option<Vec<u8>> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string().into_bytes()),
        ValueRef::Real(r) => Some(r.to_string().into_bytes()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.to_vec()),
    }
}

fn text(v: ValueRef<'_>) -> Option<String> {
    raw(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

impl FrontDb for SqliteDb {
    fn driver(&self) -> Driver {
        D
    }

    fn shape<'a>(&'a self, table: &'a str) -> DbFuture<'a, Option<Shape>> {
        let table = table.to_string();
        self.run(move |c| {
            let sql = match table.split_once('.') {
                Some((schema, t)) => {
                    format!("PRAGMA {}.table_info({})", quote(D, schema), quote(D, t))
                }
                None => format!("PRAGMA table_info({})", quote(D, &table)),
            };
            let mut stmt = c.prepare(&sql)?;
            let columns: Vec<Column> = stmt
                .query_map([], |r| {
                    let declared: String = r.get(2)?;
                    Ok(Column {
                        name: r.get(1)?,
                        ty: column_type(&declared),
                        max_chars: max_chars(&declared),
                        nullable: r.get::<_, i64>(3)? == 0,
                        type_name: declared,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok((!columns.is_empty()).then_some(Shape { table, columns }))
        })
    }

    fn pending<'a>(&'a self, read: &'a PendingRead<'a>) -> DbFuture<'a, Vec<Row>> {
        let sql = select_sql(read, false, D);
        let width = read.shape.columns.len();
        self.run(move |c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map([], |r| (0..width).map(|i| r.get_ref(i).map(raw)).collect())?
                .collect::<rusqlite::Result<Vec<Row>>>()?;
            Ok(rows)
        })
    }

    fn count_pending<'a>(&'a self, read: &'a PendingRead<'a>) -> DbFuture<'a, u64> {
        let sql = select_sql(read, true, D);
        self.run(move |c| {
            let n: i64 = c.query_row(&sql, [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn pending_cases<'a>(
        &'a self,
        read: &'a PendingRead<'a>,
        case: &'a str,
        cases: &'a [String],
    ) -> DbFuture<'a, Vec<String>> {
        let marks = vec!["?"; cases.len()].join(", ");
        let sql = format!(
            "SELECT DISTINCT {c} FROM {} WHERE {} AND {c} IN ({marks})",
            quote(D, &read.shape.table),
            pending_where(read, D),
            c = quote(D, case),
        );
        let cases = cases.to_vec();
        self.run(move |c| {
            if cases.is_empty() {
                return Ok(Vec::new());
            }
            let mut stmt = c.prepare(&sql)?;
            let out = stmt
                .query_map(params_from_iter(cases.iter()), |r| r.get_ref(0).map(text))?
                .collect::<rusqlite::Result<Vec<Option<String>>>>()?;
            Ok(out.into_iter().flatten().collect())
        })
    }

    fn flag_counts<'a>(
        &'a self,
        shape: &'a Shape,
        flag: &'a str,
    ) -> DbFuture<'a, Vec<(Option<String>, u64)>> {
        let sql = flag_counts_sql(shape, flag, D);
        self.run(move |c| {
            let mut stmt = c.prepare(&sql)?;
            let out = stmt
                .query_map([], |r| {
                    let n: i64 = r.get(1)?;
                    Ok((r.get_ref(0).map(text)?, u64::try_from(n).unwrap_or(0)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(out)
        })
    }

    fn ensure_keys<'a>(&'a self) -> DbFuture<'a, ()> {
        self.run(|c| c.execute_batch(&keys_ddl()))
    }

    fn write<'a>(&'a self, w: &'a TableWrite<'a>) -> DbFuture<'a, Written> {
        let table = quote(D, &w.shape.table);
        let mut plan: Vec<(String, Vec<Option<String>>)> = Vec::new();
        match (&w.mode, &w.case) {
            (WriteMode::ReplaceCase, Some((column, value))) => plan.push((
                format!("DELETE FROM {table} WHERE {} = ?", quote(D, column)),
                vec![Some(value.clone())],
            )),
            _ => {
                let cond: Vec<String> = w
                    .keys
                    .iter()
                    .map(|k| format!("{} = ?", quote(D, k)))
                    .collect();
                for row in &w.rows {
                    let values = w
                        .keys
                        .iter()
                        .map(|k| {
                            row.iter()
                                .find(|(c, _)| c.eq_ignore_ascii_case(k))
                                .and_then(|(_, v)| v.clone())
                        })
                        .collect();
                    plan.push((
                        format!("DELETE FROM {table} WHERE {}", cond.join(" AND ")),
                        values,
                    ));
                }
            }
        }
        let mut inserts = Vec::new();
        for row in &w.rows {
            let cols: Vec<String> = row.iter().map(|(c, _)| quote(D, c)).collect();
            let marks = vec!["?"; row.len()].join(", ");
            inserts.push((
                format!("INSERT INTO {table} ({}) VALUES ({marks})", cols.join(", ")),
                row.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            ));
        }
        let key = (
            w.delivery_key.to_string(),
            w.delivery_id,
            w.shape.table.clone(),
            w.row_key.clone(),
            w.at.clone(),
        );
        self.run(move |c| {
            let tx = c.transaction()?;
            let before: Option<i64> = tx
                .query_row(
                    &format!("SELECT delivery_id FROM {KEYS_TABLE} WHERE delivery_key = ?1"),
                    [&key.0],
                    |r| r.get(0),
                )
                .optional()?;
            if before.is_some() {
                return Ok(Written::Before);
            }
            for (sql, p) in &plan {
                tx.execute(sql, params_from_iter(p.iter()))?;
            }
            let mut written = 0;
            for (sql, p) in &inserts {
                written += tx.execute(sql, params_from_iter(p.iter()))? as u64;
            }
            tx.execute(
                &format!("INSERT INTO {KEYS_TABLE} (delivery_key, delivery_id, table_name, row_key, written_at) VALUES (?1, ?2, ?3, ?4, ?5)"),
                rusqlite::params![key.0, key.1, key.2, key.3, key.4],
            )?;
            tx.commit()?;
            Ok(Written::Now(written))
        })
    }

    fn refused<'a>(&'a self, r: &'a RefusalRead<'a>) -> DbFuture<'a, Vec<Refused>> {
        let sql = refused_sql(r, D);
        self.run(move |c| {
            let mut stmt = c.prepare(&sql)?;
            let out = stmt
                .query_map([], |row| {
                    Ok(Refused {
                        delivery_id: row.get(0)?,
                        delivery_key: row.get(1)?,
                        error: row.get_ref(2).map(text)?.unwrap_or_default(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(out)
        })
    }

    fn forget<'a>(&'a self, delivery_key: &'a str) -> DbFuture<'a, ()> {
        let key = delivery_key.to_string();
        self.run(move |c| {
            c.execute(
                &format!("DELETE FROM {KEYS_TABLE} WHERE delivery_key = ?1"),
                [key],
            )
            .map(|_| ())
        })
    }

    fn mark<'a>(&'a self, w: &'a MarkWrite<'a>, marks: &'a [Mark]) -> DbFuture<'a, u64> {
        let flag_ty = w.shape.column(w.flag, D).map_or(ColumnType::Text, |c| c.ty);
        let mut sql = format!(
            "UPDATE {} SET {} = ?, {} = ?, {} = ? WHERE ",
            quote(D, &w.shape.table),
            quote(D, w.flag),
            quote(D, w.sync_date),
            quote(D, w.error)
        );
        for k in w.keys {
            sql.push_str(&format!("{} = ? AND ", quote(D, k)));
        }
        sql.push_str(&pending_predicate(&quote(D, w.flag), flag_ty, w.pending));
        if let Some(v) = w.version {
            sql.push_str(&format!(" AND {} IS ?", quote(D, v)));
        }
        let with_version = w.version.is_some();
        let at = w.at.clone();
        let marks = marks.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut marked = 0;
            {
                let mut stmt = tx.prepare(&sql)?;
                for m in &marks {
                    let mut p: Vec<Option<String>> =
                        vec![Some(m.flag.clone()), Some(at.clone()), m.error.clone()];
                    p.extend(m.key.iter().cloned().map(Some));
                    if with_version {
                        p.push(m.version.clone());
                    }
                    marked += stmt.execute(params_from_iter(p.iter()))? as u64;
                }
            }
            tx.commit()?;
            Ok(marked)
        })
    }
}
