//! Rendering: canonical records back into a node's native format with the same
//! mapping file that decodes them. Renames, code tables (through their inverse), time
//! patterns, splits and type coercions run backwards; constants on the canonical
//! side are not written; rules that cannot run backwards were refused at compile time
//! unless they say `render = false`.

use serde_json::{Map, Number, Value};

use super::eval::{Native, Rule, Source, get_path};
use super::time;
use super::{Format, Mapping, NPath, Step};

/// Native values written into every rendered record (`[render] constants`).
#[derive(Debug, Default)]
pub(crate) struct RenderSpec {
    pub constants: Vec<(NPath, String)>,
    /// Namespace declarations and prefixes (XML).
    pub namespaces: super::namespaces::Namespaces,
}

/// Why records cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("record {record}: {field}: {reason}")]
    Field {
        record: usize,
        field: String,
        reason: String,
    },
    #[error(
        "record {record}: a {got} record cannot be rendered with {file}, which maps {want} records"
    )]
    Kind {
        record: usize,
        got: String,
        want: String,
        file: String,
    },
    #[error("record {0}: not a JSON object")]
    NotObject(usize),
    #[error("no package mapping given")]
    NotPackage,
    #[error("{first} and {other} are parts of different packages (their `package` differs)")]
    Packages { first: String, other: String },
    #[error("record {record}: no part of the package of {file} renders {kind} records")]
    NoPart {
        record: usize,
        kind: String,
        file: String,
    },
    #[error(
        "{file}: the package `{package}` is the whole document, which holds one case, and {count} cases were given"
    )]
    OneCase {
        file: String,
        package: String,
        count: usize,
    },
    #[error("{file}: one XML record root ({root}) holds one record, and {count} were given")]
    OneRoot {
        file: String,
        root: String,
        count: usize,
    },
}

/// A value ready to be written.
pub(crate) enum Out {
    Str(String),
    Num(Number),
    Bool(bool),
}

impl Out {
    pub(crate) fn text(self) -> String {
        match self {
            Out::Str(s) => s,
            Out::Num(n) => n.to_string(),
            Out::Bool(b) => (if b { "1" } else { "0" }).to_string(),
        }
    }

    pub(crate) fn json(self, native: Option<Native>) -> Value {
        match (native, self) {
            (Some(Native::String), o) => Value::String(o.text()),
            (Some(Native::Number), Out::Str(s)) => s
                .parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                })
                .unwrap_or(Value::String(s)),
            (_, Out::Str(s)) => Value::String(s),
            (_, Out::Num(n)) => Value::Number(n),
            (_, Out::Bool(b)) => Value::Bool(b),
        }
    }
}

/// The native value of one canonical value under `rule`.
fn native(rule: &Rule, v: &Value) -> Result<Out, String> {
    if let Some(t) = &rule.table {
        return t
            .code_for(v)
            .map(Out::Str)
            .ok_or_else(|| format!("no code in table `{}` renders {v}", t.name));
    }
    if let Some(tr) = &rule.time {
        let s = v.as_str().ok_or("a time must be a string")?;
        return time::format(s, &tr.patterns[0], tr.zone, tr.date_only)
            .map(Out::Str)
            .ok_or_else(|| format!("`{s}` is not a canonical time"));
    }
    Ok(match v {
        Value::String(s) => Out::Str(s.clone()),
        Value::Number(n) => Out::Num(n.clone()),
        Value::Bool(b) => Out::Bool(*b),
        Value::Null => Out::Str(String::new()),
        _ => return Err("an object or list where one value was expected".into()),
    })
}

fn native_of(rule: &Rule, v: &Value) -> Result<Out, String> {
    match (&rule.split, v) {
        (Some(sep), Value::Array(items)) => {
            let parts = items
                .iter()
                .map(|i| native(rule, i).map(Out::text))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Out::Str(parts.join(sep)))
        }
        _ => native(rule, v),
    }
}

/// A native record being built: an XML element or a JSON object.
pub(crate) trait Target {
    fn put(&mut self, steps: &[Step], value: Out, native: Option<Native>);
    /// A new item under `steps` (the container path, then the item name).
    fn item(&mut self, steps: &[Step]) -> &mut Self;
}

#[derive(Default)]
pub(crate) struct Elem {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    text: Option<String>,
    pub children: Vec<Elem>,
}

