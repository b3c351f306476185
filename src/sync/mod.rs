//! Synchronisation with other platforms, above all the provincial online hall
//! (省网上办事大厅), DESIGN.md section 1 step 10: pull sources with durable cursors,
//! the item catalogue (事项目录), reconciliation (对账) and backfill.
//!
//! It owns the cursor format ([`Cursor`]), the catalogue cache the ingress checks
//! records against ([`Catalogue`]), the HTTP client that reads a node's sync APIs
//! ([`Api`]), and the status shown by `GET /v1/sync`. The pull loop is in [`pull`],
//! reconciliation and backfill in [`reconcile`], and a simulated provincial hall
//! for the demo and the tests in [`hall`]. The interface a node must offer is in
//! docs/sync.md.

pub mod hall;
pub mod pull;
pub mod reconcile;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{CataloguePolicy, Config, CursorKind, SyncSettings};
use crate::record::{FieldError, Record};
use crate::store::{CatalogueItem, Store, StoreError, SyncSource, now_ms, rfc3339};

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
        let text = text.trim();
        match kind {
            CursorKind::Timestamp => crate::ingress::parse_time(text)
                .map(|at_ms| Cursor::Timestamp {
                    at_ms,
                    window: None,
                })
                .ok_or_else(|| {
                    format!(
                        "`{text}` is not an RFC 3339 time (2026-11-01T00:00:00+08:00) or a date"
                    )
                }),
            CursorKind::Sequence => text
                .parse::<i64>()
                .map(|after| Cursor::Sequence { after })
                .map_err(|_| format!("`{text}` is not a sequence number")),
            CursorKind::Token => Ok(Cursor::Token {
                token: text.to_string(),
            }),
        }
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

/// The item catalogue as last pulled, for the ingress's per-record check. The store
/// holds the catalogue; this is its in-memory copy, replaced whole on each refresh.
#[derive(Clone, Default)]
pub struct Catalogue {
    items: Arc<RwLock<Arc<HashMap<String, CatalogueItem>>>>,
}

/// What is wrong with a record's item code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemProblem {
    Unknown(String),
    Withdrawn(String),
    NotValid {
        code: String,
        from: Option<String>,
        to: Option<String>,
    },
}

impl ItemProblem {
    /// The stable code: a flag on the record, or the rule of a refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ItemProblem::Unknown(_) => "item_unknown",
            ItemProblem::Withdrawn(_) => "item_withdrawn",
            ItemProblem::NotValid { .. } => "item_not_valid",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ItemProblem::Unknown(c) => format!("item code {c} is not in the item catalogue"),
            ItemProblem::Withdrawn(c) => {
                format!("item code {c} was withdrawn from the item catalogue")
            }
            ItemProblem::NotValid { code, from, to } => format!(
                "item code {code} is valid only from {} to {}",
                from.as_deref().unwrap_or("the beginning"),
                to.as_deref().unwrap_or("no end")
            ),
        }
    }

    pub fn field_error(&self, record: usize) -> FieldError {
        FieldError {
            record,
            field: "item_code".into(),
            source_path: None,
            rule: self.code().into(),
            message: self.message(),
        }
    }
}

impl Catalogue {
    pub fn replace(&self, items: Vec<CatalogueItem>) {
        let map: HashMap<String, CatalogueItem> = items
            .into_iter()
            .map(|i| (i.item_code.clone(), i))
            .collect();
        if let Ok(mut guard) = self.items.write() {
            *guard = Arc::new(map);
        }
    }

