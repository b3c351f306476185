//! Bodies to records: which decoder runs (content type, or a sniff of the first byte),
//! SOAP envelopes and form fields unwrapped, XML strings inside them decoded again,
//! and each record handed to the mapping that claims it.
//!
//! Every limit on hostile input lives here: body size, nesting depth, string length,
//! records per body, nesting of documents inside documents. A body that breaks one is
//! unusable as a whole ([`DecodeError`]); a record whose values break a rule is
//! reported per field by the mapping instead.

use std::sync::Arc;

use crate::record::Val;

use super::eval::{self, JsonTree, Place, Tree};
use super::layout::Staged;
use super::xml::{self, Arena, ArenaCapture, Roots, Sink};
use super::{Decoded, Format, Mapping, MappingSet, Step};
use crate::record::Kind;

/// Limits on one body. The defaults suit a gateway; the command line lifts the record
/// count for files.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_depth: usize,
    pub max_records: usize,
    pub max_string_bytes: usize,
    /// Attributes on one XML element.
    pub max_attributes: usize,
    /// XML elements, or JSON values, in one body.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 4 << 20,
            max_depth: 64,
            max_records: 1000,
            max_string_bytes: 1 << 20,
            max_attributes: 256,
            max_elements: 200_000,
        }
    }
}

impl Limits {
    /// The limits `[limits]` of the configuration sets for one body.
    pub fn of(config: &crate::config::Limits) -> Limits {
        Limits {
            max_body_bytes: config.max_body_bytes,
            max_depth: config.max_depth,
            max_records: config.max_records_per_body,
            max_string_bytes: config.max_string_bytes,
            max_attributes: config.max_attributes,
            max_elements: config.max_elements,
        }
    }
}

/// Documents inside documents (a SOAP string holding XML): at most this deep.
const MAX_NESTED_DOCUMENTS: usize = 3;

/// Why a body cannot be used at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "content type `{0}` is not accepted; send XML (application/xml, text/xml, application/soap+xml), JSON (application/json, application/x-ndjson) or a form (application/x-www-form-urlencoded, multipart/form-data)"
    )]
    UnsupportedContentType(String),
    #[error("body is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid bytes for the declared encoding {encoding} at byte offset {offset}")]
    Encoding { encoding: String, offset: usize },
    #[error("the XML declaration names an unknown encoding `{0}`")]
    UnknownEncoding(String),
    #[error("not well-formed at byte offset {offset}: {reason}")]
    Syntax { offset: usize, reason: String },
    #[error(
        "a DOCTYPE at byte offset {offset} is refused: no DTDs and no entity declarations are processed"
    )]
    Doctype { offset: usize },
    #[error(
        "entity `&{name};` at byte offset {offset} is not defined: only &lt; &gt; &amp; &apos; &quot; and character references are allowed"
    )]
    Entity { name: String, offset: usize },
    #[error("nesting deeper than {limit} levels at byte offset {offset}")]
    TooDeep { limit: usize, offset: usize },
    #[error("a string longer than {limit} bytes at byte offset {offset}")]
    StringTooLong { limit: usize, offset: usize },
    #[error(
        "more than {limit} attributes on one element at byte offset {offset} (limit max_attributes)"
    )]
    TooManyAttributes { limit: usize, offset: usize },
    #[error(
        "more than {limit} elements or values in the body at byte offset {offset} (limit max_elements)"
    )]
    TooManyElements { limit: usize, offset: usize },
    #[error("body holds more than {limit} records")]
    TooManyRecords { limit: usize },
    #[error("documents nested inside documents more than {MAX_NESTED_DOCUMENTS} deep")]
    NestedTooDeep,
    #[error("body holds no message")]
    Empty,
    #[error("{0}")]
    NoMapping(String),
    /// Readable, but not one record in it (an empty list).
    #[error("{0}")]
    NoRecords(String),
}

