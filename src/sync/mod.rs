//! Synchronisation with other platforms, above all the provincial online hall
//! (省网上办事大厅), DESIGN.md section 1 step 10: durable cursors, the item catalogue
//! (事项目录), reconciliation (对账) and backfill.
//!
//! It owns the cursor format ([`Cursor`]), the catalogue cache intake checks records
//! against ([`Catalogue`]), the HTTP client that reads a node's sync APIs ([`Api`]),
//! and the status shown by `GET /v1/sync`. The pull loop is a source
//! (`sources::pull`); reconciliation and backfill are in [`reconcile`]. The
//! interface a node must offer is in docs/sync.md.

mod api;
mod backfill;
mod catalogue;
mod cursor;
pub mod reconcile;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{Config, SyncSettings};
use crate::event::{Event, EventKind};
use crate::store::{Store, StoreError, SyncControl, SyncSource};
use crate::time::{now_ms, rfc3339};

pub use api::{Answer, Api};
pub use backfill::{Backfill, BackfillRequest, backfill};
pub use catalogue::{
    Catalogue, ItemDiff, ItemProblem, catalogue_diff, check_items, fetch_catalogue, pad,
    refresh_catalogue, spawn_refresh,
};
pub use cursor::{Cursor, Window};

/// Why a sync operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("node `{0}` is not in the config")]
    UnknownNode(String),
    #[error("node `{node}` has no sync.{key} in the config")]
    NotConfigured { node: String, key: &'static str },
    #[error("node `{0}` has no [nodes.{0}.sync] table in the config")]
    NoSync(String),
    #[error("cursor `{text}` cannot be read: {reason}")]
    BadCursor { text: String, reason: String },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: answered {status}: {snippet}")]
    Status {
        url: String,
        status: u16,
        snippet: String,
        retry_after: Option<u64>,
    },
    #[error("{url}: the answer cannot be read: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("page made no progress: {0}")]
    NoProgress(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

/// The settings of a node's `[nodes.ID.sync]`.
pub fn settings<'a>(config: &'a Config, node: &str) -> Result<&'a SyncSettings, SyncError> {
    let n = config
        .nodes
        .get(node)
        .ok_or_else(|| SyncError::UnknownNode(node.to_string()))?;
    n.get_ref()
        .sync
        .as_ref()
        .ok_or_else(|| SyncError::NoSync(node.to_string()))
}

/// Every pull source of the config with its stored state, as `GET /v1/sync` and
/// `hallgate sync status` show it.
pub async fn status(config: &Config, store: &dyn Store) -> Result<Value, StoreError> {
    let stored: HashMap<String, SyncSource> = store
        .sync_sources()
        .await?
        .into_iter()
        .map(|s| (s.node.clone(), s))
        .collect();
    let now = now_ms();
    let mut sources = Vec::new();
    for (id, node) in &config.nodes {
        let Some(s) = &node.get_ref().sync else {
            continue;
        };
        if s.pull_url.is_none() {
            continue;
        }
        let row = stored.get(id);
        let cursor = row.and_then(|r| Cursor::parse(&r.cursor).ok());
        let lag = cursor
            .as_ref()
            .and_then(|c| c.lag_seconds(now))
            .or_else(|| {
                row.and_then(|r| r.last_success_ms)
                    .map(|t| ((now - t).max(0) as f64) / 1000.0)
            });
        sources.push(json!({
            "node": id,
            "cursor_kind": s.cursor,
            "cursor": cursor.as_ref().map(Cursor::describe),
            "cursor_raw": row.map(|r| r.cursor.clone()),
            "paused": row.is_some_and(|r| r.paused),
            "lag_seconds": lag,
            "last_success": row.and_then(|r| r.last_success_ms).map(rfc3339),
            "last_error": row.and_then(|r| r.last_error.clone()),
            "last_error_at": row.and_then(|r| r.last_error_ms).map(rfc3339),
            "records_pulled": row.map(|r| r.pulled).unwrap_or(0),
            "pages": row.map(|r| r.pages).unwrap_or(0),
            "held_by": row.and_then(|r| {
                r.lease_owner.clone().filter(|_| r.lease_until_ms.is_some_and(|u| u > now))
            }),
            "started": row.is_some(),
        }));
    }
    let items = store.catalogue().await?;
    let withdrawn = items.iter().filter(|i| i.status == "withdrawn").count();
    Ok(json!({
        "sources": sources,
        "catalogue": {
            "source": config.catalogue.as_ref().map(|c| c.source.clone()),
            "items": items.len(),
            "active": items.len() - withdrawn,
            "withdrawn": withdrawn,
        },
    }))
}

