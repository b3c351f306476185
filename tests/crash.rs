//! Crash safety: the gateway binary is killed with SIGKILL while records stream in
//! and deliveries run, then restarted on the same data. Every record that got a 202
//! must reach the receiver, in order per case, never under two different
//! Idempotency-Keys.

mod common;

use std::time::Duration;

use common::load::*;
use common::*;
use hallgate::receiver::{Receiver, Script};

const CASES: usize = 60;

/// A gateway binary's config on a free port with its data in `dir`, routing
/// everything to `city` (`edit` changes the config text); its config, log and URL.
fn setup(
    dir: &std::path::Path,
    city: &Receiver,
    idle: &Receiver,
    edit: impl Fn(String) -> String,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let port = free_port();
    let text = config_text(
        &dir.join("hallgate.db"),
        &city.url(),
        &idle.url(),
        &idle.url(),
        "[[routes]]\nname = \"all\"\nto = [\"city\"]\n",
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config = dir.join("hallgate.toml");
    std::fs::write(&config, edit(text)).expect("config");
    (
        config,
        dir.join("gateway.log"),
        format!("http://127.0.0.1:{port}"),
    )
}

/// SIGKILL the gateway once `acked` reaches each of `at`, and start it again.
async fn kill_at(
    child: &mut std::process::Child,
    acked: &std::sync::atomic::AtomicUsize,
    at: &[usize],
    config: &std::path::Path,
    log: &std::path::Path,
    client: &reqwest::Client,
    url: &str,
) {
    for n in at {
        wait_acked(acked, *n).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        tokio::time::sleep(Duration::from_millis(100)).await;
        *child = spawn_gateway(config, log);
        wait_healthy(client, url).await;
    }
}

fn client() -> reqwest::Client {
    hallgate::tls::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    city.set_script(Script {
        delay: Duration::from_millis(3),
        ..Script::default()
    });
    // Province and supervision exist in the config but are routed nothing here.
    let idle = Receiver::start("idle", "127.0.0.1:0")
        .await
        .expect("receiver");
    let (config, log, url) = setup(dir.path(), &city, &idle, |t| t);
    let client = client();
    let mut child = spawn_gateway(&config, &log);
    wait_healthy(&client, &url).await;
    let (acked, mut senders) = start_senders(&client, std::slice::from_ref(&url), CASES, 4);
    let total = CASES * 6;
    let at = [total / 4, total * 3 / 5];
    kill_at(&mut child, &acked, &at, &config, &log, &client, &url).await;
    assert_all_delivered_once_in_order(&city, &mut senders, CASES, &log).await;

    // Stop the last instance cleanly (SIGTERM) and check the store it leaves.
    sigterm(&child);
    let exit = child.wait().expect("exit");
    assert!(exit.success(), "graceful exit on SIGTERM: {exit:?}");
    let store = hallgate::store::SqliteStore::open(
        &dir.path().join("hallgate.db"),
        &hallgate::store::StoreOptions::default(),
        hallgate::store::OpenMode::Serve,
    )
    .expect("reopen");
    use hallgate::store::Store;
    let pending = store
        .deliveries(hallgate::store::DeliveryFilter {
            state: Some(hallgate::store::DeliveryState::Pending),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("query");
    assert!(pending.is_empty(), "nothing left pending: {pending:?}");
    hallgate::audit::verify_store(&store, None, None, |_| {})
        .await
        .expect("audit chain intact after two SIGKILLs");
    city.stop();
    idle.stop();
}

/// The same with a batching destination (issue 19): batches in flight when the
/// gateway dies are sent again with each record's own Idempotency-Key, and the
/// receiver, which honours them, gets every record once, in order per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_redelivers_under_the_same_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    // It commits each batch, then answers late: batches it has taken are still in
    // flight, unrecorded, when the gateway dies.
    city.set_script(Script {
        delay_after: Duration::from_millis(150),
        ..Script::default()
    });
    let idle = Receiver::start("idle", "127.0.0.1:0")
        .await
        .expect("receiver");
    let (config, log, url) = setup(dir.path(), &city, &idle, |t| {
        t.replace(
            "level = \"city\"\ndestination = { ",
            "level = \"city\"\ndestination = { batch = { max_records = 20, max_wait_ms = 20 }, ",
        )
    });
    let client = client();
    let mut child = spawn_gateway(&config, &log);
    wait_healthy(&client, &url).await;
    let (acked, mut senders) = start_senders(&client, std::slice::from_ref(&url), CASES, 4);
    let total = CASES * 6;
    let at = [total / 3, total * 2 / 3];
    kill_at(&mut child, &acked, &at, &config, &log, &client, &url).await;
    assert_all_delivered_once_in_order(&city, &mut senders, CASES, &log).await;
    let batched = city
        .arrivals()
        .iter()
        .filter(|a| {
            a.headers
                .iter()
                .any(|(k, v)| k == "x-hallgate-batch" && v.parse::<usize>().unwrap_or(0) > 1)
        })
        .count();
    assert!(batched > 0, "no record arrived in a batch");
    // Batches it had taken came again after the restarts, under the same keys, and
    // were answered 409 record by record (nothing doubled: checked above).
    let repeats = city.arrivals().iter().filter(|a| a.status == 409).count();
    assert!(repeats > 0, "no batch was in flight at a kill");
    sigterm(&child);
    child.wait().expect("exit");
    city.stop();
    idle.stop();
}
