//! `[nodes.ID.tables]`: a node's 前置库 (front-end database) and the exchange tables
//! read from it (`[[nodes.ID.tables.source]]`). Only what the config alone can
//! check is checked here (identifiers, values, bounds); whether the tables and
//! columns exist is checked against the database at start-up (`frontdb`).

use serde::Deserialize;

use crate::record::Kind;

/// The database engine of a 前置库.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// MySQL or MariaDB.
    Mysql,
    /// PostgreSQL, and Kingbase, openGauss or HighGo in their PostgreSQL mode.
    Postgres,
    /// An SQLite file (`database` is its path): the demo's embedded 前置库, and a
    /// way to try a mapping without a server.
    Sqlite,
}

impl Driver {
    /// Whether a column named `a` is the one the config calls `b`: MySQL and SQLite
    /// compare column names without case, PostgreSQL exactly.
    pub fn same_name(self, a: &str, b: &str) -> bool {
        match self {
            Driver::Mysql | Driver::Sqlite => a.eq_ignore_ascii_case(b),
            Driver::Postgres => a == b,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Mysql => "mysql",
            Driver::Postgres => "postgres",
            Driver::Sqlite => "sqlite",
        }
    }
}

/// `[nodes.ID.tables]`: how to reach the node's 前置库.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    pub driver: Driver,
    /// The server (mysql, postgres).
    #[serde(default)]
    pub host: String,
    /// Default: 3306 (mysql), 5432 (postgres).
    #[serde(default)]
    pub port: Option<u16>,
    /// The database (mysql, postgres), or the file's path relative to the config
    /// file (sqlite).
    pub database: String,
    #[serde(default)]
    pub user: String,
    /// The environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (its first line), relative to the config file.
    #[serde(default)]
    pub password_file: Option<String>,
    /// The node's time zone as a UTC offset: DATETIME and TIMESTAMP values are read
    /// as times in it, and SYNC_DATE is written in it.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Connections kept open to the database.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// A statement taking longer fails (and is retried with back-off).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// TLS to the database, named as libpq names it: `disable`, `prefer` (TLS when
    /// the server offers it; PostgreSQL only, and its default), `require`,
    /// `verify-ca` (the chain), `verify-full` (the chain and the host name).
    /// MySQL/MariaDB's default is `disable`.
    #[serde(default)]
    pub sslmode: Option<String>,
    /// A PEM file of the CA certificates that signed the server's (relative to the
    /// config file), or `system`; needed by the verify modes, and with `require`
    /// it checks the chain too.
    #[serde(default)]
    pub sslrootcert: Option<String>,
    /// The exchange tables read from this database, in the order they are read in
    /// each round (applications before their steps and results).
    #[serde(default)]
    pub source: Vec<TableSource>,
    /// The exchange tables the gateway writes records into (the node is then a
    /// destination without a URL).
    #[serde(default)]
    pub destination: Vec<TableDestination>,
}

/// The `sslmode` values, as libpq spells them.
const SSL_MODES: &[&str] = &["disable", "prefer", "require", "verify-ca", "verify-full"];

impl TableSettings {
    /// `sslmode` as set, or the engine's default (`prefer` for PostgreSQL, else
    /// `disable`).
    pub fn ssl_mode(&self) -> &str {
        match (&self.sslmode, self.driver) {
            (Some(m), _) => m,
            (None, Driver::Postgres) => "prefer",
            (None, _) => "disable",
        }
    }

    fn tls_problems(&self, at: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mode = self.ssl_mode();
        if !SSL_MODES.contains(&mode) {
            out.push(format!(
                "{at}.sslmode: `{mode}` is not one of {}",
                SSL_MODES.join(", ")
            ));
        }
        match self.driver {
            Driver::Sqlite if self.sslmode.is_some() || self.sslrootcert.is_some() => {
                out.push(format!("{at}.sslmode: an SQLite file has no connection to encrypt"))
            }
            Driver::Mysql if mode == "prefer" => out.push(format!(
                "{at}.sslmode: `prefer` is not offered by the MySQL driver; use require (or disable)"
            )),
            _ => {}
        }
        if mode.starts_with("verify") && self.sslrootcert.is_none() {
            out.push(format!(
                "{at}.sslrootcert: sslmode = \"{mode}\" needs the PEM file of the CA that signed the server's certificate (or \"system\")"
            ));
        }
        if self
            .sslrootcert
            .as_deref()
            .is_some_and(|r| r.trim().is_empty())
        {
            out.push(format!("{at}.sslrootcert: empty"));
        }
        out
    }
}

