//! One conformance suite for every store engine: the same scenarios run against an
//! SQLite file and a real PostgreSQL database, through the `Store` trait only.

mod common;

use common::pg;

use std::sync::Arc;

use bytes::Bytes;
use hallgate::event::{Event, EventKind};
use hallgate::record::Kind;
use hallgate::store::{
    AcceptOutcome, AuditFilter, CaseStanding, CatalogueItem, Completion, DeliveryFilter,
    DeliveryResult, DeliveryState, LeaseRequest, LeasedDelivery, NewMessage, NewRecord, OpenMode,
    PullAdvance, Store, StoreError, StoreOptions, StoreUrl, SyncControl,
};
use hallgate::time::now_ms;

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = StoreUrl::Sqlite(dir.path().join("t.db"));
    let store = hallgate::store::open(&url, &StoreOptions::default(), OpenMode::Serve)
        .await
        .expect("open sqlite");
    (store, dir)
}

async fn postgres() -> (Arc<dyn Store>, tempfile::TempDir) {
    let url = StoreUrl::parse(&pg::fresh_database().await).expect("url");
    let store = hallgate::store::open(&url, &StoreOptions::default(), OpenMode::Serve)
        .await
        .expect("open postgres");
    (store, tempfile::tempdir().expect("tempdir"))
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = super::sqlite().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = super::postgres().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

conformance!(
    accept_lease_complete_and_views,
    idempotency_key_replays_the_first_answer,
    versions_stale_duplicate_newer,
    one_case_in_order_other_cases_in_parallel,
    leases_are_exclusive_and_expire,
    retry_dead_letter_and_manual_retry,
    release_makes_deliveries_due_again,
    audit_chain_covers_everything,
    a_jti_belongs_to_one_token,
    pulled_pages_move_the_cursor_in_their_transaction,
    pause_and_rewind_take_the_lease_away,
    catalogue_refresh_withdraws_what_is_gone,
    requeue_sends_delivered_records_again,
    a_settled_record_queues_one_receipt_for_its_sender,
    console_users_lock_and_sessions_expire,
    cases_are_found_by_node_item_kind_and_time,
    a_failing_job_fails_alone,
    messages_sent_at_once_see_each_other,
);

struct Rec {
    kind: Kind,
    case: &'static str,
    step: i64,
    version: Option<i64>,
    identity: String,
    to: Vec<&'static str>,
}

fn rec(kind: Kind, case: &'static str, step: i64, to: &[&'static str]) -> Rec {
    Rec {
        kind,
        case,
        step,
        version: None,
        identity: format!("case:{case}:{kind}:{step}"),
        to: to.to_vec(),
    }
}

fn message(source: &str, key: Option<&str>, recs: Vec<Rec>) -> NewMessage {
    let records = recs
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let canonical =
                serde_json::json!({"kind": r.kind, "case_no": r.case, "step_no": r.step})
                    .to_string();
            NewRecord {
                index: i,
                kind: r.kind,
                case_no: r.case.to_string(),
                identity: r.identity,
                version: r.version,
                step_no: r.step,
                label: format!("{} {}", r.kind, r.step),
                sha256: hallgate::hash::sha256_hex(canonical.as_bytes()),
                canonical,
                destinations: r.to.iter().map(|s| s.to_string()).collect(),
                flags: Vec::new(),
                region: None,
                item_code: None,
                fact: None,
            }
        })
        .collect();
    NewMessage {
        token: None,
        id: uuid::Uuid::now_v7().to_string(),
        source: source.to_string(),
        received_at_ms: now_ms(),
        content_type: Some("application/json".into()),
        idempotency_key: key.map(str::to_string),
        body: Bytes::from_static(b"{}"),
        body_sha256: "00".into(),
        records,
        pull: None,
        grants: Default::default(),
        request_id: Some("req-conformance".into()),
    }
}

async fn lease(
    store: &dyn Store,
    dest: &str,
    owner: &str,
    limit: usize,
    lease_ms: i64,
) -> Vec<LeasedDelivery> {
    store
        .exchange(
            Vec::new(),
            Some(LeaseRequest {
                destination: dest.into(),
                owner: owner.into(),
                limit,
                now_ms: now_ms(),
                lease_ms,
            }),
        )
        .await
        .expect("lease")
        .leased
}

fn done(d: &LeasedDelivery, owner: &str, result: DeliveryResult) -> Completion {
    Completion {
        id: d.id,
        owner: owner.into(),
        request_sha256: "00".into(),
        at_ms: now_ms(),
        duration_ms: 1,
        result,
        receipts: Arc::from(Vec::new()),
    }
}

/// The same, from a worker whose config gives `a` receipts.
fn done_receipts(d: &LeasedDelivery, owner: &str, result: DeliveryResult) -> Completion {
    Completion {
        receipts: Arc::from(vec!["a".to_string()]),
        ..done(d, owner, result)
    }
}

fn delivered() -> DeliveryResult {
    DeliveryResult::Delivered {
        status: 200,
        receipt: "{\"code\":\"0\"}".into(),
        duplicate: false,
    }
}

async fn complete(store: &dyn Store, c: Vec<Completion>) -> (usize, usize) {
    let x = store.exchange(c, None).await.expect("complete");
    (x.recorded, x.lost)
}

