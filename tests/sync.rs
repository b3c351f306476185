//! Synchronisation with the provincial hall over real HTTP: a simulated hall on
//! loopback, the gateway (in process, or as a child process that is SIGKILLed), the
//! `hallgate` command line for reconciliation, pause/resume and the catalogue.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::load::{free_port, spawn_gateway, wait_healthy};
use hallgate::receiver::Receiver;
use hallgate::receiver::hall::{Hall, ITEMS, sample_case};
use serde_json::{Value, json};

/// A config with a sender `district-a` (refuses records for items not in force in the
/// catalogue), `district-f` (flags them), a city platform and the provincial hall,
/// whose list API is pulled with a timestamp cursor.
fn config(dir: &Path, listen: &str, city: &str, hall: &Hall, page_size: usize) -> String {
    let nat = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/nat/application.toml");
    let base = hall.base();
    format!(
        r#"
[gateway]
id = "gw-sync"
listen = "{listen}"
store = "sqlite://{store}"
trust_node_header = true
shutdown_grace_seconds = 5

[limits]
max_body_bytes = 8388608
max_records_per_body = 1000

[delivery]
base_backoff_ms = 40
max_backoff_ms = 400
poll_ms = 50

[nodes.district-a]
name = "海沧区"
level = "district"
region = "350205"
catalogue = "refuse"
mappings = ["{nat}"]
accept = {{ kinds = ["application"], regions = ["350205"] }}

[nodes.district-f]
name = "思明区"
level = "district"
region = "350203"
catalogue = "flag"
mappings = ["{nat}"]
accept = {{ kinds = ["application"], regions = ["350205"] }}

[nodes.audit-office]
name = "审计"
level = "department"
roles = ["auditor"]

[nodes.city]
name = "市级平台"
level = "city"
destination = {{ url = "{city}", timeout_ms = 5000, concurrency = 8 }}

[nodes.province-hall]
name = "省网上办事大厅"
level = "province"
region = "350000"
mappings = ["{nat}"]
accept = {{ kinds = ["application"], regions = ["35"] }}
catalogue = "refuse"
destination = {{ url = "{base}/records", timeout_ms = 5000, concurrency = 4 }}

[nodes.province-hall.sync]
pull_url = "{base}/api/cases"
cursor = "timestamp"
start = "2026-01-01T00:00:00+08:00"
interval_seconds = 1
page_size = {page_size}
overlap_seconds = 300
window_seconds = 31536000
holdings_url = "{base}/api/holdings"
count_url = "{base}/api/holdings/count"
catalogue_url = "{base}/api/items"
catalogue_interval_seconds = 1

[catalogue]
source = "province-hall"

[[routes]]
name = "all-to-city"
to = ["city"]

[[routes]]
name = "applications-to-the-province"
kinds = ["application"]
to = ["province-hall"]
"#,
        store = dir.join("hallgate.db").display()
    )
}

async fn hall() -> Hall {
    let hall = Hall::start("province-hall", "127.0.0.1:0")
        .await
        .expect("hall");
    let set = hallgate::mapping::MappingSet::new(vec![std::sync::Arc::new(
        hallgate::mapping::Mapping::load(
            Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/mappings/nat/application.toml"
            )),
            &hallgate::mapping::Disk,
        )
        .expect("nat mapping"),
    )]);
    hall.set_mappings(set);
    hall
}

/// A loopback city platform, a simulated hall holding cases 1..=`cases`, and the
/// config written in a fresh folder (the gateway is not started yet).
struct Setup {
    dir: tempfile::TempDir,
    city: Receiver,
    hall: Hall,
    path: std::path::PathBuf,
}

async fn setup(
    listen: &str,
    cases: u64,
    page_size: usize,
    edit: impl Fn(String) -> String,
) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0").await.expect("city");
    let hall = hall().await;
    hall.add_cases((1..=cases).map(|i| sample_case(i, i as usize)).collect());
    let path = dir.path().join("hallgate.toml");
    let text = edit(config(dir.path(), listen, &city.url(), &hall, page_size));
    std::fs::write(&path, text).expect("config");
    Setup {
        dir,
        city,
        hall,
        path,
    }
}

