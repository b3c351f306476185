//! The PostgreSQL engine after its connections are cut (a database restart, a
//! failover, a network cut): requests in between fail as unavailable with nothing
//! written, and the store connects again by itself. The test server cuts them with
//! `pg_terminate_backend`, for this store's connections only.

mod common;

use common::pg;

use hallgate::event::{Event, EventKind};
use hallgate::store::{AuditFilter, OpenMode, StoreError, StoreOptions, StoreUrl};
use hallgate::time::now_ms;

/// Cut every server connection named `app`; how many there were.
async fn cut(app: &str) -> usize {
    pg::admin()
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("terminate")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_connects_again_after_its_connections_are_cut() {
    let app = format!("hg-reconnect-{}", uuid::Uuid::now_v7().simple());
    let url = format!("{}?application_name={app}", pg::fresh_database().await);
    let store = hallgate::store::open(
        &StoreUrl::parse(&url).expect("url"),
        &StoreOptions::default(),
        OpenMode::Serve,
    )
    .await
    .expect("open");
    let event = || Event::new(now_ms(), EventKind::Rejected);
    store.audit(event()).await.expect("write before");
    assert_eq!(
        cut(&app).await,
        2,
        "the writer's and the reader's connections"
    );

    // Writes: unavailable for a moment at most, then through again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut refused = 0;
    loop {
        match store.audit(event()).await {
            Ok(()) => break,
            Err(e @ StoreError::Unavailable(_)) => {
                refused += 1;
                assert!(e.to_string().starts_with("store unavailable: "), "{e}");
            }
            Err(e) => panic!("a cut connection is no other error: {e}"),
        }
        assert!(std::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Reads connect again on their own.
    assert_eq!(
        store
            .audit_count(AuditFilter::default())
            .await
            .expect("read after"),
        2,
        "the event before the cut and the one after; none refused was written ({refused} refused)"
    );
    assert_eq!(store.ping().await.ok(), Some(()));
    // The new connections are there (and can be cut again).
    assert_eq!(cut(&app).await, 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while store.ping().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "never reconnected the second time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        store
            .audit_count(AuditFilter::default())
            .await
            .expect("read"),
        2
    );
}