impl Elem {
    pub fn new(name: &str) -> Elem {
        Elem {
            name: name.to_string(),
            ..Elem::default()
        }
    }

    /// Write `value` at `steps` unless something is there already: values from
    /// outside the record (`..`, `/`) are shared by the records written into one
    /// document, and the first one's stays.
    pub fn put_once(&mut self, steps: &[Step], value: Out) {
        match self.walk(steps) {
            (cur, Some(a)) => {
                if !cur.attrs.iter().any(|(k, _)| k == a) {
                    cur.attrs.push((a.clone(), value.text()));
                }
            }
            (cur, None) => {
                if cur.text.is_none() {
                    cur.text = Some(value.text());
                }
            }
        }
    }

    /// The element `steps` lead to (made with any before it: `NOTE[2]` is the second
    /// NOTE, as when decoding), and the attribute they end in, if any.
    fn walk<'s>(&mut self, steps: &'s [Step]) -> (&mut Elem, Option<&'s String>) {
        let mut cur = self;
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Name(n) => match steps.get(i + 1) {
                    Some(Step::Index(k)) => cur = cur.nth_child(n, *k),
                    _ => cur = cur.child(n),
                },
                Step::Attr(a) => return (cur, Some(a)),
                Step::Index(_) | Step::Up | Step::Top => {}
            }
        }
        (cur, None)
    }

    /// The element at the names `path` below this one, made if missing.
    pub fn at(&mut self, path: &[&str]) -> &mut Elem {
        let mut cur = self;
        for n in path {
            cur = cur.child(n);
        }
        cur
    }

    /// Prefix element names and add the document element's declarations.
    pub fn qualify(&mut self, ns: &super::namespaces::Namespaces) {
        fn rename(e: &mut Elem, ns: &super::namespaces::Namespaces, document: bool) {
            e.name = ns.name(&e.name, document);
            if ns.all {
                for c in &mut e.children {
                    rename(c, ns, false);
                }
            }
        }
        rename(self, ns, true);
        let mut attrs = ns.document_attributes();
        attrs.append(&mut self.attrs);
        self.attrs = attrs;
    }

    /// The XML document: declaration, this element, a final newline, in `encoding`.
    pub fn document(&self, encoding: &'static encoding_rs::Encoding) -> Vec<u8> {
        let mut text = format!("<?xml version=\"1.0\" encoding=\"{}\"?>", encoding.name());
        self.write(&mut text);
        text.push('\n');
        let (bytes, _, _) = encoding.encode(&text);
        bytes.into_owned()
    }
    /// The `nth` child named `name` (from 0), made with any before it.
    fn nth_child(&mut self, name: &str, nth: usize) -> &mut Elem {
        let mut have = self.children.iter().filter(|c| c.name == name).count();
        while have <= nth {
            self.children.push(Elem {
                name: name.to_string(),
                ..Elem::default()
            });
            have += 1;
        }
        let i = self
            .children
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name == name)
            .nth(nth)
            .map_or(0, |(i, _)| i);
        &mut self.children[i]
    }

    fn child(&mut self, name: &str) -> &mut Elem {
        match self.children.iter().position(|c| c.name == name) {
            Some(i) => &mut self.children[i],
            None => {
                self.children.push(Elem {
                    name: name.to_string(),
                    ..Elem::default()
                });
                let last = self.children.len() - 1;
                &mut self.children[last]
            }
        }
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&quick_xml::escape::escape(v.as_str()));
            out.push('"');
        }
        if self.text.is_none() && self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        if let Some(t) = &self.text {
            out.push_str(&quick_xml::escape::partial_escape(t.as_str()));
        }
        for c in &self.children {
            c.write(out);
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

impl Target for Elem {
    fn put(&mut self, steps: &[Step], value: Out, _native: Option<Native>) {
        match self.walk(steps) {
            (cur, Some(a)) => cur.attrs.push((a.clone(), value.text())),
            (cur, None) => cur.text = Some(value.text()),
        }
    }

    fn item(&mut self, steps: &[Step]) -> &mut Elem {
        let Some(last) = steps.iter().rposition(|s| matches!(s, Step::Name(_))) else {
            return self;
        };
        let mut cur = self;
        for (i, s) in steps.iter().enumerate() {
            let Step::Name(n) = s else {
                continue;
            };
            let nth = match steps.get(i + 1) {
                Some(Step::Index(k)) => Some(*k),
                _ => None,
            };
            cur = match (i == last, nth) {
                // `G[2]/ITEM`, `ITEMS/ITEM[2]`: that element, as when decoding.
                (_, Some(k)) => cur.nth_child(n, k),
                // One new element per item.
                (true, None) => {
                    cur.children.push(Elem {
                        name: n.clone(),
                        ..Elem::default()
                    });
                    let at = cur.children.len() - 1;
                    &mut cur.children[at]
                }
                (false, None) => cur.child(n),
            };
        }
        cur
    }
}

pub(crate) struct Obj(pub Map<String, Value>);

impl Obj {
    /// Write `value` at `steps` unless a value is there already (see [`Elem::put_once`]).
    pub fn put_once(&mut self, steps: &[Step], value: Value) {
        let mut root = Value::Object(std::mem::take(&mut self.0));
        let mut at = &mut root;
        for s in steps {
            let Step::Name(n) = s else {
                continue;
            };
            if !at.is_object() {
                if !at.is_null() {
                    break;
                }
                *at = Value::Object(Map::new());
            }
            let Value::Object(m) = at else {
                break;
            };
            at = m.entry(n.clone()).or_insert(Value::Null);
        }
        if at.is_null() {
            *at = value;
        }
        if let Value::Object(m) = root {
            self.0 = m;
        }
    }

    pub fn put_value(&mut self, steps: &[Step], value: Value) {
        // A path starts with a key (a JSON path cannot start with an index).
        if !matches!(steps.first(), Some(Step::Name(_))) {
            return;
        }
        let mut root = Value::Object(std::mem::take(&mut self.0));
        json_put(&mut root, steps, value);
        if let Value::Object(m) = root {
            self.0 = m;
        }
    }
}

impl Target for Obj {
    fn put(&mut self, steps: &[Step], value: Out, native: Option<Native>) {
        self.put_value(steps, value.json(native));
    }

    fn item(&mut self, _steps: &[Step]) -> &mut Obj {
        self
    }
}

/// Renders the items of an `each` rule into the target.
type EachFn<'e, T> =
    dyn FnMut(&NPath, &[Rule], &[Value], &mut T, &str) -> Result<(), RenderError> + 'e;

/// A value read from outside the record (`..`, `/`), written where its path leads
/// once the record's place in the document is known.
pub(crate) struct Lifted {
    pub steps: Vec<Step>,
    pub value: Out,
    pub native: Option<Native>,
}

#[allow(clippy::too_many_arguments)]
fn fill<T: Target>(
    rules: &[Rule],
    record: &Map<String, Value>,
    target: &mut T,
    index: usize,
    prefix: &str,
    each: &mut EachFn<'_, T>,
    lifted: &mut Vec<Lifted>,
) -> Result<(), RenderError> {
    for rule in rules {
        if !rule.render {
            continue;
        }
        let Some(v) = get_path(record, &rule.target) else {
            continue;
        };
        match &rule.source {
            Source::Path(paths) => {
                let out = native_of(rule, v).map_err(|reason| RenderError::Field {
                    record: index,
                    field: format!("{prefix}{}", rule.field),
                    reason,
                })?;
                if paths[0].is_context() {
                    lifted.push(Lifted {
                        steps: paths[0].steps.clone(),
                        value: out,
                        native: rule.native,
                    });
                } else {
                    target.put(&paths[0].steps, out, rule.native);
                }
            }
            Source::Each { path, rules, .. } => {
                let Value::Array(items) = v else {
                    return Err(RenderError::Field {
                        record: index,
                        field: format!("{prefix}{}", rule.field),
                        reason: "a list of objects was expected".into(),
                    });
                };
                each(
                    path,
                    rules,
                    items,
                    target,
                    &format!("{prefix}{}", rule.field),
                )?;
            }
            Source::Const(_) | Source::Template(_) => {}
        }
    }
    Ok(())
}

/// Fill an XML record element; values from outside it go to `lifted`.
pub(crate) fn fill_xml(
    rules: &[Rule],
    record: &Map<String, Value>,
    elem: &mut Elem,
    index: usize,
    prefix: &str,
    lifted: &mut Vec<Lifted>,
) -> Result<(), RenderError> {
    let mut each = |path: &NPath, rules: &[Rule], items: &[Value], elem: &mut Elem, field: &str| {
        for (i, item) in items.iter().enumerate() {
            let Value::Object(m) = item else {
                return Err(RenderError::Field {
                    record: index,
                    field: format!("{field}[{i}]"),
                    reason: "not an object".into(),
                });
            };
            let child = elem.item(&path.steps);
            // Item rules never read outside the item (refused at compile time).
            fill_xml(
                rules,
                m,
                child,
                index,
                &format!("{field}[{i}]."),
                &mut Vec::new(),
            )?;
        }
        Ok(())
    };
    fill(rules, record, elem, index, prefix, &mut each, lifted)
}

/// Fill a JSON record object; values from outside it go to `lifted`.
pub(crate) fn fill_json(
    rules: &[Rule],
    record: &Map<String, Value>,
    obj: &mut Obj,
    index: usize,
    prefix: &str,
    lifted: &mut Vec<Lifted>,
) -> Result<(), RenderError> {
    let mut each = |path: &NPath, rules: &[Rule], items: &[Value], obj: &mut Obj, field: &str| {
        let mut list = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::Object(m) = item else {
                return Err(RenderError::Field {
                    record: index,
                    field: format!("{field}[{i}]"),
                    reason: "not an object".into(),
                });
            };
            let mut child = Obj(Map::new());
            fill_json(
                rules,
                m,
                &mut child,
                index,
                &format!("{field}[{i}]."),
                &mut Vec::new(),
            )?;
            list.push(Value::Object(child.0));
        }
        obj.put_value(&path.steps, Value::Array(list));
        Ok(())
    };
    fill(rules, record, obj, index, prefix, &mut each, lifted)
}

