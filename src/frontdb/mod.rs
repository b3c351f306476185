//! 前置库: the front-end databases departments exchange records through (layer 3,
//! beside the store). It owns the small [`FrontDb`] trait every engine implements
//! (read a table's shape, read its pending rows, mark rows), the engines for
//! MySQL/MariaDB ([`mysql`]) and PostgreSQL ([`postgres`], which also serves
//! Kingbase, openGauss and HighGo in their PostgreSQL mode), an SQLite file
//! ([`sqlite`], the demo's embedded 前置库), and the reading of a
//! column's value as a record field ([`cell`]).
//!
//! Engines build their SQL only from identifiers the config checked
//! (`config::identifier`) and flag values it checked; row values always travel as
//! parameters. An Oracle or 达梦 engine is a new module implementing [`FrontDb`]
//! and a `Driver` variant (docs/exchange-tables.md says how).

pub mod cell;
pub mod check;
mod mysql;
mod postgres;
mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Driver, TableSettings, WriteMode};

/// Why a 前置库 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontDbError {
    #[error("{driver} {host}:{port}: cannot connect: {reason}")]
    Connect {
        driver: &'static str,
        host: String,
        port: u16,
        reason: String,
    },
    #[error("{0}")]
    Query(String),
    #[error("the statement took longer than {0} ms")]
    Timeout(u64),
    #[error("no password: {0}")]
    Password(String),
    /// The database refused the values (too long, wrong type, NULL where none may
    /// be): writing them again cannot help.
    #[error("refused by the database: {0}")]
    Rejected(String),
}

/// What the gateway makes of a column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Integer,
    /// DECIMAL/NUMERIC: read as its exact text.
    Decimal,
    Float,
    Bool,
    Text,
    /// DATETIME, TIMESTAMP: a time in the node's zone.
    DateTime,
    Date,
    Time,
    /// BLOB, BYTEA: a file, known by its SHA-256 and size.
    Blob,
    Other,
}

impl ColumnType {
    pub fn numeric(self) -> bool {
        matches!(self, ColumnType::Integer | ColumnType::Decimal)
    }
}

/// A column as the database describes it.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// The engine's own name of the type (`varchar(200)`, `timestamp`).
    pub type_name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    /// The longest text the column holds, in characters, where it is bounded.
    pub max_chars: Option<u64>,
}

/// A table's columns, in their order in the table.
#[derive(Debug, Clone)]
pub struct Shape {
    pub table: String,
    pub columns: Vec<Column>,
}

impl Shape {
    /// The column named `name` (as the engine compares names).
    pub fn column(&self, name: &str, driver: Driver) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| driver.same_name(&c.name, name))
    }
}

/// One row as read: each column of the shape, raw (text, or bytes for a blob);
/// `None` is NULL.
pub type Row = Vec<Option<Vec<u8>>>;

/// What to read: the pending rows of a table, in order, at most `limit`.
pub struct PendingRead<'a> {
    pub shape: &'a Shape,
    pub flag: &'a str,
    pub pending: &'a [String],
    /// ORDER BY these columns (the order columns, then the keys).
    pub order: &'a [String],
    pub limit: usize,
    /// Only the rows after (or up to) a place in that order.
    pub bound: Option<&'a Bound>,
}

/// A place in a table's order: values of its order columns, then its keys. A
/// source keeps the last row it read as its cursor, so each batch starts where the
/// last one ended instead of scanning the rows already marked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// The rows strictly after these values.
    After(Vec<String>),
    /// The rows up to and including these values.
    UpTo(Vec<String>),
}

impl Bound {
    pub fn values(&self) -> &[String] {
        match self {
            Bound::After(v) | Bound::UpTo(v) => v,
        }
    }
}

/// How rows are marked once read.
pub struct MarkWrite<'a> {
    pub shape: &'a Shape,
    pub keys: &'a [String],
    pub flag: &'a str,
    pub sync_date: &'a str,
    pub error: &'a str,
    pub version: Option<&'a str>,
    /// A row is marked only while its flag is still pending…
    pub pending: &'a [String],
    /// …the time stamped, `YYYY-MM-DD HH:MM:SS` in the node's zone.
    pub at: String,
}

