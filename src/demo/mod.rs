//! `hallgate demo`: the whole product on one screen, with nothing to set up.
//!
//! It starts the three receiving platforms as real HTTP servers on loopback, starts
//! the gateway on the embedded demo configuration (`hallgate.toml`) with an SQLite
//! store in a fresh data folder, sends the sample records of `examples/samples` as
//! their senders would, waits for the deliveries, and prints what arrived where.
//! The supervision platform is scripted to be "busy" at first, so the account also
//! shows a retry. A department exchanges through its 前置库 tables, an embedded
//! SQLite file (`qzk.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{Config, ConfigError};
use crate::gateway::{self, GatewayError, Running};
use crate::receiver::{Receiver, ReceiverError, Script};
use crate::store::{DeliveryFilter, DeliveryState, StoreError};

mod qzk;
mod samples;
mod supervision;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot prepare the data folder {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MappingError),
    #[error("sending a sample failed: {0}")]
    Send(String),
}

/// The demo configuration, embedded so the demo runs from any folder.
pub const DEMO_CONFIG: &str = include_str!("../../hallgate.toml");

pub use samples::{FILES, SAMPLES, Sample};

/// The demo configuration with the given receivers, store folder and listener.
pub fn demo_config(
    data_dir: &Path,
    halls: &[&Receiver],
    listen: &str,
) -> Result<Config, DemoError> {
    let mut config = Config::parse(DEMO_CONFIG, Path::new("hallgate.toml"))?;
    let db = data_dir.join("hallgate.db");
    config.gateway.store = toml::Spanned::new(0..0, format!("sqlite://{}", db.display()));
    config.gateway.listen = toml::Spanned::new(0..0, listen.to_string());
    config.gateway.shutdown_grace_seconds = 5;
    config.delivery.base_backoff_ms = 300;
    config.delivery.max_backoff_ms = 2000;
    config.delivery.poll_ms = 200;
    // Every sender proves itself with a signed token, as in production: the demo
    // makes each one a key pair in its data folder (the shipped config names
    // certs/nodes/, made by `hallgate keys nodes`).
    let keys = data_dir.join("keys");
    for (id, node) in config.nodes.iter_mut() {
        if let Some(auth) = node.get_mut().auth.as_mut() {
            let private = keys.join(format!("{id}.key.pem"));
            if !private.exists() {
                crate::keys::generate_key(&private).map_err(|e| DemoError::Send(e.to_string()))?;
            }
            auth.keys = vec![crate::config::KeyFile::Path(
                keys.join(format!("{id}.pub.pem")).display().to_string(),
            )];
        }
    }
    for hall in halls {
        let Some(node) = config.nodes.get_mut(&hall.name) else {
            continue;
        };
        let node = node.get_mut();
        let Some(d) = node.destination.as_mut() else {
            continue;
        };
        // The configured host and port, wherever the node's URLs name them.
        let configured = reqwest::Url::parse(d.url())
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        let actual = format!("http://{}", hall.addr);
        d.url = Some(toml::Spanned::new(0..0, hall.url()));
        if let Some(sync) = node.sync.as_mut() {
            for url in [
                &mut sync.pull_url,
                &mut sync.holdings_url,
                &mut sync.count_url,
                &mut sync.catalogue_url,
            ]
            .into_iter()
            .flatten()
            {
                if !configured.is_empty() && url.starts_with(&configured) {
                    *url = format!("{actual}{}", &url[configured.len()..]);
                }
            }
        }
    }
    Ok(config)
}

