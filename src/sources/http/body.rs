//! Reading a pushed body within its limits: `max_body_bytes`, a deadline that grows
//! with what has arrived (`body_timeout_seconds` plus the size at
//! `min_body_bytes_per_second`, so a sender that drips a body is cut however slowly
//! it drips), and the gateway-wide budget of body bytes in flight
//! (`max_in_flight_body_bytes`), held until the request is answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::intake::{Refusal, too_large};

/// How long a body waits for room in the budget before it is turned away.
const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// A body read whole, and its share of the in-flight budget.
pub struct Read {
    pub bytes: Bytes,
    /// Released when the request is answered.
    pub _budget: Option<OwnedSemaphorePermit>,
}

fn busy() -> Refusal {
    let mut e = Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many request bodies in progress; send again shortly",
    );
    e.retry_after = Some(1);
    e
}

/// Read `body` (`declared`: its Content-Length, when it has one).
pub async fn read(
    body: Body,
    declared: Option<usize>,
    limits: &Limits,
    budget: &Arc<Semaphore>,
) -> Result<Read, Refusal> {
    let max = limits.max_body_bytes;
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    // A declared size takes its room at once; an undeclared one as it arrives.
    let mut held: Option<OwnedSemaphorePermit> = None;
    let take = |n: usize, held: &mut Option<OwnedSemaphorePermit>| -> Result<(), Refusal> {
        let n = u32::try_from(n).map_err(|_| too_large(max))?;
        if n == 0 {
            return Ok(());
        }
        let p = budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| busy())?;
        match held {
            Some(h) => h.merge(p),
            None => *held = Some(p),
        }
        Ok(())
    };
    if let Some(n) = declared {
        let n = u32::try_from(n).map_err(|_| too_large(max))?;
        if n > 0 {
            let p = tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(n))
                .await
                .map_err(|_| busy())?
                .map_err(|_| busy())?;
            held = Some(p);
        }
    }
    let started = Instant::now();
    let base = Duration::from_secs(limits.body_timeout_seconds);
    let rate = limits.min_body_bytes_per_second.max(1) as f64;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(max));
    let mut stream = body.into_data_stream();
    loop {
        let allowed = base + Duration::from_secs_f64(buf.len() as f64 / rate);
        let Some(left) = allowed.checked_sub(started.elapsed()) else {
            return Err(too_slow(buf.len(), started));
        };
        let next = match tokio::time::timeout(left, stream.next()).await {
            Err(_) => return Err(too_slow(buf.len(), started)),
            Ok(None) => break,
            Ok(Some(next)) => next,
        };
        let chunk = next.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("the body could not be read: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        if declared.is_none() {
            take(chunk.len(), &mut held)?;
        } else if buf.len() + chunk.len() > declared.unwrap_or(0) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the body is longer than its Content-Length",
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Read {
        bytes: buf.freeze(),
        _budget: held,
    })
}

/// The refusal of a body that arrived too slowly.
fn too_slow(received: usize, started: Instant) -> Refusal {
    metrics::counter!("hallgate_connections_cut_total", "reason" => "body_timeout").increment(1);
    let mut e = Refusal::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the body arrived too slowly: {received} bytes in {:.1} s (limits body_timeout_seconds and min_body_bytes_per_second)",
            started.elapsed().as_secs_f64()
        ),
    );
    e.close = true;
    e
}
