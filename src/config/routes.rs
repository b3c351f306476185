//! The routes (`[[routes]]`, `[routing]`): which destinations a record goes to.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::record::Kind;

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
