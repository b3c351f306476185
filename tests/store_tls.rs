//! TLS to PostgreSQL: the store URL's `sslmode` and `sslrootcert`, against the test
//! server (`scripts/pg-test-server.sh` starts it with a certificate for 127.0.0.1
//! from a throwaway CA, `HALLGATE_TEST_POSTGRES_CA`). The server side is asked
//! (`pg_stat_ssl`) whether the gateway's connections are encrypted.

mod common;

use common::pg;

use hallgate::audit::{Event, EventKind};
use hallgate::store::{AuditFilter, OpenMode, StoreError, StoreOptions, StoreUrl, now_ms};

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
    let (client, conn) = tokio_postgres::connect(&pg::base_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    client
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
    assert_eq!(after, before + 1);
    let conns = encrypted(&app).await;
    assert!(conns.len() >= 2, "writer and reader connections: {conns:?}");
    assert!(
        conns.iter().all(|ssl| *ssl),
        "every connection encrypted: {conns:?}"
    );
    drop(store);

    // The default (prefer) encrypts when the server offers it; disable does not.
    let app = self::app();
    let _s = open(&format!("{db}?application_name={app}"))
        .await
        .expect("prefer");
    let conns = encrypted(&app).await;
    assert!(
        !conns.is_empty() && conns.iter().all(|ssl| *ssl),
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