async fn accept_lease_complete_and_views(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let msg = message(
        "a",
        None,
        vec![
            rec(Kind::Application, "C1", 0, &["city", "prov"]),
            rec(Kind::Result, "C1", 0, &["city"]),
        ],
    );
    let id = msg.id.clone();
    let city_bytes: usize = msg.records.iter().map(|r| r.canonical.len()).sum();
    let prov_bytes = msg.records[0].canonical.len();
    let AcceptOutcome::Accepted(resp) = s.accept(msg).await.expect("accept") else {
        panic!("not accepted")
    };
    assert_eq!(resp.records.len(), 2);
    assert_eq!(resp.records[0].destinations, ["city", "prov"]);
    // What back-pressure measures: bytes waiting, and the oldest waiting.
    assert_eq!(s.pending_bytes("city").await.unwrap(), city_bytes as i64);
    assert_eq!(s.pending_bytes("prov").await.unwrap(), prov_bytes as i64);
    assert_eq!(s.pending_bytes("nobody").await.unwrap(), 0);
    let depths = s.queue_depths().await.unwrap();
    assert!(
        depths.iter().all(|d| d
            .oldest_pending_ms
            .is_some_and(|at| at > 0 && at <= now_ms())),
        "{depths:?}"
    );
    assert_eq!(
        depths
            .iter()
            .map(|d| (d.destination.as_str(), d.pending))
            .collect::<Vec<_>>(),
        [("city", 2), ("prov", 1)]
    );
    // city: the application first; the result waits behind it.
    let first = lease(s, "city", "w1", 10, 60_000).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].kind, Kind::Application);
    assert!(
        first[0]
            .idempotency_key
            .starts_with(&format!("hg-{id}-0-city"))
    );
    assert_eq!(
        complete(s, vec![done(&first[0], "w1", delivered())]).await,
        (1, 0)
    );
    let second = lease(s, "city", "w1", 10, 60_000).await;
    assert_eq!(
        second.iter().map(|d| d.kind).collect::<Vec<_>>(),
        [Kind::Result]
    );
    let view = s.message(&id).await.unwrap().expect("message");
    assert_eq!(view.records.len(), 2);
    assert_eq!(
        view.records[0].deliveries[0].state,
        DeliveryState::Delivered
    );
    assert_eq!(
        view.records[0].deliveries[0].receipt.as_deref(),
        Some("{\"code\":\"0\"}")
    );
    let case = s.case("C1").await.unwrap();
    assert_eq!(case.len(), 2);
    let delivered_list = s
        .deliveries(DeliveryFilter {
            state: Some(DeliveryState::Delivered),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(delivered_list.len(), 1);
    s.ping().await.expect("writable");
}

async fn idempotency_key_replays_the_first_answer(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let AcceptOutcome::Accepted(first) = s
        .accept(message(
            "a",
            Some("k1"),
            vec![rec(Kind::Application, "C2", 0, &["city"])],
        ))
        .await
        .unwrap()
    else {
        panic!()
    };
    let AcceptOutcome::Replayed(again) = s
        .accept(message(
            "a",
            Some("k1"),
            vec![rec(Kind::Application, "C2", 0, &["city"])],
        ))
        .await
        .unwrap()
    else {
        panic!("expected a replay")
    };
    assert_eq!(first, again);
    // Another sender's key space is separate.
    assert!(matches!(
        s.accept(message(
            "b",
            Some("k1"),
            vec![rec(Kind::Application, "C3", 0, &["city"])]
        ))
        .await
        .unwrap(),
        AcceptOutcome::Accepted(_)
    ));
    assert_eq!(
        lease(s, "city", "w", 10, 60_000).await.len(),
        2,
        "the replay made no delivery"
    );
}

async fn versions_stale_duplicate_newer(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let versioned = |v| {
        let mut r = rec(Kind::Application, "C4", 0, &["city"]);
        r.version = Some(v);
        r.identity = "id:R4".into();
        r
    };
    assert!(matches!(
        s.accept(message("a", None, vec![versioned(3)]))
            .await
            .unwrap(),
        AcceptOutcome::Accepted(_)
    ));
    let AcceptOutcome::Stale(stale) = s
        .accept(message("a", None, vec![versioned(2)]))
        .await
        .unwrap()
    else {
        panic!("expected stale")
    };
    assert_eq!((stale[0].version, stale[0].accepted_version), (2, 3));
    let AcceptOutcome::Accepted(dup) = s
        .accept(message("a", None, vec![versioned(3)]))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(dup.records[0].status, "duplicate");
    let AcceptOutcome::Accepted(newer) = s
        .accept(message("a", None, vec![versioned(4)]))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(newer.records[0].status, "accepted");
    // Within one body, a lower version after a higher one is stale too.
    assert!(matches!(
        s.accept(message("a", None, vec![versioned(6), versioned(5)]))
            .await
            .unwrap(),
        AcceptOutcome::Stale(_)
    ));
}

async fn one_case_in_order_other_cases_in_parallel(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.accept(message(
        "a",
        None,
        vec![
            rec(Kind::Result, "C5", 0, &["city"]),
            rec(Kind::Process, "C5", 2, &["city"]),
            rec(Kind::Material, "C5", 0, &["city"]),
            rec(Kind::Process, "C5", 1, &["city"]),
            rec(Kind::Application, "C5", 0, &["city"]),
        ],
    ))
    .await
    .unwrap();
    s.accept(message(
        "a",
        None,
        vec![rec(Kind::Application, "C6", 0, &["city"])],
    ))
    .await
    .unwrap();
    let mut order = Vec::new();
    for _ in 0..5 {
        let batch = lease(s, "city", "w", 10, 60_000).await;
        let c5: Vec<&LeasedDelivery> = batch.iter().filter(|d| d.case_no == "C5").collect();
        assert_eq!(c5.len(), 1, "one delivery of a case at a time");
        let step: serde_json::Value = serde_json::from_str(&c5[0].canonical).unwrap();
        order.push(format!("{}:{}", c5[0].kind, step["step_no"]));
        let completions = batch.iter().map(|d| done(d, "w", delivered())).collect();
        complete(s, completions).await;
    }
    assert_eq!(
        order,
        [
            "application:0",
            "material:0",
            "process:1",
            "process:2",
            "result:0"
        ]
    );
    let left = s
        .deliveries(DeliveryFilter {
            state: Some(DeliveryState::Pending),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(left.is_empty(), "C6 went in parallel: {left:?}");
}

async fn leases_are_exclusive_and_expire(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.accept(message(
        "a",
        None,
        vec![rec(Kind::Application, "C7", 0, &["city"])],
    ))
    .await
    .unwrap();
    let a = lease(s, "city", "instance-a", 10, 300).await;
    assert_eq!(a.len(), 1);
    assert!(
        lease(s, "city", "instance-b", 10, 300).await.is_empty(),
        "held by a"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let b = lease(s, "city", "instance-b", 10, 60_000).await;
    assert_eq!(b.len(), 1, "a's lease expired: b takes over");
    assert_eq!(b[0].id, a[0].id);
    // a finishes late: its result is not recorded; b's is.
    assert_eq!(
        complete(s, vec![done(&a[0], "instance-a", delivered())]).await,
        (0, 1)
    );
    assert_eq!(
        complete(s, vec![done(&b[0], "instance-b", delivered())]).await,
        (1, 0)
    );
}

async fn retry_dead_letter_and_manual_retry(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.accept(message(
        "a",
        None,
        vec![rec(Kind::Application, "C8", 0, &["city"])],
    ))
    .await
    .unwrap();
    let d = lease(s, "city", "w", 1, 60_000).await.remove(0);
    let later = now_ms() + 60_000;
    complete(
        s,
        vec![done(
            &d,
            "w",
            DeliveryResult::Retry {
                status: Some(503),
                error: "HTTP 503".into(),
                next_attempt_at_ms: later,
            },
        )],
    )
    .await;
    assert!(
        lease(s, "city", "w", 1, 60_000).await.is_empty(),
        "not due before its next attempt"
    );
    let list = s
        .deliveries(DeliveryFilter {
            case_no: Some("C8".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (list[0].attempts, list[0].last_status, list[0].state),
        (1, Some(503), DeliveryState::Pending)
    );
    assert!(matches!(
        s.retry_dead(d.id, now_ms(), asked()).await,
        Err(StoreError::NotDead(_))
    ));
    assert!(matches!(
        s.retry_dead(999_999, now_ms(), asked()).await,
        Err(StoreError::NotFound)
    ));
    // Make it due, then dead-letter it.
    s.accept(message(
        "a",
        None,
        vec![rec(Kind::Application, "C9", 0, &["city"])],
    ))
    .await
    .unwrap();
    let d9 = lease(s, "city", "w", 1, 60_000).await.remove(0);
    complete(
        s,
        vec![done(
            &d9,
            "w",
            DeliveryResult::Dead {
                status: Some(400),
                reason: "refused".into(),
            },
        )],
    )
    .await;
    let view = s
        .retry_dead(d9.id, now_ms(), asked())
        .await
        .expect("retried");
    assert_eq!((view.state, view.attempts), (DeliveryState::Pending, 0));
    assert_eq!(lease(s, "city", "w", 1, 60_000).await[0].id, d9.id);
    // Now leased: the filters see it so; a bulk retry skips what is not dead.
    let leased = |leased: Option<bool>, since_ms: Option<i64>| DeliveryFilter {
        case_no: Some("C9".into()),
        leased,
        since_ms,
        limit: 5,
        ..Default::default()
    };
    let held = s.deliveries(leased(Some(true), None)).await.unwrap();
    assert_eq!(held.len(), 1);
    assert!(held[0].leased_until.is_some());
    assert!(
        s.deliveries(leased(Some(false), None))
            .await
            .unwrap()
            .is_empty()
    );
    let future = leased(None, Some(now_ms() + 60_000));
    assert!(s.deliveries(future).await.unwrap().is_empty());
    let none = s
        .retry_dead_many(vec![d9.id, d.id, 999_999], now_ms(), asked())
        .await
        .unwrap();
    assert!(none.is_empty(), "nothing there was dead: {none:?}");
    // The retry's event names who asked and what.
    let events = s
        .audit_events(AuditFilter {
            event: Some("manually_retried".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].detail["by"], "cli test");
    assert_eq!(events[0].detail["asked"], "retry in a test");
}

fn asked() -> hallgate::store::Asked {
    hallgate::store::Asked {
        by: "cli test".into(),
        what: "retry in a test".into(),
    }
}

async fn release_makes_deliveries_due_again(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.accept(message(
        "a",
        None,
        vec![rec(Kind::Application, "C10", 0, &["city"])],
    ))
    .await
    .unwrap();
    let d = lease(s, "city", "w", 1, 60_000).await.remove(0);
    assert!(lease(s, "city", "x", 1, 60_000).await.is_empty());
    s.release("w", vec![d.id]).await.unwrap();
    assert_eq!(lease(s, "city", "x", 1, 60_000).await[0].id, d.id);
    // An operator's pause is kept until resumed, with its event.
    let control = |paused: bool| {
        let mut e = Event::new(now_ms(), EventKind::DestinationControlled);
        e.node = Some("city".into());
        s.pause_destination("city", paused, e)
    };
    control(true).await.unwrap();
    control(true).await.unwrap();
    assert_eq!(s.paused_destinations().await.unwrap(), ["city"]);
    control(false).await.unwrap();
    assert!(s.paused_destinations().await.unwrap().is_empty());
}

async fn audit_chain_covers_everything(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.accept(message(
        "a",
        None,
        vec![rec(Kind::Application, "C11", 0, &["city"])],
    ))
    .await
    .unwrap();
    let d = lease(s, "city", "w", 1, 60_000).await.remove(0);
    complete(s, vec![done(&d, "w", delivered())]).await;
    let mut e = Event::new(now_ms(), EventKind::Rejected);
    e.detail = serde_json::json!({"code": "x"});
    s.audit(e).await.unwrap();
    let (report, _) = hallgate::audit::verify_store(s, None, None, |_| {})
        .await
        .expect("intact");
    // received, accepted, routed, attempted, delivered, rejected
    assert_eq!(report.live, 6);
    let case = s
        .audit_events(AuditFilter {
            case_no: Some("C11".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        case.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
        ["accepted", "routed", "attempted", "delivered"]
    );
    assert_eq!(
        s.audit_count(AuditFilter {
            event: Some("rejected".into()),
            ..Default::default()
        })
        .await
        .unwrap(),
        1
    );
    let meta = s.audit_meta().await.unwrap();
    assert_eq!(
        (meta.live_first_seq, meta.live_last_seq),
        (Some(1), Some(6))
    );
}

async fn a_jti_belongs_to_one_token(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let with_token = |sha: &str, case: &'static str| {
        let mut m = message("a", None, vec![rec(Kind::Application, case, 0, &["city"])]);
        m.token = Some(hallgate::store::TokenUse {
            node: "a".into(),
            jti: "jti-1".into(),
            token_sha256: sha.into(),
            exp_ms: now_ms() + 60_000,
        });
        m
    };
    assert!(matches!(
        s.accept(with_token("t1", "C20")).await.unwrap(),
        AcceptOutcome::Accepted(_)
    ));
    assert!(
        matches!(
            s.accept(with_token("t1", "C21")).await.unwrap(),
            AcceptOutcome::Accepted(_)
        ),
        "same token again"
    );
    assert!(matches!(
        s.accept(with_token("t2", "C22")).await.unwrap(),
        AcceptOutcome::TokenReplayed
    ));
    assert!(
        s.case("C22").await.unwrap().is_empty(),
        "nothing stored for the replay"
    );
    let refused = s
        .audit_count(AuditFilter {
            event: Some("token_refused".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refused, 1);

    // Ids of tokens long expired are pruned when new ones are recorded: the table
    // does not grow without end.
    let token = |jti: &str, sha: &str, exp_ms: i64, case: &'static str| {
        let mut m = message("a", None, vec![rec(Kind::Application, case, 0, &["city"])]);
        m.token = Some(hallgate::store::TokenUse {
            node: "a".into(),
            jti: jti.into(),
            token_sha256: sha.into(),
            exp_ms,
        });
        m
    };
    let long_ago = now_ms() - 2 * 3_600_000;
    assert!(matches!(
        s.accept(token("jti-old", "o1", long_ago, "C23"))
            .await
            .unwrap(),
        AcceptOutcome::Accepted(_)
    ));
    assert!(matches!(
        s.accept(token("jti-new", "n1", now_ms() + 60_000, "C24"))
            .await
            .unwrap(),
        AcceptOutcome::Accepted(_)
    ));
    assert!(
        matches!(
            s.accept(token("jti-old", "o2", now_ms() + 60_000, "C25"))
                .await
                .unwrap(),
            AcceptOutcome::Accepted(_)
        ),
        "the expired id was pruned"
    );
}

fn advance(node: &str, owner: &str, cursor: &str) -> PullAdvance {
    let at = now_ms();
    let mut e = Event::new(at, EventKind::Pulled);
    e.node = Some(node.to_string());
    PullAdvance {
        node: node.to_string(),
        owner: owner.to_string(),
        cursor: cursor.to_string(),
        at_ms: at,
        lease_until_ms: at + 30_000,
        events: vec![e],
    }
}

fn versioned(case: &'static str, version: i64) -> Rec {
    Rec {
        version: Some(version),
        identity: format!("case:{case}"),
        ..rec(Kind::Application, case, 0, &["city"])
    }
}

async fn pulled_pages_move_the_cursor_in_their_transaction(store: Arc<dyn Store>) {
    let now = now_ms();
    let s = store
        .sync_take("hall", "p1", "c0".into(), now, now + 30_000)
        .await
        .expect("take")
        .expect("free source is taken");
    assert_eq!(s.cursor, "c0");
    // Another puller cannot take it while the lease runs.
    assert!(
        store
            .sync_take("hall", "p2", "c0".into(), now, now + 30_000)
            .await
            .expect("take")
            .is_none()
    );
    // A page: two new records, the cursor moves with them.
    let mut page = message("hall", None, vec![versioned("P1", 1), versioned("P2", 1)]);
    page.pull = Some(advance("hall", "p1", "c1"));
    let AcceptOutcome::Accepted(r) = store.accept(page).await.expect("page") else {
        panic!("page accepted")
    };
    assert!(r.records.iter().all(|r| r.status == "accepted"));
    let s = &store.sync_sources().await.expect("sources")[0];
    assert_eq!((s.cursor.as_str(), s.pulled, s.pages), ("c1", 2, 1));
    // The same page again (overlap): duplicates are not stored, stale ones not
    // delivered, and the page is not refused.
    let mut again = message(
        "hall",
        None,
        vec![versioned("P1", 1), versioned("P2", 1), versioned("P3", 1)],
    );
    again.pull = Some(advance("hall", "p1", "c2"));
    let AcceptOutcome::Accepted(r) = store.accept(again).await.expect("page") else {
        panic!("page accepted")
    };
    let statuses: Vec<&str> = r.records.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["duplicate", "duplicate", "accepted"]);
    // A page of nothing but duplicates stores nothing but its cursor (and its events).
    let received = |store: Arc<dyn Store>| async move {
        store
            .audit_count(AuditFilter {
                event: Some("received".into()),
                ..AuditFilter::default()
            })
            .await
            .expect("count")
    };
    let before = received(store.clone()).await;
    let mut same = message("hall", None, vec![versioned("P1", 1), versioned("P3", 1)]);
    let same_id = same.id.clone();
    same.pull = Some(advance("hall", "p1", "c2b"));
    store.accept(same).await.expect("duplicates page");
    assert_eq!(received(store.clone()).await, before, "no message stored");
    assert!(store.message(&same_id).await.expect("message").is_none());
    assert_eq!(
        store.sync_sources().await.expect("sources")[0].cursor,
        "c2b"
    );
    assert_eq!(
        store.case("P1").await.expect("case").len(),
        1,
        "no second copy"
    );
    let mut newer = message("hall", None, vec![versioned("P1", 3)]);
    newer.pull = Some(advance("hall", "p1", "c3"));
    store.accept(newer).await.expect("newer");
    let mut stale = message("hall", None, vec![versioned("P1", 2)]);
    stale.pull = Some(advance("hall", "p1", "c4"));
    let AcceptOutcome::Accepted(r) = store.accept(stale).await.expect("stale page") else {
        panic!("a pulled stale record does not refuse the page")
    };
    assert_eq!(r.records[0].status, "stale");
    assert!(r.records[0].destinations.is_empty());
    let s = &store.sync_sources().await.expect("sources")[0];
    assert_eq!((s.cursor.as_str(), s.pulled), ("c4", 4));
    // A puller without the lease cannot move the cursor, and its records are not
    // stored either.
    let mut foreign = message("hall", None, vec![versioned("P9", 1)]);
    foreign.pull = Some(advance("hall", "p2", "c9"));
    match store.accept(foreign).await {
        Err(StoreError::LeaseLost(_)) => {}
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert!(store.case("P9").await.expect("case").is_empty());
    assert!(matches!(
        store.sync_advance(advance("hall", "p2", "c9")).await,
        Err(StoreError::LeaseLost(_))
    ));
    store
        .sync_advance(advance("hall", "p1", "c5"))
        .await
        .expect("empty page");
    store
        .sync_failed("hall", "HTTP 503".into(), now_ms())
        .await
        .expect("failed");
    let s = &store.sync_sources().await.expect("sources")[0];
    assert_eq!(s.cursor, "c5");
    assert_eq!(s.last_error.as_deref(), Some("HTTP 503"));
    let pulled = store
        .audit_count(AuditFilter {
            event: Some("pulled".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("count");
    assert_eq!(pulled, 6, "one pulled event per committed page");
    // Versionless records pulled twice with the same content are duplicates.
    let mut plain = message("hall", None, vec![rec(Kind::Result, "Q1", 0, &["city"])]);
    plain.pull = Some(advance("hall", "p1", "c6"));
    store.accept(plain).await.expect("plain");
    let mut plain = message("hall", None, vec![rec(Kind::Result, "Q1", 0, &["city"])]);
    plain.pull = Some(advance("hall", "p1", "c7"));
    let AcceptOutcome::Accepted(r) = store.accept(plain).await.expect("plain") else {
        panic!("accepted")
    };
    assert_eq!(r.records[0].status, "duplicate");
}

async fn pause_and_rewind_take_the_lease_away(store: Arc<dyn Store>) {
    let now = now_ms();
    let control = |action: &str| {
        let mut e = Event::new(now_ms(), EventKind::SyncControlled);
        e.node = Some("hall".into());
        e.detail = serde_json::json!({ "action": action });
        e
    };
    assert!(matches!(
        store
            .sync_control("hall", SyncControl::Pause, control("pause"))
            .await,
        Err(StoreError::NoSource(_))
    ));
    store
        .sync_take("hall", "p1", "c0".into(), now, now + 30_000)
        .await
        .expect("take")
        .expect("taken");
    let s = store
        .sync_control("hall", SyncControl::Pause, control("pause"))
        .await
        .expect("pause");
    assert!(s.paused && s.lease_owner.is_none());
    // The puller that held it can no longer commit; nobody can take it.
    assert!(matches!(
        store.sync_advance(advance("hall", "p1", "c1")).await,
        Err(StoreError::LeaseLost(_))
    ));
    let paused = store
        .sync_take("hall", "p1", "c0".into(), now, now + 30_000)
        .await
        .expect("take")
        .expect("a paused source is reported");
    assert!(paused.paused && paused.lease_owner.is_none());
    store
        .sync_control("hall", SyncControl::Resume, control("resume"))
        .await
        .expect("resume");
    store
        .sync_take("hall", "p1", "c0".into(), now, now + 30_000)
        .await
        .expect("take")
        .expect("taken again");
    let s = store
        .sync_control(
            "hall",
            SyncControl::Rewind("c-old".into()),
            control("rewind"),
        )
        .await
        .expect("rewind");
    assert_eq!(s.cursor, "c-old");
    assert!(matches!(
        store.sync_advance(advance("hall", "p1", "c2")).await,
        Err(StoreError::LeaseLost(_))
    ));
    let s = store
        .sync_take("hall", "p1", "ignored".into(), now, now + 30_000)
        .await
        .expect("take")
        .expect("taken");
    assert_eq!(
        s.cursor, "c-old",
        "a source is created once; the rewind holds"
    );
    let events = store
        .audit_count(AuditFilter {
            event: Some("sync_controlled".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("count");
    assert_eq!(events, 3);
}

fn item(code: &str, name: &str) -> CatalogueItem {
    CatalogueItem {
        item_code: code.into(),
        item_name: name.into(),
        item_type: Some("licensing".into()),
        version: Some("1".into()),
        region: Some("350000".into()),
        valid_from: None,
        valid_to: None,
        status: "active".into(),
    }
}

async fn catalogue_refresh_withdraws_what_is_gone(store: Arc<dyn Store>) {
    let change = store
        .catalogue_replace("hall", vec![item("A", "甲"), item("B", "乙")], now_ms())
        .await
        .expect("first");
    assert_eq!(change.added, ["A", "B"]);
    let same = store
        .catalogue_replace("hall", vec![item("A", "甲"), item("B", "乙")], now_ms())
        .await
        .expect("same");
    assert!(same.added.is_empty() && same.changed.is_empty() && same.withdrawn.is_empty());
    let mut renamed = item("A", "甲（新）");
    renamed.version = Some("2".into());
    let change = store
        .catalogue_replace("hall", vec![renamed, item("C", "丙")], now_ms())
        .await
        .expect("third");
    assert_eq!(change.added, ["C"]);
    assert_eq!(change.changed, ["A"]);
    assert_eq!(
        change.withdrawn,
        ["B"],
        "an item no longer listed is withdrawn"
    );
    let items = store.catalogue().await.expect("items");
    let status: Vec<(&str, &str)> = items
        .iter()
        .map(|i| (i.item_code.as_str(), i.status.as_str()))
        .collect();
    assert_eq!(
        status,
        [("A", "active"), ("B", "withdrawn"), ("C", "active")]
    );
    let updates = store
        .audit_count(AuditFilter {
            event: Some("catalogue_updated".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("count");
    assert_eq!(updates, 2, "an unchanged catalogue appends nothing");
}

async fn requeue_sends_delivered_records_again(store: Arc<dyn Store>) {
    let AcceptOutcome::Accepted(_) = store
        .accept(message("a", None, vec![versioned("R1", 1)]))
        .await
        .expect("accept")
    else {
        panic!("accepted")
    };
    let leased = lease(store.as_ref(), "city", "w", 10, 30_000).await;
    assert_eq!(leased.len(), 1);
    let id = leased[0].id;
    complete(
        store.as_ref(),
        vec![Completion {
            id,
            owner: "w".into(),
            request_sha256: "00".into(),
            at_ms: now_ms(),
            duration_ms: 1,
            receipts: Arc::from(Vec::new()),
            result: DeliveryResult::Delivered {
                status: 200,
                receipt: "ok".into(),
                duplicate: false,
            },
        }],
    )
    .await;
    let exchanged = store
        .exchanged("city", now_ms() - 60_000, now_ms() + 60_000)
        .await
        .expect("exchanged");
    assert_eq!(exchanged.len(), 1);
    assert_eq!(exchanged[0].direction, "delivered");
    assert_eq!(exchanged[0].state, Some(DeliveryState::Delivered));
    assert_eq!(exchanged[0].version, Some(1));
    assert_eq!(exchanged[0].op, "upsert");
    let mut e = Event::new(now_ms(), EventKind::Requeued);
    e.node = Some("city".into());
    let n = store
        .requeue(vec![id, 99_999], now_ms(), e)
        .await
        .expect("requeue");
    assert_eq!(n, 1, "only existing deliveries are requeued");
    let again = lease(store.as_ref(), "city", "w", 10, 30_000).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, id);
    assert_eq!(
        again[0].idempotency_key, leased[0].idempotency_key,
        "a requeued delivery keeps its Idempotency-Key"
    );
}

/// 回执推送: the completion that settles a record's last delivery queues its
/// sender's receipt (`receipt:SENDER`) in the same transaction, once per record;
/// not while a delivery is pending, not for a sender without receipts, not for a
/// receipt itself, and not again after a dead letter is retried.
async fn a_settled_record_queues_one_receipt_for_its_sender(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let receipts = |n: i64| async move {
        let got = s
            .deliveries(DeliveryFilter {
                destination: Some("receipt:a".into()),
                limit: 100,
                ..DeliveryFilter::default()
            })
            .await
            .expect("deliveries");
        assert_eq!(got.len() as i64, n, "{got:?}");
        got
    };
    let from_a = message(
        "a",
        None,
        vec![
            rec(Kind::Application, "R1", 0, &["city", "prov"]),
            rec(Kind::Application, "R2", 0, &["city"]),
        ],
    );
    let from_b = message("b", None, vec![rec(Kind::Application, "R3", 0, &["city"])]);
    for m in [from_a, from_b] {
        assert!(matches!(
            s.accept(m).await.expect("accept"),
            AcceptOutcome::Accepted(_)
        ));
    }
    let city = lease(s, "city", "w", 10, 30_000).await;
    assert_eq!(city.len(), 3);
    let all: Vec<Completion> = city
        .iter()
        .map(|d| done_receipts(d, "w", delivered()))
        .collect();
    assert_eq!(complete(s, all).await, (3, 0));
    // R2 is settled; R1 waits for the province; b gets no receipts.
    let got = receipts(1).await;
    assert_eq!(got[0].case_no, "R2");
    assert_eq!(got[0].state, DeliveryState::Pending);

    let prov = lease(s, "prov", "w", 10, 30_000).await;
    assert_eq!(prov.len(), 1);
    let dead = DeliveryResult::Dead {
        status: Some(422),
        reason: "refused".into(),
    };
    assert_eq!(
        complete(s, vec![done_receipts(&prov[0], "w", dead)]).await,
        (1, 0)
    );
    let got = receipts(2).await;
    assert!(got.iter().any(|d| d.case_no == "R1"));

    // The receipt reads the outcomes of its record's deliveries.
    let r1 = got.iter().find(|d| d.case_no == "R1").expect("R1");
    let siblings = s.record_deliveries(r1.id).await.expect("siblings");
    let mut places: Vec<(String, DeliveryState)> = siblings
        .iter()
        .map(|d| (d.destination.clone(), d.state))
        .collect();
    places.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        places,
        vec![
            ("city".to_string(), DeliveryState::Delivered),
            ("prov".to_string(), DeliveryState::Dead),
            ("receipt:a".to_string(), DeliveryState::Pending),
        ]
    );

    // Receipts delivered do not queue receipts; a retried dead letter does not
    // queue a second one.
    let sent = lease(s, "receipt:a", "w", 10, 30_000).await;
    assert_eq!(sent.len(), 2);
    let all: Vec<Completion> = sent
        .iter()
        .map(|d| done_receipts(d, "w", delivered()))
        .collect();
    assert_eq!(complete(s, all).await, (2, 0));
    s.retry_dead(prov[0].id, now_ms(), asked())
        .await
        .expect("retry");
    let again = lease(s, "prov", "w", 10, 30_000).await;
    assert_eq!(
        complete(s, vec![done_receipts(&again[0], "w", delivered())]).await,
        (1, 0)
    );
    let got = receipts(2).await;
    assert!(got.iter().all(|d| d.state == DeliveryState::Delivered));
}

/// The console's users and sessions: a user is stored and changed; failed logins in
/// a row lock it and a success clears them; a session lives while used, not past
/// its idle time or its maximum, nor once its user is disabled or it is closed.
async fn console_users_lock_and_sessions_expire(store: Arc<dyn Store>) {
    use hallgate::store::console::{ConsoleOp, ConsoleOut, ConsoleSession, ConsoleUser};
    let s = store.as_ref();
    let ev = || Event::new(now_ms(), EventKind::ConsoleUserChanged);
    let user = |name: &str| ConsoleUser {
        name: name.into(),
        roles: vec!["auditor".into(), "operator".into()],
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        disabled: false,
        failures: 0,
        locked_until_ms: None,
    };
    let get = |name: &'static str| async move {
        match s.console(ConsoleOp::User(name.into())).await.expect("user") {
            ConsoleOut::User(u) => u,
            other => panic!("{other:?}"),
        }
    };
    s.console(ConsoleOp::PutUser(user("zhang"), ev()))
        .await
        .expect("put");
    s.console(ConsoleOp::PutUser(user("li"), ev()))
        .await
        .expect("put");
    assert_eq!(get("zhang").await, Some(user("zhang")));
    assert_eq!(get("nobody").await, None);
    let ConsoleOut::Users(all) = s.console(ConsoleOp::Users).await.expect("users") else {
        panic!("users")
    };
    assert_eq!(
        all.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["li", "zhang"]
    );

    let attempt = |ok: bool, at: i64| ConsoleOp::Attempt {
        user: "zhang".into(),
        ok,
        at_ms: at,
        lock_after: 3,
        lock_ms: 60_000,
        event: Event::new(at, EventKind::ConsoleLogin),
    };
    let t = now_ms();
    for i in 1..=2 {
        s.console(attempt(false, t)).await.expect("attempt");
        let u = get("zhang").await.expect("zhang");
        assert_eq!((u.failures, u.locked_until_ms), (i, None));
    }
    s.console(attempt(false, t)).await.expect("attempt");
    assert_eq!(
        get("zhang").await.expect("zhang").locked_until_ms,
        Some(t + 60_000)
    );
    s.console(attempt(true, t)).await.expect("attempt");
    let u = get("zhang").await.expect("zhang");
    assert_eq!((u.failures, u.locked_until_ms), (0, None));

    let session = |id: &str, user: &str| ConsoleSession {
        id_sha256: id.into(),
        user: user.into(),
        csrf: "csrf".into(),
        created_ms: t,
        seen_ms: t,
        expires_ms: t + 1_000,
    };
    s.console(ConsoleOp::Open(session("s1", "zhang")))
        .await
        .expect("open");
    s.console(ConsoleOp::Open(session("s2", "li")))
        .await
        .expect("open");
    let touch = |id: &'static str, at: i64| async move {
        match s
            .console(ConsoleOp::Touch {
                id_sha256: id.into(),
                at_ms: at,
                idle_ms: 1_000,
                max_ms: 2_500,
            })
            .await
            .expect("touch")
        {
            ConsoleOut::Session(x) => x,
            other => panic!("{other:?}"),
        }
    };
    // Used within its idle time, it lives on; never past its maximum.
    let a = touch("s1", t + 900).await.expect("alive");
    assert_eq!(
        (a.seen_ms, a.expires_ms, a.user.as_str()),
        (t + 900, t + 1_900, "zhang")
    );
    assert_eq!(
        touch("s1", t + 1_800).await.expect("alive").expires_ms,
        t + 2_500
    );
    assert!(touch("s1", t + 2_600).await.is_none(), "past its maximum");
    assert!(touch("s2", t + 1_200).await.is_none(), "idle too long");
    // A disabled user's sessions end; a closed one is gone.
    s.console(ConsoleOp::Open(session("s3", "li")))
        .await
        .expect("open");
    let mut li = user("li");
    li.disabled = true;
    s.console(ConsoleOp::PutUser(li, ev()))
        .await
        .expect("disable");
    assert!(touch("s3", t + 100).await.is_none());
    s.console(ConsoleOp::Open(session("s4", "zhang")))
        .await
        .expect("open");
    s.console(ConsoleOp::Close(
        "s4".into(),
        Event::new(t, EventKind::ConsoleLogout),
    ))
    .await
    .expect("close");
    assert!(touch("s4", t + 100).await.is_none());
}

/// The console's case search: by the opening node, item code, a kind of record the
/// case holds and when it was opened, newest first, at most `limit`.
async fn cases_are_found_by_node_item_kind_and_time(store: Arc<dyn Store>) {
    use hallgate::store::console::CaseSearch;
    let s = store.as_ref();
    let mut a = message(
        "a",
        None,
        vec![
            rec(Kind::Application, "S1", 0, &["city"]),
            rec(Kind::Result, "S1", 0, &["city"]),
        ],
    );
    a.records[0].item_code = Some("ITEM-1".into());
    let mut b = message("b", None, vec![rec(Kind::Application, "S2", 0, &["city"])]);
    b.records[0].item_code = Some("ITEM-2".into());
    b.received_at_ms = a.received_at_ms + 10;
    let c = message("a", None, vec![rec(Kind::Material, "S3", 0, &["city"])]);
    for m in [a, b, c] {
        assert!(matches!(
            s.accept(m).await.expect("accept"),
            AcceptOutcome::Accepted(_)
        ));
    }
    let found = |q: CaseSearch| async move {
        s.search_cases(CaseSearch { limit: 10, ..q })
            .await
            .expect("search")
            .into_iter()
            .map(|c| c.case_no)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        found(CaseSearch {
            node: Some("a".into()),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        found(CaseSearch {
            item_code: Some("ITEM-2".into()),
            ..Default::default()
        })
        .await,
        ["S2"]
    );
    let mut results = found(CaseSearch {
        kind: Some("result".into()),
        ..Default::default()
    })
    .await;
    results.sort();
    assert_eq!(results, ["S1"]);
    let apps = found(CaseSearch {
        kind: Some("application".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(apps.len(), 2);
    assert!(
        found(CaseSearch {
            from_ms: Some(now_ms() + 60_000),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    let one = s
        .search_cases(CaseSearch {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("search");
    assert_eq!(one.len(), 1);
    let s1 = s
        .search_cases(CaseSearch {
            item_code: Some("ITEM-1".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .expect("search");
    assert_eq!(
        (s1[0].case_no.as_str(), s1[0].opened_by.as_str()),
        ("S1", "a")
    );
}

/// Fifty good messages and one that cannot be stored (its message id is taken), sent
/// at once so that the writer takes them in one batch: the good ones are stored with
/// their audit events, the bad one is refused and leaves nothing, and the chain holds.
async fn a_failing_job_fails_alone(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let first = message("a", None, vec![rec(Kind::Application, "G0", 0, &["city"])]);
    let taken = first.id.clone();
    assert!(matches!(
        s.accept(first).await,
        Ok(AcceptOutcome::Accepted(_))
    ));
    let cases: Vec<&'static str> = (1..=50)
        .map(|i| &*Box::leak(format!("G{i}").into_boxed_str()))
        .collect();
    let mut msgs: Vec<NewMessage> = cases
        .iter()
        .map(|c| message("a", None, vec![rec(Kind::Application, c, 0, &["city"])]))
        .collect();
    let mut bad = message("a", None, vec![rec(Kind::Application, "GX", 0, &["city"])]);
    bad.id = taken;
    msgs.insert(25, bad);
    let answers = futures_util::future::join_all(msgs.into_iter().map(|m| s.accept(m))).await;
    for (i, a) in answers.iter().enumerate() {
        if i == 25 {
            assert!(a.is_err(), "the message with a taken id was stored: {a:?}");
        } else {
            assert!(
                matches!(a, Ok(AcceptOutcome::Accepted(_))),
                "message {i}: {a:?}"
            );
        }
    }
    assert!(s.case("GX").await.unwrap().is_empty());
    for c in &cases {
        assert_eq!(s.case(c).await.unwrap().len(), 1, "case {c}");
    }
    let (report, _) = hallgate::audit::verify_store(s, None, None, |_| {})
        .await
        .expect("intact");
    // received, accepted, routed for each of the 51 stored messages; nothing of GX.
    assert_eq!(report.live, 51 * 3);
    let gx = s
        .audit_events(AuditFilter {
            case_no: Some("GX".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(gx.is_empty(), "{gx:?}");
}

/// Messages sent at once, so that the writer takes them in one batch, where a later
/// one depends on an earlier one: the same idempotency key, a case the first opened,
/// a version the first stored. Each is decided as if it came alone after the other.
/// A message naming one case and one identity twice is stored whole.
async fn messages_sent_at_once_see_each_other(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let versioned = |case: &'static str, v: i64| {
        let mut r = rec(Kind::Process, case, v, &["city"]);
        r.version = Some(v);
        r.identity = format!("case:{case}:process");
        r
    };
    // Each round: twenty messages of other cases, and the messages that depend on
    // each other, sent at once.
    let round = |n: usize, tail: Vec<NewMessage>| {
        let mut msgs: Vec<NewMessage> = (0..20)
            .map(|i| {
                let case = &*Box::leak(format!("S{n}-{i}").into_boxed_str());
                message("a", None, vec![rec(Kind::Application, case, 0, &["city"])])
            })
            .collect();
        msgs.extend(tail);
        futures_util::future::join_all(msgs.into_iter().map(|m| s.accept(m)))
    };
    let fine = |a: &[Result<AcceptOutcome, StoreError>]| {
        for (i, a) in a.iter().enumerate().take(20) {
            assert!(
                matches!(a, Ok(AcceptOutcome::Accepted(_))),
                "message {i}: {a:?}"
            );
        }
    };
    // Version 2 of an identity, then version 1 of it, now stale.
    let a = round(
        1,
        vec![
            message("a", None, vec![versioned("S-VER", 2)]),
            message("a", None, vec![versioned("S-VER", 1)]),
        ],
    )
    .await;
    fine(&a);
    assert!(
        matches!(&a[20], Ok(AcceptOutcome::Accepted(_))),
        "{:?}",
        a[20]
    );
    assert!(
        matches!(&a[21], Ok(AcceptOutcome::Stale(_))),
        "an older version after a newer one: {:?}",
        a[21]
    );
    // A case opened by one sender, then another sender on it.
    let a = round(
        2,
        vec![
            message(
                "a",
                None,
                vec![rec(Kind::Application, "S-OPEN", 0, &["city"])],
            ),
            message("b", None, vec![rec(Kind::Process, "S-OPEN", 1, &["city"])]),
        ],
    )
    .await;
    fine(&a);
    assert!(
        matches!(&a[20], Ok(AcceptOutcome::Accepted(_))),
        "{:?}",
        a[20]
    );
    assert!(
        matches!(&a[21], Ok(AcceptOutcome::NotParty(_))),
        "another sender on a case it is not a party of: {:?}",
        a[21]
    );
    // The same idempotency key twice; one case and one identity twice in a message.
    let a = round(
        3,
        vec![
            message(
                "a",
                Some("k-once"),
                vec![rec(Kind::Application, "S-KEY", 0, &["city"])],
            ),
            message(
                "a",
                Some("k-once"),
                vec![rec(Kind::Application, "S-KEY", 0, &["city"])],
            ),
            message(
                "a",
                None,
                vec![versioned("S-TWICE", 1), versioned("S-TWICE", 2)],
            ),
        ],
    )
    .await;
    fine(&a);
    let Ok(AcceptOutcome::Accepted(first)) = &a[20] else {
        panic!("{:?}", a[20])
    };
    assert!(
        matches!(&a[21], Ok(AcceptOutcome::Replayed(r)) if r == first),
        "the same key again: {:?}",
        a[21]
    );
    assert!(
        matches!(&a[22], Ok(AcceptOutcome::Accepted(_))),
        "{:?}",
        a[22]
    );
    assert_eq!(s.case("S-OPEN").await.unwrap().len(), 1);
    assert_eq!(s.case("S-VER").await.unwrap().len(), 1);
    assert_eq!(s.case("S-TWICE").await.unwrap().len(), 2);
    assert_eq!(
        s.case_standing("S-TWICE", "city").await.unwrap(),
        CaseStanding::Party
    );
    // The stored version of S-TWICE is the later one: version 2 again is a duplicate.
    let again = s
        .accept(message("a", None, vec![versioned("S-TWICE", 2)]))
        .await
        .unwrap();
    let AcceptOutcome::Accepted(again) = again else {
        panic!("{again:?}")
    };
    assert_eq!(again.records[0].status, "duplicate");
    hallgate::audit::verify_store(s, None, None, |_| {})
        .await
        .expect("the chain holds");
}
