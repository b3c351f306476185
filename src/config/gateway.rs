//! The gateway's own tables: `[gateway]` (with `[gateway.tls]`), `[limits]`,
//! `[delivery]` and `[audit]`.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// `[gateway]`: who this gateway is and where it listens and stores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Gateway id, used as token audience and in idempotency keys it sends.
    pub id: String,
    /// Listen address, e.g. `127.0.0.1:8080`.
    pub listen: Spanned<String>,
    /// Store URL: `sqlite://data/hallgate.db` (relative to the config's folder).
    #[serde(default = "default_store")]
    pub store: Spanned<String>,
    /// Development only: the sender names itself with the `X-Hallgate-Node` header.
    /// Off by default; must stay off in production.
    #[serde(default)]
    pub trust_node_header: bool,
    /// Who reads `GET /metrics`: `open` (anyone who reaches the listener) or
    /// `operator` (operators and auditors, by token or client certificate).
    #[serde(default = "default_metrics")]
    pub metrics: String,
    /// Seconds to wait for in-flight deliveries on shutdown.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
    /// The gateway's ES256 signing key (PKCS#8 PEM, relative to the config's folder):
    /// it signs the tokens of outbound deliveries and audit checkpoints. Made by
    /// `hallgate keys generate`.
    #[serde(default = "default_signing_key")]
    pub signing_key: String,
    /// The gateway's SM2 key (PKCS#8 PEM): it signs audit checkpoints when
    /// `[audit] checkpoint_alg = "sm2"`, and outbound SM2 request signatures. Made by
    /// `hallgate keys generate --alg sm2`.
    #[serde(default = "default_sm2_signing_key")]
    pub sm2_signing_key: String,
    /// The key that will replace it, published in the JWKS ahead of the switch.
    #[serde(default)]
    pub next_signing_key: Option<String>,
    /// Reload the configuration when its file or a mapping file it names changes
    /// (looked at every 2 seconds), as SIGHUP and `hallgate reload` do.
    #[serde(default)]
    pub watch_config: bool,
    /// HTTPS: without this table the gateway speaks plain HTTP (bind it to loopback).
    #[serde(default)]
    pub tls: Option<ServerTls>,
}

/// `[gateway.tls]`: the gateway's certificate and, optionally, client certificates.
/// Files are PEM, relative to the config's folder, and reloaded when they change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// Certificate chain, leaf first.
    pub cert: String,
    /// Its private key (PKCS#8, SEC1 or PKCS#1).
    pub key: String,
    /// CA bundle client certificates are checked against; without it none are asked for.
    #[serde(default)]
    pub client_ca: Option<String>,
    /// Refuse connections that present no client certificate (else only the nodes
    /// whose `client_cert.required` is set need one).
    #[serde(default)]
    pub require_client_cert: bool,
    /// How often the files are checked for changes.
    #[serde(default = "default_reload_seconds")]
    pub reload_seconds: u64,
}

fn default_reload_seconds() -> u64 {
    5
}

fn default_metrics() -> String {
    "open".into()
}
fn default_signing_key() -> String {
    "certs/gateway-signing.key.pem".into()
}
fn default_sm2_signing_key() -> String {
    "certs/gateway-sm2.key.pem".into()
}

fn default_store() -> Spanned<String> {
    Spanned::new(0..0, "sqlite://data/hallgate.db".to_string())
}
fn default_shutdown_grace() -> u64 {
    15
}

/// `[limits]`: enforced before any work is done on a request (docs/security.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_records_per_body: usize,
    /// Requests being decoded or committed at once; past it, 503 with Retry-After.
    pub max_in_flight: usize,
    /// Of those, what one node may hold (0: a quarter of `max_in_flight`); a node's
    /// `accept.max_in_flight` overrides it.
    pub max_in_flight_per_node: usize,
    /// Bytes of request bodies being read, decoded or committed at once; past it, a
    /// new body waits a moment, then gets 503 with Retry-After.
    pub max_in_flight_body_bytes: usize,
    /// Nesting of XML elements or JSON arrays/objects.
    pub max_depth: usize,
    /// Longest text value, attribute or JSON string.
    pub max_string_bytes: usize,
    /// Attributes on one XML element.
    pub max_attributes: usize,
    /// XML elements, or JSON values, in one body.
    pub max_elements: usize,
    /// Bodies larger than this are decoded on the blocking pool, off the threads that
    /// answer requests.
    pub blocking_decode_bytes: usize,
    /// The head of a request must arrive within this time of the connection being
    /// ready for it: just opened, or idle after its last answer (so this is also the
    /// keep-alive idle timeout).
    pub header_timeout_seconds: u64,
    /// A request head larger than this gets 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// A body must arrive within this time plus its size at `min_body_bytes_per_second`.
    pub body_timeout_seconds: u64,
    pub min_body_bytes_per_second: u64,
    /// Refused requests (no or bad credentials) a peer address may cause per second,
    /// and in a burst; past it, its requests get 429 before authentication.
    pub refusals_per_second: u32,
    pub refusal_burst: u32,
    /// Refusals without a known node are audited as one event per peer and reason
    /// per this many seconds, with their count and first and last sample.
    pub refusal_audit_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_records_per_body: 1000,
            max_in_flight: 4096,
            max_in_flight_per_node: 0,
            max_in_flight_body_bytes: 64 * 1024 * 1024,
            max_depth: 64,
            max_string_bytes: 1 << 20,
            max_attributes: 256,
            max_elements: 200_000,
            blocking_decode_bytes: 64 * 1024,
            header_timeout_seconds: 15,
            max_header_bytes: 64 * 1024,
            body_timeout_seconds: 30,
            min_body_bytes_per_second: 1024,
            refusals_per_second: 20,
            refusal_burst: 100,
            refusal_audit_seconds: 60,
        }
    }
}

