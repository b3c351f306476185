//! Declarative mappings (DESIGN.md section 4): one TOML file per node and record kind,
//! read both ways — it decodes what the node sends into canonical records and renders
//! canonical records back into the node's native format.
//!
//! This module owns the mapping language: loading and compiling files (with the file,
//! line and reason when one cannot compile), the inbound set of a node (which mapping
//! takes which body, form field or SOAP string), evaluation, rendering, and the
//! examples `hallgate check` runs. The byte-level decoders (XML with its legacy
//! encodings, JSON, forms, SOAP) live in [`decode`]; they are the only place raw input
//! is parsed, and every limit on hostile input is enforced there.

pub mod decode;
mod document;
mod eval;
pub mod examples;
mod layout;
mod namespaces;
mod package;
mod plan;
mod render;
mod spec;
pub mod split;
pub mod time;
pub mod tool;
mod xml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::record::{FieldError, Kind};

pub use decode::{DecodeError, Limits};
pub use render::RenderError;
pub use spec::MappingError;

/// The native format a mapping reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

/// One step of a path into a native message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A child element (XML, matched on its local name) or an object key (JSON).
    Name(String),
    /// The n-th (0-based) match of the previous step, written `NAME[1]` (1-based).
    Index(usize),
    /// An attribute (XML only), written `@name`.
    Attr(String),
    /// The enclosing element (XML) or object (JSON), written `..` at the start of a
    /// path. A list between an object and its items is not a step of its own.
    Up,
    /// The document: a path written from `/` (`/Package/Head/SenderCode` in XML,
    /// where the first name is the document element; `/head/senderCode` in JSON).
    Top,
}

impl NPath {
    /// Whether the path reads outside the record (`..` or `/`).
    pub(crate) fn is_context(&self) -> bool {
        matches!(self.steps.first(), Some(Step::Up | Step::Top))
    }
}

/// A compiled path with the text the integrator wrote, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NPath {
    pub steps: Vec<Step>,
    pub text: String,
    /// Its number in the mapping's XML read plan ([`plan::NO_SLOT`] if none).
    pub slot: u32,
}

/// A compiled mapping file.
#[derive(Debug)]
pub struct Mapping {
    /// The file it came from, as given (for messages).
    pub file: String,
    pub kind: Kind,
    pub format: Format,
    pub(crate) roots: Vec<NPath>,
    pub(crate) encoding: &'static encoding_rs::Encoding,
    pub form_fields: Vec<String>,
    pub soap_fields: Vec<String>,
    /// Which records at the root this mapping takes (`match`), when several
    /// mappings share a root.
    pub(crate) select: Option<eval::Cond>,
    pub(crate) rules: Vec<eval::Rule>,
    /// How an XML record is read when this mapping alone reads its root.
    pub(crate) plan: Option<plan::Plan>,
    /// Where the rules' values are staged and how the record is built from them.
    pub(crate) layout: layout::Layout,
    /// The canonical shape checks its rules guarantee (not looked up again).
    pub(crate) known: crate::record::schema::Known,
    pub(crate) render: render::RenderSpec,
    pub examples: Vec<examples::Example>,
    /// Canonical field (dotted, list indexes removed) to the source path it came from.
    sources: HashMap<String, String>,
    /// `package`: the element (or JSON object) that holds one whole case, when this
    /// mapping reads one kind of a whole-case package.
    pub(crate) package: Option<NPath>,
    /// Whether a record is read with its document around it: a package part, or rules
    /// reading outside the record (`..`, `/`). Such mappings read through the element
    /// tree of the whole document, never a read plan, and their files are not cut.
    pub(crate) needs_document: bool,
}

impl Mapping {
    /// Load and compile a mapping file.
    pub fn load(path: &Path, files: &dyn Files) -> Result<Mapping, MappingError> {
        spec::load(path, files)
    }

    /// Compile a mapping from text; `path` names it in messages and anchors the
    /// shared tables (`tables/` beside it or in a parent directory) and examples.
    pub fn compile(text: &str, path: &Path, files: &dyn Files) -> Result<Mapping, MappingError> {
        spec::compile(text, path, files)
    }