/// How a table destination writes a record's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Each row replaces the row with the same keys, if any.
    Upsert,
    /// The case's rows are deleted, then the record's rows inserted (先删后插).
    ReplaceCase,
}

/// `[[nodes.ID.tables.destination]]`: one exchange table the gateway writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDestination {
    pub table: String,
    /// Records of this kind are written here, rendered by the node's mapping of it.
    pub kind: Kind,
    /// The columns that name a row.
    pub keys: Vec<String>,
    #[serde(default = "default_mode")]
    pub mode: WriteMode,
    /// The case number column: required by `replace_case`.
    #[serde(default)]
    pub case: Option<String>,
    /// The consumer's sync flag, set to `pending` with each row written.
    #[serde(default = "default_flag")]
    pub flag: String,
    /// Where the consumer says why it refused a row (read back as the receipt).
    #[serde(default = "default_error")]
    pub error: String,
    /// The flag written with each row: the consumer has not read it yet.
    #[serde(default = "default_pending_value")]
    pub pending: String,
    /// The consumer's flag for a row it refused: the delivery fails.
    #[serde(default = "default_failed")]
    pub failed: String,
    /// How often the consumer's flags are read back.
    #[serde(default = "default_interval_ms")]
    pub receipt_interval_ms: u64,
}

impl TableDestination {
    pub fn named_columns(&self) -> Vec<(&'static str, &str)> {
        let mut out: Vec<(&'static str, &str)> =
            self.keys.iter().map(|k| ("keys", k.as_str())).collect();
        out.push(("flag", &self.flag));
        out.push(("error", &self.error));
        if let Some(c) = &self.case {
            out.push(("case", c));
        }
        out
    }
}

/// `[[nodes.ID.tables.source]]`: one exchange table the gateway reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSource {
    /// The table, optionally with its schema (`qzk.inf_apply`).
    pub table: String,
    /// The kind of record each row is; the node's mapping of that kind reads it.
    pub kind: Kind,
    /// The columns that name a row (its primary key).
    pub keys: Vec<String>,
    /// The sync flag column the producer leaves pending and the gateway sets.
    #[serde(default = "default_flag")]
    pub flag: String,
    /// Stamped with the time a row was marked.
    #[serde(default = "default_sync_date")]
    pub sync_date: String,
    /// Why a row was marked `failed` (field, rule and message).
    #[serde(default = "default_error")]
    pub error: String,
    /// Flag values that mean "waiting to be read"; NULL always does too.
    #[serde(default = "default_pending")]
    pub pending: Vec<String>,
    /// The flag written once the row's record is stored.
    #[serde(default = "default_done")]
    pub done: String,
    /// The flag written when the row is refused.
    #[serde(default = "default_failed")]
    pub failed: String,
    /// The flag written when the row is refused only because its item is not in the
    /// item catalogue (unknown, withdrawn or not valid then), as some platforms use
    /// `9`; unset, such a row is `failed` like any other refusal.
    #[serde(default)]
    pub not_in_catalogue: Option<String>,
    /// The order rows are read in (process steps by `no_ord`); the keys follow.
    #[serde(default)]
    pub order: Vec<String>,
    /// A version column: a row is marked only while it still holds the version read.
    #[serde(default)]
    pub version: Option<String>,
    /// The case number column (`PROJID`). With it, a row waits while an earlier
    /// table (in config order) still has a pending row of its case, so a case's
    /// application is stored before its steps, and its steps before its result.
    #[serde(default)]
    pub case: Option<String>,
    /// Rows read at once.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long to wait when the table has nothing pending.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
}

/// The largest batch a table source reads at once.
pub const MAX_TABLE_BATCH: usize = 5_000;

