//! The tables of a node (`[nodes.ID]` and what it holds: accept, auth, destination,
//! sync); the routes are in `routes.rs`, the 前置库 in `tables.rs`.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::record::Kind;

/// Roles a node may hold beyond sending and receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May query the audit log and timelines of every node (电子监察, 审管互动).
    Auditor,
    /// Reads every message, case and delivery, retries dead letters (else: its own).
    Operator,
}

/// Administrative level of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Province,
    City,
    District,
    Township,
    Department,
}

/// `[nodes.ID]`: a system at the other end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Display name, in Chinese as the halls know it.
    pub name: String,
    pub level: Level,
    /// 行政区划代码 of the node.
    #[serde(default)]
    pub region: Option<String>,
    /// What the node may send; absent = it may send nothing.
    #[serde(default)]
    pub accept: Option<Accept>,
    /// Where the gateway delivers to this node; absent = not a destination.
    #[serde(default)]
    pub destination: Option<Destination>,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// TLS client certificate the node presents.
    #[serde(default)]
    pub client_cert: Option<ClientCert>,
    /// Mapping files (relative to this file): they decode what the node sends and
    /// render what it receives. None = the node speaks canonical JSON.
    #[serde(default)]
    pub mappings: Vec<String>,
    /// How the node proves who it is: signed tokens with keys pinned to it.
    #[serde(default)]
    pub auth: Option<TokenAuth>,
    /// The node must sign each body with SM2 (in headers), checked before its mapping.
    #[serde(default)]
    pub sm2_sign: Option<super::Sm2Sign>,
    /// The node sends its bodies SM4-encrypted; they are decrypted before its mapping.
    #[serde(default)]
    pub sm4: Option<super::Sm4Body>,
    /// A record whose `item_code` the item catalogue does not hold as valid: `off`
    /// (default), `flag` (accepted with a flag) or `refuse` (rejected).
    #[serde(default)]
    pub catalogue: CataloguePolicy,
    /// A record whose ID number fails its check: `refuse` (default) or `flag`.
    #[serde(default)]
    pub id_checks: super::IdChecks,
    /// Synchronisation with the node: pull its list API, its item catalogue, and the
    /// APIs reconciliation reads.
    #[serde(default)]
    pub sync: Option<SyncSettings>,
    /// The node's 前置库 and the exchange tables read from it (`tables.rs`).
    #[serde(default)]
    pub tables: Option<super::TableSettings>,
    /// 回执推送: where a receipt goes once each record is settled (`receipt.rs`).
    #[serde(default)]
    pub receipt_url: Option<Spanned<String>>,
}

/// `[nodes.ID.client_cert]`: the node's TLS client certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCert {
    /// DNS names (subjectAltName) the certificate must be valid for; a request
    /// presenting a certificate for none of them is refused. A certificate valid for
    /// one of them also names the node when the request carries no token.
    pub names: Vec<String>,
    /// Refuse this node's requests that come without such a certificate.
    #[serde(default)]
    pub required: bool,
    /// Also require a token bound to the certificate presented (RFC 8705: its
    /// `cnf.x5t#S256` is the certificate's SHA-256 thumbprint); the certificate alone
    /// no longer names the node.
    #[serde(default)]
    pub bind_token: bool,
}

/// `tls` of a destination: whom to trust and what to present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The CA roots trusted for the destination's server certificate (PEM bundle);
    /// they replace the system roots (government networks run private CAs).
    #[serde(default)]
    pub ca: Option<String>,
    /// The gateway's client certificate chain for this destination, and its key.
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

/// `[catalogue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueSource {
    pub source: String,
}

/// `[nodes.ID] catalogue = …`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CataloguePolicy {
    #[default]
    Off,
    Flag,
    Refuse,
}

/// How a pull source's list API moves forward.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorKind {
    /// `?from=&to=&page=&size=`: a time window of the node's change times, paged;
    /// each window starts `overlap_seconds` before the last one ended.
    #[default]
    Timestamp,
    /// `?after=N&size=`: the node's change sequence; the next cursor is the
    /// `X-Next-Cursor` header, or the largest `cursor_field` of the page.
    Sequence,
    /// `?cursor=T&size=`: an opaque token; the next one is the `X-Next-Cursor` header.
    Token,
}

