//! Loading the configuration whole: what `config` checks on its own (values, cross
//! references), and what only the layers above it can check, that the files and
//! settings it names can be used: the store URL with its TLS settings and CA file,
//! and each node's token keys. Every command and `hallgate check` load through
//! here, so a problem is named with file, line and key before anything starts.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::store::{self, StoreUrl};

/// Read, parse and check a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, path)
}

/// Parse and check configuration text (`path` names it in messages and anchors its
/// relative paths).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let config = Config::parse_unchecked(text, path)?;
    let mut problems = config.problems();
    problems.extend(file_problems(&config));
    ConfigError::all(problems).map(|()| config)
}

/// What is wrong with the files and settings the config names.
pub fn file_problems(config: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let store_span = config.gateway.store.span();
    match StoreUrl::parse(config.gateway.store.get_ref()) {
        Err(e) => out.push(config.problem(store_span, format!("gateway.store: {e}"))),
        Ok(url) => {
            if let Err(e) = store::check_url(&url.resolve(&config.base_dir())) {
                out.push(config.problem(store_span, format!("gateway.store: {e}")));
            }
        }
    }
    if let Err(e) = store::sealed::DataKeys::from_config(config) {
        out.push(config.problem(0..0, e.to_string()));
    }
    // The certificate and key `serve` would load, loaded the same way.
    if let Some(t) = &config.gateway.tls
        && let Err(e) = crate::tls::Reloading::new(t, &config.base_dir())
    {
        out.push(config.problem(0..0, format!("gateway.tls: {e}")));
    }
    if config.supervision.enabled
        && let Err(e) = crate::supervise::calendar(config)
    {
        out.push(config.problem(0..0, e.to_string()));
    }
    for (id, node) in &config.nodes {
        if let Some(auth) = &node.get_ref().auth
            && let Err(e) = crate::auth::token::check_node(config, id, auth)
        {
            out.push(config.problem(node.span(), e.to_string()));
        }
        let n = node.get_ref();
        if let Err(e) =
            crate::auth::envelope::Opening::new(config, id, n.sm2_sign.as_ref(), n.sm4.as_ref())
        {
            out.push(config.problem(node.span(), e.to_string()));
        }
        if let Some(tls) = n.destination.as_ref().and_then(|d| d.tls.as_ref())
            && let Err(e) = crate::tls::client_parts(tls, &config.base_dir())
        {
            out.push(config.problem(node.span(), format!("nodes.{id}.destination.tls: {e}")));
        }
        if let Some(d) = &n.destination
            && let Err(e) = crate::auth::envelope::Seal::new(
                config,
                id,
                d.sm2_sign.as_ref(),
                d.sm4.as_ref(),
                d.url(),
            )
        {
            out.push(config.problem(node.span(), e.to_string()));
        }
    }
    out
}
