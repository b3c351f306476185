//! The metrics an operator watches a backlog with (issue 19). Alone in its own test
//! binary: the metrics recorder is global to a process, and other tests' deliveries
//! would count in the same series.

mod common;

use std::time::Duration;

use common::*;
use hallgate::receiver::Script;

/// The series an operator watches a backlog with: the oldest pending delivery's age
/// while a destination is slow, then accepted → delivered latency (with buckets up to
/// an hour), and the store writer's batch sizes and queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_series_show_the_oldest_pending_delivery_and_the_latency() {
    let h = Harness::with_routes("[[routes]]\nname = \"r\"\nto = [\"city\"]\n").await;
    h.city.set_script(Script {
        delay: Duration::from_millis(2500),
        ..Script::default()
    });
    let (s, _, _) = h
        .post(
            "district-a",
            &application("350205260401000091", "350205"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    let metrics = || h.metrics();
    let gauge = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let during = metrics().await;
    let oldest = gauge(
        &during,
        "hallgate_oldest_pending_seconds{destination=\"city\"}",
    );
    assert!(
        oldest >= 1.0,
        "the pending delivery is over a second old: {oldest}\n{during}"
    );
    wait_until(10, "delivered", || h.city.accepted().len() == 1).await;
    wait_until(10, "queue empty", || {
        let c = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).unwrap();
        c.query_row(
            "SELECT count(*) FROM deliveries WHERE state = 'pending'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 0
    })
    .await;
    let after = metrics().await;
    assert_eq!(
        gauge(
            &after,
            "hallgate_oldest_pending_seconds{destination=\"city\"}"
        ),
        0.0,
        "{after}"
    );
    for series in [
        "hallgate_delivery_latency_seconds_bucket{destination=\"city\",le=\"3600\"} 1",
        "hallgate_delivery_latency_seconds_bucket{destination=\"city\",le=\"1\"} 0",
        "hallgate_store_commit_jobs_bucket{le=\"512\"}",
        "hallgate_store_writer_queue ",
    ] {
        assert!(after.contains(series), "metrics lack {series}:\n{after}");
    }
}
