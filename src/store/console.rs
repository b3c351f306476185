//! What the store keeps for the console (`crate::console`): the people who log in
//! (name, roles, Argon2id hash, disabled, failed logins, locked until) and their
//! sessions (by the SHA-256 of the cookie, with the CSRF token, last use and
//! expiry). Both engines answer these [`ConsoleOp`]s through their one writer, each
//! change in one transaction with its audit event.

use crate::event::Event;

/// A person who may log in to the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleUser {
    pub name: String,
    /// `auditor`, `operator`, or both.
    pub roles: Vec<String>,
    /// The PHC string of the Argon2id hash.
    pub password_hash: String,
    pub disabled: bool,
    /// Failed logins since the last success.
    pub failures: i64,
    /// Locked until then (ms since the epoch), after too many failures.
    pub locked_until_ms: Option<i64>,
}

/// One logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The SHA-256 (hex) of the cookie's value: the value itself is never stored.
    pub id_sha256: String,
    pub user: String,
    pub csrf: String,
    pub created_ms: i64,
    pub seen_ms: i64,
    pub expires_ms: i64,
}

#[derive(Debug, Clone)]
pub enum ConsoleOp {
    User(String),
    Users,
    /// Add or change a user, audited.
    PutUser(ConsoleUser, Event),
    /// A login attempt's outcome, audited: a success clears the failures; the
    /// `lock_after`th failure in a row locks the user until `at + lock_ms`.
    Attempt {
        user: String,
        ok: bool,
        at_ms: i64,
        lock_after: i64,
        lock_ms: i64,
        event: Event,
    },
    /// Start a session, audited (the login).
    Open(ConsoleSession),
    /// The live session with this id: its last use moved to `at` and its expiry to
    /// `at + idle_ms` (never past `created + max_ms`); none once expired.
    Touch {
        id_sha256: String,
        at_ms: i64,
        idle_ms: i64,
        max_ms: i64,
    },
    /// End a session (logout), audited.
    Close(String, Event),
}

#[derive(Debug, Clone)]
pub enum ConsoleOut {
    Done,
    User(Option<ConsoleUser>),
    Users(Vec<ConsoleUser>),
    Session(Option<ConsoleSession>),
}

/// Roles as stored: comma-separated.
pub fn roles_text(roles: &[String]) -> String {
    roles.join(",")
}

pub fn roles_of(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

/// What the console's case search (办件查询) asks for: all given filters hold.
#[derive(Debug, Clone, Default)]
pub struct CaseSearch {
    /// The node that opened the case (its first record's sender).
    pub node: Option<String>,
    pub item_code: Option<String>,
    /// The case has a record of this kind.
    pub kind: Option<String>,
    /// Opened at or after, and before (ms since the epoch).
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: usize,
}

/// One case found, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseSummary {
    pub case_no: String,
    pub opened_by: String,
    pub region: Option<String>,
    pub item_code: Option<String>,
    pub opened_ms: i64,
}
