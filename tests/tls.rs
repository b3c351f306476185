//! HTTPS with rustls: a node bound to its client certificate, curl as the independent
//! client, certificates reloaded without a restart, and deliveries to an HTTPS
//! destination that requires the gateway's client certificate.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{DEFAULT_ROUTES, Harness, wait_until};
use hallgate::config::{Config, ServerTls};
use hallgate::tls::{PeerCert, Reloading};

/// Development certificates for district-a and district-b under certs/dev.
fn dev_certs(dir: &Path) {
    let text = r#"
[gateway]
id = "gw-test"
listen = "127.0.0.1:0"
[nodes.district-a]
name = "a"
level = "district"
accept = { kinds = ["application"] }
[nodes.district-b]
name = "b"
level = "district"
accept = { kinds = ["application"] }
"#;
    let c = Config::parse(text, &dir.join("certs.toml")).expect("config");
    hallgate::auth::certs::dev(&c, &dir.join("certs/dev")).expect("dev certificates");
}

fn with_tls(text: String) -> String {
    text.replace(
        "shutdown_grace_seconds = 10\n",
        "shutdown_grace_seconds = 10\n\n[gateway.tls]\ncert = \"certs/dev/server.pem\"\nkey = \"certs/dev/server.key.pem\"\nclient_ca = \"certs/dev/ca.pem\"\nreload_seconds = 1\n",
    )
    .replace(
        "[nodes.district-b]\n",
        "[nodes.district-a.client_cert]\nnames = [\"district-a.nodes.hallgate.test\"]\nrequired = true\n\n[nodes.district-b]\n",
    )
}