impl TableSource {
    /// The columns this source writes or filters on, with the key each comes from.
    pub fn named_columns(&self) -> Vec<(&'static str, &str)> {
        let mut out: Vec<(&'static str, &str)> =
            self.keys.iter().map(|k| ("keys", k.as_str())).collect();
        out.push(("flag", &self.flag));
        out.push(("sync_date", &self.sync_date));
        out.push(("error", &self.error));
        out.extend(self.order.iter().map(|c| ("order", c.as_str())));
        if let Some(v) = &self.version {
            out.push(("version", v));
        }
        if let Some(c) = &self.case {
            out.push(("case", c));
        }
        out
    }
}

impl TableSettings {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.driver {
            Driver::Mysql => 3306,
            Driver::Postgres => 5432,
            Driver::Sqlite => 0,
        })
    }

    /// The zone's offset in seconds east of UTC.
    pub fn zone_seconds(&self) -> Result<i32, String> {
        parse_offset(&self.zone)
    }

    /// What is wrong with the settings, each message naming its key.
    pub fn problems(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let at = format!("nodes.{id}.tables");
        if let Err(e) = self.zone_seconds() {
            out.push(format!("{at}.zone: {e}"));
        }
        if self.driver != Driver::Sqlite && (self.host.is_empty() || self.user.is_empty()) {
            out.push(format!(
                "{at}: host and user are required for {}",
                self.driver.as_str()
            ));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            out.push(format!(
                "{at}: password_env and password_file both given; keep one"
            ));
        }
        if self.connections == 0 || self.connections > 64 {
            out.push(format!("{at}.connections: between 1 and 64"));
        }
        if self.timeout_ms == 0 {
            out.push(format!("{at}.timeout_ms: above 0"));
        }
        out.extend(self.tls_problems(&at));
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.source.iter().enumerate() {
            let at = format!("{at}.source[{i}] (`{}`)", s.table);
            if !seen.insert(s.table.to_ascii_lowercase()) {
                out.push(format!("{at}: the table is read twice"));
            }
            if !qualified_identifier(&s.table) {
                out.push(format!(
                    "{at}.table: `{}` is not a table name (letters, digits and _, optionally schema.table)",
                    s.table
                ));
            }
            if s.keys.is_empty() {
                out.push(format!("{at}.keys: at least one key column"));
            }
            for (key, column) in s.named_columns() {
                if !identifier(column) {
                    out.push(format!(
                        "{at}.{key}: `{column}` is not a column name (letters, digits and _)"
                    ));
                }
            }
            if s.kind == Kind::Alert {
                out.push(format!("{at}.kind: alerts are made by the gateway"));
            }
            if s.batch == 0 || s.batch > MAX_TABLE_BATCH {
                out.push(format!("{at}.batch: between 1 and {MAX_TABLE_BATCH}"));
            }
            if s.interval_ms == 0 {
                out.push(format!("{at}.interval_ms: above 0"));
            }
            for v in s
                .pending
                .iter()
                .chain([&s.done, &s.failed])
                .chain(&s.not_in_catalogue)
            {
                if v.len() > 16
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    out.push(format!(
                        "{at}: flag value `{v}`: at most 16 letters, digits, _ or -"
                    ));
                }
            }
            let mut flags: Vec<&String> = s.pending.iter().collect();
            flags.extend([&s.done, &s.failed]);
            flags.extend(&s.not_in_catalogue);
            let distinct: std::collections::BTreeSet<&&String> = flags.iter().collect();
            if distinct.len() < flags.len() {
                out.push(format!(
                    "{at}: pending, done, failed and not_in_catalogue flag values must differ"
                ));
            }
        }
        let mut written = std::collections::BTreeSet::new();
        for (i, d) in self.destination.iter().enumerate() {
            let at = format!("{at}.destination[{i}] (`{}`)", d.table);
            if !written.insert(d.kind) {
                out.push(format!(
                    "{at}: another table already takes {} records",
                    d.kind
                ));
            }
            if !qualified_identifier(&d.table) {
                out.push(format!("{at}.table: `{}` is not a table name", d.table));
            }
            if d.keys.is_empty() {
                out.push(format!("{at}.keys: at least one key column"));
            }
            for (key, column) in d.named_columns() {
                if !identifier(column) {
                    out.push(format!("{at}.{key}: `{column}` is not a column name"));
                }
            }
            if d.mode == WriteMode::ReplaceCase && d.case.is_none() {
                out.push(format!(
                    "{at}.case: replace_case needs the case number column"
                ));
            }
            for v in [&d.pending, &d.failed] {
                if !flag_value(v) {
                    out.push(format!(
                        "{at}: flag value `{v}`: at most 16 letters, digits, _ or -"
                    ));
                }
            }
            if d.receipt_interval_ms == 0 {
                out.push(format!("{at}.receipt_interval_ms: above 0"));
            }
        }
        out
    }
}

