//! An XML mapping's read plan: the element names its rules read, compiled into a tree
//! once at load, so that a record is read into numbered slots while it streams,
//! instead of into an element tree that every rule then searches.
//!
//! Every path of the mapping (sources, templates, conditions, `match`, `each`) gets a
//! slot: the number of its element (or attribute) in the plan. While a record
//! streams, an element the plan names fills its slot; everything else is read and
//! dropped. The result reads exactly as the element tree does (the first of repeated
//! elements for a path without an index, an element with children is not a value,
//! entities and CDATA joined to the text); the tree stays for what the plan does not
//! express: indexed paths, a path that reads inside a list's elements from outside
//! the list, and several mappings sharing one record root.

use std::borrow::Cow;

use quick_xml::events::BytesStart;

use super::decode::{DecodeError, Limits};
use super::eval::{CondSubject, Lookup, Rule, Source, TPart, Tree};
use super::xml::{Capture, attributes, check_len, name_key};
use super::{NPath, Step};

/// A path no plan has numbered.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// The elements and attributes one scope reads: scope 0 is the record, each `each`
/// list has a scope whose node 0 is the list's element.
#[derive(Debug, Default)]
struct Scope {
    nodes: Vec<PNode>,
    /// The number of its node 0 among all the plan's nodes.
    first: u32,
}

#[derive(Debug)]
struct PNode {
    name: String,
    key: u64,
    /// Child elements (indexes into the scope's nodes).
    children: Vec<u32>,
    /// The children's name keys, sorted, with each child.
    sorted: Vec<(u64, u32)>,
    /// Attributes read of this element (nodes of their own).
    attrs: Vec<u32>,
    /// The scope of the list this element's repetitions make (record scope only).
    each: u32,
    /// A path ends here (not only passes through).
    valued: bool,
}

impl PNode {
    fn new(name: &str) -> PNode {
        PNode {
            name: name.to_string(),
            key: name_key(name.as_bytes()),
            children: Vec::new(),
            sorted: Vec::new(),
            attrs: Vec::new(),
            each: NO_SLOT,
            valued: false,
        }
    }
}

/// The compiled plan of one XML mapping.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    scopes: Vec<Scope>,
    /// Nodes in all scopes.
    total: u32,
}

/// Why a mapping reads through the element tree instead (never an error: the tree
/// reads everything).
struct Unplannable;

impl Plan {
    /// Number every path of `rules` and `select`; `None` (and no path numbered)
    /// when the mapping needs the element tree.
    pub(crate) fn build(
        rules: &mut [Rule],
        select: Option<&mut super::eval::Cond>,
    ) -> Option<Plan> {
        let mut plan = Plan {
            scopes: vec![Scope {
                nodes: vec![PNode::new("")],
                first: 0,
            }],
            total: 0,
        };
        let ok = plan.rules(rules, 0).is_ok()
            && match select {
                Some(c) => match &mut c.subject {
                    CondSubject::Path(p) => plan.value(p, 0).is_ok(),
                    CondSubject::Field(_) => true,
                },
                None => true,
            };
        if ok {
            let mut first = 0;
            for sc in &mut plan.scopes {
                sc.first = first;
                first += sc.nodes.len() as u32;
                let keys: Vec<Vec<(u64, u32)>> = sc
                    .nodes
                    .iter()
                    .map(|n| {
                        let mut k: Vec<(u64, u32)> = n
                            .children
                            .iter()
                            .map(|c| (sc.nodes[*c as usize].key, *c))
                            .collect();
                        k.sort_unstable();
                        k
                    })
                    .collect();
                for (n, k) in sc.nodes.iter_mut().zip(keys) {
                    n.sorted = k;
                }
            }
            plan.total = first;
            Some(plan)
        } else {
            clear(rules);
            None
        }
    }

    fn rules(&mut self, rules: &mut [Rule], scope: u32) -> Result<(), Unplannable> {
        for rule in rules {
            if let Some(c) = &mut rule.when
                && let CondSubject::Path(p) = &mut c.subject
            {
                self.value(p, scope)?;
            }
            match &mut rule.source {
                Source::Path(paths) => {
                    for p in paths {
                        self.value(p, scope)?;
                    }
                }
                Source::Template(parts) => {
                    for part in parts {
                        if let TPart::Path(p) = part {
                            self.value(p, scope)?;
                        }
                    }
                }
                Source::Const(_) => {}
                Source::Each { path, rules, .. } => {
                    if scope != 0 {
                        return Err(Unplannable);
                    }
                    let s = self.list(path)?;
                    path.slot = s;
                    self.rules(rules, s)?;
                }
            }
        }
        Ok(())
    }