fn curl(dir: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .current_dir(dir)
        .args([
            "-s",
            "-S",
            "--cacert",
            "certs/dev/ca.pem",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

/// POST a canonical record with curl, presenting `cert`'s development certificate
/// and naming `node` in the header, each when given.
fn post_as(
    dir: &Path,
    cert: Option<&str>,
    node: Option<&str>,
    record: &str,
    url: &str,
) -> (String, String) {
    let mut args: Vec<String> = Vec::new();
    if let Some(c) = cert {
        args.extend([
            "--cert".into(),
            format!("certs/dev/nodes/{c}.pem"),
            "--key".into(),
            format!("certs/dev/nodes/{c}.key.pem"),
        ]);
    }
    if let Some(n) = node {
        args.extend(["-H".into(), format!("x-hallgate-node: {n}")]);
    }
    args.extend([
        "-H".into(),
        "content-type: application/json".into(),
        "--data".into(),
        record.into(),
        url.into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(dir, &refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_a_client_certificate_is_served_and_without_refused() {
    let h = Harness::with_setup(DEFAULT_ROUTES, with_tls, dev_certs).await;
    assert!(h.url.starts_with("https://"), "{}", h.url);
    let dir = h.dir.path();
    let record = common::application("350205260401000700", "350205").to_string();
    let url = format!("{}/v1/records", h.url);
    // district-a named by its certificate alone: no token, no header
    let (code, body) = post_as(dir, Some("district-a"), None, &record, &url);
    assert_eq!(code, "202", "{body}");
    assert!(body.contains("\"status\":\"accepted\""), "{body}");
    wait_until(10, "the city receives it", || !h.city.accepted().is_empty()).await;

    // HTTP/2 when the client offers it (ALPN), HTTP/1.1 when it asks for that.
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        // The later -w replaces the helper's: the version, then the status.
        let (code, shown) = curl(
            dir,
            &[
                "--cert",
                "certs/dev/nodes/district-a.pem",
                "--key",
                "certs/dev/nodes/district-a.key.pem",
                flag,
                "-o",
                "/dev/null",
                "-w",
                "%{http_version}\n%{http_code}",
                &format!("{}/healthz", h.url),
            ],
        );
        assert_eq!((shown.as_str(), code.as_str()), (version, "200"), "{flag}");
    }

    // the same node without its certificate (naming itself by header): refused
    let record = common::application("350205260401000701", "350205").to_string();
    let (code, body) = post_as(dir, None, Some("district-a"), &record, &url);
    assert_eq!(code, "401", "{body}");
    assert!(
        body.contains("must connect with its TLS client certificate"),
        "{body}"
    );

    // another node's certificate claiming to be district-a: refused
    let (code, body) = post_as(dir, Some("district-b"), Some("district-a"), &record, &url);
    assert_eq!(code, "401", "{body}");
    assert!(
        body.contains("not one issued to node `district-a`"),
        "{body}"
    );
    let (code, _) = curl(dir, &[&format!("{}/v1/cases/350205260401000701", h.url)]);
    assert_eq!(code, "404", "nothing stored");

    // plain HTTP on the HTTPS port gets nothing
    let plain = Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            &h.url.replace("https://", "http://"),
            "-o",
            "/dev/null",
        ])
        .status()
        .expect("curl");
    assert!(!plain.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_a_restart() {
    let h = Harness::with_setup(DEFAULT_ROUTES, with_tls, dev_certs).await;
    let dir = h.dir.path();
    let health = format!("{}/healthz", h.url);
    let (code, _) = curl(dir, &[&health]);
    assert_eq!(code, "200");
    // a new CA and server certificate in place of the old
    std::fs::rename(dir.join("certs/dev"), dir.join("certs/old")).unwrap();
    dev_certs(dir);
    let mut served_new = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if curl(dir, &[&health]).0 == "200" {
            served_new = true;
            break;
        }
    }
    assert!(served_new, "the new certificate is served within 10 s");
    let old = Command::new("curl")
        .current_dir(dir)
        .args([
            "-s",
            "--cacert",
            "certs/old/ca.pem",
            &health,
            "-o",
            "/dev/null",
        ])
        .status()
        .unwrap();
    assert!(!old.success(), "the old CA no longer verifies the server");
}

/// An HTTPS receiver that requires a client certificate and records who called.
async fn https_receiver(dir: &Path) -> (String, Arc<Mutex<Vec<Option<PeerCert>>>>) {
    let seen: Arc<Mutex<Vec<Option<PeerCert>>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/records",
        axum::routing::post(
            move |axum::Extension(peer): axum::Extension<Option<PeerCert>>| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(peer);
                    (axum::http::StatusCode::OK, "{\"receipt\":\"r-1\"}")
                }
            },
        ),
    );
    let tls = ServerTls {
        cert: "certs/dev/server.pem".into(),
        key: "certs/dev/server.key.pem".into(),
        client_ca: Some("certs/dev/ca.pem".into()),
        require_client_cert: true,
        reload_seconds: 5,
    };
    let reloading = Reloading::new(&tls, dir).expect("receiver TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    hallgate::tls::serve(
        listener,
        app,
        reloading,
        tokio_util::sync::CancellationToken::new(),
    );
    (format!("https://localhost:{}/records", addr.port()), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_present_the_gateways_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    dev_certs(dir.path());
    let (url, seen) = https_receiver(dir.path()).await;
    // The gateway (plain HTTP inbound here) delivers to the city over HTTPS with the
    // development CA and district-b's certificate as its client identity.
    fn edit(text: String) -> String {
        text
    }
    let h = Harness::with_setup(DEFAULT_ROUTES, edit, |_| {}).await;
    let cert_dir = dir.path().display().to_string();
    let mut config = h.config();
    let city = config.nodes.get_mut("city").unwrap().get_mut();
    let d = city.destination.as_mut().unwrap();
    d.url = Some(toml::Spanned::new(0..0, url.clone()));
    d.tls = Some(hallgate::config::ClientTls {
        ca: Some(format!("{cert_dir}/certs/dev/ca.pem")),
        cert: Some(format!("{cert_dir}/certs/dev/nodes/district-b.pem")),
        key: Some(format!("{cert_dir}/certs/dev/nodes/district-b.key.pem")),
    });
    let mut h = h;
    h.stop_gateway().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = hallgate::gateway::start(config, Some(listener))
        .await
        .expect("starts");
    h.url = running.url();
    h.gateway = Some(running);
    let (status, _, body) = h
        .post(
            "district-a",
            &common::application("350205260401000800", "350205"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    wait_until(10, "the HTTPS receiver gets the record", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let peer = seen.lock().unwrap()[0]
        .clone()
        .expect("a client certificate");
    assert!(peer.valid_for(&["district-b.nodes.hallgate.test".to_string()]));
    let d = h
        .first_delivery("/v1/deliveries?state=delivered&destination=city")
        .await;
    assert_eq!(d["state"], "delivered", "{d}");
}