/// The gateway, in process, on the setup's config.
async fn start(path: &Path) -> hallgate::gateway::Running {
    hallgate::gateway::start(hallgate::config::Config::load(path).expect("config"), None)
        .await
        .expect("gateway")
}

fn case_no(i: u64) -> String {
    sample_case(i, 0)["ProjectNo"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// How many times each case reached the receiver (2xx answers only).
fn arrivals_per_case(r: &Receiver) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in r.accepted() {
        *out.entry(a.case_no).or_insert(0) += 1;
    }
    out
}

/// GET as the auditor (reads everything, including the audit log).
async fn get(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .header("x-hallgate-node", "audit-office")
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

async fn pulled(client: &reqwest::Client, gw: &str) -> i64 {
    get(client, &format!("{gw}/v1/sync")).await["sources"][0]["records_pulled"]
        .as_i64()
        .unwrap_or(0)
}

/// The `hallgate` binary on the test's config; returns exit code and stdout.
fn cli(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run hallgate");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

async fn wait_for(secs: u64, what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_pull_loses_nothing_and_doubles_nothing() {
    const CASES: u64 = 2000;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Setup {
        dir,
        city,
        hall,
        path,
    } = setup(&listen, CASES, 40, |t| t).await;
    let log = dir.path().join("gateway.log");
    let gw = format!("http://{listen}");
    let client = hallgate::tls::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    let mut child = spawn_gateway(&path, &log);
    wait_healthy(&client, &gw).await;
    for kill_at in [CASES as i64 / 4, CASES as i64 * 3 / 5] {
        wait_for(60, "pulls to progress", async || {
            pulled(&client, &gw).await >= kill_at
        })
        .await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let at_kill = arrivals_per_case(&city).len();
        assert!(
            at_kill < CASES as usize,
            "the kill came after the pull had finished ({at_kill} delivered)"
        );
        eprintln!("killed with {at_kill} of {CASES} cases delivered");
        child = spawn_gateway(&path, &log);
        wait_healthy(&client, &gw).await;
    }
    // Cases the hall records with its clock two minutes behind ours, after the
    // cursor has passed that time: the overlap window still finds them.
    hall.set_skew_ms(-120_000);
    hall.add_cases(
        (CASES + 1..=CASES + 50)
            .map(|i| sample_case(i, i as usize))
            .collect(),
    );
    let total = (CASES + 50) as usize;
    wait_for(120, "every case at the city platform", async || {
        arrivals_per_case(&city).len() >= total
    })
    .await;
    // Let a few more pull rounds run over the overlap window: nothing more arrives.
    let pulls = hall.pulls();
    wait_for(30, "more pull rounds", async || hall.pulls() >= pulls + 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_case = arrivals_per_case(&city);
    let twice: Vec<_> = per_case.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for i in 1..=CASES + 50 {
        assert!(per_case.contains_key(&case_no(i)), "case {i} missing");
    }
    assert_eq!(per_case.len(), total);
    let status = get(&client, &format!("{gw}/v1/sync")).await;
    let source = &status["sources"][0];
    assert_eq!(source["records_pulled"].as_i64(), Some(total as i64));
    assert_eq!(source["last_error"], Value::Null);
    assert!(source["lag_seconds"].as_f64().is_some_and(|l| l < 60.0));
    let metrics = client
        .get(format!("{gw}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("hallgate_sync_records_pulled{source=\"province-hall\"}"),
        "{metrics}"
    );
    child.kill().expect("stop");
    child.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_what_one_side_lacks_and_requeue_repairs_it() {
    let Setup {
        dir,
        city,
        hall,
        path,
    } = setup("127.0.0.1:0", 5, 100, |t| t).await;
    let running = start(&path).await;
    let gw = running.url();
    let client = hallgate::tls::http_client().build().expect("client");
    // Four applications from the district, routed to the city and the hall.
    for i in 101..=104 {
        let mut case = sample_case(i, 0);
        case["RegionCode"] = json!("350205");
        let resp = client
            .post(format!("{gw}/v1/records"))
            .header("x-hallgate-node", "district-a")
            .header("content-type", "application/json")
            .body(case.to_string())
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 202);
    }
    wait_for(30, "pulls and deliveries", async || {
        hall.receiver.accepted().len() == 4 && arrivals_per_case(&city).len() == 9
    })
    .await;
    let today = hallgate::time::today();
    let reconcile = |extra: &'static [&'static str]| {
        let mut args = vec![
            "sync",
            "reconcile",
            "--node",
            "province-hall",
            "--from",
            &today,
        ];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        let path = path.clone();
        move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&path, &a)
        }
    };
    let (code, out) = reconcile(&[])();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ours: 9   theirs: 9"), "{out}");
    assert!(out.contains("clean"), "{out}");

    // The hall loses a case it was sent.
    let lost = case_no(102);
    assert_eq!(hall.receiver.forget_case(&lost), 1);
    let csv_path = dir.path().join("diff.csv");
    let csv_arg = csv_path.display().to_string();
    let (code, out) = cli(
        &path,
        &[
            "sync",
            "reconcile",
            "--node",
            "province-hall",
            "--from",
            &today,
            "--csv",
            &csv_arg,
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing on their side: 1"), "{out}");
    assert!(out.contains(&lost), "{out}");
    let csv = std::fs::read_to_string(&csv_path).expect("csv");
    assert!(csv.starts_with("problem,kind,case_no"), "{csv}");
    assert!(
        csv.contains(&format!("missing_theirs,application,{lost}")),
        "{csv}"
    );

    // --requeue sends it again, with the same Idempotency-Key.
    let (code, out) = reconcile(&["--requeue"])();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("requeued 1 deliveries"), "{out}");
    wait_for(30, "the lost case to arrive again", async || {
        hall.receiver.accepted().iter().any(|a| a.case_no == lost)
    })
    .await;
    let (code, out) = reconcile(&[])();
    assert_eq!(code, 0, "after requeue: {out}");

    // A case the hall holds that we never pulled (the source is paused).
    let (code, out) = cli(&path, &["sync", "pause", "--node", "province-hall"]);
    assert_eq!(code, 0, "{out}");
    let status = get(&client, &format!("{gw}/v1/sync")).await;
    assert_eq!(status["sources"][0]["paused"], json!(true));
    hall.add_cases(vec![sample_case(6, 1)]);
    let (code, out) = reconcile(&[])();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing on ours: 1"), "{out}");
    assert!(out.contains(&case_no(6)), "{out}");
    let (code, out) = cli(&path, &["sync", "resume", "--node", "province-hall"]);
    assert_eq!(code, 0, "{out}");
    wait_for(30, "the paused case to be pulled", async || {
        arrivals_per_case(&city).contains_key(&case_no(6))
    })
    .await;
    let (code, out) = reconcile(&[])();
    assert_eq!(code, 0, "after resume: {out}");

    // Rewinding re-reads everything; nothing is stored or delivered twice.
    let (code, out) = cli(
        &path,
        &[
            "sync",
            "rewind",
            "--node",
            "province-hall",
            "--to",
            "2026-01-01",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let pulls = hall.pulls();
    wait_for(30, "pulls after the rewind", async || {
        hall.pulls() >= pulls + 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(arrivals_per_case(&city).values().all(|n| *n == 1));
    let (code, out) = cli(&path, &["sync", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("6 records in"), "{out}");

    // The hall's list in its own format (national JSON), read through its mapping:
    // the same answer, and a lost case is found the same way.
    hall.set_native_holdings(true);
    let (code, out) = reconcile(&[])();
    assert_eq!(code, 0, "native list: {out}");
    assert!(out.contains("theirs: 10"), "{out}");
    let lost = case_no(103);
    assert_eq!(hall.receiver.forget_case(&lost), 1);
    let (code, out) = reconcile(&["--requeue"])();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("missing on their side: 1") && out.contains(&lost),
        "{out}"
    );
    wait_for(30, "the lost case to arrive again", async || {
        hall.receiver.accepted().iter().any(|a| a.case_no == lost)
    })
    .await;
    let (code, out) = reconcile(&[])();
    assert_eq!(code, 0, "native list after requeue: {out}");
    hall.set_native_holdings(false);

    // A backfill re-sends the day's four deliveries to the hall under their own
    // Idempotency-Keys: the hall answers 409, and it holds nothing twice.
    let accepted = hall.receiver.accepted().len();
    let (code, out) = cli(
        &path,
        &[
            "sync",
            "backfill",
            "--node",
            "province-hall",
            "--from",
            &today,
            "--wait-seconds",
            "30",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("4 deliveries selected, 4 requeued, 4 delivered"),
        "{out}"
    );
    assert_eq!(
        hall.receiver.accepted().len(),
        accepted,
        "repeats are 409, not new"
    );
    assert!(
        hall.receiver
            .arrivals()
            .iter()
            .filter(|a| a.status == 409)
            .count()
            >= 4,
        "the hall saw the repeats"
    );
    let (code, out) = cli(
        &path,
        &["sync", "backfill", "--node", "district-a", "--from", &today],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a destination"), "{out}");

    // Every reconciliation, requeue and control is in the audit log.
    let audit = get(&client, &format!("{gw}/v1/audit?event=reconciled")).await;
    assert_eq!(audit["events"].as_array().map(Vec::len), Some(9), "{audit}");
    for event in ["requeued", "sync_controlled", "pulled"] {
        let a = get(&client, &format!("{gw}/v1/audit?event={event}")).await;
        assert!(
            a["events"].as_array().is_some_and(|e| !e.is_empty()),
            "{event}: {a}"
        );
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_item_is_refused_or_flagged_as_configured() {
    let Setup {
        dir,
        city,
        hall,
        path,
    } = setup("127.0.0.1:0", 0, 100, |t| t).await;
    let running = start(&path).await;
    let gw = running.url();
    let client = hallgate::tls::http_client().build().expect("client");
    wait_for(30, "the catalogue", async || {
        get(&client, &format!("{gw}/v1/sync")).await["catalogue"]["active"] == json!(ITEMS.len())
    })
    .await;
    // The hall has no case yet: its empty pages are not errors, and move the cursor.
    let pulls = hall.pulls();
    wait_for(30, "pulls of empty pages", async || {
        hall.pulls() >= pulls + 2
    })
    .await;
    let source = get(&client, &format!("{gw}/v1/sync")).await["sources"][0].clone();
    assert_eq!(source["last_error"], Value::Null, "{source}");
    assert!(source["pages"].as_i64().is_some_and(|p| p >= 1), "{source}");
    let post = async |node: &str, i: u64, item: usize| {
        let mut case = sample_case(i, item);
        case["RegionCode"] = json!("350205");
        let resp = client
            .post(format!("{gw}/v1/records"))
            .header("x-hallgate-node", node)
            .header("content-type", "application/json")
            .body(case.to_string())
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        let body = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    let (status, body) = post("district-a", 1, 0).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["records"][0].get("flags"), None);

    // The province withdraws the item; the next refresh brings it in.
    assert!(hall.withdraw(ITEMS[0].0));
    wait_for(30, "the withdrawal", async || {
        get(&client, &format!("{gw}/v1/sync")).await["catalogue"]["withdrawn"] == json!(1)
    })
    .await;
    let (status, body) = post("district-a", 2, 0).await;
    assert_eq!(status, 422, "{body}");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["field"], "item_code");
    assert_eq!(detail["rule"], "item_withdrawn");
    let (code, _) = (
        client
            .get(format!("{gw}/v1/cases/{}", case_no(2)))
            .send()
            .await
            .expect("get")
            .status()
            .as_u16(),
        (),
    );
    assert_eq!(code, 404, "nothing of a refused record is stored");

    let (status, body) = post("district-f", 3, 0).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["records"][0]["flags"], json!(["item_withdrawn"]));
    let case = get(&client, &format!("{gw}/v1/cases/{}", case_no(3))).await;
    assert_eq!(
        case["records"][0]["flags"],
        json!(["item_withdrawn"]),
        "{case}"
    );
    let flagged = get(&client, &format!("{gw}/v1/audit?event=flagged")).await;
    assert_eq!(
        flagged["events"][0]["case_no"],
        json!(case_no(3)),
        "{flagged}"
    );

    // An item code the catalogue never held.
    let mut unknown = sample_case(4, 0);
    unknown["TaskCode"] = json!("11350000000000000X99999999999999");
    unknown["RegionCode"] = json!("350205");
    let resp = client
        .post(format!("{gw}/v1/records"))
        .header("x-hallgate-node", "district-a")
        .header("content-type", "application/json")
        .body(unknown.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    assert_eq!(body["error"]["details"][0]["rule"], "item_unknown");

    // A pulled case for the withdrawn item is refused too (the hall's node refuses),
    // and the source goes on past it.
    hall.add_cases(vec![sample_case(5, 0), sample_case(6, 1)]);
    wait_for(30, "the valid pulled case", async || {
        arrivals_per_case(&city).contains_key(&case_no(6))
    })
    .await;
    assert!(!arrivals_per_case(&city).contains_key(&case_no(5)));
    let pulled = get(&client, &format!("{gw}/v1/audit?event=pulled")).await;
    let reasons = pulled["events"].to_string();
    assert!(reasons.contains("item_withdrawn"), "{pulled}");

    // The district's own catalogue against the province's.
    let mut local = hall.items();
    // The district still offers the item the province withdrew.
    local[0].status = "active".into();
    local[1].item_name = "建设工程规划许可".into();
    local.push(hallgate::store::CatalogueItem {
        item_code: "LOCAL-ONLY-1".into(),
        ..local[2].clone()
    });
    let file = dir.path().join("local-items.json");
    std::fs::write(&file, serde_json::to_vec(&local).expect("json")).expect("write");
    let (code, out) = cli(
        &path,
        &[
            "catalogue",
            "diff",
            "--node",
            "district-a",
            "--file",
            &file.display().to_string(),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("name_differs"), "{out}");
    assert!(out.contains("withdrawn_at_province"), "{out}");
    assert!(
        out.contains("LOCAL-ONLY-1") && out.contains("missing_at_province"),
        "{out}"
    );
    assert!(out.contains("3 differences"), "{out}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_pull_each_case_once() {
    const CASES: u64 = 600;
    let db = common::pg::fresh_database().await;
    let Setup {
        dir: _dir,
        city,
        hall,
        path,
    } = setup("127.0.0.1:0", CASES, 25, |t| {
        let (head, tail) = t.split_once("store = \"sqlite://").expect("store line");
        let rest = tail.split_once('\n').map(|(_, r)| r).unwrap_or_default();
        format!("{head}store = \"{db}\"\n{rest}")
    })
    .await;
    let a = start(&path).await;
    let b = start(&path).await;
    wait_for(120, "every case at the city platform", async || {
        arrivals_per_case(&city).len() >= CASES as usize
    })
    .await;
    // A few more rounds from both instances: nothing arrives twice.
    let pulls = hall.pulls();
    wait_for(30, "more pull rounds", async || hall.pulls() >= pulls + 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_case = arrivals_per_case(&city);
    assert_eq!(per_case.len(), CASES as usize);
    assert!(per_case.values().all(|n| *n == 1), "a case arrived twice");
    let client = hallgate::tls::http_client().build().expect("client");
    let status = get(&client, &format!("{}/v1/sync", b.url())).await;
    assert_eq!(
        status["sources"][0]["records_pulled"].as_i64(),
        Some(CASES as i64),
        "{status}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_list_api_is_retried_and_shown_until_it_recovers() {
    let Setup {
        dir: _dir,
        city,
        hall,
        path,
    } = setup("127.0.0.1:0", 3, 100, |t| t).await;
    hall.fail_pulls(2);
    let running = start(&path).await;
    let client = hallgate::tls::http_client().build().expect("client");
    let url = format!("{}/v1/sync", running.url());
    wait_for(30, "the failure to show", async || {
        get(&client, &url).await["sources"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503"))
    })
    .await;
    wait_for(30, "recovery", async || {
        arrivals_per_case(&city).len() == 3
            && get(&client, &url).await["sources"][0]["last_error"].is_null()
    })
    .await;
    // A node may not read the sync status; the refusal is audited.
    let resp = client
        .get(&url)
        .header("x-hallgate-node", "district-a")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 403);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_and_token_cursors_pull_everything_once() {
    for (cursor, first, extra) in [
        ("sequence", "0", "cursor_field = \"ext.seq\"\n"),
        ("token", "", ""),
    ] {
        let Setup {
            dir: _dir,
            city,
            hall,
            path,
        } = setup("127.0.0.1:0", 250, 40, |t| {
            let t = t.replace(
                "cursor = \"timestamp\"\nstart = \"2026-01-01T00:00:00+08:00\"\n",
                &format!("cursor = \"{cursor}\"\nstart = \"{first}\"\n{extra}"),
            );
            assert!(t.contains(&format!("cursor = \"{cursor}\"")));
            t
        })
        .await;
        let running = start(&path).await;
        wait_for(60, "the first 250 cases", async || {
            arrivals_per_case(&city).len() == 250
        })
        .await;
        hall.add_cases((251..=300).map(|i| sample_case(i, i as usize)).collect());
        wait_for(60, "the next 50", async || {
            arrivals_per_case(&city).len() == 300
        })
        .await;
        let client = hallgate::tls::http_client().build().expect("client");
        let status = get(&client, &format!("{}/v1/sync", running.url())).await;
        let shown = status["sources"][0]["cursor"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // Caught up: the next pages are empty, which is no error.
        let pulls = hall.pulls();
        wait_for(30, "pulls of empty pages", async || {
            hall.pulls() >= pulls + 2
        })
        .await;
        let status = get(&client, &format!("{}/v1/sync", running.url())).await;
        assert_eq!(
            status["sources"][0]["last_error"],
            Value::Null,
            "{cursor}: {status}"
        );
        assert!(
            shown.contains("300"),
            "{cursor}: the cursor is the last sequence: {status}"
        );
        // Rewound to the start, everything is read again and nothing delivered twice.
        let (code, out) = cli(
            &path,
            &[
                "sync",
                "rewind",
                "--node",
                "province-hall",
                "--to",
                if first.is_empty() { "0" } else { first },
            ],
        );
        assert_eq!(code, 0, "{out}");
        let pulls = hall.pulls();
        wait_for(30, "the pages read again", async || {
            hall.pulls() >= pulls + 8
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let per_case = arrivals_per_case(&city);
        assert_eq!(per_case.len(), 300, "{cursor}");
        assert!(
            per_case.values().all(|n| *n == 1),
            "{cursor}: a case arrived twice"
        );
        running.shutdown().await;
    }
}

/// Back-pressure reaches the pull: while the city platform's backlog is at its
/// `max_backlog`, the provincial hall is not read further; once it drains, the pull
/// goes on and every case arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_destination_pauses_the_pull_that_feeds_it() {
    let Setup {
        dir: _dir,
        city,
        hall: _hall,
        path,
    } = setup("127.0.0.1:0", 200, 5, |t| {
        t.replace(
            "level = \"city\"\ndestination = { ",
            "level = \"city\"\ndestination = { max_backlog = { records = 5 }, ",
        )
        // The city platform is down for a while: its deliveries must not run out of
        // attempts meanwhile.
        .replace(
            "poll_ms = 50\n",
            "poll_ms = 50\nbacklog_poll_ms = 50\nmax_attempts = 100000\n",
        )
    })
    .await;
    city.set_script(hallgate::receiver::Script {
        fail_first: 1_000_000,
        ..Default::default()
    });
    let running = start(&path).await;
    let client = hallgate::tls::http_client().build().expect("client");
    let gw = running.url();
    wait_for(30, "the pull to start", async || {
        pulled(&client, &gw).await >= 5
    })
    .await;
    // Paused: two more intervals of the source pull nothing more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let paused_at = pulled(&client, &gw).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(pulled(&client, &gw).await, paused_at, "the pull went on");
    assert!(paused_at < 200, "everything was pulled: {paused_at}");
    // The city platform is back: the pull resumes and finishes.
    city.set_script(hallgate::receiver::Script::default());
    wait_for(60, "every case delivered", async || {
        arrivals_per_case(&city).len() == 200
    })
    .await;
    assert!(arrivals_per_case(&city).values().all(|n| *n == 1));
    running.shutdown().await;
}