    /// The node `names` lead to from node 0 of `scope`, made if need be. A path may
    /// not pass through a list's element (it is its own scope).
    fn walk(&mut self, scope: u32, names: &[Step]) -> Result<u32, Unplannable> {
        let sc = &mut self.scopes[scope as usize];
        let mut cur = 0u32;
        for step in names {
            let Step::Name(n) = step else {
                return Err(Unplannable);
            };
            if sc.nodes[cur as usize].each != NO_SLOT {
                return Err(Unplannable);
            }
            let found = sc.nodes[cur as usize]
                .children
                .iter()
                .copied()
                .find(|c| sc.nodes[*c as usize].name == *n);
            cur = match found {
                Some(c) => c,
                None => {
                    let id = sc.nodes.len() as u32;
                    sc.nodes.push(PNode::new(n));
                    sc.nodes[cur as usize].children.push(id);
                    id
                }
            };
        }
        Ok(cur)
    }

    /// Number a path read for its value.
    fn value(&mut self, path: &mut NPath, scope: u32) -> Result<(), Unplannable> {
        let (names, attr) = match path.steps.split_last() {
            Some((Step::Attr(a), names)) => (names, Some(a.clone())),
            _ => (&path.steps[..], None),
        };
        let el = self.walk(scope, names)?;
        let sc = &mut self.scopes[scope as usize];
        if sc.nodes[el as usize].each != NO_SLOT {
            return Err(Unplannable);
        }
        path.slot = match attr {
            None => {
                sc.nodes[el as usize].valued = true;
                el
            }
            Some(a) => {
                let found = sc.nodes[el as usize]
                    .attrs
                    .iter()
                    .copied()
                    .find(|x| sc.nodes[*x as usize].name == a);
                match found {
                    Some(x) => x,
                    None => {
                        let id = sc.nodes.len() as u32;
                        sc.nodes.push(PNode::new(&a));
                        sc.nodes[el as usize].attrs.push(id);
                        id
                    }
                }
            }
        };
        Ok(())
    }

    /// Number a list's path (record scope): its scope.
    fn list(&mut self, path: &NPath) -> Result<u32, Unplannable> {
        if path.steps.is_empty() || path.steps.iter().any(|s| !matches!(s, Step::Name(_))) {
            return Err(Unplannable);
        }
        let el = self.walk(0, &path.steps)?;
        let next = self.scopes.len() as u32;
        let node = &mut self.scopes[0].nodes[el as usize];
        if node.each != NO_SLOT {
            return Ok(node.each);
        }
        if node.valued || !node.children.is_empty() || !node.attrs.is_empty() {
            return Err(Unplannable);
        }
        node.each = next;
        let name = node.name.clone();
        self.scopes.push(Scope {
            nodes: vec![PNode::new(&name)],
            first: 0,
        });
        Ok(next)
    }

    pub(crate) fn capture<'a>(&self) -> Slots<'a, '_> {
        Slots {
            plan: self,
            vals: Vec::new(),
            lists: vec![Vec::new(); self.scopes.len()],
            open: Vec::new(),
            first_hint: vec![NO_SLOT; self.total as usize],
            next_hint: vec![NO_SLOT; self.total as usize],
        }
    }
}

/// Forget the slots of a mapping read through the element tree.
fn clear(rules: &mut [Rule]) {
    fn unset(p: &mut NPath) {
        p.slot = NO_SLOT;
    }
    for rule in rules {
        if let Some(c) = &mut rule.when
            && let CondSubject::Path(p) = &mut c.subject
        {
            unset(p);
        }
        match &mut rule.source {
            Source::Path(paths) => paths.iter_mut().for_each(unset),
            Source::Template(parts) => {
                for part in parts {
                    if let TPart::Path(p) = part {
                        unset(p);
                    }
                }
            }
            Source::Const(_) => {}
            Source::Each { path, rules, .. } => {
                unset(path);
                clear(rules);
            }
        }
    }
}