/// Where a value from outside the record goes, as steps below the document element
/// (XML) or the document (JSON): `record` is the names from the document (element)
/// to the record. `None` for a `/` path into another document element.
pub(crate) fn absolute(steps: &[Step], record: &[&str], format: Format) -> Option<Vec<Step>> {
    let name = |n: &&str| Step::Name(n.to_string());
    match steps.first() {
        Some(Step::Up) => {
            let ups = steps.iter().take_while(|s| **s == Step::Up).count();
            let keep = record.len().checked_sub(ups)?;
            let from = usize::from(format == Format::Xml);
            let mut out: Vec<Step> = record.get(from..keep.max(from))?.iter().map(name).collect();
            out.extend(steps[ups..].iter().cloned());
            Some(out)
        }
        Some(Step::Top) => match format {
            Format::Xml => match steps.get(1) {
                Some(Step::Name(d)) if record.first() == Some(&d.as_str()) => {
                    Some(steps[2..].to_vec())
                }
                _ => None,
            },
            Format::Json => Some(steps[1..].to_vec()),
        },
        _ => Some(steps.to_vec()),
    }
}

/// How many of `steps` cover their first `names` element names (the steps of a root
/// that lie within its package).
pub(crate) fn steps_covering(steps: &[Step], names: usize) -> usize {
    let mut seen = 0;
    for (i, s) in steps.iter().enumerate() {
        if seen == names {
            return i;
        }
        seen += usize::from(matches!(s, Step::Name(_)));
    }
    steps.len()
}

