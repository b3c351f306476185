//! A fresh PostgreSQL database per test, on the server named by
//! `HALLGATE_TEST_POSTGRES` (`eval "$(bash scripts/pg-test-server.sh start)"` starts
//! one; `bash scripts/test.sh` does it for you).

/// The base URL; the tests need a real PostgreSQL and say how to get one.
pub fn base_url() -> String {
    std::env::var("HALLGATE_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "HALLGATE_TEST_POSTGRES is not set: run the tests with `bash scripts/test.sh`, or start a \
             server with `eval \"$(bash scripts/pg-test-server.sh start)\"` first"
        )
    })
}

/// A plain connection to the test server, for what the tests ask it directly.
pub async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    client
}

/// Create an empty database and return its URL.
pub async fn fresh_database() -> String {
    let base = base_url();
    let client = admin().await;
    let name = format!("hg_{}", uuid::Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    match base.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
        _ => format!("{base}/{name}"),
    }
}
