//! The pull source: a node's list API read page by page, each page fed through the
//! same decode, validation, catalogue, authorisation and routing as a pushed body
//! ([`Intake::admit`]) and stored with the cursor that covers it in one
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

use super::{Source, SourceFuture};
use crate::auth::outbound::GatewayKeys;
use crate::config::SyncSettings;
use crate::event::{Event, EventKind};
use crate::hash::sha256_hex;
use crate::intake::{Admission, Intake};
use crate::store::{AcceptOutcome, NewMessage, PullAdvance, StoreError};
use crate::sync::{Answer, Api, Cursor, SyncError, Window, backoff, settings};
use crate::time::{now_ms, rfc3339};

/// How long a puller holds a source without committing before another may take it.
const LEASE_MS: i64 = 30_000;

/// One pull source's loop.
pub struct Puller {
    intake: Arc<Intake>,
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
    pub fn new(
        intake: Arc<Intake>,
        keys: &Arc<GatewayKeys>,
        node: &str,
        owner: &str,
    ) -> Result<Puller, SyncError> {
        let api = Api::new(&intake.config, node, keys)?;
        Ok(Puller {
            intake,
            api,
            node: node.to_string(),
            owner: owner.to_string(),
        })
    }

    fn settings(&self) -> Result<&SyncSettings, SyncError> {
        settings(&self.intake.config, &self.node)
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
                        .intake
                        .store
                        .sync_failed(&self.node, text, now_ms())
                        .await
                    {
                        tracing::error!(source = %self.node, error = %err, "could not record a pull failure");
                    }
                    backoff(failures, &e).max(Duration::from_millis(200))
                }
            };
            crate::sync::publish_metrics(&self.intake.config, &*self.intake.store).await;
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
                .intake
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
            // Back-pressure: a destination this source feeds is full; the next
            // round (after the interval) looks again.
            if let Some((dest, level)) = self.intake.backlog.feeds_full(&self.node) {
                tracing::info!(source = %self.node, "pull paused: {}", self.intake.backlog.describe(&dest, &level));
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
                        ("from", rfc3339(w.from_ms)),
                        ("to", rfc3339(w.to_ms)),
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
            .get(url, &query, self.intake.config.limits.max_body_bytes)
            .await?;
        let kind = s.kind;
        let admitted = self
            .intake
            .admit_async(
                &self.node,
                kind,
                answer.body.clone(),
                answer.content_type.clone(),
                Admission::Page,
            )
            .await
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
            self.intake.store.sync_advance(advance).await?;
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
            grants: crate::intake::grants(&self.intake.config, &self.node),
            // A pulled page has no request of its own: it gets an id like one.
            request_id: Some(format!("pull-{}", uuid::Uuid::now_v7().simple())),
        };
        match self.intake.commit(msg).await? {
            AcceptOutcome::Accepted(resp) | AcceptOutcome::Replayed(resp) => {
                let new = resp
                    .records
                    .iter()
                    .filter(|r| r.status == "accepted")
                    .count();
                metrics::counter!("hallgate_records_accepted_total", "node" => self.node.clone())
                    .increment(new as u64);
                crate::observe::minutes::accepted(new as u64);
                Ok(new)
            }
            AcceptOutcome::Stale(_) | AcceptOutcome::TokenReplayed | AcceptOutcome::NotParty(_) => {
                Err(SyncError::Other(
                    "the store refused a pulled page as if it were pushed".into(),
                ))
            }
        }
    }
}

impl Source for Puller {
    fn run(self: Box<Self>, shutdown: CancellationToken) -> SourceFuture {
        Box::pin(Puller::run(*self, shutdown))
    }
}

/// A puller for every node with `sync.pull_url`.
pub fn pullers(
    intake: &Arc<Intake>,
    keys: &Arc<GatewayKeys>,
) -> Result<Vec<Box<dyn Source>>, SyncError> {
    let owner = format!("{}-pull-{}", intake.config.gateway.id, uuid::Uuid::now_v7());
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    for (id, node) in &intake.config.nodes {
        if node
            .get_ref()
            .sync
            .as_ref()
            .is_some_and(|s| s.pull_url.is_some())
        {
            out.push(Box::new(Puller::new(intake.clone(), keys, id, &owner)?));
        }
    }
    Ok(out)
}