    /// The source path a canonical field was read from (`materials[1].name` →
    /// `ATTRS/ATTR[2]/ATTRNAME`), for error messages.
    pub fn source_of(&self, field: &str) -> Option<String> {
        // Strip list indexes, remembering the first, to look the rule up.
        let mut plain = String::with_capacity(field.len());
        let mut index = None;
        let mut rest = field;
        while let Some(open) = rest.find('[') {
            plain.push_str(&rest[..open]);
            let close = rest[open..].find(']')? + open;
            if index.is_none() {
                index = rest[open + 1..close].parse::<usize>().ok();
            }
            rest = &rest[close + 1..];
        }
        plain.push_str(rest);
        let src = self.sources.get(&plain)?;
        Some(match index {
            Some(i) => src.replacen("[*]", &format!("[{}]", i + 1), 1),
            None => src.clone(),
        })
    }

    /// The package this mapping is a part of (`package = "CasePackage/Case"`).
    pub fn package(&self) -> Option<&str> {
        self.package.as_ref().map(|p| p.text.as_str())
    }

    /// The content type rendered bodies carry.
    pub fn content_type(&self) -> String {
        match self.format {
            Format::Xml => format!("application/xml; charset={}", self.encoding.name()),
            Format::Json => "application/json".to_string(),
        }
    }
}

/// Where mapping files and their tables and examples are read from: the file system,
/// or files embedded in the binary (the demo).
pub trait Files: Send + Sync {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    fn exists(&self, path: &Path) -> bool;
}

/// The file system.
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Files compiled into the binary, looked up by their path relative to the repository
/// root; anything else falls through to the disk.
pub struct Embedded(pub &'static [(&'static str, &'static [u8])]);

impl Files for Embedded {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match self.find(path) {
            Some(b) => Ok(b.to_vec()),
            None => std::fs::read(path),
        }
    }
    fn exists(&self, path: &Path) -> bool {
        self.find(path).is_some() || path.exists()
    }
}

impl Embedded {
    fn find(&self, path: &Path) -> Option<&'static [u8]> {
        let wanted = normalize(path);
        self.0
            .iter()
            .find(|(p, _)| normalize(Path::new(p)) == wanted)
            .map(|(_, b)| *b)
    }
}

/// Resolve `.` and `..` lexically, for comparing embedded paths.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// One record decoded from a body: its place in the body, the mapping that read it,
/// and the canonical JSON or the problems found.
#[derive(Debug)]
pub struct Decoded {
    pub index: usize,
    pub kind: Kind,
    pub mapping: Arc<Mapping>,
    pub result: Result<crate::record::Obj, Vec<FieldError>>,
    /// Where values came from when not from their field's usual source.
    pub notes: Vec<eval::SourceNote>,
}

