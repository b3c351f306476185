//! Personal data encrypted at rest (`[store] encrypt`), on a real SQLite file and a
//! real PostgreSQL: after records are stored and delivered, the raw database holds no
//! ID number, name, mobile or case password in clear text, the receiver still gets
//! them, and `hallgate audit verify` still hashes every body and record. Rotation to
//! a new data key under load loses no record and every record reads back; a missing
//! or wrong key at start-up is refused.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use hallgate::config::Config;
use hallgate::receiver::Receiver;

const K1: &str = "0123456789abcdeffedcba9876543210";
const K2: &str = "fedcba98765432100123456789abcdef";
const CLEAR: [&str; 4] = ["林晓东", "350205195912280259", "18659201234", "558120"];

struct Site {
    dir: tempfile::TempDir,
    store: String,
    city: Receiver,
    other: Receiver,
}

impl Site {
    async fn new(postgres: bool) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let store = if postgres {
            pg::fresh_database().await
        } else {
            format!("sqlite://{}", dir.path().join("hallgate.db").display())
        };
        std::fs::write(dir.path().join("k1.key"), K1).unwrap();
        std::fs::write(dir.path().join("k2.key"), K2).unwrap();
        std::fs::write(dir.path().join("k1-wrong.key"), K2).unwrap();
        Site {
            dir,
            store,
            city: Receiver::start("city", "127.0.0.1:0").await.unwrap(),
            other: Receiver::start("other", "127.0.0.1:0").await.unwrap(),
        }
    }

    /// The config with `[store]` as given; written to hallgate.toml.
    fn config(&self, store_table: &str) -> PathBuf {
        let text = config_text(
            Path::new("UNUSED"),
            &self.city.url(),
            &self.other.url(),
            &self.other.url(),
            "[[routes]]\nname = \"all\"\nto = [\"city\"]\n",
        )
        .replace("sqlite://UNUSED", &self.store)
            + store_table;
        let path = self.dir.path().join("hallgate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn start(&self, store_table: &str) -> Result<hallgate::gateway::Running, String> {
        let config = Config::load(&self.config(store_table)).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        hallgate::gateway::start(config, Some(listener))
            .await
            .map_err(|e| e.to_string())
    }

    fn hallgate(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_hallgate"))
            .arg("--config")
            .arg(self.dir.path().join("hallgate.toml"))
            .args(args)
            .output()
            .unwrap()
    }
}

fn keys(list: &[&str]) -> String {
    let entries: Vec<String> = list
        .iter()
        .map(|k| {
            format!(
                "{{ id = \"{}\", secret_file = \"{k}.key\" }}",
                k.trim_end_matches("-wrong")
            )
        })
        .collect();
    format!(
        "\n[store]\nencrypt = \"sm4-gcm\"\nkeys = [{}]\n",
        entries.join(", ")
    )
}