/// One row's mark.
#[derive(Debug, Clone)]
pub struct Mark {
    /// The row's key values, as text, in the order of the keys.
    pub key: Vec<String>,
    /// The version read, when the source has a version column: a row rewritten
    /// since is left pending, to be read again.
    pub version: Option<String>,
    pub flag: String,
    pub error: Option<String>,
}

/// The table in every 前置库 the gateway writes to, beside the exchange tables: one
/// row per delivery written, in the same transaction as the delivery's rows, so a
/// delivery attempted again after a crash is never written twice.
pub const KEYS_TABLE: &str = "hallgate_delivery_keys";

/// A row to write: (column, value as text or NULL).
pub type WriteRow = Vec<(String, Option<String>)>;

/// One record's rows for a table destination.
pub struct TableWrite<'a> {
    pub shape: &'a Shape,
    pub keys: &'a [String],
    pub mode: WriteMode,
    /// The case column and the record's case number (`replace_case`).
    pub case: Option<(&'a str, String)>,
    /// Each row as (column, value as text or NULL), columns of the shape.
    pub rows: Vec<WriteRow>,
    /// The delivery's stable key (its Idempotency-Key) and id.
    pub delivery_key: &'a str,
    pub delivery_id: i64,
    /// The first row's key values, `|`-joined: how a consumer's flag is found again.
    pub row_key: String,
    /// `YYYY-MM-DD HH:MM:SS` in the node's zone.
    pub at: String,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The rows are in the table now.
    Now(u64),
    /// This delivery was written before (an attempt again after a crash).
    Before,
}

/// A row the consumer refused: its delivery, and the consumer's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub delivery_id: i64,
    pub delivery_key: String,
    pub error: String,
}

/// Where a consumer's refusals are read from.
pub struct RefusalRead<'a> {
    pub shape: &'a Shape,
    pub keys: &'a [String],
    pub flag: &'a str,
    pub failed: &'a str,
    pub error: &'a str,
    pub limit: usize,
}

pub type DbFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FrontDbError>> + Send + 'a>>;

/// A 前置库 engine.
pub trait FrontDb: Send + Sync {
    fn driver(&self) -> Driver;
    /// The table's columns; `None` when there is no such table.
    fn shape<'a>(&'a self, table: &'a str) -> DbFuture<'a, Option<Shape>>;
    /// The first `limit` pending rows, in order, each with every column of the shape.
    fn pending<'a>(&'a self, read: &'a PendingRead<'a>) -> DbFuture<'a, Vec<Row>>;
    /// How many rows are pending.
    fn count_pending<'a>(&'a self, read: &'a PendingRead<'a>) -> DbFuture<'a, u64>;
    /// Of `cases`, those with a pending row in the table (by its `case` column).
    fn pending_cases<'a>(
        &'a self,
        read: &'a PendingRead<'a>,
        case: &'a str,
        cases: &'a [String],
    ) -> DbFuture<'a, Vec<String>>;
    /// How many rows hold each flag value (`None`: NULL), for `hallgate sync status`.
    fn flag_counts<'a>(
        &'a self,
        shape: &'a Shape,
        flag: &'a str,
    ) -> DbFuture<'a, Vec<(Option<String>, u64)>>;
    /// Create the delivery-key table if it is missing.
    fn ensure_keys<'a>(&'a self) -> DbFuture<'a, ()>;
    /// Write one delivery's rows and its key in one transaction (nothing if its key
    /// is there already).
    fn write<'a>(&'a self, w: &'a TableWrite<'a>) -> DbFuture<'a, Written>;
    /// Rows the consumer marked refused whose delivery is still on record.
    fn refused<'a>(&'a self, r: &'a RefusalRead<'a>) -> DbFuture<'a, Vec<Refused>>;
    /// Forget a delivery's key (its refusal is recorded; a retry writes it again).
    fn forget<'a>(&'a self, delivery_key: &'a str) -> DbFuture<'a, ()>;
    /// Mark rows in one transaction; answers how many rows were marked (a row
    /// rewritten meanwhile is not).
    fn mark<'a>(&'a self, write: &'a MarkWrite<'a>, marks: &'a [Mark]) -> DbFuture<'a, u64>;
}

