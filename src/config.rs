//! Configuration: the gateway, its nodes and its routes, read from one TOML file
//! (`hallgate.toml` by default) and validated as a whole before anything starts.
//!
//! Every error names the file, the line and the key, so an integrator can fix a
//! config without reading Rust. Unknown keys are errors (serde `deny_unknown_fields`);
//! cross references (routes naming nodes) are checked after parsing, with the span of
//! the offending value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::record::Kind;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: Gateway,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub delivery: DeliveryDefaults,
    /// Every system at the other end, keyed by node id.
    #[serde(default)]
    pub nodes: BTreeMap<String, Spanned<Node>>,
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[catalogue] source = "NODE"`: whose item catalogue is the reference (the
    /// provincial hall's); it is pulled from that node's `sync.catalogue_url`.
    #[serde(default)]
    pub catalogue: Option<CatalogueSource>,
    /// Where the file was read from; relative paths in it resolve against its folder.
    #[serde(skip)]
    pub source_path: PathBuf,
}

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
    /// Seconds to wait for in-flight deliveries on shutdown.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
    /// The gateway's ES256 signing key (PKCS#8 PEM, relative to the config's folder):
    /// it signs the tokens of outbound deliveries and audit checkpoints. Made by
    /// `hallgate keys generate`.
    #[serde(default = "default_signing_key")]
    pub signing_key: String,
    /// The key that will replace it, published in the JWKS ahead of the switch.
    #[serde(default)]
    pub next_signing_key: Option<String>,
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

fn default_signing_key() -> String {
    "certs/gateway-signing.key.pem".into()
}

fn default_store() -> Spanned<String> {
    Spanned::new(0..0, "sqlite://data/hallgate.db".to_string())
}
fn default_shutdown_grace() -> u64 {
    15
}

/// `[limits]`: enforced before any work is done on a request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_records_per_body: usize,
    /// Requests being decoded or committed at once; past it, 503 with Retry-After.
    pub max_in_flight: usize,
    /// Nesting of XML elements or JSON arrays/objects.
    pub max_depth: usize,
    /// Longest text value, attribute or JSON string.
    pub max_string_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_records_per_body: 1000,
            max_in_flight: 4096,
            max_depth: 64,
            max_string_bytes: 1 << 20,
        }
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
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            hash: "sha256".into(),
            retain_payloads: true,
        }
    }
}

/// Roles a node may hold beyond sending and receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May query the audit log and timelines of every node (电子监察, 审管互动).
    Auditor,
    /// May read every message, case and delivery and put dead letters back in the
    /// queue (the gateway's operators; without this role a node sees only its own).
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
    /// What happens to a record from this node whose `item_code` the item catalogue
    /// does not hold as valid: `off` (default), `flag` (accepted with a flag) or
    /// `refuse` (rejected like any invalid record).
    #[serde(default)]
    pub catalogue: CataloguePolicy,
    /// Synchronisation with the node: pull its list API, its item catalogue, and the
    /// APIs reconciliation reads.
    #[serde(default)]
    pub sync: Option<SyncSettings>,
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
    /// HS256 (HS256 only with `hmac_secret_env`).
    pub algorithms: Vec<String>,
    /// Public keys: PEM files (key id = file name without `.pub.pem`) or JWK files
    /// (`.json`, key id from `kid`), relative to the config's folder.
    #[serde(default)]
    pub keys: Vec<String>,
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
    pub url: Spanned<String>,
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
    /// Client certificate and CA roots for this destination.
    #[serde(default)]
    pub tls: Option<ClientTls>,
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

/// `[[routes]]`: a rule that sends matching records to one or more destinations.
/// Every condition given must hold; a list condition holds when any entry matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(default)]
    pub kinds: Vec<Kind>,
    /// Sending node ids.
    #[serde(default)]
    pub sources: Vec<Spanned<String>>,
    /// 行政区划代码 prefixes.
    #[serde(default)]
    pub regions: Vec<String>,
    /// 事项编码 prefixes.
    #[serde(default)]
    pub item_codes: Vec<String>,
    /// Canonical item types (licensing, penalty, …).
    #[serde(default)]
    pub item_types: Vec<String>,
    /// Canonical field (dotted path) = required value.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Destination node ids.
    pub to: Vec<Spanned<String>>,
}

/// `[routing]`: what happens to a record no route matches.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Destinations for unmatched records; empty = such records are rejected.
    #[serde(default)]
    pub default: Vec<Spanned<String>>,
}

impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate configuration text; `path` is used in messages and to
    /// resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError::Invalid {
                path: shown.clone(),
                line,
                message: e.message().to_string(),
            }
        })?;
        config.source_path = path.to_path_buf();
        let errors = config.validate(text);
        match errors.len() {
            0 => Ok(config),
            1 => Err(errors.into_iter().next().expect("one error")),
            _ => Err(ConfigError::Many(errors)),
        }
    }

    fn validate(&self, text: &str) -> Vec<ConfigError> {
        let shown = self.source_path.display().to_string();
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, message: String| {
            errors.push(ConfigError::Invalid {
                path: shown.clone(),
                line: line_of(text, span.start),
                message,
            });
        };
        let listen = self.gateway.listen.get_ref();
        if listen.parse::<SocketAddr>().is_err() {
            err(
                self.gateway.listen.span(),
                format!("gateway.listen: `{listen}` is not an address such as 127.0.0.1:8080"),
            );
        }
        if let Err(e) = crate::audit::HashAlg::parse(&self.audit.hash) {
            err(0..0, format!("audit.hash: {e}"));
        }
        match crate::store::StoreUrl::parse(self.gateway.store.get_ref()) {
            Err(e) => err(self.gateway.store.span(), format!("gateway.store: {e}")),
            Ok(url) => {
                if let Err(e) = crate::store::check_url(&url.resolve(&self.base_dir())) {
                    err(self.gateway.store.span(), format!("gateway.store: {e}"));
                }
            }
        }
        for (id, node) in &self.nodes {
            let n = node.get_ref();
            if !valid_id(id) {
                err(
                    node.span(),
                    format!("nodes.{id}: a node id is lower-case letters, digits and '-'"),
                );
            }
            if let Some(region) = &n.region
                && !crate::record::is_region_code(region)
            {
                err(
                    node.span(),
                    format!("nodes.{id}.region: `{region}` is not a 6 or 12 digit 行政区划代码"),
                );
            }
            if let Some(auth) = &n.auth
                && let Err(e) = crate::auth::token::check_node(self, id, auth)
            {
                err(node.span(), e.to_string());
            }
            if let Some(sync) = &n.sync {
                for e in sync.problems(id) {
                    err(node.span(), e);
                }
            }
            if let Some(d) = &n.destination {
                let url = d.url.get_ref();
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || reqwest::Url::parse(url).is_err()
                {
                    err(
                        d.url.span(),
                        format!("nodes.{id}.destination.url: `{url}` is not an http(s) URL"),
                    );
                }
                if d.concurrency == 0 {
                    err(
                        node.span(),
                        format!("nodes.{id}.destination.concurrency: must be at least 1"),
                    );
                }
            }
        }
        for route in &self.routes {
            let r = route.get_ref();
            if r.to.is_empty() {
                err(
                    route.span(),
                    format!("routes `{}`: `to` names no destination", r.name),
                );
            }
            for to in &r.to {
                self.check_destination(to, &format!("routes `{}`.to", r.name), &mut err);
            }
            for s in &r.sources {
                if !self.nodes.contains_key(s.get_ref()) {
                    err(
                        s.span(),
                        format!(
                            "routes `{}`.sources: unknown node `{}`",
                            r.name,
                            s.get_ref()
                        ),
                    );
                }
            }
        }
        for to in &self.routing.default {
            self.check_destination(to, "routing.default", &mut err);
        }
        if let Some(c) = &self.catalogue {
            let has_url = self
                .nodes
                .get(&c.source)
                .and_then(|n| n.get_ref().sync.as_ref())
                .is_some_and(|s| s.catalogue_url.is_some());
            if !has_url {
                err(
                    0..0,
                    format!(
                        "catalogue.source: node `{}` must exist and have sync.catalogue_url",
                        c.source
                    ),
                );
            }
        }
        errors
    }

    fn check_destination(
        &self,
        to: &Spanned<String>,
        key: &str,
        err: &mut impl FnMut(std::ops::Range<usize>, String),
    ) {
        match self.nodes.get(to.get_ref()) {
            None => err(to.span(), format!("{key}: unknown node `{}`", to.get_ref())),
            Some(n) if n.get_ref().destination.is_none() => err(
                to.span(),
                format!(
                    "{key}: node `{}` has no [nodes.{}.destination]",
                    to.get_ref(),
                    to.get_ref()
                ),
            ),
            Some(_) => {}
        }
    }

    /// The folder relative paths in the config resolve against.
    /// The limits mapping decoders apply to one body.
    pub fn mapping_limits(&self) -> crate::mapping::Limits {
        crate::mapping::Limits {
            max_body_bytes: self.limits.max_body_bytes,
            max_depth: self.limits.max_depth,
            max_records: self.limits.max_records_per_body,
            max_string_bytes: self.limits.max_string_bytes,
        }
    }

    /// Compile every node's mappings (each file once), keyed by node id. Nodes
    /// without mappings are left out.
    pub fn load_mappings(
        &self,
        files: &dyn crate::mapping::Files,
    ) -> Result<BTreeMap<String, crate::mapping::MappingSet>, crate::mapping::MappingError> {
        let base = self.base_dir();
        let mut compiled: BTreeMap<PathBuf, std::sync::Arc<crate::mapping::Mapping>> =
            BTreeMap::new();
        let mut out = BTreeMap::new();
        for (id, node) in &self.nodes {
            let node = node.get_ref();
            if node.mappings.is_empty() {
                continue;
            }
            let mut set = Vec::new();
            for m in &node.mappings {
                let path = base.join(m);
                let mapping = match compiled.get(&path) {
                    Some(m) => m.clone(),
                    None => {
                        let m = std::sync::Arc::new(crate::mapping::Mapping::load(&path, files)?);
                        compiled.insert(path, m.clone());
                        m
                    }
                };
                set.push(mapping);
            }
            out.insert(id.clone(), crate::mapping::MappingSet::new(set));
        }
        Ok(out)
    }

    pub fn base_dir(&self) -> PathBuf {
        self.source_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Store settings from `[gateway]` and `[audit]`.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            audit_hash: crate::audit::HashAlg::parse(&self.audit.hash).unwrap_or_default(),
            retain_payloads: self.audit.retain_payloads,
            application_name: format!("hallgate {}", self.gateway.id),
        }
    }

    /// The store URL with relative paths resolved against the config's folder.
    pub fn store_url(&self) -> Result<crate::store::StoreUrl, crate::store::StoreError> {
        Ok(crate::store::StoreUrl::parse(self.gateway.store.get_ref())?.resolve(&self.base_dir()))
    }

    /// Path of the gateway's signing key.
    pub fn signing_key_path(&self) -> PathBuf {
        self.base_dir().join(&self.gateway.signing_key)
    }

    pub fn is_auditor(&self, node: &str) -> bool {
        self.node(node)
            .is_some_and(|n| n.roles.contains(&Role::Auditor))
    }

    /// Operators (and auditors) read every node's messages, cases and deliveries.
    pub fn reads_everything(&self, node: &str) -> bool {
        self.node(node)
            .is_some_and(|n| n.roles.contains(&Role::Operator) || n.roles.contains(&Role::Auditor))
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id).map(Spanned::get_ref)
    }

    /// Nodes that receive deliveries, with their destination settings.
    pub fn destinations(&self) -> impl Iterator<Item = (&str, &Destination)> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.get_ref().destination.as_ref().map(|d| (id.as_str(), d)))
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
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
                    if let Err(e) = crate::sync::Cursor::start(self.cursor, start) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[gateway]
id = "gw"
listen = "127.0.0.1:0"

[nodes.a]
name = "甲"
level = "district"
accept = { kinds = ["application"] }

[nodes.b]
name = "乙"
level = "city"
destination = { url = "http://127.0.0.1:9/x" }

[[routes]]
name = "all"
to = ["b"]
"#;

    #[test]
    fn minimal_config_loads() {
        let c = Config::parse(MINIMAL, Path::new("t.toml")).expect("valid");
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.destinations().count(), 1);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = MINIMAL.replace("level = \"city\"", "level = \"city\"\ncolour = \"red\"");
        let e = Config::parse(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:14:"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn route_to_unknown_node_names_line() {
        let text = MINIMAL.replace("to = [\"b\"]", "to = [\"b\", \"nowhere\"]");
        let e = Config::parse(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.toml:18: routes `all`.to: unknown node `nowhere`");
    }

    #[test]
    fn route_to_node_without_destination_is_refused() {
        let text = MINIMAL.replace("to = [\"b\"]", "to = [\"a\"]");
        let e = Config::parse(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("node `a` has no [nodes.a.destination]"), "{e}");
    }
}
