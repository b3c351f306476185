//! Evaluating compiled rules against one native record: read the source value, apply
//! the declared transformations in a fixed order (trim, half-width, case, regex,
//! split, table, time, type, check) and write the canonical field.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use crate::record::Val;

use super::NPath;
use super::Step;
use super::layout::{Layout, NO_FIELD, Staged};
use super::time::{self, Pattern};
use crate::record::FieldError;
use crate::record::checks::Check;

/// A native record the rules can read: an XML element or a JSON value.
pub(crate) trait Tree {
    type Node: Copy;
    /// The value at `path` below `node`.
    fn lookup(&self, node: Self::Node, path: &NPath) -> Lookup<'_>;
    /// Every node `path` reaches below `node`, for `each`.
    fn each(&self, node: Self::Node, path: &NPath, out: &mut Vec<Self::Node>);
}

/// What a path found.
#[derive(Debug)]
pub(crate) enum Lookup<'t> {
    Absent,
    Str(&'t str),
    Num(&'t Number),
    Bool(bool),
    /// An object or list where one value was expected.
    Composite,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Case {
    Upper,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coerce {
    String,
    Integer,
    Number,
    Boolean,
}

/// How a value is written into native JSON when rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Native {
    String,
    Number,
}

#[derive(Debug)]
pub(crate) struct TimeRule {
    pub patterns: Vec<Pattern>,
    pub texts: Vec<String>,
    pub zone: jiff::tz::Offset,
    pub date_only: bool,
}

#[derive(Debug)]
pub(crate) enum CondSubject {
    Field(Vec<String>),
    Path(NPath),
}

#[derive(Debug)]
pub(crate) enum CondTest {
    Equals(Vec<String>),
    Present(bool),
}

#[derive(Debug)]
pub(crate) struct Cond {
    pub subject: CondSubject,
    pub test: CondTest,
    /// A source value is compared after the file's full-width to half-width step,
    /// as the fields read it (`００１` equals "001").
    pub halfwidth: bool,
    /// The staged value a `field` condition reads ([`super::layout::NO_FIELD`] if no
    /// rule writes it).
    pub slot: u32,
}

#[derive(Debug)]
pub(crate) enum TPart {
    Lit(String),
    Path(NPath),
}

#[derive(Debug)]
pub(crate) enum Source {
    Path(Vec<NPath>),
    Template(Vec<TPart>),
    Const(Value),
    Each {
        path: NPath,
        rules: Vec<Rule>,
        layout: Layout,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Unknown {
    Reject,
    Pass,
    Default(Value),
}

/// A code table: source code to canonical value, with its inverse for rendering.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: String,
    entries: HashMap<String, Value>,
    small: Vec<(String, Value)>,
    keys: Vec<String>,
    unknown: Unknown,
    inverse: HashMap<String, String>,
    ambiguous: bool,
}

impl Table {
    pub fn new(
        name: &str,
        entries: Vec<(String, Value)>,
        unknown: Unknown,
        render: HashMap<String, String>,
    ) -> Table {
        let mut inverse: HashMap<String, String> = HashMap::new();
        let mut ambiguous = false;
        for (k, v) in &entries {
            let key = value_key(v);
            if let Some(code) = render.get(&key) {
                inverse.insert(key, code.clone());
                continue;
            }
            match inverse.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => ambiguous = true,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(k.clone());
                }
            }
        }
        // A `render` choice for a value outside the map: the default for unknown
        // codes (`default = "other"`, `render = { other = "9" }`).
        for (key, code) in render {
            inverse.entry(key).or_insert(code);
        }
        Table {
            name: name.to_string(),
            small: if entries.len() <= 16 {
                entries.clone()
            } else {
                Vec::new()
            },
            keys: entries.iter().map(|(k, _)| k.clone()).collect(),
            entries: entries.into_iter().collect(),
            unknown,
            inverse,
            ambiguous,
        }
    }

    /// The canonical value of a code. Small tables (most are) are scanned, which is
    /// faster than hashing.
    fn get(&self, code: &str) -> Option<&Value> {
        if self.small.is_empty() {
            self.entries.get(code)
        } else {
            self.small.iter().find(|(k, _)| k == code).map(|(_, v)| v)
        }
    }

    /// The canonical values of the known codes.
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.entries.values()
    }

    /// What an unknown code becomes.
    pub fn unknown(&self) -> &Unknown {
        &self.unknown
    }

    /// Whether every canonical value renders to one known code.
    pub fn invertible(&self) -> bool {
        !self.ambiguous
    }

    /// The code to write for a canonical value; unknown values pass through when the
    /// table passes unknown codes through.
    pub fn code_for(&self, v: &Value) -> Option<String> {
        let key = value_key(v);
        self.inverse
            .get(&key)
            .cloned()
            .or_else(|| matches!(self.unknown, Unknown::Pass).then_some(key))
    }
}