/// Where a pull source starts: `sync.start`, or `hallgate sync rewind --to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Milliseconds since the epoch.
    Timestamp(i64),
    Sequence(i64),
    Token(String),
}

impl CursorKind {
    /// Read a start position written for this kind of cursor.
    pub fn start(self, text: &str) -> Result<Start, String> {
        let text = text.trim();
        match self {
            CursorKind::Timestamp => crate::time::parse_time(text)
                .map(Start::Timestamp)
                .ok_or_else(|| {
                    format!(
                        "`{text}` is not an RFC 3339 time (2026-11-01T00:00:00+08:00) or a date"
                    )
                }),
            CursorKind::Sequence => text
                .parse::<i64>()
                .map(Start::Sequence)
                .map_err(|_| format!("`{text}` is not a sequence number")),
            CursorKind::Token => Ok(Start::Token(text.to_string())),
        }
    }
}

/// `[nodes.ID.sync]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// The list API polled for changes; absent = the node is not pulled.
    #[serde(default)]
    pub pull_url: Option<String>,
    #[serde(default)]
    pub cursor: CursorKind,
    /// Where the first pull starts: an RFC 3339 time (timestamp), a number
    /// (sequence) or a token. Required with `pull_url`.
    #[serde(default)]
    pub start: Option<String>,
    /// For `sequence`: the canonical field holding the sequence (`ext.seq`).
    #[serde(default)]
    pub cursor_field: Option<String>,
    /// Only this kind is read from pages (default: any the node's mappings know).
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default = "default_pull_interval")]
    pub interval_seconds: u64,
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Each timestamp window starts this long before the last one ended (the other
    /// side's clock skew and late commits); what is read twice is deduplicated.
    #[serde(default = "default_overlap")]
    pub overlap_seconds: u64,
    /// The longest time window asked for at once.
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// Requests per second to this node's sync APIs (pulls, catalogue, lists).
    #[serde(default)]
    pub rate: Option<RateLimit>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Reconciliation: `?from=&to=&page=&size=` lists what the node holds.
    #[serde(default)]
    pub holdings_url: Option<String>,
    /// Reconciliation: `?from=&to=` answers `{"count": N}`.
    #[serde(default)]
    pub count_url: Option<String>,
    /// The node's item catalogue (事项目录), pulled into the store on a schedule.
    #[serde(default)]
    pub catalogue_url: Option<String>,
    #[serde(default = "default_catalogue_interval")]
    pub catalogue_interval_seconds: u64,
}

fn default_pull_interval() -> u64 {
    30
}
fn default_page_size() -> usize {
    500
}
fn default_overlap() -> u64 {
    300
}
fn default_window() -> u64 {
    86_400
}
fn default_catalogue_interval() -> u64 {
    300
}

/// `[nodes.ID.auth]`: the node's signed tokens (JWT).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenAuth {
    /// The `iss` its tokens carry (default: the node id).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted algorithms, pinned: ES256, ES384, RS256, RS384, RS512, PS256, EdDSA,
    /// HS256 (HS256 only with `hmac_secret_env`), SM2 (SM2 with SM3, GB/T 32918).
    pub algorithms: Vec<String>,
    /// The `alg` an SM2 token's header carries. No JOSE name is registered for SM2;
    /// hallgate writes and expects `SM2` unless a node's peers use another (such as
    /// `SM3withSM2`).
    #[serde(default = "default_sm2_alg_name")]
    pub sm2_alg_name: String,
    /// The SM2 user id whose Z value the signature covers (GM/T 0009's default).
    #[serde(default = "default_sm2_user_id")]
    pub sm2_user_id: String,
    /// Public keys: PEM files (key id = file name without `.pub.pem`) or JWK files
    /// (`.json`, key id from `kid`), relative to the config's folder; or
    /// `{ file = "…", id = "…" }` to set the key id the node's tokens name.
    #[serde(default)]
    pub keys: Vec<KeyFile>,
    /// Environment variable holding the HS256 shared secret.
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    /// A JWKS URL publishing the node's public keys (with or instead of `keys`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How long fetched JWKS keys are used before they are fetched again.
    #[serde(default = "default_jwks_ttl")]
    pub jwks_ttl_seconds: u64,
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_seconds: u64,
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// Each token is taken once: a `jti` seen before is refused, also after a restart
    /// and on another instance (the ids are kept in the store until they expire).
    #[serde(default)]
    pub one_time_jti: bool,
}