impl DecodeError {
    /// Over a size limit (HTTP 413) rather than malformed (HTTP 400).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            DecodeError::TooLarge { .. } | DecodeError::TooManyRecords { .. }
        )
    }

    /// The byte offset the problem was found at, when there is one.
    pub fn offset(&self) -> Option<usize> {
        match self {
            DecodeError::Encoding { offset, .. }
            | DecodeError::Syntax { offset, .. }
            | DecodeError::Doctype { offset }
            | DecodeError::Entity { offset, .. }
            | DecodeError::TooDeep { offset, .. }
            | DecodeError::StringTooLong { offset, .. }
            | DecodeError::TooManyAttributes { offset, .. }
            | DecodeError::TooManyElements { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// What a decode is working with: the candidate mappings and where records go.
pub(super) struct Run<'s> {
    pub(super) limits: &'s Limits,
    pub(super) count: usize,
    emit: &'s mut dyn FnMut(Decoded) -> Result<(), DecodeError>,
    /// The values of the record being evaluated (kept for the next one).
    staged: Staged,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Container {
    Xml,
    Json,
    Form,
    Multipart,
    Sniff,
}

pub(crate) fn container(ct: Option<&str>) -> Result<Container, DecodeError> {
    let Some(ct) = ct else {
        return Ok(Container::Sniff);
    };
    Ok(match crate::codec::essence(ct).as_str() {
        "application/xml" | "text/xml" | "application/soap+xml" => Container::Xml,
        e if e.ends_with("+xml") => Container::Xml,
        "application/json"
        | "text/json"
        | "application/x-ndjson"
        | "application/jsonl"
        | "application/json-lines"
        | "application/jsonlines" => Container::Json,
        "application/x-www-form-urlencoded" => Container::Form,
        "multipart/form-data" => Container::Multipart,
        "" => Container::Sniff,
        _ => return Err(DecodeError::UnsupportedContentType(ct.to_string())),
    })
}

fn charset(ct: Option<&str>) -> Option<&'static encoding_rs::Encoding> {
    let ct = ct?;
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("charset") {
            encoding_rs::Encoding::for_label(v.trim().trim_matches('"').as_bytes())
        } else {
            None
        }
    })
}