/// What a slot holds for one record.
#[derive(Debug, Clone)]
enum SVal<'a> {
    Absent,
    Text(Cow<'a, str>),
    /// An element with child elements.
    Composite,
}

/// One element open while a record streams.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Its scope and node in the plan, or `NO_SLOT` for an element read and dropped.
    scope: u32,
    node: u32,
    /// Where its scope's slots start in `vals`.
    base: u32,
    /// The last of its children the plan names, seen so far.
    last: u32,
    text_len: usize,
    has_children: bool,
}

/// A record read through a plan: the slots of the record (from 0) and of each list
/// element (from its base), and the list elements in document order.
pub(crate) struct Slots<'a, 'p> {
    plan: &'p Plan,
    vals: Vec<SVal<'a>>,
    /// Per scope, the bases of its elements (scope 0 unused).
    lists: Vec<Vec<u32>>,
    open: Vec<Open>,
    /// Per plan node (numbered across scopes): the child that came first in it, and
    /// the sibling that came after it, last time. Records mostly list their elements
    /// in one order, so most elements are found at the first try.
    first_hint: Vec<u32>,
    next_hint: Vec<u32>,
}

impl<'a> Slots<'a, '_> {
    /// The slots of a new element of `scope`, with node 0 (the element) present.
    fn enter(&mut self, scope: u32) -> u32 {
        let base = self.vals.len() as u32;
        let n = self.plan.scopes[scope as usize].nodes.len();
        self.vals.resize(self.vals.len() + n, SVal::Absent);
        self.vals[base as usize] = SVal::Text(Cow::Borrowed(""));
        base
    }

    /// The plan node of the child `name` of the innermost open element, if any,
    /// with that element's scope and base.
    fn child(&mut self, name: &str) -> Option<(u32, u32, u32)> {
        let top = self.open.last_mut()?;
        if top.node == NO_SLOT {
            return None;
        }
        let scope = &self.plan.scopes[top.scope as usize];
        let parent = &scope.nodes[top.node as usize];
        if parent.children.is_empty() {
            return None;
        }
        let key = name_key(name.as_bytes());
        let hint = if top.last == NO_SLOT {
            &mut self.first_hint[(scope.first + top.node) as usize]
        } else {
            &mut self.next_hint[(scope.first + top.last) as usize]
        };
        let is = |c: u32| {
            let n = &scope.nodes[c as usize];
            n.key == key && same_after_key(&n.name, name)
        };
        let found = if *hint != NO_SLOT && is(*hint) {
            *hint
        } else {
            let at = parent.sorted.partition_point(|(k, _)| *k < key);
            let c = parent.sorted[at..]
                .iter()
                .take_while(|(k, _)| *k == key)
                .map(|(_, c)| *c)
                .find(|c| is(*c))?;
            *hint = c;
            c
        };
        top.last = found;
        Some((top.scope, found, top.base))
    }
}

/// Whether two names with equal [`name_key`]s (equal lengths up to 255, equal first
/// seven bytes) are equal: the rest compared in place (a library call per element
/// cost more than the comparison).
fn same_after_key(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).skip(7).all(|(x, y)| x == y)
}

impl<'a> Capture<'a> for Slots<'a, '_> {
    type Tree = Self;

    fn begin(&mut self) {
        self.vals.clear();
        for l in &mut self.lists {
            l.clear();
        }
        self.open.clear();
    }

