//! XML namespaces written back: the `[namespaces]` a mapping declares, the prefix its
//! rendered elements carry (`[render] namespace`, on every element or the document
//! element only) and attributes of the document element (`xsi:schemaLocation`).
//!
//! Decoding ignores prefixes; only rendering uses what is compiled here.

use indexmap::IndexMap;

use super::Format;

/// The XML Schema instance namespace, declared by itself when an attribute uses
/// `xsi:` and the mapping does not declare it.
pub(crate) const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// What a rendered XML document declares and how its elements are named.
#[derive(Debug, Default, Clone)]
pub(crate) struct Namespaces {
    /// `xmlns:PREFIX="URI"` on the document element (`""`: the default namespace).
    pub declare: Vec<(String, String)>,
    /// The prefix of rendered elements (`None`: none written; `""`: the default
    /// namespace, declared, names unprefixed).
    pub prefix: Option<String>,
    /// Every element carries the prefix (`qualify = "all"`), or the document
    /// element only (`"document"`, for schemas with `elementFormDefault="unqualified"`).
    pub all: bool,
    /// Attributes of the document element, in order.
    pub attributes: Vec<(String, String)>,
}

impl Namespaces {
    pub fn is_empty(&self) -> bool {
        self.declare.is_empty() && self.attributes.is_empty()
    }

    /// The name an element is written with.
    pub fn name(&self, local: &str, document: bool) -> String {
        match self.prefix.as_deref() {
            Some(p) if !p.is_empty() && (document || self.all) => format!("{p}:{local}"),
            _ => local.to_string(),
        }
    }

    /// The declarations and attributes of the document element.
    pub fn document_attributes(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .declare
            .iter()
            .map(|(p, uri)| {
                let name = if p.is_empty() {
                    "xmlns".to_string()
                } else {
                    format!("xmlns:{p}")
                };
                (name, uri.clone())
            })
            .collect();
        out.extend(self.attributes.iter().cloned());
        out
    }
}

/// A prefix as XML allows it (an NCName), not reserved.
fn prefix_ok(p: &str) -> bool {
    let mut chars = p.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !p.to_ascii_lowercase().starts_with("xml")
}

/// The namespace keys of `[render]`: `namespace`, `qualify`, `attributes`.
pub(crate) struct RenderKeys<'a> {
    pub namespace: Option<&'a str>,
    pub qualify: Option<&'a str>,
    pub attributes: Option<&'a IndexMap<String, String>>,
}

/// Compile `[namespaces]` and the namespace keys of `[render]` into `spec.namespaces`.
pub(crate) fn compile(
    spec: &mut super::render::RenderSpec,
    format: Format,
    declared: Option<&IndexMap<String, String>>,
    render: RenderKeys,
) -> Result<(), String> {
    let empty = IndexMap::new();
    let (prefix, qualify) = (render.namespace, render.qualify);
    let attributes = render.attributes.unwrap_or(&empty);
    let declared_any = declared.is_some_and(|d| !d.is_empty());
    if format == Format::Json {
        if declared_any || prefix.is_some() || qualify.is_some() || !attributes.is_empty() {
            return Err(
                "namespaces, `[render] namespace`, `qualify` and `attributes` are for XML mappings"
                    .into(),
            );
        }
        return Ok(());
    }
    let mut ns = Namespaces {
        all: true,
        ..Namespaces::default()
    };
    for (p, uri) in declared.into_iter().flatten() {
        if !p.is_empty() && !prefix_ok(p) {
            return Err(format!(
                "`{p}` is not a namespace prefix (letters, digits, _ - . and not starting with xml); `\"\" = \"URI\"` declares the default namespace"
            ));
        }
        if uri.trim().is_empty() || uri.chars().any(char::is_whitespace) {
            return Err(format!(
                "prefix `{p}`: `{uri}` is not a namespace name (a URI without spaces)"
            ));
        }
        ns.declare.push((p.clone(), uri.clone()));
    }
    let known = |ns: &Namespaces, p: &str| ns.declare.iter().any(|(d, _)| d == p);
    if let Some(p) = prefix {
        if !known(&ns, p) {
            let list: Vec<String> = ns
                .declare
                .iter()
                .map(|(d, _)| {
                    if d.is_empty() {
                        "\"\"".into()
                    } else {
                        d.clone()
                    }
                })
                .collect();
            return Err(format!(
                "`[render] namespace = \"{p}\"` is not declared in [namespaces] (declared: {})",
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(", ")
                }
            ));
        }
        ns.prefix = Some(p.to_string());
    }
    ns.all = match qualify {
        None | Some("all") => true,
        Some("document") => false,
        Some(other) => {
            return Err(format!(
                "`qualify = \"{other}\"`: use \"all\" (every element carries the prefix) or \"document\" (the document element only)"
            ));
        }
    };
    if !ns.all && prefix == Some("") {
        return Err("a default namespace applies to every element; give it a prefix to qualify the document element only".into());
    }
    if qualify.is_some() && prefix.is_none() {
        return Err(
            "`qualify` says which elements carry `[render] namespace`; set that prefix too".into(),
        );
    }
    for (name, value) in attributes {
        if name == "xmlns" || name.starts_with("xmlns:") {
            return Err(format!(
                "attribute `{name}`: declare namespaces in [namespaces], not as attributes"
            ));
        }
        match name.split_once(':') {
            Some((p, local)) if prefix_ok(p) && !local.is_empty() && !local.contains(':') => {
                if !known(&ns, p) {
                    if p == "xsi" {
                        ns.declare.push(("xsi".into(), XSI.into()));
                    } else {
                        return Err(format!(
                            "attribute `{name}`: the prefix `{p}` is not declared in [namespaces]"
                        ));
                    }
                }
            }
            Some(_) => return Err(format!("attribute `{name}` is not an XML attribute name")),
            None if prefix_ok(name) => {}
            None => return Err(format!("attribute `{name}` is not an XML attribute name")),
        }
        ns.attributes.push((name.clone(), value.clone()));
    }
    spec.namespaces = ns;
    Ok(())
}
