//! Configuration: the gateway, its nodes and its routes, read from one TOML file
//! (`hallgate.toml` by default) and validated as a whole before anything starts.
//!
//! Every error names the file, the line and the key, so an integrator can fix a
//! config without reading Rust. Unknown keys are errors (serde `deny_unknown_fields`);
//! cross references (routes naming nodes) are checked after parsing, with the span of
//! the offending value. This is layer 1: what only a higher layer can check (that
//! key files, CA files and mappings load) is checked by `gateway::load`, which
//! `hallgate check` and every command run.

mod gateway;
mod guomi;
mod node;
mod receipt;
mod routes;
mod spans;
mod tables;
pub use receipt::RECEIPT_PREFIX;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use gateway::*;
pub use guomi::*;
pub use node::*;
pub use routes::*;
pub use tables::*;

/// The `[log] format` of a config file, read before logging starts (and before the
/// config is checked whole): None when the file or the setting is not there.
pub fn log_format_of(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    v.get("log")?.get("format")?.as_str().map(str::to_string)
}

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
    /// Personal data encrypted at rest.
    #[serde(default)]
    pub store: StoreCrypto,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub console: ConsoleSettings,
    #[serde(default)]
    pub supervision: SupervisionSettings,
    /// `[catalogue] source = "NODE"`: whose item catalogue is the reference (the
    /// provincial hall's); it is pulled from that node's `sync.catalogue_url`.
    #[serde(default)]
    pub catalogue: Option<CatalogueSource>,
    /// Where the file was read from; relative paths in it resolve against its folder.
    #[serde(skip)]
    pub source_path: PathBuf,
    /// The text it was read from (to name the line of a problem).
    #[serde(skip)]
    text: String,
}

/// `[nodes.ID] id_checks`: what happens to a record whose ID number (居民身份证号码,
/// 统一社会信用代码) fails its check. `flag` is for nodes whose data cannot be
/// corrected at the source in time: the record is accepted as sent with the flag
/// `id_no_invalid`, audited, and counted by supervision as data-quality code 0006.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IdChecks {
    #[default]
    Refuse,
    Flag,
}

