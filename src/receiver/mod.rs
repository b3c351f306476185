//! Simulated receiving platforms (city platform, provincial hall, supervision
//! platform): real HTTP servers on loopback that accept deliveries the way those
//! systems do, for `hallgate demo` and for tests that need a real receiver.
//!
//! A receiver records every request it gets (Idempotency-Key, kind, case, body) and
//! answers by a script an operator or test can change while it runs: a fixed status,
//! failing the first N attempts of each delivery, a delay. It drops repeats by
//! Idempotency-Key as a well-behaved receiver should, answering 409. It takes
//! batches too (several records in one request, each with its own key: `batch.rs`).
//! [`hall`] is a
//! simulated provincial hall that also serves the sync APIs.

mod batch;
pub mod hall;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub idempotency_key: String,
    pub kind: String,
    pub case_no: String,
    pub body: Value,
    /// The body as it arrived.
    pub raw: Vec<u8>,
    /// The answer it gave.
    pub status: u16,
    /// When the request arrived.
    pub at: std::time::Instant,
    /// Its headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// Wall-clock time of arrival (ms since the Unix epoch).
    pub at_ms: i64,
}

/// How the receiver answers.
#[derive(Debug, Clone)]
pub struct Script {
    /// Status for a request it accepts (default 200).
    pub status: u16,
    /// Answer `fail_status` to the first N attempts of each Idempotency-Key.
    pub fail_first: u32,
    pub fail_status: u16,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Wait this long after accepting, before answering: a platform that has
    /// committed the records when the gateway stops waiting (or dies).
    pub delay_after: Duration,
    /// Send `Retry-After` (seconds) with failures.
    pub retry_after: Option<u64>,
    /// Answer `fail_status` to every request for these cases (办件编号).
    pub fail_cases: Vec<String>,
    /// Refuse records of these cases with 422 (a validation failure: no retry helps).
    pub refuse_cases: Vec<String>,
    /// Answer a batch per record (`{"results": […]}`); without, the status answers
    /// for the whole batch (a refused record refuses all of it).
    pub batch_results: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            status: 200,
            fail_first: 0,
            fail_status: 503,
            delay: Duration::ZERO,
            delay_after: Duration::ZERO,
            retry_after: None,
            fail_cases: Vec::new(),
            refuse_cases: Vec::new(),
            batch_results: true,
        }
    }
}

#[derive(Default)]
pub(crate) struct Inner {
    script: Script,
    started: usize,
    /// Keys acknowledged with 2xx: repeats get 409.
    acknowledged: HashSet<String>,
    /// Keep at most this many arrivals (0 = all).
    log_limit: usize,
    accepted_total: u64,
    arrivals: Vec<Arrival>,
    attempts: HashMap<String, u32>,
    /// The platform's own dialect: bodies that are not canonical JSON are read with it.
    mappings: Option<crate::mapping::MappingSet>,
}

impl Inner {
    /// Keep an arrival (the log starts again at `log_limit`).
    fn keep(&mut self, a: Arrival) {
        if self.log_limit > 0 && self.arrivals.len() >= self.log_limit {
            self.arrivals.clear();
        }
        self.arrivals.push(a);
    }
}

/// A request's headers as kept with its arrivals (names lower-case).
fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

/// A running simulated platform.
#[derive(Clone)]
pub struct Receiver {
    pub name: String,
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl Receiver {
    /// Start on `addr` (use `127.0.0.1:0` for any free port).
    pub async fn start(name: &str, addr: &str) -> Result<Receiver, ReceiverError> {
        Receiver::start_with(name, addr, Router::new()).await
    }

    /// Start with more routes beside `/records` (the simulated provincial hall adds
    /// its sync APIs).
    pub async fn start_with(
        name: &str,
        addr: &str,
        extra: Router,
    ) -> Result<Receiver, ReceiverError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ReceiverError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| ReceiverError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/records", post(receive))
            .with_state((name.to_string(), inner.clone()))
            .merge(extra);
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        Ok(Receiver {
            name: name.to_string(),
            addr: local,
            inner,
            stop,
        })
    }