impl Limits {
    /// The in-flight slots one node may hold.
    pub fn node_share(&self, node_override: Option<usize>) -> usize {
        node_override
            .unwrap_or(match self.max_in_flight_per_node {
                0 => self.max_in_flight / 4,
                n => n,
            })
            .clamp(1, self.max_in_flight.max(1))
    }
}

/// `[delivery]`: defaults for every destination (a destination may override some).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryDefaults {
    /// How long a worker holds a delivery before another may take it.
    pub lease_seconds: u64,
    /// First retry delay; doubles each attempt (full jitter), capped at `max_backoff_ms`.
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Dead-letter after this many attempts...
    pub max_attempts: u32,
    /// ...or when the delivery is older than this.
    pub max_age_seconds: u64,
    /// How often an idle worker looks for due deliveries (new work also wakes it).
    pub poll_ms: u64,
    /// How often the backlog of destinations with `max_backlog` is measured.
    pub backlog_poll_ms: u64,
}

impl Default for DeliveryDefaults {
    fn default() -> Self {
        DeliveryDefaults {
            lease_seconds: 60,
            base_backoff_ms: 500,
            max_backoff_ms: 300_000,
            max_attempts: 25,
            max_age_seconds: 3 * 24 * 3600,
            poll_ms: 500,
            backlog_poll_ms: 500,
        }
    }
}

/// `[audit]`: the tamper-evident log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Chain hash: `sha256` or `sm3` (GB/T 32905). Fixed when the store is created.
    pub hash: String,
    /// Keep raw request bodies as evidence (their hashes are always kept).
    pub retain_payloads: bool,
    /// What signs checkpoints: `es256` (the gateway's signing key) or `sm2` (its SM2
    /// key, SM2 with SM3 per GB/T 32918).
    pub checkpoint_alg: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            hash: "sha256".into(),
            retain_payloads: true,
            checkpoint_alg: "es256".into(),
        }
    }
}

/// `[log]`: how log lines are written (`--log-format` overrides).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` (default) or `json`: one JSON object per line.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "text".into(),
        }
    }
}

/// `[console]`: the web console for auditors and operators at `/console/`
/// (docs/console.md). Off unless `enabled`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    pub enabled: bool,
    /// A session ends after this long without a request.
    pub idle_minutes: u64,
    /// …and after this long in any case.
    pub max_hours: u64,
    /// Failed logins in a row that lock a user…
    pub lock_after: u32,
    /// …for this long.
    pub lock_minutes: u64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: false,
            idle_minutes: 30,
            max_hours: 12,
            lock_after: 5,
            lock_minutes: 15,
        }
    }
}

/// `[supervision]`: 电子监察, deadlines of cases on the working-day calendar, their
/// states on a durable timer, alerts and reports (docs/supervision.md). Off unless
/// `enabled`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionSettings {
    pub enabled: bool,
    /// A calendar file (the shape of `calendar/cn-holidays.toml`) whose years replace or
    /// extend the shipped ones: next year's notice, a local decision.
    pub calendar: Option<PathBuf>,
    /// A case turns yellow (warning) with fewer than this many working days left…
    pub warn_days: f64,
    /// …or less than this share of its promise left (0: only `warn_days`).
    pub warn_share: f64,
    /// Item-code prefixes whose promise counts from submission (`submitted_at`), not
    /// from acceptance.
    pub from_submission: Vec<String>,
    /// How often the timer looks for cases due, in milliseconds.
    pub sweep_ms: u64,
    /// Cases settled per transaction.
    pub batch: usize,
    /// The clock deadlines are read against: the system's, or a test's or the demo's.
    #[serde(skip)]
    pub clock: crate::time::Clock,
}

impl Default for SupervisionSettings {
    fn default() -> Self {
        SupervisionSettings {
            enabled: false,
            calendar: None,
            warn_days: 1.0,
            warn_share: 0.0,
            from_submission: Vec::new(),
            sweep_ms: 1000,
            batch: 500,
            clock: crate::time::Clock::default(),
        }
    }
}

impl SupervisionSettings {
    /// What is wrong with the settings' values.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(0.0..=365.0).contains(&self.warn_days) {
            out.push(format!(
                "supervision.warn_days: {} must be between 0 and 365",
                self.warn_days
            ));
        }
        if !(0.0..1.0).contains(&self.warn_share) {
            out.push(format!(
                "supervision.warn_share: {} must be at least 0 and below 1",
                self.warn_share
            ));
        }
        if !(100..=3_600_000).contains(&self.sweep_ms) {
            out.push("supervision.sweep_ms: between 100 and 3600000".into());
        }
        if !(1..=10_000).contains(&self.batch) {
            out.push("supervision.batch: between 1 and 10000".into());
        }
        out
    }
}
