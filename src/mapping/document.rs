//! Reading records with their document around them: whole-case packages (several
//! kinds in one message) and rules that read outside the record (`../@caseNo`,
//! `/Package/Head/SenderCode`).
//!
//! The whole document is read into one element tree (XML) or kept as parsed (JSON),
//! every element or object at a record root of the node's mappings becomes a
//! record, and the records are handed on case by case, each case's in delivery order
//! (application, materials, steps, result), so that they are stored as one message
//! in that order. Mappings that need none of this never come here: they keep their
//! read plans. The cost is the tree: memory linear in the document, which the
//! body's limits bound, and a walk up its ancestors per element (at most
//! `max_depth`).

use std::sync::Arc;

use super::decode::{DecodeError, Run, choose, push_record};
use super::eval::{Json, JsonTree};
use super::xml::{self, Arena, ArenaCapture, Roots, Sink};
use super::{Format, Mapping, Step};

/// The mappings that read one record root, in the node's order, cut after the first
/// without a `match` (it takes every record the ones before leave).
struct Root<'m> {
    names: Vec<&'m str>,
    steps: &'m [Step],
    sharing: Vec<&'m Arc<Mapping>>,
}

fn roots<'m>(mappings: &[&'m Arc<Mapping>], format: Format) -> Vec<Root<'m>> {
    let mut out: Vec<Root<'m>> = Vec::new();
    for m in mappings.iter().copied().filter(|m| m.format == format) {
        for r in &m.roots {
            match out.iter_mut().find(|x| x.steps == &r.steps[..]) {
                Some(x) => x.sharing.push(m),
                None => out.push(Root {
                    names: super::render::names(r),
                    steps: &r.steps,
                    sharing: vec![m],
                }),
            }
        }
    }
    for r in &mut out {
        if let Some(all) = r.sharing.iter().position(|m| m.select.is_none()) {
            r.sharing.truncate(all + 1);
        }
    }
    out
}

/// Whether any of these mappings reads with the document around the record.
pub(crate) fn needed(mappings: &[&Arc<Mapping>]) -> bool {
    mappings.iter().any(|m| m.needs_document)
}

/// Read an XML document whose document element is `root` with `mappings` (those of
/// the node with a record root under it).
pub(crate) fn xml(
    run: &mut Run,
    mappings: &[&Arc<Mapping>],
    text: &str,
    root: &str,
) -> Result<(), DecodeError> {
    let steps = [Step::Name(root.to_string())];
    let paths = Roots {
        paths: vec![&steps[..]],
    };
    let limits = run.limits;
    let mut sink = XmlDocument {
        run,
        roots: roots(mappings, Format::Xml),
    };
    xml::stream(
        text,
        &paths,
        limits,
        &mut ArenaCapture::default(),
        &mut sink,
    )
}

struct XmlDocument<'r, 's, 'm> {
    run: &'r mut Run<'s>,
    roots: Vec<Root<'m>>,
}

/// Whether the element `node` sits at `names` from the document element.
fn at_path(arena: &Arena, node: u32, names: &[&str]) -> bool {
    let mut cur = Some(node);
    for n in names.iter().rev() {
        match cur {
            Some(c) if arena.nodes[c as usize].name == *n => cur = arena.parent(c),
            _ => return false,
        }
    }
    cur.is_none()
}

/// The ancestor of `node` that is `up` levels above it.
fn ancestor(arena: &Arena, node: u32, up: usize) -> u32 {
    let mut cur = node;
    for _ in 0..up {
        match arena.parent(cur) {
            Some(p) => cur = p,
            None => break,
        }
    }
    cur
}

impl<'a> Sink<'a, Arena<'a>> for XmlDocument<'_, '_, '_> {
    fn record(&mut self, arena: &Arena<'a>, _root: usize) -> Result<(), DecodeError> {
        // (case, rank, element, mapping): elements are numbered in document order.
        let mut found: Vec<(u32, i64, u32, &Arc<Mapping>)> = Vec::new();
        for node in 0..arena.nodes.len() as u32 {
            let name = &arena.nodes[node as usize].name;
            for r in &self.roots {
                if r.names.last() != Some(&name.as_ref()) || !at_path(arena, node, &r.names) {
                    continue;
                }
                let m = choose(&r.sharing, arena, node, self.run.count + found.len())?;
                let case = match &m.package {
                    Some(p) => ancestor(arena, node, r.names.len() - p.steps.len()),
                    None => 0,
                };
                found.push((case, m.kind.rank(), node, m));
            }
        }
        found.sort_by_key(|(case, rank, node, _)| (*case, *rank, *node));
        for (_, _, node, m) in found {
            push_record(self.run, m, arena, node)?;
        }
        Ok(())
    }
}

/// Read one JSON document with `mappings` (the node's JSON mappings). Returns
/// whether any record root was found.
pub(crate) fn json<'v, 'a>(
    run: &mut Run,
    mappings: &[&Arc<Mapping>],
    doc: &'v Json<'a>,
) -> Result<bool, DecodeError> {
    let tree = JsonTree::document(doc);
    let mut found: Vec<(usize, i64, usize, &'v Json<'a>, &Arc<Mapping>)> = Vec::new();
    let mut seq = 0;
    let mut any = false;
    for r in roots(mappings, Format::Json) {
        // A package's cases (a list of them, or one), then each case's records.
        let package = r.sharing.iter().find_map(|m| m.package.as_ref());
        let split = package.map_or(0, |p| super::render::steps_covering(r.steps, p.steps.len()));
        let mut cases = Vec::new();
        reach(doc, &r.steps[..split], &mut cases);
        for (case_no, case) in cases.into_iter().enumerate() {
            let mut nodes = Vec::new();
            reach(case, &r.steps[split..], &mut nodes);
            for node in nodes {
                any = true;
                let m = choose(&r.sharing, &tree, node, run.count + found.len())?;
                let case = if m.package.is_some() { case_no } else { 0 };
                found.push((case, m.kind.rank(), seq, node, m));
                seq += 1;
            }
        }
    }
    found.sort_by_key(|(case, rank, seq, _, _)| (*case, *rank, *seq));
    for (_, _, _, node, m) in found {
        push_record(run, m, &tree, node)?;
    }
    Ok(any)
}

/// The values `steps` reach from `at`, through every item of a list met on the way;
/// a list at the end gives its items.
fn reach<'v, 'a>(at: &'v Json<'a>, steps: &[Step], out: &mut Vec<&'v Json<'a>>) {
    match (steps.split_first(), at) {
        (None, Json::Arr(items)) => out.extend(items.iter()),
        (None, Json::Null) => {}
        (None, v) => out.push(v),
        (Some((Step::Index(i), rest)), Json::Arr(items)) => {
            if let Some(v) = items.get(*i) {
                reach(v, rest, out);
            }
        }
        (Some(_), Json::Arr(items)) => {
            for i in items {
                reach(i, steps, out);
            }
        }
        (Some((Step::Name(n), rest)), Json::Obj(_)) => {
            if let Some(v) = at.get(n) {
                reach(v, rest, out);
            }
        }
        (Some(_), _) => {}
    }
}