/// Connect to a node's 前置库 (lazily: the first statement opens the connection);
/// an SQLite file's path is relative to `base`, the config's folder.
pub fn open(
    settings: &TableSettings,
    password: String,
    base: &std::path::Path,
) -> Result<Arc<dyn FrontDb>, FrontDbError> {
    let zone = settings
        .zone_seconds()
        .map_err(|e| FrontDbError::Query(format!("zone: {e}")))?;
    Ok(match settings.driver {
        Driver::Mysql => Arc::new(mysql::MysqlDb::new(settings, password, zone, base)?),
        Driver::Postgres => Arc::new(postgres::PostgresDb::new(settings, password, zone, base)?),
        Driver::Sqlite => Arc::new(sqlite::SqliteDb::open(
            &base.join(&settings.database),
            settings.timeout_ms,
        )?),
    })
}

/// The password of `[nodes.ID.tables]`: from its env var or file (relative to
/// `base`), or empty when neither is set.
pub fn password(settings: &TableSettings, base: &std::path::Path) -> Result<String, FrontDbError> {
    if let Some(var) = &settings.password_env {
        return std::env::var(var).map_err(|_| {
            FrontDbError::Password(format!("the environment variable {var} is not set"))
        });
    }
    if let Some(file) = &settings.password_file {
        let path = base.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| FrontDbError::Password(format!("{}: {e}", path.display())))?;
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    Ok(String::new())
}

/// An SQL literal for a flag value compared with a column of type `ty`: numbers
/// bare, others quoted. The config allows only letters, digits, `_` and `-` in flag
/// values, so there is nothing to escape; a value a numeric column cannot hold (the
/// empty string) matches nothing and is left out.
fn flag_literal(value: &str, ty: ColumnType) -> Option<String> {
    if ty.numeric() {
        value.parse::<i64>().ok().map(|n| n.to_string())
    } else {
        Some(format!("'{value}'"))
    }
}

/// `(flag IS NULL OR flag IN (…))` for the pending values, `flag` already quoted.
fn pending_predicate(flag: &str, ty: ColumnType, pending: &[String]) -> String {
    let values: Vec<String> = pending.iter().filter_map(|v| flag_literal(v, ty)).collect();
    if values.is_empty() {
        format!("{flag} IS NULL")
    } else {
        format!("({flag} IS NULL OR {flag} IN ({}))", values.join(", "))
    }
}

