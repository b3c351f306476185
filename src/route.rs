//! Routing: which destinations a canonical record goes to.
//!
//! Rules come from `[[routes]]` in the config. Every rule whose conditions all hold
//! contributes its destinations (one record may fan out: 并联审批, 审管互动); a record no
//! rule matches goes to `[routing].default` or, when that is empty, is rejected. A
//! record is never silently dropped.

use crate::config::Config;
use crate::record::{Kind, Record};

/// Why a record could not be routed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error(
        "no route matches this {kind} record (source `{source_node}`, region {region}); add a [[routes]] rule or a [routing].default"
    )]
    NoRoute {
        kind: Kind,
        source_node: String,
        region: String,
    },
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    kinds: Vec<Kind>,
    sources: Vec<String>,
    regions: Vec<String>,
    item_codes: Vec<String>,
    item_types: Vec<String>,
    fields: Vec<(String, String)>,
    to: Vec<String>,
}

impl Rule {
    fn matches(&self, source: &str, r: &Record) -> bool {
        let prefix_any = |prefixes: &[String], value: Option<&str>| {
            prefixes.is_empty()
                || value.is_some_and(|v| prefixes.iter().any(|p| v.starts_with(p.as_str())))
        };
        // Alerts go only where a rule names them: a rule for every kind means every
        // kind nodes send.
        (if r.kind == Kind::Alert {
            self.kinds.contains(&Kind::Alert)
        } else {
            self.kinds.is_empty() || self.kinds.contains(&r.kind)
        }) && (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
            && prefix_any(&self.regions, r.str_field("region"))
            && prefix_any(&self.item_codes, r.str_field("item_code"))
            && (self.item_types.is_empty()
                || r.str_field("item_type")
                    .is_some_and(|t| self.item_types.iter().any(|x| x == t)))
            && self
                .fields
                .iter()
                .all(|(path, want)| r.path_text(path).as_deref() == Some(want.as_str()))
    }
}

/// The compiled routing table.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<Rule>,
    default: Vec<String>,
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let rules = config
            .routes
            .iter()
            .map(|r| {
                let r = r.get_ref();
                Rule {
                    name: r.name.clone(),
                    kinds: r.kinds.clone(),
                    sources: r.sources.iter().map(|s| s.get_ref().clone()).collect(),
                    regions: r.regions.clone(),
                    item_codes: r.item_codes.clone(),
                    item_types: r.item_types.clone(),
                    fields: r
                        .fields
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    to: r.to.iter().map(|s| s.get_ref().clone()).collect(),
                }
            })
            .collect();
        Router {
            rules,
            default: config
                .routing
                .default
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
        }
    }

    /// Destinations for a record sent by `source`, in rule order, without repeats.
    /// The sender itself is never a destination of its own record.
    pub fn route(&self, source: &str, record: &Record) -> Result<Vec<String>, RouteError> {
        let mut out: Vec<String> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.matches(source, record)) {
            for to in &rule.to {
                if to != source && !out.contains(to) {
                    out.push(to.clone());
                }
            }
        }
        if out.is_empty() {
            out = self
                .default
                .iter()
                .filter(|d| *d != source)
                .cloned()
                .collect();
        }
        if out.is_empty() {
            return Err(RouteError::NoRoute {
                kind: record.kind,
                source_node: source.to_string(),
                region: record.str_field("region").unwrap_or("-").to_string(),
            });
        }
        Ok(out)
    }

    /// Where a supervision alert goes: the destinations of the rules naming `alert`
    /// in their kinds (none: the alert is kept and audited, not sent).
    pub fn route_alert(&self, source: &str, record: &Record) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.matches(source, record)) {
            for to in &rule.to {
                if !out.contains(to) {
                    out.push(to.clone());
                }
            }
        }
        out
    }

    /// Every destination a record from `source` could be routed to (the rules that may
    /// match its sender, and the default): what a paused source would feed.
    pub fn reachable(&self, source: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let rules = self
            .rules
            .iter()
            .filter(|r| r.sources.is_empty() || r.sources.iter().any(|s| s == source));
        for to in rules.flat_map(|r| &r.to).chain(&self.default) {
            if to != source && !out.contains(to) {
                out.push(to.clone());
            }
        }
        out
    }

    /// Names of the rules that match (for explaining a routing decision).
    pub fn matching_rules(&self, source: &str, record: &Record) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|r| r.matches(source, record))
            .map(|r| r.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn config(routes: &str, default: &str) -> Config {
        let text = format!(
            r#"
[gateway]
id = "gw"
listen = "127.0.0.1:0"
[nodes.a]
name = "甲"
level = "district"
[nodes.city]
name = "市"
level = "city"
destination = {{ url = "http://127.0.0.1:9/" }}
[nodes.prov]
name = "省"
level = "province"
destination = {{ url = "http://127.0.0.1:9/" }}
[nodes.sup]
name = "监"
level = "department"
destination = {{ url = "http://127.0.0.1:9/" }}
{routes}
[routing]
default = [{default}]
"#
        );
        Config::parse(&text, Path::new("t.toml")).expect("config")
    }

    fn rec(v: serde_json::Value) -> Record {
        Record::from_value(0, v, None).expect("record")
    }

    #[test]
    fn fan_out_and_conditions() {
        let c = config(
            r#"
[[routes]]
name = "all"
sources = ["a"]
to = ["city"]
[[routes]]
name = "licensing-results"
kinds = ["result", "application"]
regions = ["3502"]
item_types = ["licensing"]
to = ["prov", "city"]
[[routes]]
name = "denied"
kinds = ["result"]
fields = { decision = "deny" }
to = ["sup"]
"#,
            "",
        );
        let router = Router::new(&c);
        let app = rec(
            json!({"kind":"application","case_no":"1","item_code":"X","region":"350205","item_type":"licensing"}),
        );
        assert_eq!(router.route("a", &app).unwrap(), vec!["city", "prov"]);
        let other_region = rec(
            json!({"kind":"application","case_no":"1","item_code":"X","region":"330122","item_type":"licensing"}),
        );
        assert_eq!(router.route("a", &other_region).unwrap(), vec!["city"]);
        let denied = rec(json!({"kind":"result","case_no":"1","decision":"deny"}));
        assert_eq!(router.route("a", &denied).unwrap(), vec!["city", "sup"]);
        assert_eq!(router.matching_rules("a", &denied), vec!["all", "denied"]);
    }

    #[test]
    fn unmatched_is_rejected_or_defaulted() {
        let c = config(
            "[[routes]]\nname = \"r\"\nkinds = [\"result\"]\nto = [\"sup\"]",
            "",
        );
        let app = rec(json!({"kind":"process","case_no":"1"}));
        assert!(matches!(
            Router::new(&c).route("a", &app),
            Err(RouteError::NoRoute { .. })
        ));
        let c = config(
            "[[routes]]\nname = \"r\"\nkinds = [\"result\"]\nto = [\"sup\"]",
            "\"city\"",
        );
        assert_eq!(Router::new(&c).route("a", &app).unwrap(), vec!["city"]);
    }
}