/// The source path of `field` in one decoded record: what its notes say, or the
/// field's usual source (with a list item's element number when empty elements
/// before it were left out).
pub(crate) fn source_for(
    mapping: &Mapping,
    notes: &[eval::SourceNote],
    field: &str,
) -> Option<String> {
    for n in notes {
        if let eval::SourceNote::Field { field: f, source } = n
            && f == field
        {
            return Some(source.clone());
        }
    }
    for n in notes {
        match n {
            eval::SourceNote::Item {
                list,
                kept,
                element,
            } => {
                let head = format!("{list}[{kept}]");
                if let Some(rest) = field.strip_prefix(&head)
                    && (rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
                {
                    return mapping.source_of(&format!("{list}[{element}]{rest}"));
                }
            }
            eval::SourceNote::Field { .. } => {}
        }
    }
    mapping.source_of(field)
}

/// Compile every node's mappings (each file once), keyed by node id. Nodes without
/// mappings are left out.
pub fn load_sets(
    config: &crate::config::Config,
    files: &dyn Files,
) -> Result<std::collections::BTreeMap<String, MappingSet>, MappingError> {
    let base = config.base_dir();
    let mut compiled: std::collections::BTreeMap<PathBuf, Arc<Mapping>> = Default::default();
    let mut out = std::collections::BTreeMap::new();
    for (id, node) in &config.nodes {
        let node = node.get_ref();
        if node.mappings.is_empty() {
            continue;
        }
        let mut set = Vec::new();
        for m in &node.mappings {
            let path = base.join(m);
            let mapping = match compiled.get(&path) {
                Some(m) => m.clone(),
                None => {
                    // A file that cannot be read names the node that lists it.
                    let m = Mapping::load(&path, files).map_err(|e| match e {
                        MappingError::Read { file, source } => MappingError::Read {
                            file: format!("{file} (listed in nodes.{id}.mappings)"),
                            source,
                        },
                        other => other,
                    })?;
                    let m = Arc::new(m);
                    compiled.insert(path, m.clone());
                    m
                }
            };
            set.push(mapping);
        }
        let mut set = MappingSet::new(set);
        set.flag_ids = node.id_checks == crate::config::IdChecks::Flag;
        out.insert(id.clone(), set);
    }
    Ok(out)
}

/// The mappings of one node, in the order its configuration lists them: the inbound
/// set that decodes whatever the node sends, and the outbound set that renders what
/// it receives.
#[derive(Debug, Clone, Default)]
pub struct MappingSet {
    pub mappings: Vec<Arc<Mapping>>,
    /// The node flags ID numbers that fail their check rather than refusing them
    /// (`[nodes.ID] id_checks = "flag"`).
    pub flag_ids: bool,
}

impl MappingSet {
    pub fn new(mappings: Vec<Arc<Mapping>>) -> MappingSet {
        MappingSet {
            mappings,
            flag_ids: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    /// Decode a body into canonical records (not yet validated as canonical: see
    /// [`crate::record::Record::from_value`]). `kind` restricts the mappings tried
    /// (the endpoint `/v1/records/{kind}`).
    pub fn decode(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        kind: Option<Kind>,
        limits: &Limits,
    ) -> Result<Vec<Decoded>, DecodeError> {
        let mut out = Vec::new();
        decode::decode(self, body, content_type, kind, limits, &mut |d| {
            out.push(d);
            Ok(())
        })?;
        Ok(out)
    }

    /// Decode a body record by record, handing each to `emit` as soon as it is read
    /// (for large files: nothing is kept).
    pub fn decode_each(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        kind: Option<Kind>,
        limits: &Limits,
        emit: &mut dyn FnMut(Checked) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        decode::decode(self, body, content_type, kind, limits, &mut |d| {
            emit(check_one(d, self.flag_ids))
        })
    }

    /// The mapping that renders records of `kind` for this node, if any.
    pub fn for_render(&self, kind: Kind) -> Option<&Arc<Mapping>> {
        self.mappings.iter().find(|m| m.kind == kind)
    }
}

/// Decode and validate: the canonical records of a body, each checked as canonical,
/// with problems carrying the source path. This is what ingress and `hallgate map`
/// both run.
pub fn decode_and_check(
    set: &MappingSet,
    body: &[u8],
    content_type: Option<&str>,
    kind: Option<Kind>,
    limits: &Limits,
) -> Result<Vec<Checked>, DecodeError> {
    let decoded = set.decode(body, content_type, kind, limits)?;
    Ok(decoded
        .into_iter()
        .map(|d| check_one(d, set.flag_ids))
        .collect())
}

/// One decoded record after canonical validation.
#[derive(Debug)]
pub struct Checked {
    pub index: usize,
    pub mapping: Arc<Mapping>,
    pub result: Result<crate::record::Record, Vec<FieldError>>,
    /// Accepted with an ID number that failed its check (a node that flags them).
    pub id_flagged: bool,
}

fn check_one(d: Decoded, flag_ids: bool) -> Checked {
    let mut id_flagged = false;
    let result = match d.result {
        Ok(v) if flag_ids => {
            crate::record::Record::from_obj_flagging_ids(d.index, v, Some(d.kind), d.mapping.known)
                .map(|(r, flagged)| {
                    id_flagged = flagged;
                    r
                })
        }
        Ok(v) => crate::record::Record::from_obj_known(d.index, v, Some(d.kind), d.mapping.known),
        Err(e) => Err(e),
    };
    let result = result.map_err(|mut errors| {
        for e in &mut errors {
            if e.source_path.is_none() {
                e.source_path = source_for(&d.mapping, &d.notes, &e.field);
            }
        }
        errors
    });
    Checked {
        index: d.index,
        mapping: d.mapping,
        result,
        id_flagged,
    }
}

/// Render canonical records (all of the mapping's kind) into one native body.
pub fn render(mapping: &Mapping, records: &[Value]) -> Result<Vec<u8>, RenderError> {
    render::render(mapping, records)
}

/// Render the records of whole cases (any kinds the parts map) into one package
/// document: each case under its package element, its records in delivery order.
pub fn render_package(parts: &[&Mapping], records: &[Value]) -> Result<Vec<u8>, RenderError> {
    let mut objects = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        objects.push(r.as_object().ok_or(RenderError::NotObject(i))?);
    }
    package::render(parts, &objects)
}
