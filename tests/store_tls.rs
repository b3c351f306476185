//! TLS to PostgreSQL: the store URL's `sslmode` and `sslrootcert`, against the test
//! server (`scripts/pg-test-server.sh` starts it with a certificate for 127.0.0.1
//! from a throwaway CA, `HALLGATE_TEST_POSTGRES_CA`). The server side is asked
//! (`pg_stat_ssl`) whether the gateway's connections are encrypted.

mod common;

use common::pg;

use hallgate::event::{Event, EventKind};
use hallgate::store::{AuditFilter, OpenMode, StoreError, StoreOptions, StoreUrl};
use hallgate::time::now_ms;

fn ca() -> String {
    std::env::var("HALLGATE_TEST_POSTGRES_CA").unwrap_or_else(|_| {
        panic!("HALLGATE_TEST_POSTGRES_CA is not set: run the tests with `bash scripts/test.sh`")
    })
}

async fn open(url: &str) -> Result<std::sync::Arc<dyn hallgate::store::Store>, StoreError> {
    let url = StoreUrl::parse(url)?;
    hallgate::store::open(&url, &StoreOptions::default(), OpenMode::Serve).await
}

/// Whether each server connection named `app` is encrypted, asked over a plain one.
async fn encrypted(app: &str) -> Vec<bool> {
    pg::admin()
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .expect("pg_stat_ssl")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// An audit event written and counted back.
async fn write_and_read(store: &dyn hallgate::store::Store, what: &str) {
    let before = store
        .audit_count(AuditFilter::default())
        .await
        .expect("read");
    store
        .audit(Event::new(now_ms(), EventKind::Rejected))
        .await
        .expect("write");
    let after = store
        .audit_count(AuditFilter::default())
        .await
        .expect("read");
    assert_eq!(after, before + 1, "{what}");
}

fn app() -> String {
    format!("hg-tls-{}", uuid::Uuid::now_v7().simple())
}

/// A CA nobody signed the server's certificate with.
fn other_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "someone else's CA");
    let cert = params.self_signed(&key).expect("self-signed");
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, cert.pem()).expect("write CA");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_encrypted_and_the_store_works() {
    let db = pg::fresh_database().await;
    let app = app();
    let store = open(&format!(
        "{db}?sslmode=verify-full&sslrootcert={}&application_name={app}",
        ca()
    ))
    .await
    .expect("open with verify-full");
    // The store is usable over it: migrations ran; a write and a read go through.
    write_and_read(store.as_ref(), "verify-full").await;
    let conns = encrypted(&app).await;
    assert!(conns.len() >= 2, "writer and reader connections: {conns:?}");
    assert!(
        conns.iter().all(|ssl| *ssl),
        "every connection encrypted: {conns:?}"
    );
    drop(store);

    // The default (prefer) encrypts when the server offers it; disable does not.
    // Without application_name in the URL, the connections take the one the options
    // give (the config gives `hallgate <gateway id>`).
    let app = self::app();
    let options = StoreOptions {
        application_name: app.clone(),
        ..StoreOptions::default()
    };
    let _s = hallgate::store::open(
        &StoreUrl::parse(&db).expect("url"),
        &options,
        OpenMode::Serve,
    )
    .await
    .expect("prefer");
    let conns = encrypted(&app).await;
    assert!(
        conns.len() >= 2 && conns.iter().all(|ssl| *ssl),
        "prefer: {conns:?}"
    );
    let app = self::app();
    let _s = open(&format!("{db}?sslmode=disable&application_name={app}"))
        .await
        .expect("disable");
    let conns = encrypted(&app).await;
    assert!(
        !conns.is_empty() && conns.iter().all(|ssl| !*ssl),
        "disable: {conns:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let other = other_ca(dir.path());
    for mode in ["verify-full", "verify-ca", "require"] {
        let err = match open(&format!(
            "{db}?sslmode={mode}&sslrootcert={}",
            other.display()
        ))
        .await
        {
            Ok(_) => panic!("{mode} with the wrong CA connected"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("sslmode=") && err.contains("UnknownIssuer"),
            "{mode}: the error says the issuer is unknown: {err}"
        );
    }
    // Without a CA, require encrypts without checking the certificate (as libpq).
    let app = app();
    let _s = open(&format!("{db}?sslmode=require&application_name={app}"))
        .await
        .expect("require without a CA");
    let conns = encrypted(&app).await;
    assert!(
        !conns.is_empty() && conns.iter().all(|ssl| *ssl),
        "require: {conns:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_compares_the_host_name_and_verify_ca_does_not() {
    // The certificate names 127.0.0.1 only; `localhost` reaches the same server.
    let db = pg::fresh_database().await.replace("127.0.0.1", "localhost");
    let err = match open(&format!("{db}?sslmode=verify-full&sslrootcert={}", ca())).await {
        Ok(_) => panic!("verify-full accepted a certificate for another name"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("not valid for name \"localhost\""), "{err}");
    let app = app();
    let _s = open(&format!(
        "{db}?sslmode=verify-ca&sslrootcert={}&application_name={app}",
        ca()
    ))
    .await
    .expect("verify-ca takes the chain without the name");
    assert!(encrypted(&app).await.iter().all(|ssl| *ssl));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_connects_without_tls_whatever_the_default() {
    let dir = std::env::var("HALLGATE_TEST_POSTGRES_SOCKET")
        .expect("HALLGATE_TEST_POSTGRES_SOCKET: run the tests with `bash scripts/test.sh`");
    let db = pg::fresh_database().await;
    let name = db.rsplit('/').next().expect("database name");
    let port = pg::base_url()
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next().map(str::to_string))
        .expect("port");
    let socket = percent_encoding::utf8_percent_encode(&dir, percent_encoding::NON_ALPHANUMERIC);
    for query in ["", "?sslmode=disable", "?sslmode=prefer"] {
        let url = format!("postgres://hallgate@{socket}:{port}/{name}{query}");
        let store = open(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        write_and_read(store.as_ref(), &url).await;
    }
    // TLS cannot be had over a socket: require says so.
    let url = format!("postgres://hallgate@{socket}:{port}/{name}?sslmode=require");
    let err = match open(&url).await {
        Ok(_) => panic!("require over a Unix socket connected"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("does not support TLS"), "{err}");
}

#[tokio::test]
async fn tls_settings_that_cannot_work_are_refused_before_connecting() {
    let db = "postgres://hallgate@127.0.0.1:1/nothing";
    for (url, says) in [
        (format!("{db}?sslmode=verify-full"), "needs sslrootcert"),
        (format!("{db}?sslmode=verify"), "`verify` is not one of"),
        (
            format!("{db}?sslmode=require&sslrootcert=/no/such/ca.pem"),
            "/no/such/ca.pem",
        ),
        (format!("{db}?sslcert=client.pem"), "not supported"),
        (
            format!("{db}?sslmode=require&sslrootcert="),
            "sslrootcert is empty",
        ),
        (
            format!("{db}?channel_binding=require"),
            "channel_binding=require is not supported",
        ),
    ] {
        match open(&url).await {
            Ok(_) => panic!("{url} opened"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.starts_with("PostgreSQL TLS: "), "{url}: {e}");
                assert!(e.contains(says), "{url}: {e}");
            }
        }
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// The shipped config and what it reads, in a folder, with `store` replaced.
fn config_with_store(dir: &std::path::Path, store: &str) -> std::path::PathBuf {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_tree(&repo.join("mappings"), &dir.join("mappings"));
    copy_tree(&repo.join("examples"), &dir.join("examples"));
    let text = std::fs::read_to_string(repo.join("hallgate.toml")).expect("config");
    let line = text
        .lines()
        .find(|l| l.starts_with("store = "))
        .expect("a store line");
    let path = dir.join("hallgate.toml");
    std::fs::write(
        &path,
        text.replacen(line, &format!("store = \"{store}\""), 1),
    )
    .expect("write config");
    // The shipped config authenticates its senders: their key pairs, made as a
    // newcomer makes them.
    let (code, out) = hallgate(&path, &["keys", "nodes"]);
    assert_eq!(code, 0, "{out}");
    path
}

fn hallgate(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run hallgate");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_checks_tls_settings_and_says_a_failure_once() {
    let db = pg::fresh_database().await;
    // `hallgate check` refuses what `serve` would, naming the key and its line.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_store(dir.path(), &format!("{db}?sslmode=verify-full"));
    let (code, out) = hallgate(&config, &["check"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(": gateway.store: PostgreSQL TLS: sslmode=verify-full needs sslrootcert"),
        "{out}"
    );
    // A CA beside the config, named relative to it: check passes, and a tool opens
    // the store over TLS.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(ca(), dir.path().join("pg-ca.pem")).expect("copy CA");
    let config = config_with_store(
        dir.path(),
        &format!("{db}?sslmode=verify-full&sslrootcert=pg-ca.pem"),
    );
    let (code, out) = hallgate(&config, &["check"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = hallgate(&config, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    // Its connections were named after the gateway (no application_name in the URL).
    assert!(
        out.contains("store connections are encrypted (TLS)"),
        "{out}"
    );
    // The wrong CA: the handshake error, said once, with what it means.
    let other = other_ca(dir.path());
    let config = config_with_store(
        dir.path(),
        &format!("{db}?sslmode=verify-full&sslrootcert={}", other.display()),
    );
    let (code, out) = hallgate(&config, &["audit", "verify"]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(out.matches("UnknownIssuer").count(), 1, "{out}");
    assert!(
        out.contains("does not chain to a CA in sslrootcert"),
        "{out}"
    );
}
