//! A mapping's record layout: the canonical fields its rules write, numbered and put
//! in the record's key order once at load. While the rules run, each value is staged
//! under its field's number; the record's objects are then built once, each member
//! appended in order: no key search, no shifting, no object made and dropped.
//!
//! The layout holds whatever the rules write because the compiler refuses a field
//! that is both a value and an object (`applicant` and `applicant.name`).

use compact_str::CompactString;

use super::Format;
use super::eval::{Coerce, CondSubject, Rule, Source, Unknown};
use crate::record::schema::{Known, Shape, shapes};
use crate::record::{Kind, Obj, Val};

/// A field no rule writes.
pub(crate) const NO_FIELD: u32 = u32::MAX;

#[derive(Debug)]
struct LNode {
    key: CompactString,
    /// The key's head, as `Obj` orders by it.
    head: u64,
    /// Object members in key order (empty for a value).
    children: Vec<u32>,
    /// The value's number, or `NO_FIELD` for an object.
    slot: u32,
}

/// The fields of one scope: the record, or the elements of one `each` list.
#[derive(Debug)]
pub(crate) struct Layout {
    nodes: Vec<LNode>,
    /// How many values the scope stages.
    pub slots: usize,
}

impl Layout {
    /// A layout with no fields, until [`Layout::build`] numbers them.
    pub(crate) fn empty() -> Layout {
        Layout {
            nodes: vec![LNode {
                key: CompactString::default(),
                head: 0,
                children: Vec::new(),
                slot: NO_FIELD,
            }],
            slots: 0,
        }
    }

    /// Number the fields `rules` write, and the `field` conditions that read them;
    /// each list gets a layout of its own.
    pub(crate) fn build(rules: &mut [Rule]) -> Layout {
        let mut l = Layout::empty();
        for rule in rules.iter_mut() {
            rule.slot = l.leaf(&rule.target);
            if let Source::Each { rules, layout, .. } = &mut rule.source {
                *layout = Layout::build(rules);
            }
        }
        for rule in rules.iter_mut() {
            if let Some(c) = &mut rule.when
                && let CondSubject::Field(path) = &c.subject
            {
                c.slot = l.find(path);
            }
        }
        let keys: Vec<Vec<u8>> = l.nodes.iter().map(|n| n.key.as_bytes().to_vec()).collect();
        for n in &mut l.nodes {
            // Byte order of the keys: the order `Obj` keeps.
            n.children
                .sort_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
        }
        l
    }

    /// The node of `path`, made if need be, as a value.
    fn leaf(&mut self, path: &[String]) -> u32 {
        let mut cur = 0usize;
        for seg in path {
            let found = self.nodes[cur]
                .children
                .iter()
                .copied()
                .find(|c| self.nodes[*c as usize].key == seg.as_str());
            cur = match found {
                Some(c) => c as usize,
                None => {
                    let id = self.nodes.len();
                    self.nodes.push(LNode {
                        key: CompactString::new(seg),
                        head: crate::record::value::head(seg),
                        children: Vec::new(),
                        slot: NO_FIELD,
                    });
                    self.nodes[cur].children.push(id as u32);
                    id
                }
            };
        }
        if self.nodes[cur].slot == NO_FIELD && cur != 0 {
            self.nodes[cur].slot = self.slots as u32;
            self.slots += 1;
        }
        self.nodes[cur].slot
    }

    /// The number of the value at `path`, if a rule writes one there.
    fn find(&self, path: &[String]) -> u32 {
        let mut cur = 0usize;
        for seg in path {
            match self.nodes[cur]
                .children
                .iter()
                .find(|c| self.nodes[**c as usize].key == seg.as_str())
            {
                Some(c) => cur = *c as usize,
                None => return NO_FIELD,
            }
        }
        self.nodes[cur].slot
    }

    /// The record (or list element) the staged values make; the values are taken.
    pub(crate) fn assemble(&self, staged: &mut [Option<Val>]) -> Obj {
        self.object(0, staged)
    }

    fn object(&self, node: usize, staged: &mut [Option<Val>]) -> Obj {
        let n = &self.nodes[node];
        let mut o = Obj::new();
        for c in &n.children {
            let child = &self.nodes[*c as usize];
            let v = if child.slot != NO_FIELD {
                staged.get_mut(child.slot as usize).and_then(Option::take)
            } else {
                let inner = self.object(*c as usize, staged);
                (!inner.is_empty()).then_some(Val::Obj(inner))
            };
            if let Some(v) = v {
                if o.is_empty() {
                    o.reserve(n.children.len());
                }
                o.push_last(&child.key, child.head, v);
            }
        }
        o
    }
}