    pub fn len(&self) -> usize {
        self.items.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Load the stored catalogue.
    pub async fn load(&self, store: &dyn Store) -> Result<(), StoreError> {
        self.replace(store.catalogue().await?);
        Ok(())
    }

    /// The problem with `r`'s item code under `policy`, if any. A record without an
    /// item code, a policy of `off` or a catalogue never pulled check nothing.
    pub fn check(&self, policy: CataloguePolicy, r: &Record) -> Option<ItemProblem> {
        if policy == CataloguePolicy::Off {
            return None;
        }
        let code = r.str_field("item_code")?;
        let items = self.items.read().ok()?.clone();
        if items.is_empty() {
            return None;
        }
        let Some(item) = items.get(code) else {
            return Some(ItemProblem::Unknown(code.to_string()));
        };
        if item.status == "withdrawn" {
            return Some(ItemProblem::Withdrawn(code.to_string()));
        }
        let today = today();
        let before = item
            .valid_from
            .as_deref()
            .is_some_and(|f| today.as_str() < f);
        let after = item.valid_to.as_deref().is_some_and(|t| today.as_str() > t);
        (before || after).then(|| ItemProblem::NotValid {
            code: code.to_string(),
            from: item.valid_from.clone(),
            to: item.valid_to.clone(),
        })
    }
}

/// Today's date in China Standard Time, `YYYY-MM-DD`.
pub fn today() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .strftime("%Y-%m-%d")
        .to_string()
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

/// A client for one node's sync APIs: its timeout, rate, TLS and auth (those of the
/// node's destination, when it has one).
pub struct Api {
    client: reqwest::Client,
    signer: crate::auth::outbound::Signer,
    pace: Option<Arc<governor::DefaultDirectRateLimiter>>,
    pub node: String,
}

/// An answer of a sync API.
pub struct Answer {
    pub url: String,
    pub content_type: Option<String>,
    pub next_cursor: Option<String>,
    pub body: bytes::Bytes,
}

impl Api {
    pub fn new(
        config: &Config,
        node: &str,
        keys: &Arc<crate::auth::outbound::GatewayKeys>,
    ) -> Result<Api, SyncError> {
        let s = settings(config, node)?;
        let n = config
            .nodes
            .get(node)
            .ok_or_else(|| SyncError::UnknownNode(node.to_string()))?
            .get_ref();
        let mut builder =
            crate::delivery::http_client().timeout(Duration::from_millis(s.timeout_ms));
        let mut signer = crate::auth::outbound::Signer::None;
        if let Some(d) = &n.destination {
            if let Some(tls) = &d.tls {
                builder = crate::auth::tls::client_builder(builder, tls, &config.base_dir())
                    .map_err(|e| SyncError::Other(format!("nodes.{node}.destination.tls: {e}")))?;
            }
            signer = crate::auth::outbound::Signer::new(config, node, d, keys)
                .map_err(|e| SyncError::Other(e.to_string()))?;
        }
        let client = builder
            .build()
            .map_err(|e| SyncError::Other(format!("HTTP client: {e}")))?;
        Ok(Api {
            client,
            signer,
            pace: s.rate.as_ref().and_then(crate::limits::limiter),
            node: node.to_string(),
        })
    }

