//! Pull and reconciliation throughput: a simulated provincial hall on loopback holds
//! RECORDS cases (national-platform JSON); the gateway (in process, SQLite store,
//! full path: decode with the nat mapping, validation, catalogue check, routing,
//! one transaction per page with its cursor) pulls them in pages of PAGE, and
//! delivers each to a loopback city platform meanwhile. Then a reconciliation over
//! the whole range compares the store with the hall's holdings list.
//!
//! Baselines in the same run: the same pages fetched and parsed to JSON values by a
//! bare reqwest loop (no mapping, no checks, no store), and the hall's holdings list
//! fetched and parsed the same way.
//!
//!   cargo bench --bench sync                    # RECORDS = 100000, PAGE = 1000
//!   RECORDS=20000 cargo bench --bench sync

use std::time::{Duration, Instant};

use hallgate::receiver::Receiver;
use hallgate::receiver::hall::{Hall, sample_case};
use hallgate::store::{DeliveryFilter, DeliveryState};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fetch every page of `url` (time-window paging) and parse it; returns records.
async fn raw_fetch(client: &reqwest::Client, url: &str, page_size: usize) -> usize {
    let mut n = 0;
    for page in 1.. {
        let u = format!(
            "{url}?from=2026-01-01T00:00:00%2B08:00&to=2099-01-01T00:00:00%2B08:00&page={page}&size={page_size}"
        );
        let body = client
            .get(&u)
            .send()
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body");
        let v: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("JSON array");
        n += v.len();
        if v.len() < page_size {
            break;
        }
    }
    n
}

fn main() {
    let records = env("RECORDS", 100_000);
    let page = env("PAGE", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let city = Receiver::start("city", "127.0.0.1:0").await.expect("city");
        city.limit_log(1000);
        let hall = Hall::start("province-hall", "127.0.0.1:0").await.expect("hall");
        let nat = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/nat/application.toml");
        let set = hallgate::mapping::MappingSet::new(vec![std::sync::Arc::new(
            hallgate::mapping::Mapping::load(std::path::Path::new(nat), &hallgate::mapping::Disk)
                .expect("nat mapping"),
        )]);
        hall.set_mappings(set);
        let started = Instant::now();
        for chunk in (1..=records as u64).collect::<Vec<_>>().chunks(10_000) {
            hall.add_cases(chunk.iter().map(|i| sample_case(*i, *i as usize)).collect());
        }
        eprintln!("hall filled with {records} cases in {:.1} s", started.elapsed().as_secs_f64());
        let base = hall.base();
        let text = format!(
            r#"
[gateway]
id = "bench-sync"
listen = "127.0.0.1:0"
store = "sqlite://{store}"
trust_node_header = true

[limits]
max_body_bytes = 16777216
max_records_per_body = {max}

[nodes.city]
name = "市级平台"
level = "city"
destination = {{ url = "{city}", timeout_ms = 10000, concurrency = 16 }}

[nodes.province-hall]
name = "省网上办事大厅"
level = "province"
region = "350000"
mappings = ["{nat}"]
accept = {{ kinds = ["application"], regions = ["35"] }}
catalogue = "refuse"
destination = {{ url = "{base}/records" }}

[nodes.province-hall.sync]
pull_url = "{base}/api/cases"
start = "2026-01-01T00:00:00+08:00"
interval_seconds = 1
page_size = {page}
window_seconds = 315360000
holdings_url = "{base}/api/holdings"
count_url = "{base}/api/holdings/count"
catalogue_url = "{base}/api/items"

[catalogue]
source = "province-hall"

[[routes]]
name = "all-to-city"
to = ["city"]
"#,
            store = dir.path().join("hallgate.db").display(),
            city = city.url(),
            max = page * 2,
        );
        let path = dir.path().join("hallgate.toml");
        std::fs::write(&path, &text).expect("config");
        let config = hallgate::config::Config::load(&path).expect("config");
        let kept = config.clone();

        // Baseline: the same pages, fetched and parsed only.
        let client = hallgate::tls::http_client().build().expect("client");
        let t = Instant::now();
        let fetched = raw_fetch(&client, &format!("{base}/api/cases"), page).await;
        let raw_secs = t.elapsed().as_secs_f64();
        assert_eq!(fetched, records);

        let t = Instant::now();
        let running = hallgate::gateway::start(config, None).await.expect("gateway");
        let store = running.store.clone();
        loop {
            let pulled = store
                .sync_sources()
                .await
                .expect("sources")
                .first()
                .map(|s| s.pulled)
                .unwrap_or(0);
            if pulled as usize >= records {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(3600), "pull stalled at {pulled}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pull_secs = t.elapsed().as_secs_f64();
        loop {
            let pending = store
                .deliveries(DeliveryFilter {
                    state: Some(DeliveryState::Pending),
                    limit: 1,
                    ..DeliveryFilter::default()
                })
                .await
                .expect("deliveries");
            if pending.is_empty() && city.accepted_total() as usize >= records {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let delivered_secs = t.elapsed().as_secs_f64();

        // Baseline for reconciliation: their holdings list, fetched and parsed only
        // (after one count request, which has the hall build its list).
        client
            .get(format!(
                "{base}/api/holdings/count?from=2026-01-01T00:00:00%2B08:00&to=2099-01-01T00:00:00%2B08:00"
            ))
            .send()
            .await
            .expect("count");
        let t = Instant::now();
        let listed = raw_fetch(&client, &format!("{base}/api/holdings"), page).await;
        let raw_list_secs = t.elapsed().as_secs_f64();
        assert_eq!(listed, records);

        let keys = std::sync::Arc::new(
            hallgate::auth::outbound::GatewayKeys::load(&kept).expect("keys"),
        );
        let api = hallgate::sync::Api::new(&kept, "province-hall", &keys).expect("api");
        let now = hallgate::time::now_ms();
        let t = Instant::now();
        let report = hallgate::sync::reconcile::reconcile(
            &kept,
            store.as_ref(),
            &api,
            None,
            now - 86_400_000,
            now,
            600_000,
        )
        .await
        .expect("reconcile");
        let rec_secs = t.elapsed().as_secs_f64();
        assert!(report.is_clean(), "{}", report.table());
        assert_eq!(report.ours, records);

        let rate = records as f64 / pull_secs;
        let raw_rate = records as f64 / raw_secs;
        println!("records                      {records} (pages of {page})");
        println!(
            "raw fetch + parse            {raw_secs:.2} s  {raw_rate:.0} records/s  (baseline)"
        );
        println!(
            "pulled and stored            {pull_secs:.2} s  {rate:.0} records/s  ({:.2} of the raw fetch)",
            rate / raw_rate
        );
        println!(
            "pulled, stored and delivered {delivered_secs:.2} s  {:.0} records/s (city platform on loopback)",
            records as f64 / delivered_secs
        );
        println!("raw holdings list + parse    {raw_list_secs:.2} s  (baseline)");
        println!(
            "reconciliation               {rec_secs:.2} s  ({:.1} x the raw list), clean: {}",
            rec_secs / raw_list_secs,
            report.is_clean()
        );
        running.shutdown().await;
    });
}