fn flag_value(v: &str) -> bool {
    v.len() <= 16
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A plain SQL identifier: ASCII letters, digits and `_`, not starting with a digit,
/// at most 64 characters. Quoted by the engine; never anything to escape.
pub fn identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `table` or `schema.table`.
pub fn qualified_identifier(s: &str) -> bool {
    let mut parts = s.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(t), None, None) => identifier(t),
        (Some(schema), Some(t), None) => identifier(schema) && identifier(t),
        _ => false,
    }
}

/// `+08:00` (or `Z`) as seconds east of UTC.
pub fn parse_offset(s: &str) -> Result<i32, String> {
    if s == "Z" || s == "+00:00" {
        return Ok(0);
    }
    let bad = || format!("`{s}` is not a UTC offset such as +08:00");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

fn default_zone() -> String {
    "+08:00".into()
}
fn default_connections() -> usize {
    2
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_flag() -> String {
    "SYNC_SIGN".into()
}
fn default_sync_date() -> String {
    "SYNC_DATE".into()
}
fn default_error() -> String {
    "SYNC_ERROR_DESC".into()
}
fn default_pending() -> Vec<String> {
    vec!["0".into(), String::new()]
}
fn default_done() -> String {
    "1".into()
}
fn default_failed() -> String {
    "2".into()
}
fn default_mode() -> WriteMode {
    WriteMode::Upsert
}
fn default_pending_value() -> String {
    "0".into()
}
fn default_batch() -> usize {
    500
}
fn default_interval_ms() -> u64 {
    2_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_offsets() {
        assert!(identifier("SYNC_SIGN"));
        assert!(!identifier("a;drop"));
        assert!(!identifier("1a"));
        assert!(!identifier("a b"));
        assert!(qualified_identifier("qzk.inf_apply"));
        assert!(!qualified_identifier("a.b.c"));
        assert_eq!(parse_offset("+08:00"), Ok(28_800));
        assert_eq!(parse_offset("-03:30"), Ok(-12_600));
        assert!(parse_offset("8").is_err());
        assert!(parse_offset("+8:00:00").is_err());
    }

    #[test]
    fn tls_settings_are_checked_per_engine() {
        let settings = |text: &str| -> TableSettings {
            toml::from_str(&format!("database = \"qzk\"\n{text}")).expect("settings")
        };
        let problems = |text: &str| settings(text).tls_problems("t");
        assert_eq!(settings("driver = \"postgres\"").ssl_mode(), "prefer");
        assert_eq!(settings("driver = \"mysql\"").ssl_mode(), "disable");
        assert!(problems("driver = \"postgres\"\nsslmode = \"require\"").is_empty());
        assert!(problems("driver = \"mysql\"\nsslmode = \"prefer\"")[0].contains("require"));
        assert!(
            problems("driver = \"mysql\"\nsslmode = \"verify-full\"")[0].contains("t.sslrootcert")
        );
        assert!(
            problems("driver = \"mysql\"\nsslmode = \"verify-full\"\nsslrootcert = \"ca.pem\"")
                .is_empty()
        );
        assert!(problems("driver = \"postgres\"\nsslmode = \"allow\"")[0].contains("not one of"));
        assert!(problems("driver = \"sqlite\"\nsslmode = \"require\"")[0].contains("SQLite"));
    }
}
