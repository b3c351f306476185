//! Where a pull source stands ([`Cursor`]): stored as JSON text with the source, read
//! back at each round, shown to people with its lag.

use serde::{Deserialize, Serialize};

use super::SyncError;
use crate::config::{CursorKind, Start};
use crate::time::rfc3339;

/// Where a pull source stands, as stored (JSON text in `sync_sources.cursor`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cursor {
    /// Everything the node changed up to `at_ms` (its clock) is in; `window` is a
    /// window being read page by page.
    Timestamp {
        at_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<Window>,
    },
    /// Everything up to and including sequence `after` is in.
    Sequence { after: i64 },
    /// The token to ask with next (empty: from the beginning).
    Token { token: String },
}

/// A time window of a timestamp cursor, read page by page.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
    /// The next page to read (1-based).
    pub page: u32,
}

impl Cursor {
    /// The cursor a source starts at (config `start`, or `hallgate sync rewind --to`).
    pub fn start(kind: CursorKind, text: &str) -> Result<Cursor, String> {
        Ok(match kind.start(text)? {
            Start::Timestamp(at_ms) => Cursor::Timestamp {
                at_ms,
                window: None,
            },
            Start::Sequence(after) => Cursor::Sequence { after },
            Start::Token(token) => Cursor::Token { token },
        })
    }

    pub fn parse(text: &str) -> Result<Cursor, SyncError> {
        serde_json::from_str(text).map_err(|e| SyncError::BadCursor {
            text: text.to_string(),
            reason: e.to_string(),
        })
    }

    pub fn to_text(&self) -> String {
        // An enum of numbers and strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// For people: `2026-11-22T10:00:00.000+08:00`, with the window being read.
    pub fn describe(&self) -> String {
        match self {
            Cursor::Timestamp { at_ms, window } => match window {
                None => rfc3339(*at_ms),
                Some(w) => format!(
                    "{} (reading {} .. {}, page {})",
                    rfc3339(*at_ms),
                    rfc3339(w.from_ms),
                    rfc3339(w.to_ms),
                    w.page
                ),
            },
            Cursor::Sequence { after } => format!("after {after}"),
            Cursor::Token { token } if token.is_empty() => "(start)".into(),
            Cursor::Token { token } => format!("token {token}"),
        }
    }

    /// How far behind the source the cursor is, in seconds, when it says.
    pub fn lag_seconds(&self, now_ms: i64) -> Option<f64> {
        match self {
            Cursor::Timestamp { at_ms, .. } => Some(((now_ms - at_ms).max(0) as f64) / 1000.0),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_start_from_config_text() {
        let c = Cursor::start(CursorKind::Timestamp, "2026-11-01T00:00:00+08:00").expect("time");
        assert_eq!(Cursor::parse(&c.to_text()).expect("parse"), c);
        assert!(Cursor::start(CursorKind::Timestamp, "yesterday").is_err());
        assert_eq!(
            Cursor::start(CursorKind::Sequence, "42").expect("seq"),
            Cursor::Sequence { after: 42 }
        );
        assert!(Cursor::start(CursorKind::Sequence, "4x2").is_err());
        let w = Cursor::Timestamp {
            at_ms: 1000,
            window: Some(Window {
                from_ms: 0,
                to_ms: 2000,
                page: 3,
            }),
        };
        assert_eq!(Cursor::parse(&w.to_text()).expect("parse"), w);
        assert!(w.describe().contains("page 3"));
        assert!(Cursor::parse("{\"kind\":\"nonsense\"}").is_err());
    }
}