async fn post(client: &reqwest::Client, url: &str, case_no: &str) -> u16 {
    client
        .post(format!("{url}/v1/records"))
        .header("x-hallgate-node", "district-a")
        .header("content-type", "application/json")
        .body(application(case_no, "350205").to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn case(i: usize) -> String {
    format!("350205261204{i:06}")
}

/// Every place a value could sit in clear text: the SQLite files, or PostgreSQL's
/// tables read raw.
async fn clear_text_found(site: &Site, postgres: bool) -> Vec<String> {
    let mut found = Vec::new();
    if postgres {
        let (client, conn) = tokio_postgres::connect(&site.store, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for needle in CLEAR {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM messages WHERE position(convert_to($1, 'UTF8') in body) > 0)
                          + (SELECT count(*) FROM records WHERE canonical LIKE '%' || $1 || '%')
                          + (SELECT count(*) FROM deliveries WHERE coalesce(receipt, '') || coalesce(last_error, '') LIKE '%' || $1 || '%')
                          + (SELECT count(*) FROM audit WHERE detail::text LIKE '%' || $1 || '%')",
                    &[&needle],
                )
                .await
                .unwrap();
            if row.get::<_, i64>(0) > 0 {
                found.push(needle.to_string());
            }
        }
    } else {
        for f in ["hallgate.db", "hallgate.db-wal"] {
            let bytes = std::fs::read(site.dir.path().join(f)).unwrap_or_default();
            for needle in CLEAR {
                if memchr::memmem::find(&bytes, needle.as_bytes()).is_some() {
                    found.push(format!("{needle} in {f}"));
                }
            }
        }
    }
    found
}

async fn at_rest(postgres: bool) {
    let site = Site::new(postgres).await;
    let gw = site.start(&keys(&["k1"])).await.unwrap();
    let client = hallgate::tls::http_client().build().unwrap();
    for i in 0..20 {
        assert_eq!(post(&client, &gw.url(), &case(i)).await, 202);
    }
    wait_until(20, "20 deliveries", || site.city.accepted().len() >= 20).await;
    // The receiver gets the record as it was sent: decrypted on the way out.
    let a = &site.city.accepted()[0];
    assert_eq!(a.body["applicant"]["name"], "林晓东");
    assert_eq!(a.body["contact"]["mobile"], "18659201234");
    gw.shutdown().await;

    let found = clear_text_found(&site, postgres).await;
    assert!(found.is_empty(), "personal data in clear text: {found:?}");
    let out = site.hallgate(&["audit", "verify"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("intact"), "{text}");

    // Without encryption the same records would be there in clear: the check can fail.
    let plain = Site::new(postgres).await;
    let gw = plain.start("").await.unwrap();
    assert_eq!(post(&client, &gw.url(), &case(99)).await, 202);
    gw.shutdown().await;
    assert!(!clear_text_found(&plain, postgres).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_holds_no_personal_data_in_clear() {
    at_rest(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_holds_no_personal_data_in_clear() {
    at_rest(true).await;
}

async fn rotation(postgres: bool) {
    let site = Site::new(postgres).await;
    let client = hallgate::tls::http_client().build().unwrap();
    let gw = site.start(&keys(&["k1"])).await.unwrap();
    for i in 0..40 {
        assert_eq!(post(&client, &gw.url(), &case(i)).await, 202);
    }
    gw.shutdown().await;

    // The new key first, the old one still readable; intake goes on while the
    // rotation runs.
    let gw = site.start(&keys(&["k2", "k1"])).await.unwrap();
    let url = gw.url();
    let acked = Arc::new(AtomicUsize::new(40));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acked, stop, client) = (acked.clone(), stop.clone(), client.clone());
        tokio::spawn(async move {
            let mut i = 1000;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(
                    post(&client, &url, &case(i)).await,
                    202,
                    "intake during rotation"
                );
                acked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let dir = site.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hallgate"))
            .arg("--config")
            .arg(dir.join("hallgate.toml"))
            .args(["keys", "rotate-data"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("data key `k1` holds no value any more"),
        "{text}"
    );
    let total = acked.load(Ordering::Relaxed);
    wait_until(30, "every record delivered", || {
        site.city.accepted().len() >= total
    })
    .await;
    gw.shutdown().await;

    // The old key is gone from the config: the store opens, and every body and
    // record decrypts and hashes as accepted.
    let gw = site.start(&keys(&["k2"])).await.unwrap();
    gw.shutdown().await;
    let out = site.hallgate(&["audit", "verify"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("intact"), "{text}");
    assert!(
        text.contains(&format!("{total} body(ies) and {total} record(s)")),
        "all {total} bodies and records decrypt and hash: {text}"
    );
    let mut delivered: Vec<String> = site
        .city
        .accepted()
        .iter()
        .map(|a| a.case_no.clone())
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), total, "no record lost");
    assert_eq!(site.city.accepted().len(), total, "no record doubled");
    assert!(clear_text_found(&site, postgres).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rotation_under_load_loses_nothing() {
    rotation(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rotation_under_load_loses_nothing() {
    rotation(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_data_key_is_refused_at_start_up() {
    let site = Site::new(false).await;
    let gw = site.start(&keys(&["k1"])).await.unwrap();
    assert_eq!(
        post(
            &hallgate::tls::http_client().build().unwrap(),
            &gw.url(),
            &case(1)
        )
        .await,
        202
    );
    gw.shutdown().await;

    let e = site.start("").await.err().unwrap();
    assert!(e.contains("sealed with data key `k1`"), "{e}");
    let e = site.start(&keys(&["k1-wrong"])).await.err().unwrap();
    assert!(e.contains("is not the key"), "{e}");
    let e = site.start(&keys(&["k2"])).await.err().unwrap();
    assert!(e.contains("does not list"), "{e}");
    let e = site
        .start("\n[store]\nencrypt = \"sm4-gcm\"\nkeys = [{ id = \"k1\", secret_env = \"HALLGATE_TEST_UNSET_KEY\" }]\n")
        .await
        .err()
        .unwrap();
    assert!(e.contains("HALLGATE_TEST_UNSET_KEY"), "{e}");
    // `hallgate check` says the same before anything starts.
    site.config("\n[store]\nencrypt = \"sm4-gcm\"\nkeys = [{ id = \"k1\", secret_env = \"HALLGATE_TEST_UNSET_KEY\" }]\n");
    let out = site.hallgate(&["check"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HALLGATE_TEST_UNSET_KEY"));
    // The right key still opens it.
    site.start(&keys(&["k1"])).await.unwrap().shutdown().await;
}
