//! The console's case search (办件查询) over a large store: 1,000,000 records
//! (250,000 cases of four records each, from 10 district nodes, 500 items, opened
//! over 90 days) are stored through the store's own accept path in an SQLite file;
//! then searches of the kinds the console's form makes run one after another, and
//! a case's page query too. Reported: the median and p90 of each, and as the
//! baseline of the same run, one full pass over the records table.
//!
//!   cargo bench --bench console                 # RECORDS = 1000000
//!   RECORDS=200000 cargo bench --bench console

use std::time::{Duration, Instant};

use bytes::Bytes;
use hallgate::record::Kind;
use hallgate::store::console::CaseSearch;
use hallgate::store::{NewMessage, NewRecord, OpenMode};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const DAY_MS: i64 = 86_400_000;
const KINDS: [Kind; 4] = [
    Kind::Application,
    Kind::Material,
    Kind::Process,
    Kind::Result,
];

fn node(case: usize) -> String {
    format!("district-{}", case % 10)
}

fn item(case: usize) -> String {
    format!("11350200MB0000000X{:04}", (case * 7) % 500)
}

/// One message of `cases` whole cases (four records each), opened at `at`.
fn message(first: usize, cases: usize, at: i64) -> NewMessage {
    let mut records = Vec::with_capacity(cases * 4);
    for c in first..first + cases {
        let case_no = format!("3502052612{c:08}");
        for (k, kind) in KINDS.iter().enumerate() {
            let canonical = format!(
                r#"{{"kind":"{}","case_no":"{case_no}","region":"350205","item_code":"{}","step_no":{k}}}"#,
                kind.as_str(),
                item(c)
            );
            records.push(NewRecord {
                index: records.len(),
                kind: *kind,
                case_no: case_no.clone(),
                identity: format!("{case_no}/{k}"),
                version: None,
                step_no: k as i64,
                label: format!("{} {k}", kind.as_str()),
                sha256: hallgate::hash::sha256_hex(canonical.as_bytes()),
                canonical,
                destinations: vec!["city".into()],
                flags: Vec::new(),
                region: Some("350205".into()),
                item_code: Some(item(c)),
                fact: None,
            });
        }
    }
    NewMessage {
        token: None,
        id: uuid::Uuid::now_v7().to_string(),
        source: node(first),
        received_at_ms: at,
        content_type: Some("application/json".into()),
        idempotency_key: None,
        body: Bytes::from_static(b"[]"),
        body_sha256: "00".into(),
        records,
        pull: None,
        grants: Default::default(),
        request_id: None,
    }
}

/// Makes one search of a kind, at random.
type MakeSearch = Box<dyn Fn(&mut fastrand::Rng) -> CaseSearch>;

fn stats(mut t: Vec<Duration>) -> (f64, f64) {
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(t[t.len() / 2]), ms(t[t.len() * 9 / 10]))
}

fn main() {
    let records = env("RECORDS", 1_000_000);
    let cases = records / 4;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hallgate.toml");
        let text = format!(
            "[gateway]\nid = \"bench\"\nlisten = \"127.0.0.1:0\"\nstore = \"sqlite://{}\"\n\n[nodes.city]\nname = \"市级平台\"\nlevel = \"city\"\ndestination = {{ url = \"http://127.0.0.1:9/\" }}\n",
            dir.path().join("hallgate.db").display()
        );
        std::fs::write(&path, &text).expect("config");
        let config = hallgate::config::Config::load(&path).expect("config");
        let store = hallgate::store::open_config(&config, OpenMode::Serve)
            .await
            .expect("store");
        let now = hallgate::time::now_ms();
        let start = now - 90 * DAY_MS;
        // Ten cases (forty records) per message from one node: cases of one node
        // interleave with the others' over the 90 days.
        let per = 10;
        let filled = Instant::now();
        let mut jobs = tokio::task::JoinSet::new();
        for (i, first) in (0..cases).step_by(per).enumerate() {
            let at = start + (i as i64 * 90 * DAY_MS) / (cases / per).max(1) as i64;
            let s = store.clone();
            jobs.spawn(async move { s.accept(message(first, per, at)).await.map(|_| ()) });
            while jobs.len() >= 64 {
                jobs.join_next().await.expect("job").expect("task").expect("accept");
            }
        }
        while let Some(j) = jobs.join_next().await {
            j.expect("task").expect("accept");
        }
        let fill = filled.elapsed();
        println!(
            "stored {records} records ({cases} cases) in {:.1} s ({:.0} records/s)",
            fill.as_secs_f64(),
            records as f64 / fill.as_secs_f64()
        );
        // The baseline: one pass over every record.
        let db = rusqlite::Connection::open(dir.path().join("hallgate.db")).expect("db");
        let scan = Instant::now();
        let n: i64 = db
            .query_row("SELECT count(*) FROM records WHERE canonical LIKE '%\"result\"%'", [], |r| r.get(0))
            .expect("scan");
        let scan = scan.elapsed();
        println!("baseline: a full pass over the records table ({n} results found) in {:.1} ms", scan.as_secs_f64() * 1000.0);

        let mut rng = fastrand::Rng::with_seed(7);
        let searches: Vec<(&str, MakeSearch)> = vec![
            ("by node, 7 days", Box::new(move |r: &mut fastrand::Rng| {
                let from = start + r.i64(0..83) * DAY_MS;
                CaseSearch { node: Some(node(r.usize(0..10))), from_ms: Some(from), to_ms: Some(from + 7 * DAY_MS), limit: 100, ..Default::default() }
            })),
            ("by item code", Box::new(|r: &mut fastrand::Rng| CaseSearch { item_code: Some(item(r.usize(0..500))), limit: 100, ..Default::default() })),
            ("by node and kind", Box::new(|r: &mut fastrand::Rng| CaseSearch { node: Some(node(r.usize(0..10))), kind: Some("result".into()), limit: 100, ..Default::default() })),
            ("the last day", Box::new(move |_: &mut fastrand::Rng| CaseSearch { from_ms: Some(now - DAY_MS), limit: 100, ..Default::default() })),
        ];
        println!("\n| search | median | p90 | median / full pass |\n|---|---:|---:|---:|");
        for (name, make) in &searches {
            let mut t = Vec::new();
            for _ in 0..101 {
                let q = make(&mut rng);
                let at = Instant::now();
                let found = store.search_cases(q).await.expect("search");
                t.push(at.elapsed());
                assert!(found.len() <= 100);
            }
            let (med, p90) = stats(t);
            println!("| {name} | {med:.2} ms | {p90:.2} ms | {:.4} |", med / (scan.as_secs_f64() * 1000.0));
        }
        let mut t = Vec::new();
        for _ in 0..101 {
            let case_no = format!("3502052612{:08}", rng.usize(0..cases));
            let at = Instant::now();
            let found = store.case(&case_no).await.expect("case");
            t.push(at.elapsed());
            assert_eq!(found.len(), 4);
        }
        let (med, p90) = stats(t);
        println!("| a case's page (records and deliveries) | {med:.2} ms | {p90:.2} ms | {:.4} |", med / (scan.as_secs_f64() * 1000.0));
        store.close().await.expect("close");
    });
}
