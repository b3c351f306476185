//! The pull loop: a node's list API read page by page, each page fed through the
//! same decode, validation, catalogue, authorisation and routing as a pushed body
//! ([`crate::ingress::admit`]) and stored with the cursor that covers it in one
//! transaction. A crash between pages resumes at the stored cursor: nothing is
//! skipped, and what is read twice (the overlap window, a page whose commit was
//! lost) is deduplicated by record identity and version.
//!
//! One puller holds a source at a time (a lease in the store, so several gateways
//! on one PostgreSQL database share the work); pausing or rewinding it from the
//! command line takes the lease away, and the puller's next commit fails and is
//! rolled back.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Answer, Api, Cursor, SyncError, Window, settings};
use crate::audit::{Event, EventKind, sha256_hex};
use crate::config::SyncSettings;
use crate::ingress::{Admission, AppState};
use crate::store::{AcceptOutcome, NewMessage, PullAdvance, StoreError, now_ms};

/// How long a puller holds a source without committing before another may take it.
const LEASE_MS: i64 = 30_000;
/// Longest wait after repeated failures.
const MAX_BACKOFF_MS: u64 = 300_000;

/// One pull source's loop.
pub struct Puller {
    state: Arc<AppState>,
    api: Api,
    node: String,
    owner: String,
}

/// What one page did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PageOutcome {
    /// Records in the page as the source sent them.
    pub records: usize,
    /// New records stored (not duplicates).
    pub new: usize,
    pub rejected: usize,
    /// Whether more is waiting right now.
    pub more: bool,
}

impl Puller {
    pub fn new(state: Arc<AppState>, node: &str, owner: &str) -> Result<Puller, SyncError> {
        let api = Api::new(&state.config, node, &state.gateway_keys)?;
        Ok(Puller {
            state,
            api,
            node: node.to_string(),
            owner: owner.to_string(),
        })
    }

    fn settings(&self) -> Result<&SyncSettings, SyncError> {
        settings(&self.state.config, &self.node)
    }

