//! [`Store`] for [`SealedStore`]: seal what is written (payloads, records' personal
//! fields), open what is read (messages, evidence, cases, leased deliveries); every
//! other call goes to the engine as it is.

use bytes::Bytes;

use super::SealedStore;
use crate::event::{AuditRow, Event};
use crate::store::*;

impl Store for SealedStore {
    fn accept(&self, mut msg: NewMessage) -> StoreFuture<'_, AcceptOutcome> {
        Box::pin(async move {
            msg.body = Bytes::from(self.keys.seal_body(&msg.body));
            for r in &mut msg.records {
                r.canonical = self.keys.seal_record(&r.canonical)?;
            }
            self.inner.accept(msg).await
        })
    }

    fn audit(&self, event: Event) -> StoreFuture<'_, ()> {
        self.inner.audit(event)
    }

    fn claim_token(&self, token: TokenUse) -> StoreFuture<'_, bool> {
        self.inner.claim_token(token)
    }

    fn archive_audit(
        &self,
        through_seq: i64,
        archive_sha256: String,
        event: Event,
    ) -> StoreFuture<'_, ()> {
        self.inner.archive_audit(through_seq, archive_sha256, event)
    }

    fn audit_meta(&self) -> StoreFuture<'_, AuditMeta> {
        self.inner.audit_meta()
    }

    fn audit_count(&self, filter: AuditFilter) -> StoreFuture<'_, i64> {
        self.inner.audit_count(filter)
    }

    fn audit_events(&self, filter: AuditFilter) -> StoreFuture<'_, Vec<AuditRow>> {
        self.inner.audit_events(filter)
    }

    fn exchange(
        &self,
        completions: Vec<Completion>,
        lease: Option<LeaseRequest>,
    ) -> StoreFuture<'_, Exchange> {
        Box::pin(async move {
            let mut x = self.inner.exchange(completions, lease).await?;
            for d in &mut x.leased {
                d.canonical = self.keys.open_record(&d.canonical)?;
            }
            Ok(x)
        })
    }

    fn release(&self, owner: &str, ids: Vec<i64>) -> StoreFuture<'_, ()> {
        self.inner.release(owner, ids)
    }

    fn retry_dead(&self, id: i64, at_ms: i64, asked: Asked) -> StoreFuture<'_, DeliveryView> {
        self.inner.retry_dead(id, at_ms, asked)
    }

    fn consumer_refused(&self, id: i64, reason: String, at_ms: i64) -> StoreFuture<'_, bool> {
        self.inner.consumer_refused(id, reason, at_ms)
    }

    fn retry_dead_many(
        &self,
        ids: Vec<i64>,
        at_ms: i64,
        asked: Asked,
    ) -> StoreFuture<'_, Vec<i64>> {
        self.inner.retry_dead_many(ids, at_ms, asked)
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }

    fn message(&self, id: &str) -> StoreFuture<'_, Option<MessageView>> {
        let id = id.to_string();
        Box::pin(async move {
            let mut m = self.inner.message(&id).await?;
            if let Some(m) = &mut m {
                for r in &mut m.records {
                    self.open_view(r)?;
                }
            }
            Ok(m)
        })
    }

    fn evidence(&self, message_ids: Vec<String>) -> StoreFuture<'_, Vec<Evidence>> {
        Box::pin(async move {
            let mut list = self.inner.evidence(message_ids).await?;
            for e in &mut list {
                e.body = Bytes::from(self.keys.open_body(&e.body)?);
                for r in &mut e.records {
                    // A record an edit left as no text at all stays as it is: the
                    // verification names it.
                    if let Ok(text) = std::str::from_utf8(&r.canonical) {
                        r.canonical = self.keys.open_record(text)?.into_bytes();
                    }
                }
            }
            Ok(list)
        })
    }

    fn case(&self, case_no: &str) -> StoreFuture<'_, Vec<RecordView>> {
        let case_no = case_no.to_string();
        Box::pin(async move {
            let mut list = self.inner.case(&case_no).await?;
            for r in &mut list {
                self.open_view(r)?;
            }
            Ok(list)
        })
    }

    fn case_standing(&self, case_no: &str, node: &str) -> StoreFuture<'_, CaseStanding> {
        self.inner.case_standing(case_no, node)
    }

    fn deliveries(&self, filter: DeliveryFilter) -> StoreFuture<'_, Vec<DeliveryView>> {
        self.inner.deliveries(filter)
    }

    fn search_cases(
        &self,
        q: crate::store::console::CaseSearch,
    ) -> StoreFuture<'_, Vec<crate::store::console::CaseSummary>> {
        self.inner.search_cases(q)
    }

    fn console(
        &self,
        op: crate::store::console::ConsoleOp,
    ) -> StoreFuture<'_, crate::store::console::ConsoleOut> {
        self.inner.console(op)
    }

    /// Alerts stored by a settlement are sealed as any accepted message is.
    fn supervision(
        &self,
        mut op: crate::store::supervision::SvOp,
    ) -> StoreFuture<'_, crate::store::supervision::SvOut> {
        Box::pin(async move {
            if let crate::store::supervision::SvOp::Settle(list) = &mut op {
                for msg in list
                    .iter_mut()
                    .filter_map(|s| s.transition.as_mut())
                    .filter_map(|t| t.alert.as_mut())
                {
                    msg.body = Bytes::from(self.keys.seal_body(&msg.body));
                    for r in &mut msg.records {
                        r.canonical = self.keys.seal_record(&r.canonical)?;
                    }
                }
            }
            self.inner.supervision(op).await
        })
    }

    fn record_deliveries(&self, id: i64) -> StoreFuture<'_, Vec<DeliveryView>> {
        self.inner.record_deliveries(id)
    }

    fn queue_depths(&self) -> StoreFuture<'_, Vec<QueueDepth>> {
        self.inner.queue_depths()
    }

    fn pending_bytes(&self, destination: &str) -> StoreFuture<'_, i64> {
        self.inner.pending_bytes(destination)
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.inner.close()
    }

    fn sync_sources(&self) -> StoreFuture<'_, Vec<SyncSource>> {
        self.inner.sync_sources()
    }

    fn sync_take(
        &self,
        node: &str,
        owner: &str,
        initial_cursor: String,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> StoreFuture<'_, Option<SyncSource>> {
        self.inner
            .sync_take(node, owner, initial_cursor, now_ms, lease_until_ms)
    }

    fn sync_advance(&self, advance: PullAdvance) -> StoreFuture<'_, ()> {
        self.inner.sync_advance(advance)
    }

    fn sync_failed(&self, node: &str, error: String, at_ms: i64) -> StoreFuture<'_, ()> {
        self.inner.sync_failed(node, error, at_ms)
    }

    fn sync_control(
        &self,
        node: &str,
        control: SyncControl,
        event: Event,
    ) -> StoreFuture<'_, SyncSource> {
        self.inner.sync_control(node, control, event)
    }

    fn catalogue_replace(
        &self,
        source: &str,
        items: Vec<CatalogueItem>,
        at_ms: i64,
    ) -> StoreFuture<'_, CatalogueChange> {
        self.inner.catalogue_replace(source, items, at_ms)
    }

    fn catalogue(&self) -> StoreFuture<'_, Vec<CatalogueItem>> {
        self.inner.catalogue()
    }

    fn exchanged(&self, node: &str, from_ms: i64, to_ms: i64) -> StoreFuture<'_, Vec<Exchanged>> {
        self.inner.exchanged(node, from_ms, to_ms)
    }

    fn requeue(&self, ids: Vec<i64>, at_ms: i64, event: Event) -> StoreFuture<'_, usize> {
        self.inner.requeue(ids, at_ms, event)
    }

    fn sealed(&self, op: SealOp) -> StoreFuture<'_, SealOut> {
        self.inner.sealed(op)
    }

    fn pause_destination(
        &self,
        destination: &str,
        paused: bool,
        event: Event,
    ) -> StoreFuture<'_, ()> {
        self.inner.pause_destination(destination, paused, event)
    }

    fn paused_destinations(&self) -> StoreFuture<'_, Vec<String>> {
        self.inner.paused_destinations()
    }
}
