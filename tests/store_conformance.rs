//! One conformance suite for every store engine: the same scenarios run against an
//! SQLite file and a real PostgreSQL database, through the `Store` trait only.

mod common;

use common::pg;

use std::sync::Arc;

use bytes::Bytes;
use hallgate::audit::{Event, EventKind};
use hallgate::record::Kind;
use hallgate::store::{
    AcceptOutcome, AuditFilter, Completion, DeliveryFilter, DeliveryResult, DeliveryState,
    LeaseRequest, LeasedDelivery, NewMessage, NewRecord, OpenMode, Store, StoreError, StoreOptions,
    StoreUrl, now_ms,
};

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
                sha256: hallgate::audit::sha256_hex(canonical.as_bytes()),
                canonical,
                destinations: r.to.iter().map(|s| s.to_string()).collect(),
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
    let AcceptOutcome::Accepted(resp) = s.accept(msg).await.expect("accept") else {
        panic!("not accepted")
    };
    assert_eq!(resp.records.len(), 2);
    assert_eq!(resp.records[0].destinations, ["city", "prov"]);
    let depths = s.queue_depths().await.unwrap();
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
        s.retry_dead(d.id, now_ms()).await,
        Err(StoreError::NotDead(_))
    ));
    assert!(matches!(
        s.retry_dead(999_999, now_ms()).await,
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
    let view = s.retry_dead(d9.id, now_ms()).await.expect("retried");
    assert_eq!((view.state, view.attempts), (DeliveryState::Pending, 0));
    assert_eq!(lease(s, "city", "w", 1, 60_000).await[0].id, d9.id);
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
        m.token = Some(hallgate::auth::token::TokenUse {
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
        m.token = Some(hallgate::auth::token::TokenUse {
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