/// Run the demo; with `once`, exit after the account instead of serving on.
pub async fn run(data_dir: &Path, once: bool) -> Result<(), DemoError> {
    let dir_err = |source| DemoError::DataDir {
        path: data_dir.display().to_string(),
        source,
    };
    if data_dir.exists() {
        std::fs::remove_dir_all(data_dir).map_err(dir_err)?;
    }
    std::fs::create_dir_all(data_dir).map_err(dir_err)?;
    let data_dir = data_dir.canonicalize().map_err(dir_err)?;

    println!("hallgate demo — 政务服务数据交换网关\n");
    let city = Receiver::start("city-platform", "127.0.0.1:0").await?;
    let hall = crate::receiver::hall::Hall::start("province-hall", "127.0.0.1:0").await?;
    let province = hall.receiver.clone();
    let supervision = Receiver::start("supervision", "127.0.0.1:0").await?;
    // The supervision platform is busy at first: each delivery fails once with 503.
    supervision.set_script(Script {
        fail_first: 1,
        ..Script::default()
    });
    let halls = [&city, &province, &supervision];
    // Prefer the configured port; fall back to any free one if it is taken.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:8080").await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| DemoError::Send(e.to_string()))?,
    };
    let mut config = demo_config(&data_dir, &halls, "127.0.0.1:8080")?;
    // A department that exchanges through its 前置库 tables (qzk.rs).
    let qzk = qzk::prepare(&mut config, &data_dir)?;
    // 电子监察 reads a clock the account moves fast (supervision.rs).
    let clock = supervision::clock();
    config.supervision.clock = clock.clone();
    config.supervision.sweep_ms = 200;
    let names: Vec<(String, String)> = config
        .nodes
        .iter()
        .map(|(id, n)| (id.clone(), n.get_ref().name.clone()))
        .collect();
    let name_of = |id: &str| {
        names
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    };
    // The supervision platform reads what it receives in its own dialect, and the
    // provincial hall speaks the national platform's JSON.
    let mut sets = crate::mapping::load_sets(&config, &FILES)?;
    if let Some(set) = sets.remove("supervision") {
        supervision.set_mappings(set);
    }
    if let Some(set) = sets.remove("province-hall") {
        hall.set_mappings(set);
    }
    // Cases applied for online at the provincial hall, waiting to be pulled.
    hall.add_cases(
        (1..=PULLED)
            .map(|i| crate::receiver::hall::sample_case(i, i as usize))
            .collect(),
    );
    let kept = config.clone();
    let running = gateway::start_with(config, Some(listener), &FILES).await?;
    println!(
        "gateway      {}  (store: {}/hallgate.db)",
        running.url(),
        data_dir.display()
    );
    for h in halls {
        println!(
            "receiver     {:<14} {}  {}",
            h.name,
            h.url(),
            name_of(&h.name)
        );
    }
    println!("\n— sending the sample messages in their senders' own dialects —");
    let client = crate::tls::http_client()
        .build()
        .map_err(|e| DemoError::Send(e.to_string()))?;
    let mut cases: Vec<String> = Vec::new();
    // The samples, and the national hall's application again under another case
    // number, left open for 电子监察 to watch (supervision.rs).
    let watched = SAMPLES
        .iter()
        .find(|s| s.name == supervision::SAMPLE)
        .map(|s| {
            let body = String::from_utf8_lossy(s.body)
                .replace(supervision::SAMPLE_CASE, supervision::CASE)
                .into_bytes();
            (s, body)
        });
    let bodies = SAMPLES.iter().map(|s| (s, s.body.to_vec())).chain(watched);
    for (s, body) in bodies {
        let key = data_dir.join("keys").join(format!("{}.key.pem", s.sender));
        let token = crate::auth::mint::issue(&kept, s.sender, &key, 300, None)
            .map_err(|e| DemoError::Send(e.to_string()))?;
        let resp = client
            .post(format!("{}/v1/records", running.url()))
            .header("content-type", s.content_type)
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .send()
            .await
            .map_err(|e| DemoError::Send(e.to_string()))?;
        let status = resp.status();
        let body: Value = resp
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let records = body["records"].as_array().cloned().unwrap_or_default();
        println!(
            "{} {:<12} → {} {} record(s)  [{}]",
            status.as_u16(),
            s.sender,
            s.name,
            records.len(),
            name_of(s.sender)
        );
        if !status.is_success() {
            println!(
                "      refused: {}",
                body["error"]["message"].as_str().unwrap_or("?")
            );
        }
        for r in records {
            let case = r["case_no"].as_str().unwrap_or("").to_string();
            let dests: Vec<&str> = r["destinations"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!(
                "      {:<11} 办件 {}  routed to {}",
                r["kind"].as_str().unwrap_or(""),
                case,
                dests.join(", ")
            );
            if !cases.contains(&case) {
                cases.push(case);
            }
        }
    }
    println!("\n— waiting for deliveries (the supervision platform answers 503 the first time) —");
    let started = Instant::now();
    while !all_delivered(&running).await? && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pull runs on its own schedule: wait until the hall's cases are in.
    let started = Instant::now();
    let mut pulled = 0;
    while started.elapsed() < Duration::from_secs(20) {
        pulled = running
            .store
            .sync_sources()
            .await?
            .iter()
            .find(|s| s.node == "province-hall")
            .map(|s| s.pulled)
            .unwrap_or(0);
        if pulled >= PULLED as i64 && all_delivered(&running).await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "\n— pulled from the provincial hall's list API (省网上办事大厅, applied for online) —"
    );
    let status = crate::sync::status(&kept, running.store.as_ref()).await?;
    for s in status["sources"].as_array().into_iter().flatten() {
        println!(
            "{}: {} record(s) pulled, cursor {}",
            s["node"].as_str().unwrap_or(""),
            s["records_pulled"],
            s["cursor"].as_str().unwrap_or("-")
        );
    }
    let own: Vec<String> = (1..=PULLED)
        .map(|i| {
            crate::receiver::hall::sample_case(i, i as usize)["ProjectNo"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    for case in &own {
        for r in running.store.case(case).await? {
            let to: Vec<String> = r
                .deliveries
                .iter()
                .map(|d| format!("{} ({})", d.destination, d.state.as_str()))
                .collect();
            println!(
                "  办件 {case}  {}  → {}",
                r.record
                    .get("item_name")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                to.join(", ")
            );
        }
    }
    if pulled < PULLED as i64 {
        println!("  (only {pulled} of {PULLED} pulled so far: see `hallgate sync status`)");
    }
    print_account(&running, &cases, &halls, &name_of).await?;
    qzk::show(&running, &qzk).await?;
    reconcile(&kept, &running).await?;
    supervision::watch(&running, &clock, &supervision, &kept).await?;
    // Reads need a token too: one from the first case's sender, with the key the
    // demo made for it.
    let first = cases.first().map(String::as_str).unwrap_or("");
    let sender = SAMPLES.first().map_or("zj-tonglu", |s| s.sender);
    println!(
        "\nTry:  curl {0}/metrics   ·   curl {0}/healthz\n      T=$(hallgate token issue --node {2} --key {3}/keys/{2}.key.pem)\n      curl -H \"authorization: Bearer $T\" {0}/v1/cases/{1}",
        running.url(),
        first,
        sender,
        data_dir.display()
    );
    if once {
        running.shutdown().await;
        for h in halls {
            h.stop();
        }
        return Ok(());
    }
    println!("Serving until Ctrl-C.");
    gateway::signal().await;
    println!("\nstopping: finishing in-flight deliveries…");
    running.shutdown().await;
    for h in halls {
        h.stop();
    }
    Ok(())
}

/// Whether no delivery is waiting.
async fn all_delivered(running: &Running) -> Result<bool, DemoError> {
    let pending = running
        .store
        .deliveries(DeliveryFilter {
            state: Some(DeliveryState::Pending),
            limit: 1,
            ..DeliveryFilter::default()
        })
        .await?;
    Ok(pending.is_empty())
}

/// Cases the simulated provincial hall holds for the demo to pull.
const PULLED: u64 = 3;

/// Reconcile today's exchange with the provincial hall, as an operator would with
/// `hallgate sync reconcile --node province-hall --from TODAY`.
async fn reconcile(config: &Config, running: &Running) -> Result<(), DemoError> {
    let keys = std::sync::Arc::new(
        crate::auth::outbound::GatewayKeys::load(config)
            .map_err(|e| DemoError::Send(e.to_string()))?,
    );
    let api = crate::sync::Api::new(config, "province-hall", &keys)
        .map_err(|e| DemoError::Send(e.to_string()))?;
    let now = crate::time::now_ms();
    let from = crate::time::parse_time(&crate::time::today()).unwrap_or(now - 86_400_000);
    let mut report = crate::sync::reconcile::reconcile(
        config,
        running.store.as_ref(),
        &api,
        None,
        from,
        now,
        600_000,
    )
    .await
    .map_err(|e| DemoError::Send(e.to_string()))?;
    crate::sync::reconcile::record(running.store.as_ref(), &mut report, false, "demo")
        .await
        .map_err(|e| DemoError::Send(e.to_string()))?;
    println!(
        "\n— reconciliation with the provincial hall (hallgate sync reconcile --node province-hall --from today) —"
    );
    print!("{}", report.table());
    Ok(())
}

async fn print_account(
    running: &Running,
    cases: &[String],
    halls: &[&Receiver],
    name_of: &dyn Fn(&str) -> String,
) -> Result<(), DemoError> {
    println!("\n— what happened to each case (办件) —");
    for case in cases {
        let records = running.store.case(case).await?;
        let Some(first) = records.first() else {
            continue;
        };
        println!("办件 {case}  (from {})", first.source);
        for r in &records {
            let label = match r.kind {
                crate::record::Kind::Process => format!(
                    "process step {}",
                    r.record.get("step_no").and_then(Value::as_u64).unwrap_or(0)
                ),
                k => k.to_string(),
            };
            let name = ["item_name", "name", "node_name", "outcome"]
                .iter()
                .find_map(|k| r.record.get(*k).and_then(Value::as_str))
                .unwrap_or("");
            println!("  {label:<16} {name}");
            for d in &r.deliveries {
                let receipt = d
                    .receipt
                    .as_deref()
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .and_then(|v| {
                        v.get("receipt_no")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                println!(
                    "      → {:<14} {:<9} after {} attempt(s) {}",
                    d.destination,
                    d.state.as_str(),
                    d.attempts,
                    if receipt.is_empty() {
                        String::new()
                    } else {
                        format!("回执 {receipt}")
                    }
                );
            }
        }
        // A case of several records (a whole-case package): the order they reached
        // the first platform in.
        if records.len() > 1
            && let Some(h) = halls.first()
        {
            let order: Vec<String> = h
                .accepted()
                .iter()
                .filter(|a| a.case_no == *case)
                .map(|a| match a.body.get("step_no").and_then(Value::as_u64) {
                    Some(n) => format!("{} {n}", a.kind),
                    None => a.kind.clone(),
                })
                .collect();
            println!("  {} received them in order: {}", h.name, order.join(" → "));
        }
    }
    println!("\n— what each receiving platform got —");
    for h in halls {
        let all = h.arrivals();
        let ok = h.accepted();
        println!(
            "{:<14} {} record(s) accepted, {} request(s) in all",
            h.name,
            ok.len(),
            all.len()
        );
        // A platform with its own dialect got it rendered by the mapping.
        if let Some(a) = ok.iter().find(|a| !a.raw.starts_with(b"{")) {
            let text = String::from_utf8_lossy(&a.raw);
            let short: String = text.chars().take(150).collect();
            println!(
                "               rendered for it by its mapping ({}): {short}…",
                a.headers
                    .iter()
                    .find(|(k, _)| k == "content-type")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("?")
            );
        }
    }
    // One case as an auditor reads it: the Guizhou case went through three platforms.
    if let Some(case) = cases.iter().find(|c| c.starts_with("520103")) {
        let rows = crate::audit::timeline::case_rows(running.store.as_ref(), case, None).await?;
        let steps = crate::audit::timeline::build(&rows, name_of);
        println!("\n— the audit timeline of one case (hallgate audit timeline {case}) —");
        print!("{}", crate::audit::timeline::render(case, &steps));
    }
    let (report, _) = crate::audit::verify_store(running.store.as_ref(), None, None, |_| {})
        .await
        .map_err(|e| DemoError::Send(format!("audit chain: {e}")))?;
    println!(
        "\naudit log: {} events, {} hash chain intact (head #{} {}…)",
        report.live,
        report.alg.as_str(),
        report.head_seq,
        &report.head_hash[..16]
    );
    Ok(())
}