/// The element names of a path (indexes and attributes left out).
pub(crate) fn names(path: &NPath) -> Vec<&str> {
    path.steps
        .iter()
        .filter_map(|s| match s {
            Step::Name(n) => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

/// Write `value` at `steps` below `at`: names are keys of objects, indexes places in
/// lists (`NOTE[2]` is the second item of the list `NOTE`; the items before it are
/// null until a rule fills them).
fn json_put(at: &mut Value, steps: &[Step], value: Value) {
    let Some((first, rest)) = steps.split_first() else {
        *at = value;
        return;
    };
    match first {
        Step::Name(n) => {
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            if let Value::Object(m) = at {
                json_put(m.entry(n.clone()).or_insert(Value::Null), rest, value);
            }
        }
        Step::Index(k) => {
            if !at.is_array() {
                *at = Value::Array(Vec::new());
            }
            if let Value::Array(items) = at {
                if items.len() <= *k {
                    items.resize(k + 1, Value::Null);
                }
                json_put(&mut items[*k], rest, value);
            }
        }
        Step::Attr(_) | Step::Up | Step::Top => {}
    }
}

pub(crate) fn render(mapping: &Mapping, records: &[Value]) -> Result<Vec<u8>, RenderError> {
    let objects = objects(mapping, records)?;
    render_objects(mapping, &objects)
}

/// The records as objects of the mapping's kind.
pub(crate) fn objects<'r>(
    mapping: &Mapping,
    records: &'r [Value],
) -> Result<Vec<&'r Map<String, Value>>, RenderError> {
    let mut objects = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let Value::Object(m) = r else {
            return Err(RenderError::NotObject(i));
        };
        if let Some(k) = m.get("kind").and_then(Value::as_str)
            && k != mapping.kind.as_str()
        {
            return Err(RenderError::Kind {
                record: i,
                got: k.to_string(),
                want: mapping.kind.to_string(),
                file: mapping.file.clone(),
            });
        }
        objects.push(m);
    }
    Ok(objects)
}