fn value_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One compiled field rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub field: String,
    pub target: Vec<String>,
    pub line: usize,
    pub source: Source,
    pub required: bool,
    pub default: Option<Value>,
    pub trim: bool,
    pub halfwidth: bool,
    pub case: Option<Case>,
    pub regex: Option<regex::Regex>,
    pub split: Option<String>,
    pub table: Option<std::sync::Arc<Table>>,
    pub time: Option<TimeRule>,
    pub coerce: Option<Coerce>,
    pub check: Option<Check>,
    pub when: Option<Cond>,
    pub render: bool,
    pub native: Option<Native>,
    /// Another rule fills the same field (so this one checks whether it is set).
    pub shared_target: bool,
    /// The first rule of its field: its first path is the field's source in error
    /// messages unless a [`SourceNote`] says otherwise.
    pub primary: bool,
    /// Its field's number in the scope's [`Layout`].
    pub slot: u32,
}

/// Where a value really came from, when that is not the field's first rule's first
/// path (`Mapping::source_of`): kept with the record for the canonical checks' error
/// messages. None are made in the common case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceNote {
    /// A field read from another path of a list, or by a later rule.
    Field { field: String, source: String },
    /// List item `kept` (as written, from 0) came from element `element` (from 0):
    /// an empty element before it was left out.
    Item {
        list: String,
        kept: usize,
        element: usize,
    },
}

impl Rule {
    pub fn new(field: &str, line: usize, trim: bool, halfwidth: bool) -> Rule {
        Rule {
            field: field.to_string(),
            target: field.split('.').map(str::to_string).collect(),
            line,
            source: Source::Const(Value::Null),
            required: false,
            default: None,
            trim,
            halfwidth,
            case: None,
            regex: None,
            split: None,
            table: None,
            time: None,
            coerce: None,
            check: None,
            when: None,
            render: true,
            native: None,
            shared_target: false,
            primary: true,
            slot: NO_FIELD,
        }
    }
}

/// Where the record being evaluated sits, for error messages. The prefixes are only
/// spelt out when there is an error to report.
pub(crate) struct Place<'a> {
    pub index: usize,
    /// The list item this is: (the list's place, its field, the item's number among
    /// the kept items, the source path of the list, the element's number from 1).
    pub item: Option<(&'a Place<'a>, &'a str, usize, &'a str, usize)>,
}

impl Place<'_> {
    /// Canonical prefix (`materials[0].`).
    fn field(&self) -> String {
        match self.item {
            None => String::new(),
            Some((p, field, n, _, _)) => format!("{}{field}[{n}].", p.field()),
        }
    }

    /// Source prefix (`ATTRS/ATTR[1]/`).
    fn source(&self) -> String {
        match self.item {
            None => String::new(),
            Some((p, _, _, path, n)) => format!("{}{path}[{n}]/", p.source()),
        }
    }
}

