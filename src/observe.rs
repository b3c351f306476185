//! Metrics and logging set-up: the Prometheus recorder behind `GET /metrics` and the
//! names of every series, kept in one place so operators find them documented.
//!
//! Series (all prefixed `hallgate_`):
//! - `records_received_total{node}`, `records_accepted_total{node}`,
//!   `records_rejected_total{node,reason}`: inbound, per sending node;
//! - `deliveries_delivered_total{destination}`, `deliveries_retried_total{destination}`,
//!   `deliveries_dead_total{destination}`: outbound, per destination;
//! - `queue_depth{destination}`, `dead_letters{destination}`,
//!   `oldest_pending_seconds{destination}`: gauges, read from the store;
//! - `accept_seconds`, `delivery_seconds{destination}` (one attempt): latency histograms;
//! - `delivery_latency_seconds{destination}`: accepted → delivered, per record
//!   (buckets up to an hour: a backlog shows here);
//! - `backlog_full{destination}`: 1 while a destination is over its `max_backlog`;
//! - `destination_paused{destination}`: 1 while an operator has paused it;
//! - `store_commit_jobs` (histogram: jobs per writer transaction) and
//!   `store_writer_queue` (gauge: jobs waiting when the writer took its last batch);
//! - `records_duplicate_total{node}`: records sent again (same version, or a repeated
//!   Idempotency-Key), not counted as accepted;
//! - `requests_total{status}`, `auth_failures_total{reason}`,
//!   `connections_cut_total{reason}`.
//!
//! docs/metrics.md lists them for operators; [`zero`] starts each node's and
//! destination's series at 0, so a quiet one shows 0 rather than nothing.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Accepted → delivered spans a backlog: up to an hour.
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Jobs per writer transaction (the store's MAX_BATCH is 512).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // A full match wins over a suffix match.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("hallgate_delivery_latency_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("hallgate_store_commit_jobs".into()),
                    BATCH_BUCKETS,
                )
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "hallgate_records_received_total",
        "Records received, per sending node"
    );
    metrics::describe_counter!(
        "hallgate_records_accepted_total",
        "Records durably accepted, per sending node"
    );
    metrics::describe_counter!(
        "hallgate_records_rejected_total",
        "Records refused, per sending node and reason"
    );
    metrics::describe_counter!(
        "hallgate_deliveries_delivered_total",
        "Deliveries acknowledged by the destination"
    );
    metrics::describe_counter!(
        "hallgate_deliveries_retried_total",
        "Delivery attempts that will be retried"
    );
    metrics::describe_counter!("hallgate_deliveries_dead_total", "Deliveries dead-lettered");
    metrics::describe_gauge!(
        "hallgate_queue_depth",
        "Deliveries waiting, per destination"
    );
    metrics::describe_gauge!(
        "hallgate_dead_letters",
        "Dead-lettered deliveries, per destination"
    );
    metrics::describe_histogram!(
        "hallgate_accept_seconds",
        "Time from request to durable commit"
    );
    metrics::describe_histogram!("hallgate_delivery_seconds", "Time of one delivery attempt");
    metrics::describe_histogram!(
        "hallgate_delivery_latency_seconds",
        "Time from acceptance to delivery, per record and destination"
    );
    metrics::describe_gauge!(
        "hallgate_oldest_pending_seconds",
        "Age of the oldest pending delivery, per destination"
    );
    metrics::describe_gauge!(
        "hallgate_backlog_full",
        "1 while a destination's backlog is over its max_backlog"
    );
    metrics::describe_histogram!(
        "hallgate_store_commit_jobs",
        "Jobs committed together in one store transaction"
    );
    metrics::describe_gauge!(
        "hallgate_store_writer_queue",
        "Jobs waiting for the store's writer"
    );
    metrics::describe_gauge!(
        "hallgate_destination_paused",
        "1 while an operator has paused deliveries to a destination"
    );
    metrics::describe_counter!(
        "hallgate_records_duplicate_total",
        "Records sent again and recognised (not counted as accepted), per sending node"
    );
    metrics::describe_counter!(
        "hallgate_requests_total",
        "HTTP requests answered, by status"
    );
    metrics::describe_counter!(
        "hallgate_auth_failures_total",
        "Requests refused for their credentials, by reason"
    );
    metrics::describe_counter!(
        "hallgate_config_reloads_total",
        "Configuration reloads, by outcome (ok, refused)"
    );
    for outcome in ["ok", "refused"] {
        metrics::counter!("hallgate_config_reloads_total", "outcome" => outcome).increment(0);
    }
    metrics::describe_counter!(
        "hallgate_connections_cut_total",
        "Connections cut by a limit (slow or oversized heads, TLS handshakes), by reason"
    );
}