/// Set the sync gauges in `/metrics` from the stored state.
pub async fn publish_metrics(config: &Config, store: &dyn Store) {
    let Ok(rows) = store.sync_sources().await else {
        return;
    };
    let now = now_ms();
    for r in rows {
        if !config.nodes.contains_key(&r.node) {
            continue;
        }
        let labels = [("source", r.node.clone())];
        if let Some(lag) = Cursor::parse(&r.cursor)
            .ok()
            .and_then(|c| c.lag_seconds(now))
        {
            metrics::gauge!("hallgate_sync_lag_seconds", &labels).set(lag);
        }
        metrics::gauge!("hallgate_sync_records_pulled", &labels).set(r.pulled as f64);
        metrics::gauge!("hallgate_sync_paused", &labels).set(if r.paused { 1.0 } else { 0.0 });
        if let Some(t) = r.last_success_ms {
            metrics::gauge!("hallgate_sync_last_success_timestamp_seconds", &labels)
                .set(t as f64 / 1000.0);
        }
        metrics::gauge!("hallgate_sync_failing", &labels).set(if r.last_error.is_some() {
            1.0
        } else {
            0.0
        });
    }
}

/// A stored cursor for people (the raw text when it cannot be read).
pub fn describe(cursor: &str) -> String {
    Cursor::parse(cursor)
        .map(|c| c.describe())
        .unwrap_or_else(|_| cursor.to_string())
}

/// [`status`] as a table.
pub fn status_table(status: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let sources = status["sources"].as_array().unwrap_or(&empty);
    if sources.is_empty() {
        out.push_str("no pull sources in the config\n");
    }
    for s in sources {
        let text = |k: &str| s[k].as_str().unwrap_or("-").to_string();
        out.push_str(&format!(
            "{}{}\n  cursor        {}\n  lag           {}\n  last success  {}\n  last error    {}{}\n  pulled        {} records in {} pages\n",
            text("node"),
            if s["paused"].as_bool() == Some(true) { "  (PAUSED)" } else { "" },
            text("cursor"),
            s["lag_seconds"]
                .as_f64()
                .map(|l| format!("{l:.1} s"))
                .unwrap_or_else(|| "-".into()),
            text("last_success"),
            text("last_error"),
            s["last_error_at"]
                .as_str()
                .map(|t| format!(" (at {t})"))
                .unwrap_or_default(),
            s["records_pulled"],
            s["pages"],
        ));
    }
    let c = &status["catalogue"];
    out.push_str(&format!(
        "catalogue from {}: {} items ({} active, {} withdrawn)\n",
        c["source"].as_str().unwrap_or("(none)"),
        c["items"],
        c["active"],
        c["withdrawn"]
    ));
    out
}

/// Who ran a command-line operation, for the audit log.
pub fn operator() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|| "cli".into())
}

/// Pause, resume or rewind a pull source (audited). `to` is the cursor for a rewind,
/// written as the config's `start` is.
pub async fn control(
    config: &Config,
    store: &dyn Store,
    node: &str,
    action: &str,
    to: Option<&str>,
) -> Result<SyncSource, SyncError> {
    control_by(config, store, node, action, to, &operator()).await
}

/// The same, naming who asked (the console's user).
pub async fn control_by(
    config: &Config,
    store: &dyn Store,
    node: &str,
    action: &str,
    to: Option<&str>,
    by: &str,
) -> Result<SyncSource, SyncError> {
    let s = settings(config, node)?;
    if s.pull_url.is_none() {
        return Err(SyncError::NotConfigured {
            node: node.to_string(),
            key: "pull_url",
        });
    }
    let before = store
        .sync_sources()
        .await?
        .into_iter()
        .find(|r| r.node == node)
        .ok_or_else(|| StoreError::NoSource(node.to_string()))?;
    let (control, detail) = match (action, to) {
        ("pause", _) => (SyncControl::Pause, json!({})),
        ("resume", _) => (SyncControl::Resume, json!({})),
        ("rewind", Some(text)) => {
            let c = Cursor::start(s.cursor, text).map_err(SyncError::Other)?;
            if let Cursor::Timestamp { at_ms, .. } = c
                && at_ms > now_ms()
            {
                return Err(SyncError::Other(format!(
                    "{} is in the future: the source would skip every change until then",
                    c.describe()
                )));
            }
            (
                SyncControl::Rewind(c.to_text()),
                json!({ "cursor": c.describe() }),
            )
        }
        ("rewind", None) => return Err(SyncError::Other("rewind needs --to".into())),
        (other, _) => return Err(SyncError::Other(format!("unknown action `{other}`"))),
    };
    let mut e = Event::new(now_ms(), EventKind::SyncControlled);
    e.node = Some(node.to_string());
    e.detail = json!({
        "action": action,
        "cursor_before": Cursor::parse(&before.cursor).map(|c| c.describe()).unwrap_or(before.cursor.clone()),
        "detail": detail,
        "by": by,
    });
    Ok(store.sync_control(node, control, e).await?)
}

/// Longest wait after repeated failures.
const MAX_BACKOFF_MS: u64 = 300_000;

/// Exponential backoff (a random wait between half the cap and the cap, the cap
/// doubling per failure up to five minutes), or the answer's `Retry-After` (at most
/// five minutes).
pub fn backoff(failures: u32, e: &SyncError) -> Duration {
    if let SyncError::Status {
        retry_after: Some(s),
        ..
    } = e
    {
        return Duration::from_secs(*s).min(Duration::from_millis(MAX_BACKOFF_MS));
    }
    let cap = 1000u64
        .saturating_mul(1u64 << failures.min(20))
        .min(MAX_BACKOFF_MS);
    Duration::from_millis(fastrand::u64(cap / 2..=cap))
}