/// Evaluate `rules` on `node`, staging values in `out` (by the numbers of the
/// scope's layout); problems go to `errors`.
pub(crate) fn run<T: Tree>(
    rules: &[Rule],
    tree: &T,
    node: T::Node,
    out: &mut Staged,
    place: &Place,
    errors: &mut Vec<FieldError>,
    notes: &mut Vec<SourceNote>,
) {
    for rule in rules {
        if let Some(cond) = &rule.when
            && !holds(cond, tree, node, out)
        {
            continue;
        }
        if rule.shared_target && out.get(rule.slot).is_some() {
            continue; // an earlier rule filled it
        }
        let fail =
            |errors: &mut Vec<FieldError>, source: Option<&str>, code: &str, message: String| {
                errors.push(FieldError {
                    record: place.index,
                    field: format!("{}{}", place.field(), rule.field),
                    source_path: source.map(|s| format!("{}{s}", place.source())),
                    rule: code.to_string(),
                    message,
                });
            };
        // Values are written straight into their staged place (each move of a value
        // through a return cost a store-forwarding stall).
        let present = match &rule.source {
            Source::Const(v) => {
                out.set(rule.slot, Val::from(v));
                true
            }
            Source::Each {
                path,
                rules,
                layout,
            } => {
                let mut nodes = Vec::new();
                tree.each(node, path, &mut nodes);
                let mut items = Vec::with_capacity(nodes.len());
                for (i, n) in nodes.into_iter().enumerate() {
                    let inner = Place {
                        index: place.index,
                        item: Some((place, &rule.field, items.len(), &path.text, i + 1)),
                    };
                    let before = errors.len();
                    // The element's values are staged after the record's.
                    let base = out.buf.len();
                    out.buf.resize(base + layout.slots, None);
                    let outer = std::mem::replace(&mut out.base, base);
                    run(rules, tree, n, out, &inner, errors, notes);
                    out.base = outer;
                    let item = layout.assemble(&mut out.buf[base..]);
                    out.buf.truncate(base);
                    if item.is_empty() && errors.len() > before {
                        // An element with no values is left out, so nothing in it is
                        // missing; a value it has that was refused is still reported.
                        let mut own = errors.split_off(before);
                        own.retain(|e| e.rule != "required");
                        errors.append(&mut own);
                    }
                    if !item.is_empty() {
                        if items.len() != i && place.item.is_none() {
                            notes.push(SourceNote::Item {
                                list: rule.field.clone(),
                                kept: items.len(),
                                element: i,
                            });
                        }
                        items.push(Val::Obj(item));
                    }
                }
                let any = !items.is_empty();
                if any {
                    out.set(rule.slot, Val::Arr(items));
                }
                any
            }
            Source::Path(paths) => {
                let mut spare = None;
                let dest = out.place(rule.slot).unwrap_or(&mut spare);
                // The first path with a value: one absent, or empty once trimmed (as
                // `""` and `null` are in JSON), passes to the next; one whose value
                // is refused does not.
                let mut found = Ok(());
                let mut path = &paths[0];
                let mut at = 0;
                for (k, p) in paths.iter().enumerate() {
                    let l = tree.lookup(node, p);
                    if matches!(l, Lookup::Absent) {
                        continue;
                    }
                    (path, at) = (p, k);
                    found = convert(rule, l, dest);
                    if found.is_err() || dest.is_some() {
                        break;
                    }
                }
                match found {
                    Ok(()) => {
                        let some = dest.is_some();
                        if some && (at > 0 || !rule.primary) {
                            notes.push(SourceNote::Field {
                                field: format!("{}{}", place.field(), rule.field),
                                source: format!("{}{}", place.source(), path.text),
                            });
                        }
                        some
                    }
                    Err((code, message)) => {
                        fail(errors, Some(&path.text), code, message);
                        continue;
                    }
                }
            }
            Source::Template(parts) => {
                let mut s = String::new();
                let mut any = false;
                for p in parts {
                    match p {
                        TPart::Lit(l) => s.push_str(l),
                        TPart::Path(path) => match tree.lookup(node, path) {
                            Lookup::Str(v) => {
                                let v = v.trim();
                                any |= !v.is_empty();
                                s.push_str(v);
                            }
                            Lookup::Num(n) => {
                                any = true;
                                s.push_str(&n.to_string());
                            }
                            Lookup::Bool(b) => {
                                any = true;
                                s.push_str(if b { "true" } else { "false" });
                            }
                            Lookup::Absent | Lookup::Composite => {}
                        },
                    }
                }
                let src = if any { Lookup::Str(&s) } else { Lookup::Absent };
                let mut spare = None;
                let dest = out.place(rule.slot).unwrap_or(&mut spare);
                match convert(rule, src, dest) {
                    Ok(()) => dest.is_some(),
                    Err((code, message)) => {
                        fail(errors, None, code, message);
                        continue;
                    }
                }
            }
        };
        match (present, &rule.default) {
            (true, _) => {}
            (false, Some(d)) => out.set(rule.slot, Val::from(d)),
            (false, None) if rule.required => {
                let src = match &rule.source {
                    Source::Path(p) => Some(p[0].text.as_str()),
                    Source::Each { path, .. } => Some(path.text.as_str()),
                    _ => None,
                };
                fail(
                    errors,
                    src,
                    "required",
                    format!(
                        "{} is required and the message has no value for it",
                        rule.field
                    ),
                );
            }
            (false, None) => {}
        }
    }
}