/// A node's public key file, and optionally the key id its tokens name (`kid`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeyFile {
    Path(String),
    Named { file: String, id: String },
}

impl KeyFile {
    pub fn path(&self) -> &str {
        match self {
            KeyFile::Path(p) | KeyFile::Named { file: p, .. } => p,
        }
    }

    /// The key id set in the config, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            KeyFile::Path(_) => None,
            KeyFile::Named { id, .. } => Some(id),
        }
    }
}

pub(crate) fn default_sm2_alg_name() -> String {
    "SM2".into()
}
pub(crate) fn default_sm2_user_id() -> String {
    "1234567812345678".into()
}
fn default_jwks_ttl() -> u64 {
    300
}
fn default_max_lifetime() -> u64 {
    3600
}
fn default_skew() -> u64 {
    60
}

/// `[nodes.ID.accept]`: the records a sending node is allowed to send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    pub kinds: Vec<Kind>,
    /// 行政区划代码 prefixes; empty = any region.
    #[serde(default)]
    pub regions: Vec<String>,
    /// 事项编码 prefixes; empty = any item.
    #[serde(default)]
    pub item_codes: Vec<String>,
    /// How fast it may send (requests per second); over it: 429 with Retry-After.
    #[serde(default)]
    pub rate: Option<RateLimit>,
    /// Requests of this node in progress at once (default: `[limits]
    /// max_in_flight_per_node`); past it, 503 with Retry-After.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// The syntax of its case numbers (办件编号), a regular expression the whole value
    /// must match (default: letters, digits and `-_.`, 1 to 64).
    #[serde(default)]
    pub case_no_pattern: Option<String>,
    /// The syntax of its other identifiers (`record_id`, `material_id`, `item_code`),
    /// likewise (default: the same as case numbers).
    #[serde(default)]
    pub id_pattern: Option<String>,
}

/// A rate: `per_second` on average, bursts of up to `burst` (default: one second's
/// worth).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[nodes.ID.destination]`: how to deliver to a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Where records are POSTed; absent when the node takes them in its 前置库
    /// tables (`[[nodes.ID.tables.destination]]`).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
    /// Deliver at most this fast (records per second).
    #[serde(default)]
    pub rate: Option<RateLimit>,
    /// How the gateway proves itself to the destination.
    #[serde(default)]
    pub auth: Option<OutboundAuth>,
    /// Sign each request with the gateway's SM2 key (in headers, beside `auth`).
    #[serde(default)]
    pub sm2_sign: Option<super::Sm2Sign>,
    /// Encrypt each body with SM4 (before it is signed).
    #[serde(default)]
    pub sm4: Option<super::Sm4Body>,
    /// Client certificate and CA roots for this destination.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// Back-pressure: while this many records (or bytes of canonical records) wait
    /// for this destination, intake of records routed here answers 503 with
    /// Retry-After and the pull sources that feed it pause.
    #[serde(default)]
    pub max_backlog: Option<MaxBacklog>,
    /// Batched delivery: several records in one request.
    #[serde(default)]
    pub batch: Option<Batch>,
}

impl Destination {
    /// The URL, or empty for a table destination.
    pub fn url(&self) -> &str {
        self.url.as_ref().map_or("", |u| u.get_ref())
    }
}

