//! The store's side of supervision at intake, on an SQLite file and a real
//! PostgreSQL: a new case gets the row intake settled it to, in the records'
//! transaction, and is not due until its next look; a later fact for the case keeps
//! the row as it was, bumps its version and makes it due for the timer, whatever row
//! the later record carried.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use hallgate::record::Kind;
use hallgate::store::supervision::{IntakeFact, SvCase, SvOp, SvOut};
use hallgate::store::{
    AcceptOutcome, NewMessage, NewRecord, OpenMode, Store, StoreOptions, StoreUrl,
};
use hallgate::time::now_ms;

const DAY: i64 = 86_400_000;

fn record(index: usize, kind: Kind, case_no: &str, fact: IntakeFact) -> NewRecord {
    let canonical = serde_json::json!({"kind": kind, "case_no": case_no}).to_string();
    NewRecord {
        index,
        kind,
        case_no: case_no.to_string(),
        identity: format!("case:{case_no}:{kind}:{index}"),
        version: None,
        step_no: index as i64,
        label: kind.to_string(),
        sha256: hallgate::hash::sha256_hex(canonical.as_bytes()),
        canonical,
        destinations: vec!["city".into()],
        flags: Vec::new(),
        region: None,
        item_code: None,
        fact: Some(fact),
    }
}

fn message(records: Vec<NewRecord>) -> NewMessage {
    NewMessage {
        token: None,
        id: uuid::Uuid::now_v7().to_string(),
        source: "hall".into(),
        received_at_ms: now_ms(),
        content_type: Some("application/json".into()),
        idempotency_key: None,
        body: Bytes::from_static(b"{}"),
        body_sha256: "00".into(),
        records,
        pull: None,
        grants: Default::default(),
        request_id: None,
    }
}

fn settled(case_no: &str, state: &str, now: i64) -> SvCase {
    SvCase {
        case_no: case_no.into(),
        state: Some(state.into()),
        version: 1,
        item_code: Some("ITEM-1".into()),
        dept_code: Some("D1".into()),
        accepted_ms: Some(now - DAY),
        deadline_ms: Some(now + 4 * DAY),
        promised_days: Some(5.0),
        used_days: Some(1.0),
        updated_ms: now,
        ..SvCase::default()
    }
}

async fn accept(store: &dyn Store, msg: NewMessage) {
    match store.accept(msg).await.expect("accept") {
        AcceptOutcome::Accepted(_) => {}
        other => panic!("not accepted: {other:?}"),
    }
}

async fn case(store: &dyn Store, case_no: &str) -> SvCase {
    match store.supervision(SvOp::Case(case_no.into())).await {
        Ok(SvOut::Case(Some(c))) => *c,
        other => panic!("no row for {case_no}: {other:?}"),
    }
}

async fn due(store: &dyn Store, now: i64) -> Vec<(String, i64, usize)> {
    match store
        .supervision(SvOp::Due {
            now_ms: now,
            limit: 10,
        })
        .await
    {
        Ok(SvOut::Due(d)) => d
            .into_iter()
            .map(|c| (c.row.case_no, c.row.version, c.facts.len()))
            .collect(),
        other => panic!("no due answer: {other:?}"),
    }
}

async fn intake_settles_new_cases_and_leaves_the_rest_to_the_timer(store: Arc<dyn Store>) {
    let now = now_ms();
    // A new case on time, settled by intake: next look in three days.
    let first = IntakeFact {
        fact: r#"{"k":"application"}"#.into(),
        row: settled("C1", "on_time", now),
        due_ms: Some(now + 3 * DAY),
    };
    // A new case intake left to the timer (it arrived late): an empty row, due now.
    let late = IntakeFact {
        fact: r#"{"k":"application"}"#.into(),
        row: SvCase {
            case_no: "C2".into(),
            version: 1,
            ..SvCase::default()
        },
        due_ms: Some(0),
    };
    accept(
        &*store,
        message(vec![
            record(0, Kind::Application, "C1", first),
            record(1, Kind::Application, "C2", late),
        ]),
    )
    .await;
    let c1 = case(&*store, "C1").await;
    assert_eq!(c1.state.as_deref(), Some("on_time"));
    assert_eq!(c1.version, 1);
    assert_eq!(c1.deadline_ms, Some(now + 4 * DAY));
    assert_eq!(c1.promised_days, Some(5.0));
    assert_eq!(c1.dept_code.as_deref(), Some("D1"));
    assert_eq!(case(&*store, "C2").await.state, None);
    assert_eq!(due(&*store, now).await, vec![("C2".to_string(), 1, 1)]);
    match store.supervision(SvOp::Counts).await {
        Ok(SvOut::Counts(c)) => assert_eq!(c, vec![("on_time".into(), "D1".into(), 1)]),
        other => panic!("no counts: {other:?}"),
    }

    // A process step for C1: the row it carries (as if C1 were new) is not applied.
    let step = IntakeFact {
        fact: r#"{"k":"process","step_no":1}"#.into(),
        row: settled("C1", "overdue", now),
        due_ms: Some(now + 99 * DAY),
    };
    accept(&*store, message(vec![record(0, Kind::Process, "C1", step)])).await;
    let c1 = case(&*store, "C1").await;
    assert_eq!(c1.state.as_deref(), Some("on_time"));
    assert_eq!(c1.version, 2);
    let mut now_due = due(&*store, now).await;
    now_due.sort();
    assert_eq!(
        now_due,
        vec![("C1".to_string(), 2, 2), ("C2".to_string(), 1, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_intake_settles_new_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = StoreUrl::Sqlite(dir.path().join("t.db"));
    let store = hallgate::store::open(&url, &StoreOptions::default(), OpenMode::Serve)
        .await
        .expect("open sqlite");
    intake_settles_new_cases_and_leaves_the_rest_to_the_timer(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_intake_settles_new_cases() {
    let url = StoreUrl::parse(&common::pg::fresh_database().await).expect("url");
    let store = hallgate::store::open(&url, &StoreOptions::default(), OpenMode::Serve)
        .await
        .expect("open postgres");
    intake_settles_new_cases_and_leaves_the_rest_to_the_timer(store).await;
}