/// A quoted identifier (each part of `schema.table`): backticks for MySQL, double
/// quotes for PostgreSQL. Identifiers were checked by the config.
fn quote(driver: Driver, name: &str) -> String {
    let q = match driver {
        Driver::Mysql => '`',
        Driver::Postgres | Driver::Sqlite => '"',
    };
    name.split('.')
        .map(|p| format!("{q}{p}{q}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The WHERE clause of a read: the flag is pending and, with a bound, the row's
/// order values are after (or up to) the bound's.
fn pending_where(read: &PendingRead<'_>, driver: Driver) -> String {
    let flag_ty = read
        .shape
        .column(read.flag, driver)
        .map_or(ColumnType::Text, |c| c.ty);
    let pending = pending_predicate(&quote(driver, read.flag), flag_ty, read.pending);
    match read
        .bound
        .and_then(|b| bound_sql(read.shape, read.order, b, driver))
    {
        Some(bound) => format!("{pending} AND {bound}"),
        None => pending,
    }
}

/// Whether a cursor can be kept in this order: every column there and of a type
/// compared by value. NULL sorts first, so a row with a NULL there is before any
/// cursor (which never holds a NULL).
pub fn bound_usable(shape: &Shape, order: &[String], driver: Driver) -> bool {
    !order.is_empty()
        && order.iter().all(|name| {
            shape
                .column(name, driver)
                .is_some_and(|c| !matches!(c.ty, ColumnType::Blob | ColumnType::Bool))
        })
}

/// `(order) > (values)`, or `NOT` that (or a NULL in the order) for
/// [`Bound::UpTo`]; `None` when a value cannot be written for its column (a
/// number column holding something else, a blob).
/// Values come from the producer's rows, so text is written so that nothing in it
/// can end the literal: hex for MySQL, an escape string for PostgreSQL, doubled
/// quotes for SQLite (which has no backslash escapes).
fn bound_sql(shape: &Shape, order: &[String], bound: &Bound, driver: Driver) -> Option<String> {
    let values = bound.values();
    if order.is_empty() || values.len() != order.len() {
        return None;
    }
    let mut cols = Vec::with_capacity(order.len());
    let mut lits = Vec::with_capacity(order.len());
    let mut nulls = Vec::new();
    for (name, value) in order.iter().zip(values) {
        let col = shape.column(name, driver)?;
        cols.push(quote(driver, name));
        lits.push(order_literal(value, col.ty, driver)?);
        if col.nullable {
            nulls.push(format!(" OR {} IS NULL", quote(driver, name)));
        }
    }
    let after = match driver {
        // MariaDB plans a range scan for this form; row-value comparisons it may not.
        Driver::Mysql => {
            let mut terms = Vec::with_capacity(cols.len());
            for i in 0..cols.len() {
                let mut parts: Vec<String> = (0..i)
                    .map(|j| format!("{} = {}", cols[j], lits[j]))
                    .collect();
                parts.push(format!("{} > {}", cols[i], lits[i]));
                terms.push(parts.join(" AND "));
            }
            format!("(({}))", terms.join(") OR ("))
        }
        Driver::Postgres | Driver::Sqlite => {
            format!("(({}) > ({}))", cols.join(", "), lits.join(", "))
        }
    };
    Some(match bound {
        Bound::After(_) => after,
        Bound::UpTo(_) => format!("(NOT {after}{})", nulls.concat()),
    })
}

/// A value of an order column as an SQL literal.
fn order_literal(value: &str, ty: ColumnType, driver: Driver) -> Option<String> {
    match ty {
        ColumnType::Integer | ColumnType::Decimal | ColumnType::Float => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            let mut parts = digits.splitn(2, '.');
            let whole = parts.next().unwrap_or_default();
            let ok = !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && parts
                    .next()
                    .is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
            ok.then(|| value.to_string())
        }
        ColumnType::Blob | ColumnType::Bool => None,
        _ => Some(match driver {
            Driver::Mysql => format!("_utf8mb4 X'{}'", hex::encode(value)),
            Driver::Postgres => format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''")),
            Driver::Sqlite => format!("'{}'", value.replace('\'', "''")),
        }),
    }
}

/// `SELECT every column … WHERE pending ORDER BY … LIMIT n`, or its `COUNT(*)`.
fn select_sql(read: &PendingRead<'_>, count: bool, driver: Driver) -> String {
    let what = if count {
        "COUNT(*)".to_string()
    } else {
        read.shape
            .columns
            .iter()
            .map(|c| quote(driver, &c.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut sql = format!(
        "SELECT {what} FROM {} WHERE {}",
        quote(driver, &read.shape.table),
        pending_where(read, driver)
    );
    if !count {
        // NULL first, as MySQL and SQLite sort it, so that a cursor's range holds
        // every row after it (only where a NULL can be, so an index still serves).
        let order: Vec<String> = read
            .order
            .iter()
            .map(|c| {
                let nullable = read.shape.column(c, driver).is_none_or(|c| c.nullable);
                match (driver, nullable) {
                    (Driver::Postgres, true) => format!("{} NULLS FIRST", quote(driver, c)),
                    _ => quote(driver, c),
                }
            })
            .collect();
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {}",
            order.join(", "),
            read.limit
        ));
    }
    sql
}

/// The delivery-key table's DDL (the same for both engines).
fn keys_ddl() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (\
           delivery_key VARCHAR(128) NOT NULL PRIMARY KEY, \
           delivery_id BIGINT NOT NULL, \
           table_name VARCHAR(128) NOT NULL, \
           row_key VARCHAR(512) NOT NULL, \
           written_at VARCHAR(19) NOT NULL)"
    )
}

/// `SELECT delivery_id, delivery_key, error` of the rows a consumer refused, joined
/// to the delivery keys by the row's key columns.
fn refused_sql(r: &RefusalRead<'_>, driver: Driver) -> String {
    let q = |n: &str| quote(driver, n);
    let cast = match driver {
        Driver::Mysql | Driver::Sqlite => "",
        Driver::Postgres => "::text",
    };
    let keys: Vec<String> = r.keys.iter().map(|k| format!("t.{}{cast}", q(k))).collect();
    format!(
        "SELECT k.delivery_id, k.delivery_key, t.{err}{cast} FROM {KEYS_TABLE} k JOIN {table} t \
         ON k.table_name = '{name}' AND k.row_key = concat_ws('|', {keys}) \
         WHERE t.{flag}{cast} = '{failed}' LIMIT {limit}",
        err = q(r.error),
        table = q(&r.shape.table),
        name = r.shape.table,
        keys = keys.join(", "),
        flag = q(r.flag),
        failed = r.failed,
        limit = r.limit,
    )
}

/// `SELECT flag, COUNT(*) … GROUP BY flag`, the flag as text.
fn flag_counts_sql(shape: &Shape, flag: &str, driver: Driver) -> String {
    let cast = match driver {
        Driver::Mysql | Driver::Sqlite => "",
        Driver::Postgres => "::text",
    };
    let f = quote(driver, flag);
    format!(
        "SELECT {f}{cast}, COUNT(*) FROM {} GROUP BY {f}",
        quote(driver, &shape.table)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            type_name: String::new(),
            ty,
            nullable,
            max_chars: None,
        }
    }

    fn shape() -> Shape {
        Shape {
            table: "inf_apply_process".into(),
            columns: vec![
                col("no_ord", ColumnType::Integer, false),
                col("ROWGUID", ColumnType::Text, false),
                col("NOTE", ColumnType::Text, true),
            ],
        }
    }

    #[test]
    fn a_bound_is_a_range_each_engine_can_scan() {
        let order = ["no_ord".to_string(), "ROWGUID".to_string()];
        let after = Bound::After(vec!["3".into(), "g'7\\".into()]);
        let my = bound_sql(&shape(), &order, &after, Driver::Mysql).unwrap();
        assert_eq!(
            my,
            "((`no_ord` > 3) OR (`no_ord` = 3 AND `ROWGUID` > _utf8mb4 X'6727375c'))"
        );
        let pg = bound_sql(&shape(), &order, &after, Driver::Postgres).unwrap();
        assert_eq!(pg, r#"(("no_ord", "ROWGUID") > (3, E'g''7\\'))"#);
        let up_to = Bound::UpTo(vec!["3".into(), "g'7".into()]);
        let lite = bound_sql(&shape(), &order, &up_to, Driver::Sqlite).unwrap();
        assert_eq!(lite, r#"(NOT (("no_ord", "ROWGUID") > (3, 'g''7')))"#);
        let nullable = ["NOTE".to_string()];
        let up_to = Bound::UpTo(vec!["x".into()]);
        let lite = bound_sql(&shape(), &nullable, &up_to, Driver::Sqlite).unwrap();
        assert_eq!(lite, r#"(NOT (("NOTE") > ('x')) OR "NOTE" IS NULL)"#);
    }

    #[test]
    fn no_bound_where_a_value_or_column_cannot_take_one() {
        let order = ["no_ord".to_string(), "ROWGUID".to_string()];
        let text_in_number = Bound::After(vec!["3 OR 1=1".into(), "g".into()]);
        assert!(bound_sql(&shape(), &order, &text_in_number, Driver::Mysql).is_none());
        let short = Bound::After(vec!["3".into()]);
        assert!(bound_sql(&shape(), &order, &short, Driver::Mysql).is_none());
        assert!(bound_usable(&shape(), &order, Driver::Mysql));
        assert!(!bound_usable(
            &shape(),
            &["GONE".to_string()],
            Driver::Mysql
        ));
        for n in ["-12", "3.50", "0"] {
            assert!(order_literal(n, ColumnType::Decimal, Driver::Postgres).is_some());
        }
        for n in ["", "-", "1.", ".5", "1e3", "0x1"] {
            assert!(order_literal(n, ColumnType::Integer, Driver::Postgres).is_none());
        }
    }
}