    /// Run until `shutdown`: pull while there is something to pull, then wait the
    /// interval; back off on errors.
    pub async fn run(self, shutdown: CancellationToken) {
        let Ok(s) = self.settings() else { return };
        let interval = Duration::from_secs(s.interval_seconds);
        let mut failures: u32 = 0;
        loop {
            let wait = match self.round(&shutdown).await {
                Ok(()) => {
                    failures = 0;
                    interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let text = crate::record::mask_text(&e.to_string());
                    tracing::warn!(source = %self.node, error = %text, failures, "pull failed; backing off");
                    metrics::counter!("hallgate_sync_errors_total", "source" => self.node.clone())
                        .increment(1);
                    if let Err(err) = self
                        .state
                        .store
                        .sync_failed(&self.node, text, now_ms())
                        .await
                    {
                        tracing::error!(source = %self.node, error = %err, "could not record a pull failure");
                    }
                    backoff(failures, &e).max(Duration::from_millis(200))
                }
            };
            crate::sync::publish_metrics(&self.state.config, &*self.state.store).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Take the source and pull pages until it is caught up.
    pub async fn round(&self, shutdown: &CancellationToken) -> Result<(), SyncError> {
        let s = self.settings()?;
        let start = s.start.as_deref().unwrap_or_default();
        let initial = Cursor::start(s.cursor, start).map_err(SyncError::Other)?;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let now = now_ms();
            let Some(source) = self
                .state
                .store
                .sync_take(
                    &self.node,
                    &self.owner,
                    initial.to_text(),
                    now,
                    now + LEASE_MS,
                )
                .await?
            else {
                // Another gateway holds it.
                return Ok(());
            };
            if source.paused {
                return Ok(());
            }
            let cursor = Cursor::parse(&source.cursor)?;
            match self.page(s, cursor).await {
                Ok(out) if out.more => continue,
                Ok(_) => return Ok(()),
                // Paused or rewound meanwhile: nothing of the page was stored.
                Err(SyncError::Store(StoreError::LeaseLost(_))) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Read and store one page at `cursor`.
    pub async fn page(&self, s: &SyncSettings, cursor: Cursor) -> Result<PageOutcome, SyncError> {
        let Some(url) = s.pull_url.as_deref() else {
            return Err(SyncError::NotConfigured {
                node: self.node.clone(),
                key: "pull_url",
            });
        };
        let now = now_ms();
        let size = s.page_size;
        // The request and, for a timestamp cursor, the window it reads.
        let (query, window) = match &cursor {
            Cursor::Timestamp { at_ms, window } => {
                let w = window.unwrap_or_else(|| Window {
                    from_ms: at_ms - (s.overlap_seconds as i64) * 1000,
                    to_ms: now.min(at_ms + (s.window_seconds as i64) * 1000),
                    page: 1,
                });
                (
                    vec![
                        ("from", crate::store::rfc3339(w.from_ms)),
                        ("to", crate::store::rfc3339(w.to_ms)),
                        ("page", w.page.to_string()),
                        ("size", size.to_string()),
                    ],
                    Some(w),
                )
            }
            Cursor::Sequence { after } => (
                vec![("after", after.to_string()), ("size", size.to_string())],
                None,
            ),
            Cursor::Token { token } => (
                vec![("cursor", token.clone()), ("size", size.to_string())],
                None,
            ),
        };
        let answer = self
            .api
            .get(url, &query, self.state.config.limits.max_body_bytes)
            .await?;
        let kind = s.kind;
        let admitted = crate::ingress::admit(
            &self.state,
            &self.node,
            kind,
            &answer.body,
            answer.content_type.as_deref(),
            Admission::Page,
        )
        .map_err(|e| SyncError::BadAnswer {
            url: answer.url.clone(),
            reason: format!("{}: {}", e.code, e.message),
        })?;
        let count = admitted.records.len() + admitted.rejected.len();
        let full = count >= size;
        let (next, more) = match (&cursor, window) {
            (Cursor::Timestamp { at_ms, .. }, Some(w)) => {
                if full {
                    let next = Window {
                        page: w.page.saturating_add(1),
                        ..w
                    };
                    (
                        Cursor::Timestamp {
                            at_ms: *at_ms,
                            window: Some(next),
                        },
                        true,
                    )
                } else {
                    // The window is read: the cursor moves to its end (never back).
                    let at = w.to_ms.max(*at_ms);
                    // A window cut short by window_seconds: the next one is due now.
                    // One that reached the time it was opened waits for the interval.
                    let cut_short = w.to_ms >= at_ms + (s.window_seconds as i64) * 1000;
                    (
                        Cursor::Timestamp {
                            at_ms: at,
                            window: None,
                        },
                        cut_short && w.to_ms < now,
                    )
                }
            }
            (Cursor::Sequence { after }, _) => {
                let field = s.cursor_field.as_deref().unwrap_or("ext.seq");
                let from_records = admitted
                    .records
                    .iter()
                    .filter_map(|r| r.path_text(field))
                    .filter_map(|t| t.parse::<i64>().ok())
                    .max();
                let from_header = answer.next_cursor.as_deref().and_then(|t| t.parse().ok());
                let next = from_header
                    .into_iter()
                    .chain(from_records)
                    .max()
                    .unwrap_or(*after)
                    .max(*after);
                if full && next == *after {
                    return Err(SyncError::NoProgress(format!(
                        "a full page of {count} records after sequence {after} names no later sequence"
                    )));
                }
                (Cursor::Sequence { after: next }, full)
            }
            (Cursor::Token { token }, _) => {
                let next = answer.next_cursor.clone().unwrap_or_else(|| token.clone());
                if full && next == *token {
                    return Err(SyncError::NoProgress(format!(
                        "a full page of {count} records came without a new X-Next-Cursor"
                    )));
                }
                (Cursor::Token { token: next }, full)
            }
            (Cursor::Timestamp { .. }, None) => {
                return Err(SyncError::Other("timestamp page without a window".into()));
            }
        };
        let mut out = PageOutcome {
            records: count,
            new: 0,
            rejected: admitted.rejected.len(),
            more,
        };
        let at = now_ms();
        let mut events = Vec::new();
        if count > 0 {
            let mut e = Event::new(at, EventKind::Pulled);
            e.node = Some(self.node.clone());
            e.detail = json!({
                "url": answer.url,
                "cursor_from": cursor.describe(),
                "cursor_to": next.describe(),
                "records": count,
                "valid": admitted.records.len(),
                "rejected": admitted.rejected.len(),
                "reasons": admitted.errors,
                "body_sha256": sha256_hex(&answer.body),
            });
            events.push(e);
        }
        let advance = PullAdvance {
            node: self.node.clone(),
            owner: self.owner.clone(),
            cursor: next.to_text(),
            at_ms: at,
            lease_until_ms: at + LEASE_MS,
            events,
        };
        if admitted.new_records.is_empty() {
            self.state.store.sync_advance(advance).await?;
        } else {
            out.new = self
                .store_page(answer, admitted.new_records, advance)
                .await?;
        }
        metrics::counter!("hallgate_sync_records_total", "source" => self.node.clone())
            .increment(out.new as u64);
        metrics::counter!("hallgate_sync_pages_total", "source" => self.node.clone()).increment(1);
        if out.rejected > 0 {
            metrics::counter!("hallgate_records_rejected_total", "node" => self.node.clone(), "reason" => "invalid_records")
                .increment(out.rejected as u64);
        }
        tracing::debug!(source = %self.node, records = out.records, new = out.new, rejected = out.rejected, cursor = %next.describe(), "page pulled");
        Ok(out)
    }

    /// Store a page's records with its cursor; wake the destinations.
    async fn store_page(
        &self,
        answer: Answer,
        records: Vec<crate::store::NewRecord>,
        advance: PullAdvance,
    ) -> Result<usize, SyncError> {
        let msg = NewMessage {
            token: None,
            id: uuid::Uuid::now_v7().to_string(),
            source: self.node.clone(),
            received_at_ms: advance.at_ms,
            content_type: answer.content_type,
            idempotency_key: None,
            body_sha256: sha256_hex(&answer.body),
            body: answer.body,
            records,
            pull: Some(advance),
        };
        match self.state.store.accept(msg).await? {
            AcceptOutcome::Accepted(resp) | AcceptOutcome::Replayed(resp) => {
                let mut new = 0;
                for r in resp.records.iter().filter(|r| r.status == "accepted") {
                    new += 1;
                    for d in &r.destinations {
                        self.state.wake.wake(d);
                    }
                }
                metrics::counter!("hallgate_records_accepted_total", "node" => self.node.clone())
                    .increment(new as u64);
                Ok(new)
            }
            AcceptOutcome::Stale(_) | AcceptOutcome::TokenReplayed => Err(SyncError::Other(
                "the store refused a pulled page as if it were pushed".into(),
            )),
        }
    }
}

/// Exponential backoff (a random wait between half the cap and the cap, the cap
/// doubling per failure up to five minutes), or the answer's `Retry-After` (at most
/// five minutes).
fn backoff(failures: u32, e: &SyncError) -> Duration {
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

/// Start a puller for every node with `sync.pull_url`, and the catalogue refresh.
pub fn spawn(
    state: &Arc<AppState>,
    set: &mut tokio::task::JoinSet<()>,
    shutdown: &CancellationToken,
) -> Result<(), SyncError> {
    let owner = format!("{}-pull-{}", state.config.gateway.id, uuid::Uuid::now_v7());
    for (id, node) in &state.config.nodes {
        let Some(s) = &node.get_ref().sync else {
            continue;
        };
        if s.pull_url.is_some() {
            let puller = Puller::new(state.clone(), id, &owner)?;
            set.spawn(puller.run(shutdown.clone()));
        }
    }
    if let Some(c) = &state.config.catalogue {
        let api = Api::new(&state.config, &c.source, &state.gateway_keys)?;
        let every =
            Duration::from_secs(settings(&state.config, &c.source)?.catalogue_interval_seconds);
        let state = state.clone();
        let shutdown = shutdown.clone();
        set.spawn(async move {
            let mut failures = 0u32;
            loop {
                let wait = match super::refresh_catalogue(
                    &state.config,
                    &api,
                    &*state.store,
                    &state.catalogue,
                )
                .await
                {
                    Ok(change) => {
                        failures = 0;
                        if !change.added.is_empty()
                            || !change.changed.is_empty()
                            || !change.withdrawn.is_empty()
                        {
                            tracing::info!(source = %api.node, added = change.added.len(), changed = change.changed.len(), withdrawn = change.withdrawn.len(), items = change.total, "item catalogue updated");
                        }
                        metrics::gauge!("hallgate_catalogue_items").set(state.catalogue.len() as f64);
                        every
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(source = %api.node, error = %e, "item catalogue pull failed");
                        metrics::counter!("hallgate_catalogue_errors_total").increment(1);
                        backoff(failures, &e).min(every)
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }
    Ok(())
}