pub(crate) fn holds<T: Tree>(cond: &Cond, tree: &T, node: T::Node, out: &Staged) -> bool {
    let text: Option<Cow<str>> = match &cond.subject {
        CondSubject::Field(_) => out.get(cond.slot).and_then(|v| match v {
            Val::Str(s) => Some(Cow::Borrowed(s.as_str())),
            Val::Num(n) => Some(Cow::Owned(n.to_string())),
            Val::Bool(b) => Some(Cow::Owned(b.to_string())),
            _ => None,
        }),
        CondSubject::Path(p) => match tree.lookup(node, p) {
            Lookup::Str(s) if !s.trim().is_empty() => {
                let s = s.trim();
                Some(if cond.halfwidth && s.chars().any(is_fullwidth) {
                    Cow::Owned(halfwidth(s).trim().to_string())
                } else {
                    Cow::Borrowed(s)
                })
            }
            Lookup::Num(n) => Some(Cow::Owned(n.to_string())),
            Lookup::Bool(b) => Some(Cow::Owned(b.to_string())),
            _ => None,
        },
    };
    match &cond.test {
        CondTest::Present(p) => text.is_some() == *p,
        CondTest::Equals(values) => text.is_some_and(|t| values.iter().any(|v| v == &*t)),
    }
}

pub(crate) fn get_path<'m>(map: &'m Map<String, Value>, path: &[String]) -> Option<&'m Value> {
    let (first, rest) = path.split_first()?;
    let mut v = map.get(first)?;
    for p in rest {
        v = v.get(p)?;
    }
    Some(v)
}