impl ConfigError {
    /// `Ok` when there are no problems, else the one problem or all of them.
    pub fn all(mut errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Many(errors)),
        }
    }
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
        let config = Config::parse_unchecked(text, path)?;
        let errors = config.problems();
        ConfigError::all(errors).map(|()| config)
    }

    /// Parse configuration text without checking it beyond its syntax and types
    /// (callers then run [`Config::problems`], and more).
    pub fn parse_unchecked(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            // A type error names the key it is about.
            let key = e.span().and_then(|s| spans::key_at(text, s.start));
            let message = e.message().trim().to_string();
            ConfigError::Invalid {
                path: shown.clone(),
                line,
                message: match key {
                    Some(k) if !message.starts_with(&k) => format!("{k}: {message}"),
                    _ => message,
                },
            }
        })?;
        config.source_path = path.to_path_buf();
        config.text = text.to_string();
        Ok(config)
    }

    /// A problem at a place in the file (a value's span).
    pub fn problem(&self, span: std::ops::Range<usize>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.source_path.display().to_string(),
            // At the key the message names when the text has it, else at the span.
            line: spans::key_line(&self.text, &message)
                .unwrap_or_else(|| line_of(&self.text, span.start)),
            message,
        }
    }

    /// What is wrong with the configuration as a whole: values, cross references.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, message: String| {
            errors.push(self.problem(span, message));
        };
        let listen = self.gateway.listen.get_ref();
        match listen.parse::<SocketAddr>() {
            Err(_) => err(
                self.gateway.listen.span(),
                format!("gateway.listen: `{listen}` is not an address such as 127.0.0.1:8080"),
            ),
            Ok(addr) if self.gateway.trust_node_header && !addr.ip().is_loopback() => err(
                self.gateway.listen.span(),
                format!(
                    "gateway.trust_node_header: only for development on loopback, and gateway.listen is `{listen}`; senders prove who they are with tokens ([nodes.ID.auth]) or certificates"
                ),
            ),
            Ok(_) => {}
        }
        for e in self.supervision.problems() {
            err(0..0, e);
        }
        if let Err(e) = crate::hash::HashAlg::parse(&self.audit.hash) {
            err(0..0, format!("audit.hash: {e}"));
        }
        if !["open", "operator"].contains(&self.gateway.metrics.as_str()) {
            err(
                0..0,
                format!(
                    "gateway.metrics `{}`: open or operator",
                    self.gateway.metrics
                ),
            );
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            err(
                0..0,
                format!("log.format `{}`: text or json", self.log.format),
            );
        }
        if !["es256", "sm2"].contains(&self.audit.checkpoint_alg.to_ascii_lowercase().as_str()) {
            err(
                0..0,
                format!(
                    "audit.checkpoint_alg `{}`: es256 or sm2",
                    self.audit.checkpoint_alg
                ),
            );
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
            if let Some(a) = &n.accept {
                for (key, pattern) in [
                    ("case_no_pattern", &a.case_no_pattern),
                    ("id_pattern", &a.id_pattern),
                ] {
                    if let Some(p) = pattern
                        && let Err(e) = regex::Regex::new(&format!("^(?:{p})$"))
                    {
                        err(
                            node.span(),
                            format!("nodes.{id}.accept.{key}: not a regular expression: {e}"),
                        );
                    }
                }
            }
            if let Some(sync) = &n.sync {
                for e in sync.problems(id) {
                    err(node.span(), e);
                }
            }
            if let Some(t) = &n.tables {
                for e in t.problems(id) {
                    err(node.span(), e);
                }
            }
            if let Some(e) = receipt::problem(id, n) {
                err(n.receipt_url.as_ref().map_or(node.span(), |u| u.span()), e);
            }
            if let Some(d) = &n.destination {
                let tables = n.tables.as_ref().is_some_and(|t| !t.destination.is_empty());
                match &d.url {
                    Some(u) if tables => err(
                        u.span(),
                        format!(
                            "nodes.{id}.destination.url: the node takes its records in its tables ([[nodes.{id}.tables.destination]]); give one or the other"
                        ),
                    ),
                    Some(u) => {
                        let url = u.get_ref();
                        if !(url.starts_with("http://") || url.starts_with("https://"))
                            || reqwest::Url::parse(url).is_err()
                        {
                            err(
                                u.span(),
                                format!(
                                    "nodes.{id}.destination.url: `{url}` is not an http(s) URL"
                                ),
                            );
                        }
                    }
                    None if !tables => err(
                        node.span(),
                        format!(
                            "nodes.{id}.destination.url: required (or [[nodes.{id}.tables.destination]] for a 前置库)"
                        ),
                    ),
                    None => {}
                }
                if d.concurrency == 0 {
                    err(
                        node.span(),
                        format!("nodes.{id}.destination.concurrency: must be at least 1"),
                    );
                }
                if let Some(b) = &d.batch
                    && (!(1..=1000).contains(&b.max_records)
                        || b.max_bytes < 1024
                        || b.max_wait_ms > 60_000)
                {
                    err(
                        node.span(),
                        format!(
                            "nodes.{id}.destination.batch: max_records is 1 to 1000, max_bytes at least 1024, max_wait_ms at most 60000"
                        ),
                    );
                }
                if let Some(b) = &d.max_backlog
                    && (b.records.unwrap_or(0) == 0 && b.bytes.unwrap_or(0) == 0
                        || b.records == Some(0)
                        || b.bytes == Some(0))
                {
                    err(
                        node.span(),
                        format!(
                            "nodes.{id}.destination.max_backlog: give `records`, `bytes` or both, each at least 1"
                        ),
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
    pub fn base_dir(&self) -> PathBuf {
        self.source_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Path of the gateway's signing key.
    pub fn signing_key_path(&self) -> PathBuf {
        self.base_dir().join(&self.gateway.signing_key)
    }

    /// Path of the gateway's SM2 key.
    pub fn sm2_signing_key_path(&self) -> PathBuf {
        self.base_dir().join(&self.gateway.sm2_signing_key)
    }

    /// Path of the key that signs checkpoints, per `[audit] checkpoint_alg`.
    pub fn checkpoint_key_path(&self) -> PathBuf {
        if self.audit.checkpoint_alg.eq_ignore_ascii_case("sm2") {
            self.sm2_signing_key_path()
        } else {
            self.signing_key_path()
        }
    }

    pub fn is_auditor(&self, node: &str) -> bool {
        self.node(node)
            .is_some_and(|n| n.roles.contains(&Role::Auditor))
    }

    /// Operators pause destinations, retry dead letters and reload the configuration.
    pub fn is_operator(&self, node: &str) -> bool {
        self.node(node)
            .is_some_and(|n| n.roles.contains(&Role::Operator))
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
