//! Rate limits over real HTTP: a sender over its rate gets 429 with Retry-After and
//! is served again after waiting; a destination configured for N records/s never
//! receives them faster.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_over_its_rate_gets_429_then_is_served_again() {
    let h = Harness::with_config("[[routes]]\nname = \"r\"\nto = [\"city\"]\n", |t| {
        t.replace(
            "accept = { kinds = [\"application\", \"material\", \"process\", \"result\"], regions = [\"350205\"] }",
            "accept = { kinds = [\"application\", \"material\", \"process\", \"result\"], regions = [\"350205\"], rate = { per_second = 2, burst = 2 } }",
        )
    })
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..4 {
        let (s, headers, body) = h
            .post(
                "district-a",
                &application(&format!("35020526040111{i:04}"), "350205"),
                None,
            )
            .await;
        if s == 429 {
            retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert_eq!(body["error"]["code"], "rate_limited");
        }
        statuses.push(s);
    }
    assert_eq!(&statuses[..2], [202, 202], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let wait = retry_after.expect("Retry-After on 429");
    assert!((1..=2).contains(&wait), "{wait}");
    // Another node is not affected.
    let (s, _, _) = h
        .post(
            "district-b",
            &application("330122260401110001", "330122"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (s, _, _) = h
        .post(
            "district-a",
            &application("350205260401119999", "350205"),
            None,
        )
        .await;
    assert_eq!(s, 202, "served again after Retry-After");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_never_receives_more_than_its_rate() {
    let h = Harness::with_config("[[routes]]\nname = \"r\"\nto = [\"city\"]\n", |t| {
        t.replace(
            "destination = { url = \"http://",
            "destination = { rate = { per_second = 5, burst = 1 }, url = \"http://",
        )
    })
    .await;
    let body = json!(
        (0..20)
            .map(|i| application(&format!("35020526040112{i:04}"), "350205"))
            .collect::<Vec<_>>()
    );
    let (s, _, _) = h.post("district-a", &body, None).await;
    assert_eq!(s, 202);
    wait_until(20, "twenty deliveries", || h.city.accepted().len() == 20).await;
    let times: Vec<_> = h.city.accepted().iter().map(|a| a.at).collect();
    let span = times[19].duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(3_700),
        "20 at 5/s take about 3.8 s, took {span:?}"
    );
    for w in times.windows(6) {
        assert!(
            w[5].duration_since(w[0]) >= Duration::from_millis(900),
            "six deliveries within a second: {:?}",
            w[5].duration_since(w[0])
        );
    }
}
