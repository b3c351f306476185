//! Whole-case packages (全流程办件数据包) written back: the records of one or more
//! cases, each rendered by the part mapping of its kind, put together under one
//! package element per case (`CasePackage/Case/{BaseInfo, Steps/Step…, Result}`, or
//! `{"case": {…, "steps": […]}}`), application first, then materials, steps and the
//! result.
//!
//! Decoding a package is the document reader's work ([`super::document`]); this is
//! the way back.

use serde_json::{Map, Value};

use super::render::{
    Elem, Lifted, Obj, Out, RenderError, Target, absolute, fill_json, fill_xml, json_body, names,
    steps_covering,
};
use super::{Format, Mapping};
use crate::record::Kind;

/// Render `records` (any kinds the parts map) as one package document.
pub(crate) fn render(
    parts: &[&Mapping],
    records: &[&Map<String, Value>],
) -> Result<Vec<u8>, RenderError> {
    let first = parts.first().ok_or(RenderError::NotPackage)?;
    let package = first.package.as_ref().ok_or(RenderError::NotPackage)?;
    if let Some(other) = parts.iter().find(|p| p.package.as_ref() != Some(package)) {
        return Err(RenderError::Packages {
            first: first.file.clone(),
            other: other.file.clone(),
        });
    }
    let pkg = names(package);
    // The records of each case, cases in the order they first appear, each case's
    // records in delivery order (application, materials, steps, result).
    let mut cases: Vec<Case> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let kind = r.get("kind").and_then(Value::as_str).and_then(Kind::parse);
        let part =
            parts
                .iter()
                .find(|p| Some(p.kind) == kind)
                .ok_or_else(|| RenderError::NoPart {
                    record: i,
                    kind: kind.map_or("unknown", |k| k.as_str()).to_string(),
                    file: first.file.clone(),
                })?;
        let case = r
            .get("case_no")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match cases.iter_mut().find(|(c, _)| *c == case) {
            Some((_, list)) => list.push((i, part, r)),
            None => cases.push((case, vec![(i, part, r)])),
        }
    }
    for (_, list) in &mut cases {
        list.sort_by_key(|(i, p, _)| (p.kind.rank(), *i));
    }
    let one_case_only = match first.format {
        Format::Xml => pkg.len() == 1,
        Format::Json => pkg.is_empty(),
    };
    if one_case_only && cases.len() > 1 {
        return Err(RenderError::OneCase {
            file: first.file.clone(),
            package: package.text.clone(),
            count: cases.len(),
        });
    }
    match first.format {
        Format::Xml => xml(first, &pkg, &cases),
        Format::Json => json(&pkg, &cases),
    }
}

/// A case number and its records: (index given, part, record).
type Case<'r> = (String, Vec<(usize, &'r Mapping, &'r Map<String, Value>)>);
type Cases<'r> = [Case<'r>];

fn xml(first: &Mapping, pkg: &[&str], cases: &Cases) -> Result<Vec<u8>, RenderError> {
    let mut doc = Elem::new(pkg[0]);
    for (_, list) in cases {
        let mut case = Elem::new(pkg[pkg.len() - 1]);
        for (i, part, r) in list {
            let root = names(&part.roots[0]);
            let mut elem = Elem::new(root[root.len() - 1]);
            let mut lifted = Vec::new();
            fill_xml(&part.rules, r, &mut elem, *i, "", &mut lifted)?;
            for (p, v) in &part.render.constants {
                elem.put(&p.steps, Out::Str(v.clone()), None);
            }
            for l in lifted {
                let Some(steps) = absolute(&l.steps, &root, Format::Xml) else {
                    continue;
                };
                // Inside the case element, or around it (the case element is the
                // document element when the package is one name).
                if pkg.len() == 1 {
                    case.put_once(&steps, l.value);
                } else {
                    match inside(&steps, &pkg[1..]) {
                        Some(rest) => case.put_once(rest, l.value),
                        None => doc.put_once(&steps, l.value),
                    }
                }
            }
            case.at(&root[pkg.len()..root.len() - 1])
                .children
                .push(elem);
        }
        if pkg.len() == 1 {
            doc = case;
        } else {
            doc.at(&pkg[1..pkg.len() - 1]).children.push(case);
        }
    }
    let ns = &first.render.namespaces;
    if !ns.is_empty() || ns.prefix.is_some() {
        doc.qualify(ns);
    }
    Ok(doc.document(first.encoding))
}

fn json(pkg: &[&str], cases: &Cases) -> Result<Vec<u8>, RenderError> {
    let mut doc = Obj(Map::new());
    let mut out = Vec::with_capacity(cases.len());
    for (_, list) in cases {
        let mut case = Obj(Map::new());
        let mut lifted: Vec<Lifted> = Vec::new();
        for (i, part, r) in list {
            let root = names(&part.roots[0]);
            let mut obj = Obj(Map::new());
            let mut own = Vec::new();
            fill_json(&part.rules, r, &mut obj, *i, "", &mut own)?;
            for (p, v) in &part.render.constants {
                obj.put(&p.steps, Out::Str(v.clone()), None);
            }
            for l in own {
                if let Some(steps) = absolute(&l.steps, &root, Format::Json) {
                    match inside(&steps, pkg) {
                        Some(rest) => case.put_once(rest, l.value.json(l.native)),
                        None => lifted.push(Lifted { steps, ..l }),
                    }
                }
            }
            // One application and one result per case: an object; steps and
            // materials: a list.
            let at = &part.roots[0].steps[steps_covering(&part.roots[0].steps, pkg.len())..];
            match part.kind {
                Kind::Application | Kind::Result => case.put_value(at, Value::Object(obj.0)),
                Kind::Material | Kind::Process | Kind::Alert => {
                    push_item(&mut case, at, Value::Object(obj.0))
                }
            }
        }
        for l in lifted {
            doc.put_once(&l.steps, l.value.json(l.native));
        }
        out.push(Value::Object(case.0));
    }
    let body = if pkg.is_empty() {
        out.pop().unwrap_or(Value::Null)
    } else {
        let cases = if out.len() == 1 {
            out.pop().unwrap_or(Value::Null)
        } else {
            Value::Array(out)
        };
        let steps: Vec<super::Step> = pkg
            .iter()
            .map(|n| super::Step::Name(n.to_string()))
            .collect();
        doc.put_value(&steps, cases);
        Value::Object(doc.0)
    };
    Ok(json_body(&body))
}

/// The steps after `prefix` when `steps` start with those names.
fn inside<'s>(steps: &'s [super::Step], prefix: &[&str]) -> Option<&'s [super::Step]> {
    if steps.len() < prefix.len() {
        return None;
    }
    let same = prefix
        .iter()
        .zip(steps)
        .all(|(n, s)| matches!(s, super::Step::Name(x) if x == n));
    same.then(|| &steps[prefix.len()..])
}

/// Append `item` to the list at `steps` (made if missing).
fn push_item(obj: &mut Obj, steps: &[super::Step], item: Value) {
    let mut list = match take(&mut obj.0, steps) {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    };
    list.push(item);
    obj.put_value(steps, Value::Array(list));
}

/// Remove and return the value at `steps`.
fn take(map: &mut Map<String, Value>, steps: &[super::Step]) -> Option<Value> {
    let (last, parents) = steps.split_last()?;
    let mut cur = map;
    for s in parents {
        let super::Step::Name(n) = s else {
            return None;
        };
        cur = cur.get_mut(n)?.as_object_mut()?;
    }
    match last {
        super::Step::Name(n) => cur.remove(n),
        _ => None,
    }
}