/// Per-minute counts of records accepted and deliveries delivered, over the last
/// [`CHART_MINUTES`] minutes of this process, for the console's chart. They are fed
/// where `records_accepted_total` and `deliveries_delivered_total` are, so the
/// chart's totals are what `/metrics` says.
pub mod minutes {
    use std::sync::Mutex;

    pub const CHART_MINUTES: usize = 180;

    struct Slot {
        minute: i64,
        accepted: u64,
        delivered: u64,
    }

    static RING: Mutex<Vec<Slot>> = Mutex::new(Vec::new());

    fn add(accepted: u64, delivered: u64) {
        let minute = crate::time::now_ms().div_euclid(60_000);
        let mut ring = RING.lock().unwrap_or_else(|p| p.into_inner());
        if ring.is_empty() {
            ring.extend((0..CHART_MINUTES).map(|_| Slot {
                minute: -1,
                accepted: 0,
                delivered: 0,
            }));
        }
        let slot = &mut ring[minute.rem_euclid(CHART_MINUTES as i64) as usize];
        if slot.minute != minute {
            *slot = Slot {
                minute,
                accepted: 0,
                delivered: 0,
            };
        }
        slot.accepted += accepted;
        slot.delivered += delivered;
    }

    pub fn accepted(n: u64) {
        if n > 0 {
            add(n, 0);
        }
    }

    pub fn delivered(n: u64) {
        add(0, n);
    }

    /// Each of the last [`CHART_MINUTES`] minutes, oldest first: its start (ms since
    /// the epoch), records accepted, deliveries delivered.
    pub fn last() -> Vec<(i64, u64, u64)> {
        let now = crate::time::now_ms().div_euclid(60_000);
        let ring = RING.lock().unwrap_or_else(|p| p.into_inner());
        (now - CHART_MINUTES as i64 + 1..=now)
            .map(|m| {
                let slot = ring.get(m.rem_euclid(CHART_MINUTES as i64) as usize);
                match slot {
                    Some(s) if s.minute == m => (m * 60_000, s.accepted, s.delivered),
                    _ => (m * 60_000, 0, 0),
                }
            })
            .collect()
    }
}

/// Start the series of every sending node and destination at 0.
pub fn zero<'a>(
    senders: impl Iterator<Item = &'a str>,
    destinations: impl Iterator<Item = &'a str>,
) {
    for n in senders {
        for c in [
            "hallgate_records_received_total",
            "hallgate_records_accepted_total",
            "hallgate_records_duplicate_total",
        ] {
            metrics::counter!(c, "node" => n.to_string()).increment(0);
        }
    }
    for d in destinations {
        for c in [
            "hallgate_deliveries_delivered_total",
            "hallgate_deliveries_retried_total",
            "hallgate_deliveries_dead_total",
        ] {
            metrics::counter!(c, "destination" => d.to_string()).increment(0);
        }
        for g in [
            "hallgate_queue_depth",
            "hallgate_dead_letters",
            "hallgate_backlog_full",
        ] {
            metrics::gauge!(g, "destination" => d.to_string()).set(0.0);
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event; colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`, the
    /// event's own fields (`request_id`, `destination`, `delivery`, `status`, …) and,
    /// inside a request, `span` with that request's `request_id`, `node` and
    /// `message_id`.
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Log times in China Standard Time (+08:00), as the API and the audit log write them.
struct Cst;

impl tracing_subscriber::fmt::time::FormatTime for Cst {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        w.write_str(&crate::time::rfc3339(crate::time::now_ms()))
    }
}

/// Log to stderr; `RUST_LOG` filters (default `default_level`).
pub fn init_logging(default_level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(Cst)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// An error and its causes, each said once: `error sending request: … : Connection
/// refused`, a TLS handshake's reason, without repeating a cause an error type already
/// shows in its own message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
