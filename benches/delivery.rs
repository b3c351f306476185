//! Delivery throughput: a backlog of N records is stored, then the gateway drains it
//! to a loopback receiver. Baseline, in the same run: a bare reqwest loop POSTing the
//! same bodies to the same kind of receiver with the same concurrency (no store, no
//! leases, no audit) — the ceiling for sending over HTTP on this machine.
//!
//!   cargo bench --bench delivery            # N = 20000, concurrency 16
//!   N=50000 CONCURRENCY=32 cargo bench --bench delivery

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hallgate::config::Config;
use hallgate::receiver::Receiver;
use hallgate::record::Kind;
use hallgate::store::{NewMessage, NewRecord, StoreOptions, StoreUrl};
use hallgate::time::now_ms;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(i: usize) -> String {
    include_str!("one-record.json").replace("CASENO", &format!("35{i:016}"))
}

fn config(dir: &std::path::Path, url: &str, concurrency: usize) -> Config {
    let text = format!(
        r#"
[gateway]
id = "bench"
listen = "127.0.0.1:0"
store = "sqlite://{}"
trust_node_header = true
[nodes.nat-hall]
name = "全国一体化政务服务平台"
level = "district"
accept = {{ kinds = ["application"] }}
[nodes.city-platform]
name = "市级政务服务平台"
level = "city"
destination = {{ url = "{url}", concurrency = {concurrency} }}
[[routes]]
name = "all"
to = ["city-platform"]
"#,
        dir.join("hallgate.db").display()
    );
    let path = dir.join("hallgate.toml");
    std::fs::write(&path, text).expect("config");
    Config::load(&path).expect("config")
}

async fn preload(config: &Config, n: usize) {
    let url = StoreUrl::parse(config.gateway.store.get_ref()).expect("url");
    let store = hallgate::store::open(
        &url,
        &StoreOptions::from_config(config),
        hallgate::store::OpenMode::Serve,
    )
    .await
    .expect("store");
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(idx, i)| {
                let canonical = record(*i);
                NewRecord {
                    index: idx,
                    kind: Kind::Application,
                    case_no: format!("35{i:016}"),
                    identity: format!("case:35{i:016}"),
                    version: None,
                    step_no: 0,
                    label: "application".into(),
                    sha256: hallgate::hash::sha256_hex(canonical.as_bytes()),
                    canonical,
                    destinations: vec!["city-platform".into()],
                    flags: Vec::new(),
                    region: None,
                    item_code: None,
                    fact: None,
                }
            })
            .collect();
        store
            .accept(NewMessage {
                token: None,
                id: uuid::Uuid::now_v7().to_string(),
                source: "nat-hall".into(),
                received_at_ms: now_ms(),
                content_type: Some("application/json".into()),
                idempotency_key: None,
                body: Bytes::from_static(b"[]"),
                body_sha256: String::new(),
                records,
                pull: None,
                grants: Default::default(),
                request_id: None,
            })
            .await
            .expect("preload");
    }
    store.close().await.expect("close");
}

async fn drain_through_gateway(n: usize, concurrency: usize) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start("city-platform", "127.0.0.1:0")
        .await
        .expect("receiver");
    receiver.limit_log(1000);
    let config = config(dir.path(), &receiver.url(), concurrency);
    preload(&config, n).await;
    let started = Instant::now();
    let running = hallgate::gateway::start(config, None)
        .await
        .expect("gateway");
    while receiver.accepted_total() < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    running.shutdown().await;
    receiver.stop();
    took
}

async fn drain_bare(n: usize, concurrency: usize) -> Duration {
    let receiver = Receiver::start("city-platform", "127.0.0.1:0")
        .await
        .expect("receiver");
    receiver.limit_log(1000);
    let client = hallgate::tls::http_client().build().expect("client");
    let url = Arc::new(receiver.url());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            for i in (w..n).step_by(concurrency) {
                let r = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("bare-{i}"))
                    .body(record(i))
                    .send()
                    .await
                    .expect("send");
                assert!(r.status().is_success());
                let _ = r.bytes().await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let took = started.elapsed();
    receiver.stop();
    took
}

fn main() {
    let n = env("N", 20_000);
    let concurrency = env("CONCURRENCY", 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut rows = Vec::new();
        for round in 1..=3 {
            let g = drain_through_gateway(n, concurrency).await;
            let b = drain_bare(n, concurrency).await;
            let (gr, br) = (n as f64 / g.as_secs_f64(), n as f64 / b.as_secs_f64());
            println!(
                "round {round}: gateway {gr:8.0} records/s ({:.2} s)   bare reqwest {br:8.0} records/s ({:.2} s)   ratio {:.2}",
                g.as_secs_f64(),
                b.as_secs_f64(),
                gr / br
            );
            rows.push((gr, br));
        }
        let mut g: Vec<f64> = rows.iter().map(|r| r.0).collect();
        let mut b: Vec<f64> = rows.iter().map(|r| r.1).collect();
        g.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        println!(
            "median: gateway {:.0} delivered records/s, bare reqwest {:.0}/s, ratio {:.2} (N={n}, concurrency {concurrency})",
            g[1],
            b[1],
            g[1] / b[1]
        );
    });
}