fn render_objects(
    mapping: &Mapping,
    objects: &[&Map<String, Value>],
) -> Result<Vec<u8>, RenderError> {
    if mapping.package.is_some() {
        return super::package::render(&[mapping], objects);
    }
    match mapping.format {
        Format::Xml => {
            let root = if objects.len() > 1 {
                mapping
                    .roots
                    .iter()
                    .find(|r| r.steps.len() >= 2)
                    .ok_or_else(|| RenderError::OneRoot {
                        file: mapping.file.clone(),
                        root: mapping.roots[0].text.clone(),
                        count: objects.len(),
                    })?
            } else {
                &mapping.roots[0]
            };
            let names = names(root);
            let mut doc = Elem::new(names.first().copied().unwrap_or("RECORDS"));
            for (i, m) in objects.iter().enumerate() {
                let mut elem = Elem::new(names.last().copied().unwrap_or("RECORD"));
                let mut lifted = Vec::new();
                fill_xml(&mapping.rules, m, &mut elem, i, "", &mut lifted)?;
                for (p, v) in &mapping.render.constants {
                    elem.put(&p.steps, Out::Str(v.clone()), None);
                }
                // Values from around the record go into the document first, so an
                // envelope's `Head` comes before the records' `Body`.
                let around = if names.len() == 1 {
                    &mut elem
                } else {
                    &mut doc
                };
                for l in lifted {
                    if let Some(steps) = absolute(&l.steps, &names, Format::Xml) {
                        around.put_once(&steps, l.value);
                    }
                }
                if names.len() == 1 {
                    doc = elem;
                } else {
                    // the path between the document element and the record element
                    doc.at(&names[1..names.len() - 1]).children.push(elem);
                }
            }
            if !mapping.render.namespaces.is_empty() || mapping.render.namespaces.prefix.is_some() {
                doc.qualify(&mapping.render.namespaces);
            }
            Ok(doc.document(mapping.encoding))
        }
        Format::Json => {
            let root = &mapping.roots[0];
            let names = names(root);
            let mut wrapper = Obj(Map::new());
            let mut out = Vec::with_capacity(objects.len());
            for (i, m) in objects.iter().enumerate() {
                let mut obj = Obj(Map::new());
                let mut lifted = Vec::new();
                fill_json(&mapping.rules, m, &mut obj, i, "", &mut lifted)?;
                for (p, v) in &mapping.render.constants {
                    obj.put(&p.steps, Out::Str(v.clone()), None);
                }
                let around = if root.steps.is_empty() {
                    &mut obj
                } else {
                    &mut wrapper
                };
                for l in lifted {
                    if let Some(steps) = absolute(&l.steps, &names, Format::Json) {
                        around.put_once(&steps, l.value.json(l.native));
                    }
                }
                out.push(Value::Object(obj.0));
            }
            let body = if root.steps.is_empty() {
                if out.len() == 1 {
                    out.pop().unwrap_or(Value::Null)
                } else {
                    Value::Array(out)
                }
            } else {
                wrapper.put_value(&root.steps, Value::Array(out));
                Value::Object(wrapper.0)
            };
            Ok(json_body(&body))
        }
    }
}

/// A JSON body with its final newline.
pub(crate) fn json_body(body: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}
