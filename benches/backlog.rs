//! Memory with a large backlog: the gateway binary runs with three destinations
//! that have stopped answering (a loopback receiver that never replies), and
//! 1,000,000 deliveries are queued through its HTTP API (333,334 records, each
//! routed to all three). Peak RSS is read from /proc; the backlog must live on disk.
//! Baseline in the same run: the same process's RSS right after start, empty store.
//!
//!   cargo bench --bench backlog                 # DELIVERIES = 1000000
//!   DELIVERIES=300000 cargo bench --bench backlog

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hallgate::receiver::{Receiver, Script};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (VmRSS, VmHWM) in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let deliveries = env("DELIVERIES", 1_000_000);
    let records = deliveries.div_ceil(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let stuck = Receiver::start("stuck", "127.0.0.1:0").await.expect("receiver");
        stuck.set_script(Script {
            delay: Duration::from_secs(24 * 3600),
            ..Script::default()
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let mut text = format!(
            r#"
[gateway]
id = "bench"
listen = "127.0.0.1:{port}"
store = "sqlite://{}"
trust_node_header = true
shutdown_grace_seconds = 1
[limits]
max_records_per_body = 1000
max_body_bytes = 16777216
[nodes.nat-hall]
name = "全国一体化政务服务平台"
level = "district"
accept = {{ kinds = ["application"] }}
[[routes]]
name = "fan-out"
to = ["city-platform", "province-hall", "supervision"]
"#,
            dir.path().join("hallgate.db").display()
        );
        for id in ["city-platform", "province-hall", "supervision"] {
            text.push_str(&format!(
                "[nodes.{id}]\nname = \"{id}\"\nlevel = \"city\"\ndestination = {{ url = \"{}\", concurrency = 2, timeout_ms = 86400000 }}\n",
                stuck.url()
            ));
        }
        let config = dir.path().join("hallgate.toml");
        std::fs::write(&config, text).expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hallgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("gateway");
        let pid = child.id();
        let url = format!("http://127.0.0.1:{port}");
        let client = hallgate::tls::http_client().build().expect("client");
        let start = Instant::now();
        while client.get(format!("{url}/healthz")).send().await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "gateway did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (idle_rss, _) = rss(pid);

        let template = include_str!("one-record.json");
        let per_body = 100;
        let bodies = records.div_ceil(per_body);
        let next = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    let (now, _) = rss(pid);
                    peak.fetch_max(now, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let fill = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if b >= bodies {
                        break;
                    }
                    let lines: Vec<String> = (b * per_body..((b + 1) * per_body).min(records))
                        .map(|i| template.replace("CASENO", &format!("35{i:016}")))
                        .collect();
                    let r = client
                        .post(format!("{url}/v1/records"))
                        .header("content-type", "application/x-ndjson")
                        .header("x-hallgate-node", "nat-hall")
                        .body(lines.join("\n"))
                        .send()
                        .await
                        .expect("post");
                    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let filled = fill.elapsed();
        // Let the workers and a few metric scrapes run over the full backlog.
        let metrics = client.get(format!("{url}/metrics")).send().await.expect("metrics").text().await.unwrap_or_default();
        let depth: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("hallgate_queue_depth"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum();
        for _ in 0..5 {
            let _ = client.get(format!("{url}/v1/deliveries?state=pending&limit=100")).send().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let (_, hwm) = rss(pid);
        sampler.abort();
        let peak = peak.load(Ordering::Relaxed).max(hwm);
        let db: u64 = std::fs::read_dir(dir.path())
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        println!(
            "queued deliveries {depth:.0} ({records} records x 3 destinations) in {:.1} s ({:.0} records/s in bodies of {per_body})",
            filled.as_secs_f64(),
            records as f64 / filled.as_secs_f64()
        );
        println!(
            "gateway RSS: idle {:.1} MiB, peak {:.1} MiB (ratio {:.1}); store on disk {:.0} MiB",
            idle_rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            peak as f64 / idle_rss.max(1) as f64,
            db as f64 / 1048576.0
        );
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let _ = child.wait();
        stuck.stop();
    });
}