    /// GET `url` with `query`, paced by the node's rate; any 2xx is an answer.
    pub async fn get(
        &self,
        url: &str,
        query: &[(&str, String)],
        max_bytes: usize,
    ) -> Result<Answer, SyncError> {
        if let Some(p) = &self.pace {
            p.until_ready().await;
        }
        let shown = url.to_string();
        let http = |e: reqwest::Error| SyncError::Http {
            url: shown.clone(),
            reason: crate::observe::error_chain(&e),
        };
        let mut full = reqwest::Url::parse(url).map_err(|e| SyncError::Http {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if !query.is_empty() {
            let mut pairs = full.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let mut req = self.client.get(full);
        for (k, v) in self
            .signer
            .headers(&[])
            .map_err(|e| SyncError::Other(format!("signing a request to {url}: {e}")))?
        {
            req = req.header(k, v);
        }
        let mut resp = req.send().await.map_err(http)?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type");
        let next_cursor = header("x-next-cursor").filter(|c| !c.is_empty());
        let retry_after = header("retry-after").and_then(|t| t.trim().parse().ok());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > max_bytes {
                return Err(SyncError::BadAnswer {
                    url: url.to_string(),
                    reason: format!("larger than the body limit of {max_bytes} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(SyncError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                snippet: crate::record::mask_text(&text.chars().take(200).collect::<String>()),
                retry_after,
            });
        }
        Ok(Answer {
            url: url.to_string(),
            content_type,
            next_cursor,
            body: body.into(),
        })
    }

    /// GET a JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        query: &[(&str, String)],
        max_bytes: usize,
    ) -> Result<(T, Answer), SyncError> {
        let answer = self.get(url, query, max_bytes).await?;
        let value = serde_json::from_slice(&answer.body).map_err(|e| SyncError::BadAnswer {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        Ok((value, answer))
    }
}

/// Pull the catalogue from the node `[catalogue] source` names into the store and the
/// cache. Returns what changed.
pub async fn refresh_catalogue(
    config: &Config,
    api: &Api,
    store: &dyn Store,
    cache: &Catalogue,
) -> Result<crate::store::CatalogueChange, SyncError> {
    let s = settings(config, &api.node)?;
    let url = s
        .catalogue_url
        .as_deref()
        .ok_or_else(|| SyncError::NotConfigured {
            node: api.node.clone(),
            key: "catalogue_url",
        })?;
    let items = fetch_catalogue(api, url, config.limits.max_body_bytes.max(64 << 20)).await?;
    let change = store.catalogue_replace(&api.node, items, now_ms()).await?;
    cache.load(store).await?;
    Ok(change)
}

/// Read a catalogue API: a JSON array of items (docs/sync.md).
pub async fn fetch_catalogue(
    api: &Api,
    url: &str,
    max_bytes: usize,
) -> Result<Vec<CatalogueItem>, SyncError> {
    let (items, _): (Vec<CatalogueItem>, _) = api.get_json(url, &[], max_bytes).await?;
    check_items(&items).map_err(|reason| SyncError::BadAnswer {
        url: url.to_string(),
        reason,
    })?;
    Ok(items)
}

/// What is wrong with a list of catalogue items, if anything: an empty or repeated
/// item code, a status other than active or withdrawn.
pub fn check_items(items: &[CatalogueItem]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if item.item_code.trim().is_empty() {
            return Err(format!("item {i} has an empty item_code"));
        }
        if !seen.insert(item.item_code.as_str()) {
            return Err(format!("item code {} is listed twice", item.item_code));
        }
        if item.status != "active" && item.status != "withdrawn" {
            return Err(format!(
                "item {}: status `{}` is not active or withdrawn",
                item.item_code, item.status
            ));
        }
    }
    Ok(())
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
        ("pause", _) => (crate::store::SyncControl::Pause, json!({})),
        ("resume", _) => (crate::store::SyncControl::Resume, json!({})),
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
                crate::store::SyncControl::Rewind(c.to_text()),
                json!({ "cursor": c.describe() }),
            )
        }
        ("rewind", None) => return Err(SyncError::Other("rewind needs --to".into())),
        (other, _) => return Err(SyncError::Other(format!("unknown action `{other}`"))),
    };
    let mut e = crate::audit::Event::new(now_ms(), crate::audit::EventKind::SyncControlled);
    e.node = Some(node.to_string());
    e.detail = json!({
        "action": action,
        "cursor_before": Cursor::parse(&before.cursor).map(|c| c.describe()).unwrap_or(before.cursor.clone()),
        "detail": detail,
        "by": operator(),
    });
    Ok(store.sync_control(node, control, e).await?)
}

/// How a city's or district's catalogue item differs from the province's.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemDiff {
    pub item_code: String,
    /// `missing_at_province`, `withdrawn_at_province`, `not_valid_at_province`,
    /// `name_differs`, `type_differs`, `version_differs`, `missing_locally`.
    pub problem: &'static str,
    pub local: Option<String>,
    pub province: Option<String>,
}

/// `text` padded with spaces to `width` terminal columns, counting Chinese (and other
/// East Asian wide) characters as two, so that columns of item names line up.
pub fn pad(text: &str, width: usize) -> String {
    let wide = |c: char| {
        matches!(c as u32,
            0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x20000..=0x3FFFD)
    };
    let used: usize = text.chars().map(|c| if wide(c) { 2 } else { 1 }).sum();
    let mut out = String::with_capacity(text.len() + width.saturating_sub(used));
    out.push_str(text);
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
    out
}

/// Compare a node's items with the province's on the elements that must be the same
/// at every level (四级十同: code, name, type; and the version in force). Province
/// items of the node's region (by prefix) that the node lacks are listed too.
pub fn catalogue_diff(
    local: &[CatalogueItem],
    province: &[CatalogueItem],
    region: Option<&str>,
) -> Vec<ItemDiff> {
    let prov: HashMap<&str, &CatalogueItem> =
        province.iter().map(|i| (i.item_code.as_str(), i)).collect();
    let today = today();
    let mut out = Vec::new();
    let diff = |code: &str, problem, local: Option<&str>, province: Option<&str>| ItemDiff {
        item_code: code.to_string(),
        problem,
        local: local.map(str::to_string),
        province: province.map(str::to_string),
    };
    for l in local.iter().filter(|l| l.status != "withdrawn") {
        let code = l.item_code.as_str();
        let Some(p) = prov.get(code) else {
            out.push(diff(code, "missing_at_province", Some(&l.item_name), None));
            continue;
        };
        if p.status == "withdrawn" {
            out.push(diff(
                code,
                "withdrawn_at_province",
                Some("active"),
                Some("withdrawn"),
            ));
            continue;
        }
        let before = p.valid_from.as_deref().is_some_and(|f| today.as_str() < f);
        let after = p.valid_to.as_deref().is_some_and(|t| today.as_str() > t);
        if before || after {
            let span = format!(
                "{} .. {}",
                p.valid_from.as_deref().unwrap_or(""),
                p.valid_to.as_deref().unwrap_or("")
            );
            out.push(diff(code, "not_valid_at_province", None, Some(&span)));
        }
        if l.item_name.trim() != p.item_name.trim() {
            out.push(diff(
                code,
                "name_differs",
                Some(&l.item_name),
                Some(&p.item_name),
            ));
        }
        if l.item_type.is_some() && p.item_type.is_some() && l.item_type != p.item_type {
            out.push(diff(
                code,
                "type_differs",
                l.item_type.as_deref(),
                p.item_type.as_deref(),
            ));
        }
        if l.version.is_some() && p.version.is_some() && l.version != p.version {
            out.push(diff(
                code,
                "version_differs",
                l.version.as_deref(),
                p.version.as_deref(),
            ));
        }
    }
    let local_codes: std::collections::HashSet<&str> =
        local.iter().map(|l| l.item_code.as_str()).collect();
    if let Some(region) = region {
        let prefix = region.trim_end_matches('0');
        for p in province.iter().filter(|p| p.status == "active") {
            let applies = p
                .region
                .as_deref()
                .is_some_and(|r| prefix.starts_with(r.trim_end_matches('0')));
            if applies && !local_codes.contains(p.item_code.as_str()) {
                out.push(diff(
                    &p.item_code,
                    "missing_locally",
                    None,
                    Some(&p.item_name),
                ));
            }
        }
    }
    out.sort_by(|a, b| (&a.item_code, a.problem).cmp(&(&b.item_code, b.problem)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_counts_chinese_characters_as_two_columns() {
        assert_eq!(pad("ab", 5), "ab   ");
        assert_eq!(pad("食品经营许可", 14), "食品经营许可  ");
        assert_eq!(pad("（新）ＡＢ", 12), "（新）ＡＢ  ");
        assert_eq!(pad("too long", 3), "too long");
    }

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

    #[test]
    fn catalogue_check_follows_the_policy() {
        let cat = Catalogue::default();
        let rec = |code: &str| {
            Record::from_value(
                0,
                json!({"kind": "application", "case_no": "C1", "item_code": code, "region": "330100"}),
                None,
            )
            .expect("record")
        };
        // Never pulled: nothing is checked.
        assert_eq!(cat.check(CataloguePolicy::Refuse, &rec("X")), None);
        cat.replace(vec![
            CatalogueItem {
                item_code: "A".into(),
                item_name: "甲".into(),
                item_type: None,
                version: None,
                region: None,
                valid_from: None,
                valid_to: None,
                status: "active".into(),
            },
            CatalogueItem {
                item_code: "W".into(),
                item_name: "乙".into(),
                item_type: None,
                version: None,
                region: None,
                valid_from: None,
                valid_to: None,
                status: "withdrawn".into(),
            },
            CatalogueItem {
                item_code: "OLD".into(),
                item_name: "丙".into(),
                item_type: None,
                version: None,
                region: None,
                valid_from: Some("2001-01-01".into()),
                valid_to: Some("2002-01-01".into()),
                status: "active".into(),
            },
        ]);
        assert_eq!(cat.check(CataloguePolicy::Refuse, &rec("A")), None);
        assert_eq!(cat.check(CataloguePolicy::Off, &rec("X")), None);
        assert_eq!(
            cat.check(CataloguePolicy::Flag, &rec("X"))
                .map(|p| p.code()),
            Some("item_unknown")
        );
        assert_eq!(
            cat.check(CataloguePolicy::Refuse, &rec("W"))
                .map(|p| p.code()),
            Some("item_withdrawn")
        );
        assert_eq!(
            cat.check(CataloguePolicy::Refuse, &rec("OLD"))
                .map(|p| p.code()),
            Some("item_not_valid")
        );
    }
}