    fn open(
        &mut self,
        name: Cow<'a, str>,
        e: &BytesStart<'_>,
        pos: usize,
        limits: &Limits,
    ) -> Result<(), DecodeError> {
        let mut at = Open {
            scope: NO_SLOT,
            node: NO_SLOT,
            base: 0,
            last: NO_SLOT,
            text_len: 0,
            has_children: false,
        };
        if self.open.is_empty() {
            // The record's own element.
            at.scope = 0;
            at.node = 0;
            at.base = self.enter(0);
        } else if let Some((scope, c, base)) = self.child(&name) {
            let node = &self.plan.scopes[scope as usize].nodes[c as usize];
            if node.each != NO_SLOT {
                // Every repetition is an element of the list.
                let s = node.each;
                at.scope = s;
                at.node = 0;
                at.base = self.enter(s);
                self.lists[s as usize].push(at.base);
            } else if matches!(self.vals[(base + c) as usize], SVal::Absent) {
                self.vals[(base + c) as usize] = SVal::Text(Cow::Borrowed(""));
                at.scope = scope;
                at.node = c;
                at.base = base;
            }
        }
        if let Some(parent) = self.open.last_mut()
            && !parent.has_children
        {
            parent.has_children = true;
            if parent.node != NO_SLOT {
                self.vals[(parent.base + parent.node) as usize] = SVal::Composite;
            }
        }
        // Attributes are checked whether read or not (a bad one is an error either
        // way); the plan keeps the first element's.
        let plan = self.plan;
        let wanted: &[u32] = if at.node == NO_SLOT {
            &[]
        } else {
            &plan.scopes[at.scope as usize].nodes[at.node as usize].attrs
        };
        let vals = &mut self.vals;
        attributes(e, pos, limits, |key, value| {
            for a in wanted {
                let slot = (at.base + a) as usize;
                if plan.scopes[at.scope as usize].nodes[*a as usize]
                    .name
                    .as_bytes()
                    == key
                    && matches!(vals[slot], SVal::Absent)
                {
                    vals[slot] = SVal::Text(Cow::Owned(value.to_string()));
                }
            }
        })?;
        self.open.push(at);
        Ok(())
    }

    fn text(&mut self, s: Cow<'a, str>, limits: &Limits, pos: usize) -> Result<(), DecodeError> {
        let Some(top) = self.open.last_mut() else {
            return Ok(());
        };
        // As the element tree counts: whitespace between child elements is layout.
        if top.has_children && s.bytes().all(|b| b.is_ascii_whitespace()) {
            return Ok(());
        }
        top.text_len += s.len();
        check_len(top.text_len, limits, pos)?;
        if top.node != NO_SLOT
            && let SVal::Text(t) = &mut self.vals[(top.base + top.node) as usize]
        {
            if t.is_empty() {
                *t = s;
            } else {
                t.to_mut().push_str(&s);
            }
        }
        Ok(())
    }

    fn close(&mut self) -> bool {
        self.open.pop();
        self.open.is_empty()
    }

    fn depth(&self) -> usize {
        self.open.len()
    }

    fn tree(&self) -> &Self {
        self
    }
}

impl Tree for Slots<'_, '_> {
    type Node = u32;

