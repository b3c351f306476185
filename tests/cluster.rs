//! Scale-out: two gateway instances on one PostgreSQL database, senders spread across
//! both, one instance killed with SIGKILL mid-load. Every record that got a 202
//! reaches the receiver, in order per case, never under two different
//! Idempotency-Keys; the audit chain written by both instances verifies.

mod common;

use std::time::Duration;

use common::load::*;
use common::*;
use hallgate::receiver::{Receiver, Script};

const CASES: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_lose_nothing_and_double_nothing() {
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    city.set_script(Script {
        delay: Duration::from_millis(3),
        ..Script::default()
    });
    let idle = Receiver::start("idle", "127.0.0.1:0")
        .await
        .expect("receiver");
    let client = hallgate::tls::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut instances = Vec::new();
    let mut urls = Vec::new();
    for name in ["a", "b"] {
        let port = free_port();
        let text = config_text(
            std::path::Path::new("UNUSED"),
            &city.url(),
            &idle.url(),
            &idle.url(),
            "[[routes]]\nname = \"all\"\nto = [\"city\"]\n",
        )
        .replace("sqlite://UNUSED", &db)
        .replace("id = \"gw-test\"", &format!("id = \"gw-{name}\""))
        .replace("lease_seconds = 30", "lease_seconds = 2")
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).expect("config");
        let log = dir.path().join(format!("{name}.log"));
        let child = spawn_gateway(&config, &log);
        let url = format!("http://127.0.0.1:{port}");
        wait_healthy(&client, &url).await;
        instances.push((child, config, log));
        urls.push(url);
    }
    let (acked, mut senders) = start_senders(&client, &urls, CASES, 4);
    // Kill instance a mid-load: its senders move to b; its leases expire and b
    // takes them over.
    wait_acked(&acked, CASES * 6 / 3).await;
    instances[0].0.kill().expect("SIGKILL");
    instances[0].0.wait().expect("reaped");
    assert_all_delivered_once_in_order(&city, &mut senders, CASES, &instances[0].2).await;

    // Both instances wrote one chain; it verifies (from the command line, as an
    // auditor would, beside the running instance b).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(&instances[1].1)
        .args(["audit", "verify"])
        .output()
        .expect("audit verify");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("audit log intact"), "{text}");
    sigterm(&instances[1].0);
    assert!(instances[1].0.wait().expect("exit").success());
    city.stop();
    idle.stop();
}