pub(crate) fn decode(
    set: &MappingSet,
    body: &[u8],
    content_type: Option<&str>,
    kind: Option<Kind>,
    limits: &Limits,
    emit: &mut dyn FnMut(Decoded) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    if body.len() > limits.max_body_bytes {
        return Err(DecodeError::TooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    let candidates: Vec<&Arc<Mapping>> = set
        .mappings
        .iter()
        .filter(|m| kind.is_none_or(|k| m.kind == k))
        .collect();
    if candidates.is_empty() {
        return Err(DecodeError::NoMapping(match kind {
            Some(k) => format!("no mapping of this node reads {k} records"),
            None => "this node has no mappings".into(),
        }));
    }
    let mut run = Run {
        limits,
        count: 0,
        emit,
        staged: Staged::default(),
    };
    match container(content_type)? {
        Container::Form => form(&mut run, &candidates, body, content_type)?,
        Container::Multipart => multipart(&mut run, &candidates, body, content_type)?,
        Container::Xml => {
            let text = xml::to_text(body)?;
            xml_text(&mut run, &candidates, &text, 0)?;
        }
        Container::Json => {
            let text = json_bytes(body)?;
            json_text(&mut run, &candidates, text)?;
        }
        Container::Sniff => match first_byte(body) {
            Some(b'<') => {
                let text = xml::to_text(body)?;
                xml_text(&mut run, &candidates, &text, 0)?;
            }
            Some(b'{' | b'[') => json_text(&mut run, &candidates, json_bytes(body)?)?,
            Some(_) => {
                return Err(DecodeError::Syntax {
                    offset: 0,
                    reason: "neither XML nor JSON; name the content type".into(),
                });
            }
            None => return Err(DecodeError::Empty),
        },
    }
    if run.count == 0 {
        let roots: Vec<&str> = candidates
            .iter()
            .flat_map(|m| m.roots.iter().map(|r| r.text.as_str()))
            .map(|t| {
                if t.is_empty() {
                    "the document itself"
                } else {
                    t
                }
            })
            .collect();
        return Err(DecodeError::NoRecords(format!(
            "no record found: nothing in the message sits at a record root ({}); names are case-sensitive",
            roots.join(", ")
        )));
    }
    Ok(())
}

fn first_byte(b: &[u8]) -> Option<u8> {
    let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    b.iter().copied().find(|c| !c.is_ascii_whitespace())
}

fn json_bytes(body: &[u8]) -> Result<&str, DecodeError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    std::str::from_utf8(body).map_err(|e| DecodeError::Encoding {
        encoding: "UTF-8".into(),
        offset: e.valid_up_to(),
    })
}

/// A document found as text (a SOAP string, a form field): XML or JSON by its
/// first character. Its own XML declaration's encoding no longer applies.
fn text_document(
    run: &mut Run,
    candidates: &[&Arc<Mapping>],
    text: &str,
    nesting: usize,
) -> Result<(), DecodeError> {
    if nesting > MAX_NESTED_DOCUMENTS {
        return Err(DecodeError::NestedTooDeep);
    }
    let t = text.trim_start_matches('\u{feff}');
    match t.trim_start().as_bytes().first() {
        Some(b'<') => xml_text(run, candidates, t, nesting),
        Some(b'{' | b'[') => json_text(run, candidates, t),
        Some(_) => Err(DecodeError::Syntax {
            offset: 0,
            reason: "a field meant to hold XML or JSON holds neither".into(),
        }),
        None => Ok(()),
    }
}

fn xml_text(
    run: &mut Run,
    candidates: &[&Arc<Mapping>],
    text: &str,
    nesting: usize,
) -> Result<(), DecodeError> {
    let root = xml::root_name(text, run.limits)?;
    if root == "Envelope" {
        let steps = [Step::Name("Envelope".into())];
        let roots = Roots {
            paths: vec![&steps[..]],
        };
        let mut sink = SoapSink {
            run,
            candidates,
            nesting,
        };
        let limits = sink.run.limits;
        return xml::stream(
            text,
            &roots,
            limits,
            &mut ArenaCapture::default(),
            &mut sink,
        );
    }
    let Some(mapping) = candidates.iter().find(|m| {
        m.format == Format::Xml && m.roots.iter().any(|r| first_name(&r.steps) == Some(&root))
    }) else {
        return Err(no_xml_mapping(candidates, &root));
    };
    // A package, or rules that read outside the record: the whole document is read
    // with every mapping that has a record root in it.
    let under_root: Vec<&Arc<Mapping>> = candidates
        .iter()
        .copied()
        .filter(|m| {
            m.format == Format::Xml && m.roots.iter().any(|r| first_name(&r.steps) == Some(&root))
        })
        .collect();
    if super::document::needed(&under_root) {
        return super::document::xml(run, &under_root, text, &root);
    }
    let roots = Roots {
        paths: mapping
            .roots
            .iter()
            .filter(|r| first_name(&r.steps) == Some(&root))
            .map(|r| &r.steps[..])
            .collect(),
    };
    // Every mapping with the same record root may take a record (`match` decides).
    let mut sharing: Vec<&Arc<Mapping>> = candidates
        .iter()
        .copied()
        .filter(|m| {
            m.format == Format::Xml
                && m.roots
                    .iter()
                    .any(|r| roots.paths.iter().any(|p| *p == &r.steps[..]))
        })
        .collect();
    // The first without a `match` takes every record the ones before it leave: the
    // ones after it never take any.
    if let Some(all) = sharing.iter().position(|m| m.select.is_none()) {
        sharing.truncate(all + 1);
    }
    let limits = run.limits;
    // One mapping for the root reads through its plan when it has one.
    let plan = match &sharing[..] {
        [only] => only.plan.as_ref(),
        _ => None,
    };
    let mut sink = RecordSink {
        run,
        mappings: sharing,
    };
    match plan {
        Some(plan) => xml::stream(text, &roots, limits, &mut plan.capture(), &mut sink),
        None => xml::stream(
            text,
            &roots,
            limits,
            &mut ArenaCapture::default(),
            &mut sink,
        ),
    }
}

fn first_name(steps: &[Step]) -> Option<&str> {
    match steps.first() {
        Some(Step::Name(n)) => Some(n),
        _ => None,
    }
}

fn no_xml_mapping(candidates: &[&Arc<Mapping>], root: &str) -> DecodeError {
    let roots: Vec<String> = candidates
        .iter()
        .filter(|m| m.format == Format::Xml)
        .flat_map(|m| m.roots.iter().map(|r| r.text.clone()))
        .collect();
    DecodeError::NoMapping(if roots.is_empty() {
        format!("an XML message (document element `{root}`) but no XML mapping applies here")
    } else {
        format!(
            "no mapping reads a document element `{root}` (record roots here: {})",
            roots.join(", ")
        )
    })
}

/// Hands every captured record to one mapping.
struct RecordSink<'r, 's, 'm> {
    run: &'r mut Run<'s>,
    mappings: Vec<&'m Arc<Mapping>>,
}

