//! Console sessions and logins. A session is a random 256-bit value in an
//! HttpOnly, SameSite=Strict cookie (Secure under TLS) on `/console`; the store
//! keeps only its SHA-256, with the person, a CSRF token, and an expiry pushed
//! back by each request up to `[console] idle_minutes`, never past `max_hours`.
//! Failed logins lock a user after `lock_after` in a row; from one address they
//! slow the answers and, past [`ADDRESS_LIMIT`], are refused for a while.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use axum::http::HeaderMap;

use crate::config::ConsoleSettings;
use crate::hash::sha256_hex;
use crate::store::console::{ConsoleOp, ConsoleOut, ConsoleSession, ConsoleUser};
use crate::store::{Store, StoreError};
use crate::time::now_ms;

pub const COOKIE: &str = "hallgate_console";

/// Failed logins from one address within [`ADDRESS_WINDOW`] before it must wait.
pub const ADDRESS_LIMIT: u32 = 20;
pub const ADDRESS_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at once (the oldest are forgotten first).
const MAX_ADDRESSES: usize = 10_000;

/// A new random value, URL-safe.
pub fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The session cookie's value, if the request carries one.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The `Set-Cookie` value for a session (empty value and Max-Age=0 to end it).
pub fn set_cookie(value: &str, secure: bool, end: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict{}{}",
        if secure { "; Secure" } else { "" },
        if end { "; Max-Age=0" } else { "" }
    )
}

/// The live session the cookie names, and its person (both refreshed).
pub async fn current(
    store: &dyn Store,
    settings: &ConsoleSettings,
    headers: &HeaderMap,
) -> Result<Option<(ConsoleUser, ConsoleSession)>, StoreError> {
    let Some(token) = cookie(headers) else {
        return Ok(None);
    };
    let touched = store
        .console(ConsoleOp::Touch {
            id_sha256: sha256_hex(token.as_bytes()),
            at_ms: now_ms(),
            idle_ms: minutes(settings.idle_minutes),
            max_ms: minutes(settings.max_hours.saturating_mul(60)),
        })
        .await?;
    let ConsoleOut::Session(Some(session)) = touched else {
        return Ok(None);
    };
    match store.console(ConsoleOp::User(session.user.clone())).await? {
        ConsoleOut::User(Some(u)) if !u.disabled => Ok(Some((u, session))),
        _ => Ok(None),
    }
}

pub fn minutes(m: u64) -> i64 {
    i64::try_from(m.saturating_mul(60_000)).unwrap_or(i64::MAX)
}

/// A new session for `user`: the cookie's value and what the store keeps.
pub fn open(user: &str, settings: &ConsoleSettings) -> (String, ConsoleSession) {
    let token = random_token();
    let now = now_ms();
    let session = ConsoleSession {
        id_sha256: sha256_hex(token.as_bytes()),
        user: user.to_string(),
        csrf: random_token(),
        created_ms: now,
        seen_ms: now,
        expires_ms: now + minutes(settings.idle_minutes),
    };
    (token, session)
}

/// A form whose only field is the CSRF token (logout, verify, pause and resume).
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(rename = "_csrf")]
    pub csrf: Option<String>,
}

/// Whether a form's CSRF token is the session's (compared in constant time).
pub fn csrf_ok(session: &ConsoleSession, sent: Option<&str>) -> bool {
    let Some(sent) = sent else { return false };
    let (a, b) = (session.csrf.as_bytes(), sent.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Failed logins per address: how long to hold a failed answer back, and whether
/// the address must wait.
#[derive(Default)]
pub struct Throttle {
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Failures from `addr` in the current window.
    pub fn failures(&self, addr: IpAddr) -> u32 {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&addr) {
            Some((n, since)) if since.elapsed() < ADDRESS_WINDOW => *n,
            _ => 0,
        }
    }

    pub fn blocked(&self, addr: IpAddr) -> bool {
        self.failures(addr) >= ADDRESS_LIMIT
    }

    /// Note a failure; the delay its answer waits (300 ms per failure in the
    /// window, at most 3 s).
    pub fn failed(&self, addr: IpAddr) -> Duration {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_ADDRESSES {
            seen.retain(|_, (_, since)| since.elapsed() < ADDRESS_WINDOW);
            if seen.len() >= MAX_ADDRESSES {
                seen.clear();
            }
        }
        let entry = seen.entry(addr).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= ADDRESS_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        Duration::from_millis(300 * u64::from(entry.0.min(10)))
    }

    pub fn succeeded(&self, addr: IpAddr) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
    }
}