type Fail = (&'static str, String);

/// Source value to canonical value, written into `dest` (left `None` for an absent
/// value), or why not (`dest` untouched).
fn convert(rule: &Rule, lookup: Lookup, dest: &mut Option<Val>) -> Result<(), Fail> {
    let text: Cow<str> = match lookup {
        Lookup::Absent => return Ok(()),
        Lookup::Composite => {
            return Err((
                "type",
                "found an object or a list where one value was expected".into(),
            ));
        }
        Lookup::Bool(b) if rule.table.is_none() => {
            *dest = Some(finish(rule, Val::Bool(b))?);
            return Ok(());
        }
        // A number stays a number unless a rule works on its text (a check runs on
        // text: `check = "region"` on 420102 checks and keeps "420102").
        Lookup::Num(n)
            if rule.table.is_none()
                && rule.time.is_none()
                && rule.split.is_none()
                && rule.regex.is_none()
                && rule.case.is_none()
                && rule.check.is_none() =>
        {
            *dest = Some(finish(rule, Val::Num(n.clone()))?);
            return Ok(());
        }
        Lookup::Bool(b) => Cow::Owned(b.to_string()),
        Lookup::Num(n) => Cow::Owned(n.to_string()),
        Lookup::Str(s) => Cow::Borrowed(s),
    };
    let mut text = text;
    if rule.trim {
        text = match text {
            Cow::Borrowed(s) => Cow::Borrowed(trim(s)),
            Cow::Owned(s) => Cow::Owned(trim(&s).to_string()),
        };
    }
    // Full-width letters and digits start with the byte EF, the ideographic space E3 80 80.
    if rule.halfwidth
        && memchr::memchr2(0xEF, 0xE3, text.as_bytes()).is_some()
        && text.chars().any(is_fullwidth)
    {
        text = Cow::Owned(halfwidth(&text));
    }
    match rule.case {
        Some(Case::Upper) => text = Cow::Owned(text.to_uppercase()),
        Some(Case::Lower) => text = Cow::Owned(text.to_lowercase()),
        None => {}
    }
    if let Some(re) = &rule.regex {
        if text.is_empty() {
            return Ok(());
        }
        let Some(caps) = re.captures(&text) else {
            return Err((
                "pattern",
                format!("the value does not match the pattern `{}`", re.as_str()),
            ));
        };
        let m = caps.get(1).or_else(|| caps.get(0)).map(|m| m.as_str());
        text = Cow::Owned(m.unwrap_or("").to_string());
    }
    if text.is_empty() {
        return Ok(());
    }
    if let Some(sep) = &rule.split {
        let mut items = Vec::new();
        for part in text.split(sep.as_str()) {
            let part = part.trim();
            if !part.is_empty() {
                items.push(scalar(rule, part)?);
            }
        }
        if !items.is_empty() {
            *dest = Some(Val::Arr(items));
        }
        return Ok(());
    }
    if rule.table.is_none() && rule.time.is_none() && rule.coerce.is_none() && rule.check.is_none()
    {
        *dest = Some(Val::str(&text));
        return Ok(());
    }
    *dest = Some(scalar(rule, &text)?);
    Ok(())
}

fn scalar(rule: &Rule, text: &str) -> Result<Val, Fail> {
    let mut value = match &rule.table {
        Some(t) => match t.get(text) {
            Some(v) => Val::from(v),
            None => match &t.unknown {
                Unknown::Pass => Val::str(text),
                Unknown::Default(d) => Val::from(d),
                Unknown::Reject => {
                    let mut known: Vec<&str> = t.keys.iter().map(String::as_str).take(12).collect();
                    if t.keys.len() > 12 {
                        known.push("…");
                    }
                    return Err((
                        "unknown_code",
                        format!(
                            "`{}` is not in table `{}` (known: {})",
                            crate::record::mask_text(text),
                            t.name,
                            known.join(", ")
                        ),
                    ));
                }
            },
        },
        None => Val::str(text),
    };
    if let Some(tr) = &rule.time
        && let Val::Str(s) = &value
    {
        let parsed = tr
            .patterns
            .iter()
            .find_map(|p| time::parse(s, p, tr.zone, tr.date_only));
        value = match parsed {
            Some(t) => Val::str(&t),
            None => {
                return Err((
                    if tr.date_only { "date" } else { "time" },
                    format!(
                        "`{}` does not match the {} pattern {}",
                        crate::record::mask_text(s),
                        if tr.date_only { "date" } else { "time" },
                        tr.texts.join(" | ")
                    ),
                ));
            }
        };
    }
    finish(rule, value)
}

/// Type coercion and named checks, on the value after tables and times.
fn finish(rule: &Rule, value: Val) -> Result<Val, Fail> {
    let mut value = match (rule.coerce, value) {
        (None | Some(Coerce::String), Val::Num(n)) if rule.coerce.is_some() => {
            Val::str(&n.to_string())
        }
        (Some(Coerce::String), Val::Bool(b)) => Val::str(if b { "true" } else { "false" }),
        (Some(Coerce::Integer), v) => Val::Num(integer(&v)?.into()),
        (Some(Coerce::Number), v) => Val::Num(number(&v)?),
        (Some(Coerce::Boolean), v) => Val::Bool(boolean(&v)?),
        (_, v) => v,
    };
    if let Some(check) = rule.check {
        // A lower-case check character is normalised, as the canonical check does.
        if check == Check::IdNo
            && let Val::Str(s) = &value
            && s.ends_with('x')
        {
            value = Val::str(&s.to_ascii_uppercase());
        }
        let ok = match &value {
            Val::Str(s) => check.run(s),
            _ => Err("must be text"),
        };
        if let Err(m) = ok {
            return Err((check.code(), m.to_string()));
        }
    }
    Ok(value)
}

fn integer(v: &Val) -> Result<i64, Fail> {
    let bad = || {
        (
            "number",
            "expected a whole number within ±9223372036854775807".to_string(),
        )
    };
    match v {
        Val::Num(n) => n.as_i64().ok_or_else(bad),
        Val::Str(s) => s.trim().parse::<i64>().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn number(v: &Val) -> Result<Number, Fail> {
    let bad = || ("number", "expected a finite number".to_string());
    match v {
        Val::Num(n) => Ok(n.clone()),
        Val::Str(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return Ok(Number::from(i));
            }
            s.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(Number::from_f64)
                .ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

fn boolean(v: &Val) -> Result<bool, Fail> {
    match v {
        Val::Bool(b) => Ok(*b),
        Val::Num(n) if n.as_i64() == Some(1) => Ok(true),
        Val::Num(n) if n.as_i64() == Some(0) => Ok(false),
        Val::Str(s) => match s.trim() {
            "1" | "true" | "TRUE" | "True" | "Y" | "y" | "yes" | "是" => Ok(true),
            "0" | "false" | "FALSE" | "False" | "N" | "n" | "no" | "否" => Ok(false),
            _ => Err((
                "boolean",
                "expected 1/0, true/false, Y/N or 是/否".to_string(),
            )),
        },
        _ => Err((
            "boolean",
            "expected 1/0, true/false, Y/N or 是/否".to_string(),
        )),
    }
}

/// `str::trim`, answered at once for a value that starts and ends with a printable
/// ASCII character (most do).
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(f), Some(l)) if (0x21..0x7F).contains(f) && (0x21..0x7F).contains(l) => s,
        _ => s.trim(),
    }
}

fn is_fullwidth(c: char) -> bool {
    matches!(c, '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' | '\u{3000}')
}

/// Full-width digits and Latin letters (and the ideographic space) to half-width.
/// Full-width punctuation such as （） stays: it is part of names.
pub(crate) fn halfwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            '\u{3000}' => ' ',
            other => other,
        })
        .collect()
}

