//! Readiness for systemd's `Type=notify` (packaging/hallgate.service): the gateway
//! binary, started with `NOTIFY_SOCKET` pointing at a datagram socket, says
//! `READY=1` once it answers on its port, and `STOPPING=1` when SIGTERM stops it.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::load::{free_port, wait_healthy};
use common::*;
use hallgate::receiver::Receiver;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start("city", "127.0.0.1:0").await.unwrap();
    let port = free_port();
    let text = config_text(
        &dir.path().join("hallgate.db"),
        &receiver.url(),
        &receiver.url(),
        &receiver.url(),
        "[[routes]]\nname = \"r\"\nto = [\"city\"]\n",
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config = dir.path().join("hallgate.toml");
    std::fs::write(&config, text).unwrap();
    let socket = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = tokio::task::spawn_blocking({
        let sock = sock.try_clone().unwrap();
        move || recv(&sock)
    })
    .await
    .unwrap();
    assert!(ready.starts_with("READY=1"), "{ready}");
    assert!(ready.contains(&format!("127.0.0.1:{port}")), "{ready}");
    // Ready means serving: the port answers at once.
    let client = hallgate::tls::http_client().build().unwrap();
    wait_healthy(&client, &format!("http://127.0.0.1:{port}")).await;

    common::load::sigterm(&child);
    let stopping = tokio::task::spawn_blocking(move || recv(&sock))
        .await
        .unwrap();
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    assert!(child.wait().unwrap().success());
}