    fn lookup(&self, node: u32, path: &NPath) -> Lookup<'_> {
        match self.vals.get(node.wrapping_add(path.slot) as usize) {
            Some(SVal::Text(t)) => Lookup::Str(t),
            Some(SVal::Composite) => Lookup::Composite,
            Some(SVal::Absent) | None => Lookup::Absent,
        }
    }

    fn each(&self, _node: u32, path: &NPath, out: &mut Vec<u32>) {
        if let Some(l) = self.lists.get(path.slot as usize) {
            out.extend_from_slice(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::super::{Disk, Limits, Mapping, MappingSet};

    #[test]
    fn shipped_xml_mappings_have_plans() {
        for f in ["mappings/zj/application.toml", "mappings/zj/material.toml"] {
            let m = Mapping::load(Path::new(f), &Disk).expect("shipped mapping");
            assert!(m.plan.is_some(), "{f} reads through the element tree");
        }
    }

    /// Every kind of path a plan numbers: lists of paths, attributes, templates,
    /// conditions on paths and on fields, a list with attributes and `.` in its
    /// elements, a path through an element that repeats, the record element itself.
    const MAPPING: &str = r#"
kind = "material"
format = "xml"
root = ["RS/R", "R"]
trim = false
[fields]
case_no = { path = ["A", "B/C", "B/@id"], required = true }
name = { template = "{A}-{B/C}/{@no}", render = false, when = { path = "B/@id", present = true } }
material_id = { path = "D", when = { field = "case_no", in = ["1", "x"] } }
[fields.ext]
form = { path = "D", render = false, when = { path = "A", in = ["1", " 2"] } }
top = { path = ".", when = { path = "D", in = ["1", "x"] }, render = false }
note = { path = ["E", "B", "D"], render = false }
k = { path = "L/@k", render = false }
bname = { path = "B/B/C", render = false }
[fields.ext.items]
each = "L/I"
fields.v = "."
fields.k = "@k"
fields.c = { path = "C", required = true }
fields.cc = "C/C"
"#;

    fn sets() -> (MappingSet, MappingSet) {
        sets_of(MAPPING)
    }

    fn sets_of(text: &str) -> (MappingSet, MappingSet) {
        let planned = Mapping::compile(text, Path::new("t.toml"), &Disk).expect("mapping");
        assert!(planned.plan.is_some(), "the test mapping has a plan");
        let mut tree = Mapping::compile(text, Path::new("t.toml"), &Disk).expect("mapping");
        tree.plan = None;
        (
            MappingSet::new(vec![Arc::new(planned)]),
            MappingSet::new(vec![Arc::new(tree)]),
        )
    }

    /// Everything a decode gives, as text: records, errors with their sources.
    fn run(set: &MappingSet, body: &[u8]) -> String {
        let mut out = String::new();
        let r = set.decode_each(
            body,
            Some("application/xml"),
            None,
            &Limits::default(),
            &mut |c| {
                match &c.result {
                    Ok(r) => out.push_str(&format!("{} {}\n", c.index, r.fields.to_json())),
                    Err(e) => out.push_str(&format!("{} {e:?}\n", c.index)),
                }
                Ok(())
            },
        );
        out.push_str(&format!("{r:?}"));
        out
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(" ".to_string()),
            Just("\n  ".to_string()),
            Just("&amp;".to_string()),
            Just("<![CDATA[x<y]]>".to_string()),
            Just("&#49;".to_string()),
            "[12x ]{1,3}",
        ]
    }

    fn element(depth: u32) -> BoxedStrategy<String> {
        let leaf = (
            prop::sample::select(vec!["A", "B", "C", "D", "E", "L", "I", "x:C"]),
            prop::option::of(prop::sample::select(vec![
                r#" id="1""#,
                r#" k="a&amp;b""#,
                r#" no="7" k="2""#,
            ])),
            prop::collection::vec(text(), 0..3),
        )
            .prop_map(|(name, attr, texts)| {
                let attr = attr.unwrap_or("");
                if texts.is_empty() {
                    format!("<{name}{attr}/>")
                } else {
                    format!("<{name}{attr}>{}</{name}>", texts.concat())
                }
            })
            .boxed();
        if depth == 0 {
            return leaf;
        }
        prop_oneof![
            2 => leaf,
            1 => (
                prop::sample::select(vec!["B", "L", "I", "C", "A"]),
                prop::option::of(prop::sample::select(vec![r#" id="2""#, r#" k="3""#])),
                prop::collection::vec((text(), element(depth - 1)), 0..5),
                text(),
            )
                .prop_map(|(name, attr, kids, tail)| {
                    let inner: String = kids.into_iter().map(|(t, k)| t + &k).collect();
                    format!("<{name}{}>{inner}{tail}</{name}>", attr.unwrap_or(""))
                }),
        ]
        .boxed()
    }

    fn record() -> impl Strategy<Value = String> {
        (
            prop::option::of(Just(r#" no="5""#)),
            prop::collection::vec((text(), element(3)), 0..8),
            text(),
        )
            .prop_map(|(attr, kids, tail)| {
                let inner: String = kids.into_iter().map(|(t, k)| t + &k).collect();
                format!("<R{}>{inner}{tail}</R>", attr.unwrap_or(""))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        /// Reading through the plan gives what the element tree gives, record for
        /// record, error for error.
        #[test]
        fn a_plan_reads_as_the_element_tree(records in prop::collection::vec(record(), 1..4)) {
            let (planned, tree) = sets();
            let body = format!("<RS>{}</RS>", records.concat());
            let a = run(&planned, body.as_bytes());
            let b = run(&tree, body.as_bytes());
            prop_assert_eq!(a, b, "{}", body);
        }
    }

    /// The test mapping reading with its document around it (`/RS/@v`, `../@v`), and
    /// the same mapping with those two values as constants, read through its plan.
    fn document_sets() -> (MappingSet, MappingSet) {
        let one_root = MAPPING.replace(r#"root = ["RS/R", "R"]"#, r#"root = "RS/R""#);
        let doc = one_root.replace(
            "[fields.ext]\n",
            "[fields.ext]\ndoc = \"/RS/@v\"\nup = { path = \"../@v\", render = false }\n",
        );
        let planned = one_root.replace(
            "[fields.ext]\n",
            "[fields.ext]\ndoc = { const = \"9\" }\nup = { const = \"9\" }\n",
        );
        let doc = Mapping::compile(&doc, Path::new("t.toml"), &Disk).expect("mapping");
        assert!(doc.needs_document && doc.plan.is_none());
        let planned = Mapping::compile(&planned, Path::new("t.toml"), &Disk).expect("mapping");
        assert!(planned.plan.is_some());
        (
            MappingSet::new(vec![Arc::new(planned)]),
            MappingSet::new(vec![Arc::new(doc)]),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Records read with the whole document around them (paths to the document
        /// and the enclosing element) are the records the plan reads, value for
        /// value and error for error, with the document's values added.
        #[test]
        fn the_document_reader_reads_as_the_plan(records in prop::collection::vec(record(), 1..4)) {
            let (planned, doc) = document_sets();
            let body = format!(r#"<RS v="9">{}</RS>"#, records.concat());
            let a = run(&planned, body.as_bytes());
            let b = run(&doc, body.as_bytes());
            prop_assert_eq!(a, b, "{}", body);
        }
    }

    /// The test mapping without the rules that read elements with children (an
    /// error), so that the records below are valid and show their values.
    fn leafy() -> String {
        MAPPING
            .replace(r#"path = ["E", "B", "D"]"#, r#"path = ["E", "D"]"#)
            .replace(
                r#"fields.v = ".""#,
                r#"fields.v = { path = ".", when = { path = "@k", equals = "2" } }"#,
            )
            .replace(r#"path = "C", required = true"#, r#"path = "C""#)
    }

    #[test]
    fn a_form_feed_in_a_tag_is_refused_by_both_readers() {
        let (planned, tree) = sets();
        let body = "<R><A>1</A><D \x0c>x</D></R>";
        let a = run(&planned, body.as_bytes());
        assert_eq!(a, run(&tree, body.as_bytes()));
        assert!(a.contains("Syntax"), "{a}");
    }

    #[test]
    fn what_a_plan_cannot_express_reads_through_the_element_tree() {
        for (from, to, want) in [
            // into a list's elements from outside the list
            (r#"path = "L/@k""#, r#"path = "L/I/@k""#, r#""k":"7"}"#),
            // an indexed path
            (r#"path = "B/B/C""#, r#"path = "B[2]/C""#, r#""bname":"d""#),
        ] {
            let text = leafy().replace(from, to);
            assert_ne!(text, leafy());
            let m = Mapping::compile(&text, Path::new("t.toml"), &Disk).expect("mapping");
            assert!(m.plan.is_none(), "{to} has no plan");
            let body = br#"<R><A>1</A><B id="5"><C>c</C></B><B><C>d</C></B><L><I k="7"><C>e</C></I></L></R>"#;
            let out = run(&MappingSet::new(vec![Arc::new(m)]), body);
            assert!(out.contains(want), "{want} in {out}");
        }
    }

    #[test]
    fn a_plan_reads_the_first_of_repeated_elements_and_every_list_element() {
        let (planned, tree) = sets_of(&leafy());
        let body = r#"<RS><R no="9"><A>1</A><A>2</A><B id="b1"><C>c1</C></B><B id="b2"><C>c2</C></B><D>d</D>
            <L><I k="1"><C>x</C><C>y</C></I><I k="2">t</I><I/></L><L><I k="3"><C>q</C></I></L></R></RS>"#;
        let a = run(&planned, body.as_bytes());
        assert_eq!(a, run(&tree, body.as_bytes()));
        for want in [
            r#""case_no":"1""#,
            r#""material_id":"d""#,
            r#""name":"1-c1/9""#,
            r#"{"c":"x","k":"1"}"#,
            r#"{"k":"2","v":"t"}"#,
        ] {
            assert!(a.contains(want), "{want} in {a}");
        }
        assert!(!a.contains(r#""q""#), "a second L is not read: {a}");
    }
}