/// The values of one record while its rules run: the record's from 0, a list
/// element's after them while it is evaluated.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub buf: Vec<Option<Val>>,
    pub base: usize,
}

impl Staged {
    /// Start a record of `layout`.
    pub(crate) fn reset(&mut self, layout: &Layout) {
        self.buf.clear();
        self.buf.resize(layout.slots, None);
        self.base = 0;
    }

    pub(crate) fn get(&self, slot: u32) -> Option<&Val> {
        if slot == NO_FIELD {
            return None;
        }
        self.buf.get(self.base + slot as usize)?.as_ref()
    }

    /// Where the value of `slot` is staged.
    pub(crate) fn place(&mut self, slot: u32) -> Option<&mut Option<Val>> {
        self.buf.get_mut(self.base.checked_add(slot as usize)?)
    }

    pub(crate) fn set(&mut self, slot: u32, v: Val) {
        if let Some(s) = self.buf.get_mut(self.base + slot as usize) {
            *s = Some(v);
        }
    }
}

/// The canonical shape checks `rules` guarantee for records of `kind` (see
/// [`Known`]): a field no rule writes, or one every rule writing it makes in shape
/// (a table whose every value fits an enumeration, `type = "integer"`, a time
/// pattern, the same named check), with defaults and constants that fit too.
pub(crate) fn known(kind: Kind, format: Format, rules: &[Rule]) -> Known {
    let mut k = Known {
        fields: mask(shapes(kind), format, rules),
        materials: 0,
    };
    if kind == Kind::Application {
        let writers: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.field == "materials" || r.field.starts_with("materials."))
            .collect();
        k.materials = match writers[..] {
            [] => u64::MAX,
            // A list's own default is written whole, past the element rules.
            [
                Rule {
                    source: Source::Each { rules, .. },
                    default: None,
                    ..
                },
            ] => mask(shapes(Kind::Material), format, rules),
            _ => 0,
        };
    }
    k
}

fn mask(list: &[(&str, Shape)], format: Format, rules: &[Rule]) -> u64 {
    let mut m = 0u64;
    for (i, (field, shape)) in list.iter().enumerate().take(64) {
        let inside = |outer: &str, inner: &str| {
            inner.len() > outer.len()
                && inner.starts_with(outer)
                && inner.as_bytes()[outer.len()] == b'.'
        };
        // A rule writing an object that holds the field, or inside the field.
        if rules
            .iter()
            .any(|r| inside(&r.field, field) || inside(field, &r.field))
        {
            continue;
        }
        if rules
            .iter()
            .filter(|r| r.field == *field)
            .all(|r| makes(r, shape, format, field))
        {
            m |= 1 << i;
        }
    }
    m
}