/// `batch = { max_records = 100, max_bytes = 1048576, max_wait_ms = 20, results =
/// "results" }`: send up to `max_records` records (at most `max_bytes` of them) in
/// one request, waiting up to `max_wait_ms` for a batch to fill. The destination's
/// answer is read per record from the list at `results` when it gives one.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub max_records: usize,
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: usize,
    #[serde(default = "default_batch_wait_ms")]
    pub max_wait_ms: u64,
    #[serde(default = "default_batch_results")]
    pub results: String,
}

fn default_batch_bytes() -> usize {
    1 << 20
}

fn default_batch_wait_ms() -> u64 {
    20
}

fn default_batch_results() -> String {
    "results".to_string()
}

/// `max_backlog = { records = N, bytes = M }`: either bound, or both.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaxBacklog {
    #[serde(default)]
    pub records: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
}

/// `[nodes.ID.destination.auth]`: the scheme a destination expects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "scheme", rename_all = "snake_case")]
pub enum OutboundAuth {
    /// A short-lived ES256 token from the gateway's key (`aud` = the node id).
    Jwt,
    /// A fixed token in a header.
    Static {
        header: String,
        #[serde(flatten)]
        value: Secret,
    },
    /// `appId` and `sign` headers: sign = hex digest (md5 or sm3) of a template over
    /// `{app_id}`, `{secret}`, `{date}` (yyyyMMdd), `{timestamp}` and `{api_code}`.
    AppSign {
        app_id: String,
        #[serde(flatten)]
        secret: Secret,
        #[serde(default = "default_sign_template")]
        template: String,
        #[serde(default)]
        api_code: String,
        #[serde(default = "default_digest")]
        digest: String,
    },
    /// Hex HMAC-SHA256 of the body in a header.
    HmacBody {
        header: String,
        #[serde(flatten)]
        secret: Secret,
    },
}

/// A secret from an environment variable or a file, never from the config text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
}

impl Secret {
    /// Read it; `base` resolves a relative file.
    pub fn read(&self, base: &Path) -> Result<String, String> {
        match (&self.secret_env, &self.secret_file) {
            (Some(var), None) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            (None, Some(file)) => std::fs::read_to_string(base.join(file))
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("{file}: {e}")),
            _ => Err("name exactly one of secret_env or secret_file".into()),
        }
    }
}

fn default_sign_template() -> String {
    "{app_id}{secret}{date}{api_code}".into()
}
fn default_digest() -> String {
    "md5".into()
}

fn default_content_type() -> String {
    "application/json".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_concurrency() -> usize {
    8
}

impl SyncSettings {
    /// What is wrong with this `[nodes.ID.sync]` table.
    pub fn problems(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let urls = [
            ("pull_url", &self.pull_url),
            ("holdings_url", &self.holdings_url),
            ("count_url", &self.count_url),
            ("catalogue_url", &self.catalogue_url),
        ];
        for (key, url) in urls {
            if let Some(u) = url
                && (!(u.starts_with("http://") || u.starts_with("https://"))
                    || reqwest::Url::parse(u).is_err())
            {
                out.push(format!(
                    "nodes.{id}.sync.{key}: `{u}` is not an http(s) URL"
                ));
            }
        }
        if self.pull_url.is_some() {
            match &self.start {
                None => out.push(format!(
                    "nodes.{id}.sync.start: where the first pull starts is required with pull_url \
                     (an RFC 3339 time, a sequence number or a token)"
                )),
                Some(start) => {
                    if let Err(e) = self.cursor.start(start) {
                        out.push(format!("nodes.{id}.sync.start: {e}"));
                    }
                }
            }
            if self.cursor == CursorKind::Sequence && self.cursor_field.is_none() {
                out.push(format!(
                    "nodes.{id}.sync.cursor_field: a sequence cursor needs the canonical field that holds it"
                ));
            }
        }
        if self.page_size == 0 || self.page_size > 10_000 {
            out.push(format!("nodes.{id}.sync.page_size: between 1 and 10000"));
        }
        if self.interval_seconds == 0 || self.catalogue_interval_seconds == 0 {
            out.push(format!("nodes.{id}.sync: intervals are at least 1 second"));
        }
        if self.window_seconds == 0 {
            out.push(format!("nodes.{id}.sync.window_seconds: at least 1"));
        }
        out
    }
}
