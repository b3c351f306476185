//! TLS to the 前置库: a table source reads a real MariaDB as a user the server lets in
//! only over TLS, and a real PostgreSQL (whose server says the connection is
//! encrypted), both with `sslmode = "verify-full"` against the throwaway CA of the
//! test servers; with a CA that did not sign the server's certificate,
//! `hallgate tables check` refuses the connection and says why.

mod common;

use std::path::Path;

use common::qzk::{DDL, Engine, Fresh, ID_OK, apply_row, fresh, gateway_head};
use hallgate::config::Config;
use hallgate::receiver::Receiver;

fn ca(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests with `bash scripts/test.sh`"))
}

/// The config, its 前置库 reached with `sslmode` and the CA file `ca`.
fn write_config(dir: &Path, f: &Fresh, engine: Engine, city: &str, ca: &str) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut settings = f.settings_in(dir);
    if let Engine::Maria = engine {
        // This user may connect over TLS only (scripts/mariadb-test-server.sh).
        settings = settings.replace("user = \"hallgate\"", "user = \"hallgate_tls\"");
    }
    std::fs::copy(ca, dir.join("ca.pem")).expect("copy the CA");
    let head = gateway_head(dir, "gw-tls", "127.0.0.1:0", "shutdown_grace_seconds = 2\n");
    let text = format!(
        r#"{head}
[nodes.qzk]
name = "江宁区市场监管局前置库"
level = "department"
region = "320115"
mappings = ["{root}/mappings/js-qzk/inf_apply.toml"]
accept = {{ kinds = ["application"], regions = ["320115"] }}

[nodes.qzk.tables]
{settings}sslmode = "verify-full"
sslrootcert = "ca.pem"

[[nodes.qzk.tables.source]]
table = "inf_apply"
kind = "application"
keys = ["ROWGUID"]
interval_ms = 50

[nodes.city]
name = "市级平台"
level = "city"
destination = {{ url = "{city}", timeout_ms = 5000 }}

[[routes]]
name = "all-to-city"
to = ["city"]
"#
    );
    let path = dir.join("hallgate.toml");
    std::fs::write(&path, text).expect("config");
    path
}

async fn reads_over_tls(engine: Engine, own_ca: &str, other_ca: &str) {
    let f = fresh(engine).await;
    f.db.exec(DDL).await;
    f.db.exec(&apply_row("a1", "C1", ID_OK, "20", 1)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let city = Receiver::start("city", "127.0.0.1:0")
        .await
        .expect("receiver");
    let path = write_config(dir.path(), &f, engine, &city.url(), &ca(own_ca));
    let running = hallgate::gateway::start(Config::load(&path).expect("config"), None)
        .await
        .expect("gateway starts");
    let start = std::time::Instant::now();
    while f.db.pending("inf_apply").await > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{engine:?}: the row was not read over TLS"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let marks = f.db.marks("inf_apply").await;
    assert_eq!(
        marks.first().map(|m| m.1.as_str()),
        Some("1"),
        "{engine:?}: {marks:?}"
    );
    if let Engine::Pg = engine {
        let db = f
            .settings
            .lines()
            .find_map(|l| l.strip_prefix("database = "))
            .map(|d| d.trim_matches('"').to_string())
            .expect("database");
        let ssl: Vec<bool> = common::pg::admin()
            .await
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = $1 AND a.application_name = 'hallgate'",
                &[&db],
            )
            .await
            .expect("pg_stat_ssl")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!ssl.is_empty() && ssl.iter().all(|s| *s), "{ssl:?}");
    }
    running.shutdown().await;

    // A CA that did not sign the server's certificate: no connection, and why.
    write_config(dir.path(), &f, engine, &city.url(), &ca(other_ca));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(&path)
        .args(["tables", "check", "--node", "qzk"])
        .output()
        .expect("hallgate tables check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{engine:?}: {text}");
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "{engine:?}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_reads_over_tls() {
    reads_over_tls(
        Engine::Maria,
        "HALLGATE_TEST_MARIADB_CA",
        "HALLGATE_TEST_POSTGRES_CA",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_over_tls() {
    reads_over_tls(
        Engine::Pg,
        "HALLGATE_TEST_POSTGRES_CA",
        "HALLGATE_TEST_MARIADB_CA",
    )
    .await;
}