impl<'a, T: Tree<Node = u32>> Sink<'a, T> for RecordSink<'_, '_, '_> {
    fn record(&mut self, tree: &T, _root: usize) -> Result<(), DecodeError> {
        // The record's own element is node 0 (slot 0 of a plan).
        let m = choose(&self.mappings, tree, 0, self.run.count)?;
        push_record(self.run, m, tree, 0)
    }
}

/// The first mapping whose `match` holds for this record.
pub(super) fn choose<'m, T: Tree>(
    mappings: &[&'m Arc<Mapping>],
    tree: &T,
    node: T::Node,
    index: usize,
) -> Result<&'m Arc<Mapping>, DecodeError> {
    let empty = Staged::default();
    mappings
        .iter()
        .copied()
        .find(|m| {
            m.select
                .as_ref()
                .is_none_or(|c| eval::holds(c, tree, node, &empty))
        })
        .ok_or_else(|| {
            DecodeError::NoMapping(format!(
                "record {index} fits none of the mappings for its root ({}): check their `match`",
                mappings
                    .iter()
                    .map(|m| m.file.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Evaluate one record and keep it.
pub(super) fn push_record<T: Tree>(
    run: &mut Run,
    mapping: &Arc<Mapping>,
    tree: &T,
    node: T::Node,
) -> Result<(), DecodeError> {
    if run.count >= run.limits.max_records {
        return Err(DecodeError::TooManyRecords {
            limit: run.limits.max_records,
        });
    }
    let index = run.count;
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let place = Place { index, item: None };
    run.staged.reset(&mapping.layout);
    eval::run(
        &mapping.rules,
        tree,
        node,
        &mut run.staged,
        &place,
        &mut errors,
        &mut notes,
    );
    let mut map = mapping.layout.assemble(&mut run.staged.buf);
    map.insert("kind", Val::str(mapping.kind.as_str()));
    if !errors.is_empty() {
        // Report the canonical problems of the rest of the record too, so one run
        // shows everything to fix (a field the mapping already refused is not
        // reported twice).
        if let Err(more) = crate::record::Record::from_obj(index, map.clone(), Some(mapping.kind)) {
            for mut e in more {
                if !errors.iter().any(|x| x.field == e.field) {
                    e.source_path = super::source_for(mapping, &notes, &e.field);
                    errors.push(e);
                }
            }
        }
    }
    run.count += 1;
    (run.emit)(Decoded {
        index,
        kind: mapping.kind,
        mapping: mapping.clone(),
        result: if errors.is_empty() {
            Ok(map)
        } else {
            Err(errors)
        },
        notes,
    })
}

/// A SOAP 1.1 or 1.2 envelope: the operation element inside Body carries either XML
/// strings in fields a mapping names (`soap_fields`) or the records as elements.
struct SoapSink<'r, 's, 'c> {
    run: &'r mut Run<'s>,
    candidates: &'c [&'c Arc<Mapping>],
    nesting: usize,
}

impl<'a> Sink<'a, Arena<'a>> for SoapSink<'_, '_, '_> {
    fn record(&mut self, arena: &Arena<'a>, _root: usize) -> Result<(), DecodeError> {
        let body = arena
            .children(0)
            .find(|c| arena.nodes[*c as usize].name == "Body")
            .ok_or_else(|| DecodeError::NoMapping("a SOAP envelope without a Body".into()))?;
        let Some(op) = arena.children(body).next() else {
            return Err(DecodeError::NoMapping("an empty SOAP Body".into()));
        };
        let before = self.run.count;
        let mut names = Vec::new();
        for c in arena.children(op) {
            let node = &arena.nodes[c as usize];
            names.push(node.name.to_string());
            let by_field: Vec<&Arc<Mapping>> = self
                .candidates
                .iter()
                .copied()
                .filter(|m| m.soap_fields.iter().any(|f| local(f) == node.name))
                .collect();
            if !by_field.is_empty() {
                text_document(self.run, &by_field, &node.text, self.nesting + 1)?;
                continue;
            }
            // Records as elements inside the operation, read as in a plain body: the
            // roots of the first mapping that knows this element, and for each record
            // the first mapping with that root whose `match` holds.
            let is_root = |r: &&super::NPath| first_name(&r.steps) == Some(node.name.as_ref());
            let Some(first) = self
                .candidates
                .iter()
                .find(|m| m.format == Format::Xml && m.roots.iter().any(|r| is_root(&r)))
            else {
                continue;
            };
            let paths: Vec<&[Step]> = first
                .roots
                .iter()
                .filter(is_root)
                .map(|r| &r.steps[..])
                .collect();
            let sharing: Vec<&Arc<Mapping>> = self
                .candidates
                .iter()
                .copied()
                .filter(|m| {
                    m.format == Format::Xml && m.roots.iter().any(|r| paths.contains(&&r.steps[..]))
                })
                .collect();
            for path in paths {
                let mut found = Vec::new();
                arena.select(c, &path[1..], &mut found);
                for n in found {
                    let m = choose(&sharing, arena, n, self.run.count)?;
                    push_record(self.run, m, arena, n)?;
                }
            }
        }
        if self.run.count == before {
            let fields: Vec<&str> = self
                .candidates
                .iter()
                .flat_map(|m| m.soap_fields.iter().map(String::as_str))
                .collect();
            return Err(DecodeError::NoMapping(format!(
                "SOAP operation `{}` carries {} but no record this node's mappings read (SOAP fields: {})",
                arena.nodes[op as usize].name,
                list_or(&names, "nothing"),
                list_or(&fields, "none")
            )));
        }
        Ok(())
    }
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Check depth, string lengths and the number of values of a JSON text in one pass,
/// before parsing ([`crate::codec::scan_json`]).
pub(crate) fn json_scan(text: &str, limits: &Limits) -> Result<(), DecodeError> {
    let bounds = crate::codec::Bounds {
        max_depth: limits.max_depth,
        max_string_bytes: limits.max_string_bytes,
        max_elements: limits.max_elements,
    };
    crate::codec::scan_json(text, &bounds).map_err(|e| match e {
        crate::codec::ScanError::TooDeep { limit, offset } => {
            DecodeError::TooDeep { limit, offset }
        }
        crate::codec::ScanError::StringTooLong { limit, offset } => {
            DecodeError::StringTooLong { limit, offset }
        }
        crate::codec::ScanError::TooManyElements { limit, offset } => {
            DecodeError::TooManyElements { limit, offset }
        }
    })
}

fn json_offset(text: &str, e: &serde_json::Error) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum();
    line_start + e.column().saturating_sub(1)
}

fn json_text(run: &mut Run, candidates: &[&Arc<Mapping>], text: &str) -> Result<(), DecodeError> {
    json_scan(text, run.limits)?;
    let mut docs = serde_json::Deserializer::from_str(text).into_iter::<eval::Json>();
    let mut any = false;
    for doc in &mut docs {
        let doc = doc.map_err(|e| DecodeError::Syntax {
            offset: json_offset(text, &e),
            reason: e.to_string(),
        })?;
        any = true;
        let json: Vec<&Arc<Mapping>> = candidates
            .iter()
            .copied()
            .filter(|m| m.format == Format::Json)
            .collect();
        if super::document::needed(&json) && super::document::json(run, &json, &doc)? {
            continue;
        }
        let found = candidates.iter().find_map(|m| {
            if m.format != Format::Json {
                return None;
            }
            m.roots.iter().find_map(|r| {
                let mut at = &doc;
                for s in &r.steps {
                    at = match (s, at) {
                        (Step::Name(n), eval::Json::Obj(_)) => at.get(n)?,
                        (Step::Index(i), eval::Json::Arr(a)) => a.get(*i)?,
                        _ => return None,
                    };
                }
                Some((r, at))
            })
        });
        let Some((root, at)) = found else {
            let roots: Vec<String> = candidates
                .iter()
                .filter(|m| m.format == Format::Json)
                .flat_map(|m| m.roots.iter().map(|r| format!("`{}`", r.text)))
                .collect();
            return Err(DecodeError::NoMapping(if roots.is_empty() {
                "a JSON message but no JSON mapping applies here".into()
            } else {
                format!(
                    "the JSON message has none of the record roots {}",
                    roots.join(", ")
                )
            }));
        };
        let sharing: Vec<&Arc<Mapping>> = candidates
            .iter()
            .copied()
            .filter(|m| m.format == Format::Json && m.roots.iter().any(|r| r.steps == root.steps))
            .collect();
        let tree = JsonTree::plain();
        let items: &[eval::Json] = match at {
            eval::Json::Arr(items) => items,
            other => std::slice::from_ref(other),
        };
        for item in items {
            let m = choose(&sharing, &tree, item, run.count)?;
            push_record(run, m, &tree, item)?;
        }
    }
    if !any {
        return Err(DecodeError::Empty);
    }
    Ok(())
}

/// `application/x-www-form-urlencoded`: each field a mapping names is decoded (in the
/// form's charset, UTF-8 unless the content type says otherwise) and read as a document.
fn form(
    run: &mut Run,
    candidates: &[&Arc<Mapping>],
    body: &[u8],
    ct: Option<&str>,
) -> Result<(), DecodeError> {
    let encoding = charset(ct).unwrap_or(encoding_rs::UTF_8);
    let mut seen = Vec::new();
    let mut offset = 0;
    for pair in body.split(|b| *b == b'&') {
        let at = offset;
        offset += pair.len() + 1;
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = form_decode(name, encoding, at)?;
        let by_field: Vec<&Arc<Mapping>> = candidates
            .iter()
            .copied()
            .filter(|m| m.form_fields.contains(&name))
            .collect();
        seen.push(name);
        if by_field.is_empty() {
            continue;
        }
        let value = form_decode(value, encoding, at)?;
        text_document(run, &by_field, &value, 1)?;
    }
    no_form_field(run, candidates, &seen)
}

fn no_form_field(
    run: &Run,
    candidates: &[&Arc<Mapping>],
    seen: &[String],
) -> Result<(), DecodeError> {
    if run.count > 0 {
        return Ok(());
    }
    let wanted: Vec<&str> = candidates
        .iter()
        .flat_map(|m| m.form_fields.iter().map(String::as_str))
        .collect();
    Err(DecodeError::NoMapping(format!(
        "the form has fields {} but this node's mappings read {}",
        list_or(seen, "none"),
        list_or(&wanted, "no form fields")
    )))
}

/// `a, b, c`, or `empty` when there is nothing to list.
fn list_or<S: AsRef<str>>(items: &[S], empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn form_decode(
    raw: &[u8],
    encoding: &'static encoding_rs::Encoding,
    at: usize,
) -> Result<String, DecodeError> {
    let plus: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
    encoding
        .decode_without_bom_handling_and_without_replacement(&bytes)
        .map(|c| c.into_owned())
        .ok_or_else(|| DecodeError::Encoding {
            encoding: encoding.name().into(),
            offset: at,
        })
}

/// `multipart/form-data`: as forms, each part in its own charset, or — for a part
/// holding XML without one — the encoding its declaration names.
fn multipart(
    run: &mut Run,
    candidates: &[&Arc<Mapping>],
    body: &[u8],
    ct: Option<&str>,
) -> Result<(), DecodeError> {
    use futures_util::FutureExt;
    let boundary = multer::parse_boundary(ct.unwrap_or("")).map_err(|e| DecodeError::Syntax {
        offset: 0,
        reason: format!("multipart body: {e}"),
    })?;
    let data = bytes::Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(data) });
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(run.limits.max_body_bytes as u64)
            .per_field(run.limits.max_body_bytes as u64),
    );
    let mut parts = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut seen = Vec::new();
    // The whole body is in memory, so every future is ready at once.
    let bad = |e: multer::Error| DecodeError::Syntax {
        offset: 0,
        reason: format!("multipart body: {e}"),
    };
    loop {
        let next = parts
            .next_field()
            .now_or_never()
            .ok_or_else(|| bad(multer::Error::IncompleteStream))?
            .map_err(bad)?;
        let Some(field) = next else {
            break;
        };
        let name = field.name().unwrap_or("").to_string();
        let part_charset = field
            .content_type()
            .and_then(|m| m.get_param("charset"))
            .and_then(|c| encoding_rs::Encoding::for_label(c.as_str().as_bytes()));
        let data = field
            .bytes()
            .now_or_never()
            .ok_or_else(|| bad(multer::Error::IncompleteStream))?
            .map_err(bad)?;
        let by_field: Vec<&Arc<Mapping>> = candidates
            .iter()
            .copied()
            .filter(|m| m.form_fields.contains(&name))
            .collect();
        seen.push(name);
        if by_field.is_empty() {
            continue;
        }
        let text = match part_charset {
            Some(enc) => enc
                .decode_without_bom_handling_and_without_replacement(&data)
                .map(|c| c.into_owned())
                .ok_or_else(|| DecodeError::Encoding {
                    encoding: enc.name().into(),
                    offset: 0,
                })?,
            None => xml::to_text(&data)?.into_owned(),
        };
        text_document(run, &by_field, &text, 1)?;
    }
    no_form_field(run, candidates, &seen)
}