/// Whether every value `rule` writes has `shape`.
fn makes(rule: &Rule, shape: &Shape, format: Format, field: &str) -> bool {
    let fits = |v: &serde_json::Value| shape.problem(field, &Val::from(v)).is_none();
    if rule.default.as_ref().is_some_and(|d| !fits(d)) || rule.split.is_some() {
        return false;
    }
    let text = matches!(rule.coerce, None | Some(Coerce::String));
    match &rule.source {
        Source::Const(v) => fits(v),
        Source::Each { .. } => false,
        Source::Path(_) | Source::Template(_) => match shape {
            Shape::Enum(_) => {
                text && rule.time.is_none()
                    && rule.check.is_none()
                    && rule.table.as_ref().is_some_and(|t| {
                        t.values().all(fits)
                            && match t.unknown() {
                                Unknown::Reject => true,
                                Unknown::Default(d) => fits(d),
                                Unknown::Pass => false,
                            }
                    })
            }
            Shape::Integer => rule.coerce == Some(Coerce::Integer),
            Shape::Number => rule.coerce == Some(Coerce::Number),
            Shape::Boolean => rule.coerce == Some(Coerce::Boolean),
            // A JSON true/false skips the time step, so only XML is sure.
            Shape::Time | Shape::Date => {
                format == Format::Xml
                    && text
                    && rule.table.is_none()
                    && rule
                        .time
                        .as_ref()
                        .is_some_and(|t| t.date_only == matches!(shape, Shape::Date))
            }
            Shape::Named(c) => text && rule.check == Some(*c),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::super::{Disk, Limits, Mapping, MappingSet};
    use crate::record::Kind;
    use crate::record::schema::{Known, shapes};

    fn names(kind: Kind, bits: u64) -> Vec<&'static str> {
        shapes(kind)
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, (f, _))| *f)
            .collect()
    }

    #[test]
    fn a_mapping_knows_the_checks_its_rules_guarantee() {
        let m = Mapping::load(Path::new("mappings/zj/application.toml"), &Disk).expect("mapping");
        let fields = names(Kind::Application, m.known.fields);
        for f in [
            "case_type",     // a table into the enumeration
            "promise.value", // type = "integer"
            "promise.unit",
            "submitted_at", // a time pattern
            "item_type",    // never written
            "accepted_at",
        ] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
        for f in ["accept_dept.code", "contact.mobile", "contact.id_no"] {
            assert!(!fields.contains(&f), "{f} is checked: {fields:?}");
        }
        let materials = names(Kind::Material, m.known.materials);
        assert!(materials.contains(&"submit_type"), "{materials:?}");
        assert!(materials.contains(&"sort"), "{materials:?}");
        assert!(
            materials.contains(&"received_at"),
            "never written: {materials:?}"
        );
    }

    /// Decode one record and return its errors' rules and fields.
    fn errors(mapping: &str, ct: &str, body: &str) -> (Known, Vec<String>) {
        let m = Mapping::compile(mapping, Path::new("t.toml"), &Disk).expect("mapping");
        let known = m.known;
        let set = MappingSet::new(vec![Arc::new(m)]);
        let mut out = Vec::new();
        set.decode_each(
            body.as_bytes(),
            Some(ct),
            None,
            &Limits::default(),
            &mut |c| {
                if let Err(es) = c.result {
                    out.extend(es.into_iter().map(|e| format!("{} {}", e.field, e.rule)));
                }
                Ok(())
            },
        )
        .expect("decodes");
        (known, out)
    }

    #[test]
    fn what_a_rule_does_not_guarantee_is_still_checked() {
        // A table with a value outside the enumeration, one passing unknown codes
        // through, a JSON time (a JSON true is not a time), a default outside.
        let xml = r#"
kind = "application"
format = "xml"
root = "R"
[tables.t]
map = { "1" = "immediate", "2" = "soon" }
[tables.p]
map = { "1" = "window" }
unknown = "pass"
[fields]
case_no = "NO"
item_code = "IC"
case_type = { path = "T", table = "t" }
channel = { path = "C", table = "p" }
promise.unit = { path = "U", default = "week" }
"#;
        let (known, errs) = errors(
            xml,
            "application/xml",
            "<R><NO>1</NO><IC>x</IC><T>2</T><C>web</C></R>",
        );
        let fields = names(Kind::Application, known.fields);
        for f in ["case_type", "channel", "promise.unit"] {
            assert!(!fields.contains(&f), "{f} is checked");
        }
        for want in ["case_type enum", "channel enum", "promise.unit enum"] {
            assert!(errs.iter().any(|e| e == want), "{want} in {errs:?}");
        }
        let json = r#"
kind = "application"
format = "json"
root = ""
[fields]
case_no = "no"
item_code = "ic"
submitted_at = { path = "at", time = "yyyy-MM-dd HH:mm:ss" }
"#;
        let (known, errs) = errors(
            json,
            "application/json",
            r#"{"no": "1", "ic": "x", "at": true}"#,
        );
        assert!(!names(Kind::Application, known.fields).contains(&"submitted_at"));
        assert!(errs.iter().any(|e| e == "submitted_at time"), "{errs:?}");
        // A list's own default is checked as a list of materials.
        let listed = r#"
kind = "application"
format = "xml"
root = "R"
[fields]
case_no = "NO"
item_code = "IC"
[fields.materials]
each = "L/I"
fields.name = "N"
default = [{ name = "x", submit_type = "bogus", sort = "notint" }]
"#;
        let (known, errs) = errors(listed, "application/xml", "<R><NO>1</NO><IC>x</IC></R>");
        assert_eq!(known.materials, 0);
        for want in ["materials[0].submit_type enum", "materials[0].sort type"] {
            assert!(errs.iter().any(|e| e == want), "{want} in {errs:?}");
        }
    }
}