    /// The URL a destination config points at.
    pub fn url(&self) -> String {
        format!("http://{}/records", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_script(&self, script: Script) {
        self.lock().script = script;
    }

    /// Speak a native dialect: read bodies with these mappings (as the real platform
    /// would) to know each record's kind and case.
    pub fn set_mappings(&self, set: crate::mapping::MappingSet) {
        self.lock().mappings = Some(set);
    }

    /// Every request so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.lock().arrivals.clone()
    }

    /// Requests it acknowledged with 2xx, in order.
    pub fn accepted(&self) -> Vec<Arrival> {
        self.lock()
            .arrivals
            .iter()
            .filter(|a| (200..300).contains(&a.status))
            .cloned()
            .collect()
    }

    /// Keep only the most recent `n` arrivals in memory (for long runs).
    pub fn limit_log(&self, n: usize) {
        self.lock().log_limit = n;
    }

    /// Records acknowledged with 2xx since start.
    pub fn accepted_total(&self) -> u64 {
        self.lock().accepted_total
    }

    /// A header of an arrival.
    pub fn header(a: &Arrival, name: &str) -> Option<String> {
        a.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Arrivals kept in memory now (with [`Receiver::accepted_total`], a cheap way to
    /// notice that anything changed).
    pub fn arrival_count(&self) -> usize {
        self.lock().arrivals.len()
    }

    /// Requests that have begun (answered or not).
    pub fn started(&self) -> usize {
        self.lock().started
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Lose the records of a case, as a platform that lost data would: its arrivals
    /// are dropped and their Idempotency-Keys forgotten, so a resend is taken again.
    /// Returns how many arrivals were dropped.
    pub fn forget_case(&self, case_no: &str) -> usize {
        let mut g = self.lock();
        let (gone, kept): (Vec<Arrival>, Vec<Arrival>) = std::mem::take(&mut g.arrivals)
            .into_iter()
            .partition(|a| a.case_no == case_no);
        g.arrivals = kept;
        for a in &gone {
            g.acknowledged.remove(&a.idempotency_key);
        }
        gone.len()
    }
}

async fn receive(
    State((name, inner)): State<(String, Arc<Mutex<Inner>>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.contains_key("x-hallgate-batch") {
        return batch::receive(&name, &inner, &headers, &body).await;
    }
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let arrived = std::time::Instant::now();
    let key = header("idempotency-key");
    let raw = body.to_vec();
    let mut body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if body.get("case_no").is_none() {
        let set = inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .mappings
            .clone();
        if let Some(set) = set {
            let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
            if let Ok(decoded) = set.decode(&raw, ct, None, &crate::mapping::Limits::default())
                && let Some(Ok(v)) = decoded.into_iter().next().map(|d| d.result)
            {
                body = v.to_value();
            }
        }
    }
    let kind = body
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let case_no = body
        .get("case_no")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let delay = {
        let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
        g.started += 1;
        g.script.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // The lock is held in this block only: never across an await.
    let (status, answer, script) = {
        let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
        let script = g.script.clone();
        let attempt = {
            let n = g.attempts.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let seen = g.acknowledged.contains(&key);
        let (status, answer) = if key.is_empty() {
            (400, json!({"code": "400", "msg": "缺少 Idempotency-Key"}))
        } else if attempt <= script.fail_first || script.fail_cases.contains(&case_no) {
            (
                script.fail_status,
                json!({"code": script.fail_status.to_string(), "msg": "系统繁忙，请稍后重试"}),
            )
        } else if seen {
            (409, json!({"code": "409", "msg": "重复数据，已接收"}))
        } else if (200..300).contains(&script.status) {
            let receipt = format!("{}-{:06}", name, g.accepted_total + 1);
            (
                script.status,
                json!({"code": "0", "msg": "接收成功", "receipt_no": receipt}),
            )
        } else {
            (
                script.status,
                json!({"code": script.status.to_string(), "msg": "数据校验不通过"}),
            )
        };
        if (200..300).contains(&status) {
            g.acknowledged.insert(key.clone());
            g.accepted_total += 1;
        }
        g.keep(Arrival {
            idempotency_key: key,
            kind,
            case_no,
            body,
            raw,
            status,
            at: arrived,
            headers: header_list(&headers),
            at_ms: crate::time::now_ms(),
        });
        (status, answer, script)
    };
    if !script.delay_after.is_zero() {
        tokio::time::sleep(script.delay_after).await;
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (code, axum::Json(answer)).into_response();
    if !(200..300).contains(&status)
        && let Some(s) = script.retry_after
    {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, s.into());
    }
    resp
}