/// A JSON document as the mapping reads it: strings borrowed from the input where
/// they need no unescaping, objects as lists of members (no map to build; a
/// repeated key reads as its last value, as in a map).
#[derive(Debug)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Arr(Vec<Json<'a>>),
    Obj(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'de> serde::Deserialize<'de> for Json<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Num(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Num(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Json<'de>, E> {
        Number::from_f64(n)
            .map(Json::Num)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Arr(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((k, v)) = map.next_entry::<JsonKey<'de>, Json<'de>>()? {
            members.push((k.0, v));
        }
        Ok(Json::Obj(members))
    }
}

/// An object key, borrowed when it can be.
struct JsonKey<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for JsonKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonKey<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<JsonKey<'de>, E> {
                Ok(JsonKey(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<JsonKey<'de>, E> {
                Ok(JsonKey(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<JsonKey<'de>, E> {
                Ok(JsonKey(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'a> Json<'a> {
    /// The member `key` of an object (its last one, if repeated).
    pub(crate) fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Obj(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A JSON document as a record tree. Read with its document around it (a package,
/// `..` or `/` paths), it knows each object's enclosing object and the document.
#[derive(Default)]
pub(crate) struct JsonTree<'v, 'a> {
    /// A value's address to its enclosing object (lists are not a level of their own).
    parents: HashMap<usize, &'v Json<'a>>,
    root: Option<&'v Json<'a>>,
}

fn address(v: &Json) -> usize {
    v as *const Json as usize
}

impl<'v, 'a> JsonTree<'v, 'a> {
    /// A tree that reads below each record only.
    pub fn plain() -> JsonTree<'v, 'a> {
        JsonTree::default()
    }

    /// A tree over the whole document `doc` (linear in its values, which the body's
    /// limits bound).
    pub fn document(doc: &'v Json<'a>) -> JsonTree<'v, 'a> {
        let mut parents = HashMap::new();
        let mut stack: Vec<(&'v Json<'a>, &'v Json<'a>)> = Vec::new();
        let push_children = |v: &'v Json<'a>, owner: &'v Json<'a>, stack: &mut Vec<_>| match v {
            Json::Obj(members) => stack.extend(members.iter().map(|(_, c)| (c, v))),
            // The items of a list belong to the object that holds the list.
            Json::Arr(items) => stack.extend(items.iter().map(|c| (c, owner))),
            _ => {}
        };
        push_children(doc, doc, &mut stack);
        while let Some((v, owner)) = stack.pop() {
            parents.insert(address(v), owner);
            push_children(v, owner, &mut stack);
        }
        JsonTree {
            parents,
            root: Some(doc),
        }
    }

    fn at(&self, node: &'v Json<'a>, steps: &[Step]) -> Option<&'v Json<'a>> {
        let mut v = node;
        for s in steps {
            v = match (s, v) {
                (Step::Up, _) => self.parents.get(&address(v)).copied()?,
                (Step::Top, _) => self.root?,
                (Step::Name(n), Json::Obj(_)) => v.get(n)?,
                (Step::Index(i), Json::Arr(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

impl<'v, 'a> Tree for JsonTree<'v, 'a> {
    type Node = &'v Json<'a>;
    fn lookup(&self, node: &'v Json<'a>, path: &NPath) -> Lookup<'v> {
        match self.at(node, &path.steps) {
            None | Some(Json::Null) => Lookup::Absent,
            Some(Json::Str(s)) => Lookup::Str(s),
            Some(Json::Num(n)) => Lookup::Num(n),
            Some(Json::Bool(b)) => Lookup::Bool(*b),
            Some(_) => Lookup::Composite,
        }
    }
    fn each(&self, node: &'v Json<'a>, path: &NPath, out: &mut Vec<&'v Json<'a>>) {
        match self.at(node, &path.steps) {
            Some(Json::Arr(items)) => out.extend(items.iter()),
            Some(v @ Json::Obj(_)) => out.push(v),
            _ => {}
        }
    }
}
