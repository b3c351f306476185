//! The mapping file format (TOML) and its compilation into rules. Every problem is
//! reported with the file, the line and the field, because integrators fix mappings
//! from these messages alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

use super::eval::{
    Case, Coerce, Cond, CondTest, Native, Rule, Source, TPart, Table, TimeRule, Unknown,
};
use super::examples::Example;
use super::render::RenderSpec;
use super::time::{Pattern, parse_offset};
use super::{Files, Format, Mapping, NPath, Step};
use crate::record::Kind;
use crate::record::checks::Check;

/// Why a mapping cannot be used. Start-up stops on any of these.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}:{line}: {what}: {reason}")]
    Rule {
        file: String,
        line: usize,
        what: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    kind: toml::Spanned<String>,
    format: toml::Spanned<String>,
    root: toml::Spanned<OneOrMany>,
    #[serde(default)]
    encoding: Option<toml::Spanned<String>>,
    #[serde(default = "yes")]
    trim: bool,
    #[serde(default)]
    halfwidth: bool,
    #[serde(default)]
    zone: Option<toml::Spanned<String>>,
    #[serde(default, rename = "match")]
    select: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    form_fields: Vec<String>,
    #[serde(default)]
    soap_fields: Vec<String>,
    #[serde(default)]
    tables: IndexMap<String, toml::Spanned<toml::Value>>,
    fields: IndexMap<String, toml::Spanned<toml::Value>>,
    #[serde(default)]
    render: Option<toml::Spanned<RenderFile>>,
    #[serde(default)]
    examples: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    package: Option<toml::Spanned<String>>,
    #[serde(default)]
    namespaces: Option<toml::Spanned<IndexMap<String, String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderFile {
    #[serde(default)]
    constants: IndexMap<String, String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    qualify: Option<String>,
    #[serde(default)]
    attributes: IndexMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

fn yes() -> bool {
    true
}

const FIELD_KEYS: &[&str] = &[
    "path",
    "template",
    "const",
    "each",
    "fields",
    "required",
    "default",
    "trim",
    "halfwidth",
    "case",
    "regex",
    "split",
    "table",
    "time",
    "date",
    "zone",
    "type",
    "check",
    "when",
    "render",
    "native",
];

/// Everything compilation needs to know about where it is.
struct Ctx<'a> {
    kind: Kind,
    file: String,
    dir: PathBuf,
    files: &'a dyn Files,
    format: Format,
    trim: bool,
    halfwidth: bool,
    zone: jiff::tz::Offset,
    inline_tables: HashMap<String, (usize, toml::Value)>,
    tables: HashMap<String, Arc<Table>>,
}

impl Ctx<'_> {
    fn err(&self, line: usize, what: impl Into<String>, reason: impl Into<String>) -> MappingError {
        MappingError::Rule {
            file: self.file.clone(),
            line,
            what: what.into(),
            reason: reason.into(),
        }
    }
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

pub fn load(path: &Path, files: &dyn Files) -> Result<Mapping, MappingError> {
    let bytes = files.read(path).map_err(|source| MappingError::Read {
        file: path.display().to_string(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| MappingError::Syntax {
        file: path.display().to_string(),
        message: format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()),
    })?;
    compile(&text, path, files)
}

pub fn compile(text: &str, path: &Path, files: &dyn Files) -> Result<Mapping, MappingError> {
    let file = path.display().to_string();
    let spec: FileSpec = toml::from_str(text).map_err(|e| MappingError::Syntax {
        file: file.clone(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let line = |s: std::ops::Range<usize>| line_of(text, s.start);
    let rule_err = |span: std::ops::Range<usize>, what: &str, reason: String| MappingError::Rule {
        file: file.clone(),
        line: line(span),
        what: what.to_string(),
        reason,
    };
    let kind = Kind::parse(spec.kind.get_ref()).ok_or_else(|| {
        rule_err(
            spec.kind.span(),
            "kind",
            "must be application, material, process or result".into(),
        )
    })?;
    let format = match spec.format.get_ref().as_str() {
        "xml" => Format::Xml,
        "json" => Format::Json,
        _ => {
            return Err(rule_err(
                spec.format.span(),
                "format",
                "must be xml or json".into(),
            ));
        }
    };
    let encoding = match &spec.encoding {
        None => encoding_rs::UTF_8,
        Some(e) => encoding_rs::Encoding::for_label(e.get_ref().as_bytes()).ok_or_else(|| {
            rule_err(
                e.span(),
                "encoding",
                format!(
                    "`{}` is not an encoding name (utf-8, gbk, gb2312, gb18030, …)",
                    e.get_ref()
                ),
            )
        })?,
    };
    let zone = match &spec.zone {
        None => default_zone(),
        Some(z) => parse_offset(z.get_ref()).ok_or_else(|| {
            rule_err(
                z.span(),
                "zone",
                "a zone is a fixed offset such as +08:00".into(),
            )
        })?,
    };
    let mut roots = Vec::new();
    for r in spec.root.get_ref().list() {
        let p = parse_root_path(&r, format)
            .map_err(|reason| rule_err(spec.root.span(), "root", reason))?;
        if p.steps.iter().any(|s| matches!(s, Step::Attr(_))) {
            return Err(rule_err(
                spec.root.span(),
                "root",
                "a record root is an element, not an attribute".into(),
            ));
        }
        if format == Format::Xml && p.steps.is_empty() {
            return Err(rule_err(
                spec.root.span(),
                "root",
                "an XML root names at least the document element (RECORDS/RECORD)".into(),
            ));
        }
        roots.push(p);
    }
    if roots.is_empty() {
        return Err(rule_err(
            spec.root.span(),
            "root",
            "give at least one record root".into(),
        ));
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut ctx = Ctx {
        kind,
        file: file.clone(),
        dir,
        files,
        format,
        trim: spec.trim,
        halfwidth: spec.halfwidth,
        zone,
        inline_tables: spec
            .tables
            .iter()
            .map(|(k, v)| (k.clone(), (line(v.span()), v.get_ref().clone())))
            .collect(),
        tables: HashMap::new(),
    };
    if spec.fields.is_empty() {
        return Err(MappingError::Syntax {
            file,
            message: "a mapping needs a [fields] table".into(),
        });
    }
    let entries: Vec<(String, usize, toml::Value)> = spec
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), line(v.span()), v.get_ref().clone()))
        .collect();
    let mut rules = compile_rules(&mut ctx, &entries, "", Scope::Record)?;
    let mut select = match &spec.select {
        None => None,
        Some(v) => {
            let cond = compile_when(&ctx, v.get_ref(), line(v.span()), "match", &[])?;
            if matches!(cond.subject, super::eval::CondSubject::Field(_)) {
                return Err(rule_err(
                    v.span(),
                    "match",
                    "`match` tests the native record: use `path = …`".into(),
                ));
            }
            Some(cond)
        }
    };
    let mut render = RenderSpec::default();
    if let Some(r) = &spec.render {
        for (p, v) in &r.get_ref().constants {
            let path = parse_path(p, format)
                .map_err(|reason| rule_err(r.span(), "render.constants", reason))?;
            if path.is_context() {
                return Err(rule_err(
                    r.span(),
                    "render.constants",
                    format!(
                        "`{p}`: constants are written in each record; `..` and `/` are for field rules"
                    ),
                ));
            }
            render.constants.push((path, v.clone()));
        }
    }
    super::namespaces::compile(
        &mut render,
        format,
        spec.namespaces.as_ref().map(|n| n.get_ref()),
        super::namespaces::RenderKeys {
            namespace: spec
                .render
                .as_ref()
                .and_then(|r| r.get_ref().namespace.as_deref()),
            qualify: spec
                .render
                .as_ref()
                .and_then(|r| r.get_ref().qualify.as_deref()),
            attributes: spec.render.as_ref().map(|r| &r.get_ref().attributes),
        },
    )
    .map_err(|reason| {
        let span = spec
            .namespaces
            .as_ref()
            .map(|n| n.span())
            .or_else(|| spec.render.as_ref().map(|r| r.span()))
            .unwrap_or(0..0);
        rule_err(span, "namespaces", reason)
    })?;
    check_render_targets(&ctx, &rules)?;
    let package = match &spec.package {
        None => None,
        Some(p) => Some(
            package_path(p.get_ref(), format, &roots)
                .map_err(|reason| rule_err(p.span(), "package", reason))?,
        ),
    };
    let mut context = check_context(&ctx, &rules, &roots, false)?;
    if let (Some(cond), Some(v)) = (&select, &spec.select)
        && let super::eval::CondSubject::Path(p) = &cond.subject
    {
        context |= context_path(p, format, &roots).map_err(|r| rule_err(v.span(), "match", r))?;
    }
    let needs_document = context || package.is_some();
    let mut examples = Vec::new();
    for ex in &spec.examples {
        examples.push(
            Example::from_toml(ex.get_ref(), &ctx.dir)
                .map_err(|reason| rule_err(ex.span(), "examples", reason))?,
        );
    }
    let mut sources = HashMap::new();
    collect_sources(&rules, "", "", &mut sources);
    let plan = match format {
        Format::Xml if !needs_document => super::plan::Plan::build(&mut rules, select.as_mut()),
        _ => None,
    };
    let layout = super::layout::Layout::build(&mut rules);
    let known = super::layout::known(kind, format, &rules);
    Ok(Mapping {
        file,
        kind,
        format,
        roots,
        encoding,
        form_fields: spec.form_fields,
        soap_fields: spec.soap_fields,
        select,
        rules,
        plan,
        layout,
        known,
        render,
        examples,
        sources,
        package,
        needs_document,
    })
}

/// `package`: the element (XML) or object (JSON) holding one case, a proper prefix
/// of every record root (JSON may give `""`: the document is the case).
fn package_path(text: &str, format: Format, roots: &[NPath]) -> Result<NPath, String> {
    let p = parse_root_path(text, format)?;
    if p.steps.iter().any(|s| !matches!(s, Step::Name(_))) {
        return Err(format!(
            "`{text}`: a package is a path of element names (no index, no attribute)"
        ));
    }
    if format == Format::Xml && p.steps.is_empty() {
        return Err("an XML package names at least the document element (CasePackage/Case)".into());
    }
    for r in roots {
        let names: Vec<&Step> = r
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Name(_)))
            .collect();
        let inside =
            names.len() > p.steps.len() && p.steps.iter().zip(&names).all(|(a, b)| a == *b);
        if !inside {
            return Err(format!(
                "the record root `{}` does not lie inside the package `{text}`: each part's root starts with the package's path (`{text}/…`)",
                r.text
            ));
        }
    }
    Ok(p)
}

/// Check every path of `rules` that reads outside the record; whether any does.
fn check_context(
    ctx: &Ctx,
    rules: &[Rule],
    roots: &[NPath],
    in_item: bool,
) -> Result<bool, MappingError> {
    let mut any = false;
    for r in rules {
        let what = format!("field `{}`", r.field);
        let mut paths: Vec<&NPath> = Vec::new();
        match &r.source {
            Source::Path(p) => paths.extend(p),
            Source::Template(parts) => paths.extend(parts.iter().filter_map(|p| match p {
                TPart::Path(p) => Some(p),
                TPart::Lit(_) => None,
            })),
            Source::Each { rules, .. } => {
                check_context(ctx, rules, roots, true)?;
            }
            Source::Const(_) => {}
        }
        if let Some(c) = &r.when
            && let super::eval::CondSubject::Path(p) = &c.subject
        {
            paths.push(p);
        }
        for p in paths {
            if in_item && p.is_context() {
                return Err(ctx.err(
                    r.line,
                    &what,
                    format!(
                        "`{}`: inside `each`, paths read the item; `..` and `/` are for the record's own fields",
                        p.text
                    ),
                ));
            }
            any |= context_path(p, ctx.format, roots).map_err(|m| ctx.err(r.line, &what, m))?;
        }
    }
    Ok(any)
}

/// Whether `p` reads outside the record, and an error if it climbs above the
/// document or names another document element.
fn context_path(p: &NPath, format: Format, roots: &[NPath]) -> Result<bool, String> {
    let depth = |r: &NPath| {
        r.steps
            .iter()
            .filter(|s| matches!(s, Step::Name(_)))
            .count()
    };
    match p.steps.first() {
        Some(Step::Up) => {
            let ups = p.steps.iter().take_while(|s| **s == Step::Up).count();
            // XML: the document element is the highest; JSON: the document itself.
            let (r, room) = roots
                .iter()
                .map(|r| {
                    let d = depth(r);
                    (
                        r,
                        if format == Format::Xml {
                            d.saturating_sub(1)
                        } else {
                            d
                        },
                    )
                })
                .min_by_key(|(_, room)| *room)
                .unwrap_or((&roots[0], 0));
            if ups > room {
                return Err(format!(
                    "`{}` climbs {ups} levels, above the document: records at `{}` have {room} enclosing {} (use `/…` to read from the document)",
                    p.text,
                    r.text,
                    if format == Format::Xml {
                        "element(s)"
                    } else {
                        "object(s)"
                    }
                ));
            }
            Ok(true)
        }
        Some(Step::Top) => {
            if format == Format::Xml
                && let Some(Step::Name(first)) = p.steps.get(1)
                && !roots
                    .iter()
                    .any(|r| r.steps.first() == Some(&Step::Name(first.clone())))
            {
                let docs: Vec<String> = roots
                    .iter()
                    .filter_map(|r| match r.steps.first() {
                        Some(Step::Name(n)) => Some(format!("`{n}`")),
                        _ => None,
                    })
                    .collect();
                return Err(format!(
                    "`{}` starts at `{first}`, but the records' document element is {}: a path from `/` names the document element first (`/{}/…`)",
                    p.text,
                    docs.join(" or "),
                    docs.first().map(|d| d.trim_matches('`')).unwrap_or("DOC"),
                ));
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

pub(crate) fn default_zone() -> jiff::tz::Offset {
    jiff::tz::Offset::constant(8)
}

/// The largest index a path may hold (`NAME[1000]`).
const MAX_INDEX: usize = 1000;

fn collect_sources(
    rules: &[Rule],
    prefix: &str,
    src_prefix: &str,
    out: &mut HashMap<String, String>,
) {
    for r in rules {
        let field = format!("{prefix}{}", r.field);
        match &r.source {
            Source::Path(paths) => {
                out.entry(field)
                    .or_insert_with(|| format!("{src_prefix}{}", paths[0].text));
            }
            Source::Template(parts) => {
                let names: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| match p {
                        TPart::Path(p) => Some(p.text.as_str()),
                        TPart::Lit(_) => None,
                    })
                    .collect();
                out.entry(field)
                    .or_insert_with(|| format!("{src_prefix}{}", names.join("+")));
            }
            Source::Each { path, rules, .. } => {
                out.entry(field.clone())
                    .or_insert_with(|| format!("{src_prefix}{}", path.text));
                collect_sources(
                    rules,
                    &format!("{field}."),
                    &format!("{src_prefix}{}[*]/", path.text),
                    out,
                );
            }
            Source::Const(_) => {}
        }
    }
}

/// Two rules may not render to the same native place unless one says `render = false`;
/// a rule that cannot be inverted must say how to render.
fn check_render_targets(ctx: &Ctx, rules: &[Rule]) -> Result<(), MappingError> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for r in rules {
        if !r.render {
            continue;
        }
        let why = match &r.source {
            Source::Template(_) => Some("template"),
            _ if r.regex.is_some() => Some("regex"),
            Source::Path(_) if r.table.as_ref().is_some_and(|t| !t.invertible()) => {
                Some("a table that maps several codes to one value")
            }
            _ => None,
        };
        if let Some(why) = why {
            return Err(ctx.err(
                r.line,
                format!("field `{}`", r.field),
                format!(
                    "uses {why}, which cannot be rendered back; add `render = false` (and render the native value from another field)"
                ),
            ));
        }
        let place = match &r.source {
            Source::Path(p) => p[0].text.clone(),
            Source::Each { path, rules, .. } => {
                check_render_targets(ctx, rules)?;
                path.text.clone()
            }
            _ => continue,
        };
        if let Some(other) = seen.insert(place.clone(), &r.field) {
            return Err(ctx.err(
                r.line,
                format!("field `{}`", r.field),
                format!("`{other}` also renders to `{place}`; mark one of them `render = false`"),
            ));
        }
    }
    Ok(())
}

/// Which canonical fields a rule may name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The record's own fields.
    Record,
    /// The items of `materials`.
    Materials,
    /// Under `ext.`: anything.
    Free,
}

fn compile_rules(
    ctx: &mut Ctx,
    entries: &[(String, usize, toml::Value)],
    prefix: &str,
    scope: Scope,
) -> Result<Vec<Rule>, MappingError> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    // A table without a source key is a group: `[fields.applicant]` with `name = …`
    // is the same as `"applicant.name" = …`.
    let mut flat: Vec<(String, usize, toml::Value)> = Vec::new();
    fn flatten(
        out: &mut Vec<(String, usize, toml::Value)>,
        name: String,
        line: usize,
        v: &toml::Value,
    ) {
        match v {
            toml::Value::Table(t)
                if !["path", "template", "const", "each"]
                    .iter()
                    .any(|k| t.contains_key(*k)) =>
            {
                for (k, sub) in t {
                    flatten(out, format!("{name}.{k}"), line, sub);
                }
            }
            _ => out.push((name, line, v.clone())),
        }
    }
    for (field, line, value) in entries {
        flatten(&mut flat, field.clone(), *line, value);
    }
    for (field, line, value) in &flat {
        let line = *line;
        let what = format!("field `{prefix}{field}`");
        let valid = !field.is_empty()
            && field.split('.').all(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
        if !valid {
            return Err(ctx.err(
                line,
                &what,
                "canonical field names are snake_case, dotted for nesting (applicant.id_no)",
            ));
        }
        let within = (scope == Scope::Materials).then_some(crate::record::schema::MATERIAL_FIELDS);
        if scope != Scope::Free
            && !matches!(field.as_str(), "kind" | "source")
            && !crate::record::schema::is_known_field(ctx.kind, within, field)
        {
            let hint = match crate::record::schema::closest_field(ctx.kind, within, field) {
                Some(c) => format!("; did you mean `{c}`?"),
                None => ";".to_string(),
            };
            let whose = if scope == Scope::Materials {
                "material".to_string()
            } else {
                ctx.kind.to_string()
            };
            return Err(ctx.err(
                line,
                &what,
                format!(
                    "not a canonical {whose} field (docs/records.md){hint} source fields without a canonical home go under `ext.`"
                ),
            ));
        }
        if prefix.is_empty() && matches!(field.as_str(), "kind" | "source") {
            return Err(ctx.err(
                line,
                &what,
                "`kind` comes from the mapping's kind and `source` from the gateway; do not map them",
            ));
        }
        for t in &targets {
            if t == field {
                continue; // several rules may fill one field (first value wins)
            }
            if t.starts_with(&format!("{field}.")) || field.starts_with(&format!("{t}.")) {
                return Err(ctx.err(
                    line,
                    &what,
                    format!("`{t}` is also mapped; a field is either a value or an object"),
                ));
            }
        }
        let rule = compile_rule(ctx, field, line, value, &what, &targets)?;
        targets.push(field.clone());
        rules.push(rule);
    }
    for i in 0..rules.len() {
        let shared = rules
            .iter()
            .enumerate()
            .any(|(j, r)| j != i && r.field == rules[i].field);
        rules[i].shared_target = shared;
        rules[i].primary = !rules[..i].iter().any(|r| r.field == rules[i].field);
    }
    Ok(rules)
}

fn compile_rule(
    ctx: &mut Ctx,
    field: &str,
    line: usize,
    value: &toml::Value,
    what: &str,
    earlier: &[String],
) -> Result<Rule, MappingError> {
    let mut rule = Rule::new(field, line, ctx.trim, ctx.halfwidth);
    let file = ctx.file.clone();
    let fail = |reason: String| MappingError::Rule {
        file: file.clone(),
        line,
        what: what.to_string(),
        reason,
    };
    let t = match value {
        toml::Value::String(p) => {
            let path = parse_path(p, ctx.format).map_err(|r| ctx.err(line, what, r))?;
            rule.source = Source::Path(vec![path]);
            return Ok(rule);
        }
        toml::Value::Table(t) => t,
        _ => {
            return Err(ctx.err(
                line,
                what,
                "write a path (\"PROJID\") or a table ({ path = \"PROJID\", required = true })",
            ));
        }
    };
    for k in t.keys() {
        if !FIELD_KEYS.contains(&k.as_str()) {
            return Err(ctx.err(
                line,
                what,
                format!("unknown key `{k}` (known: {})", FIELD_KEYS.join(", ")),
            ));
        }
    }
    let s = |k: &str| -> Result<Option<String>, MappingError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(fail(format!("`{k}` is a string"))),
        }
    };
    let b = |k: &str| -> Result<Option<bool>, MappingError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(fail(format!("`{k}` is true or false"))),
        }
    };
    let list = |k: &str| -> Result<Option<Vec<String>>, MappingError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| fail(format!("`{k}` is a string or a list of strings")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(fail(format!("`{k}` is a string or a list of strings"))),
        }
    };
    let sources = ["path", "template", "const", "each"]
        .iter()
        .filter(|k| t.contains_key(**k))
        .count();
    if sources != 1 {
        return Err(ctx.err(
            line,
            what,
            "give exactly one of path, template, const or each",
        ));
    }
    if let Some(paths) = list("path")? {
        if paths.is_empty() {
            return Err(ctx.err(line, what, "`path` lists at least one path"));
        }
        let compiled = paths
            .iter()
            .map(|p| parse_path(p, ctx.format))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| ctx.err(line, what, r))?;
        rule.source = Source::Path(compiled);
    } else if let Some(tpl) = s("template")? {
        rule.source =
            Source::Template(parse_template(&tpl, ctx.format).map_err(|r| ctx.err(line, what, r))?);
    } else if let Some(c) = t.get("const") {
        rule.source = Source::Const(to_json(c).map_err(|r| ctx.err(line, what, r))?);
    } else if let Some(each) = s("each")? {
        let path = parse_path(&each, ctx.format).map_err(|r| ctx.err(line, what, r))?;
        if path.is_context() {
            return Err(ctx.err(
                line,
                what,
                format!(
                    "`each = \"{each}\"`: a list is read inside the record; `..` and `/` are for single values"
                ),
            ));
        }
        let Some(toml::Value::Table(sub)) = t.get("fields") else {
            return Err(ctx.err(
                line,
                what,
                "`each` needs `fields`: the canonical fields of each item",
            ));
        };
        let entries: Vec<(String, usize, toml::Value)> = sub
            .iter()
            .map(|(k, v)| (k.clone(), line, v.clone()))
            .collect();
        let scope = if field == "ext" || field.starts_with("ext.") {
            Scope::Free
        } else if field == "materials" && ctx.kind == Kind::Application {
            Scope::Materials
        } else {
            return Err(fail(
                "`each` makes a list: the application's `materials`, or a field under `ext.`"
                    .into(),
            ));
        };
        let rules = compile_rules(ctx, &entries, &format!("{field}[]."), scope)?;
        rule.source = Source::Each {
            path,
            rules,
            layout: super::layout::Layout::empty(),
        };
    }
    if t.contains_key("fields") && !t.contains_key("each") {
        return Err(ctx.err(line, what, "`fields` belongs with `each`"));
    }
    rule.required = b("required")?.unwrap_or(false);
    if let Some(d) = t.get("default") {
        rule.default = Some(to_json(d).map_err(|r| ctx.err(line, what, r))?);
    }
    if let Some(v) = b("trim")? {
        rule.trim = v;
    }
    if let Some(v) = b("halfwidth")? {
        rule.halfwidth = v;
    }
    rule.case = match s("case")?.as_deref() {
        None => None,
        Some("upper") => Some(Case::Upper),
        Some("lower") => Some(Case::Lower),
        Some(_) => return Err(ctx.err(line, what, "`case` is upper or lower")),
    };
    if let Some(re) = s("regex")? {
        let compiled = regex::Regex::new(&re)
            .map_err(|e| ctx.err(line, what, format!("regex does not compile: {e}")))?;
        rule.regex = Some(compiled);
    }
    rule.split = s("split")?;
    if rule.split.as_deref() == Some("") {
        return Err(ctx.err(line, what, "`split` needs a separator"));
    }
    let zone = match s("zone")? {
        None => ctx.zone,
        Some(z) => parse_offset(&z)
            .ok_or_else(|| ctx.err(line, what, "a zone is a fixed offset such as +08:00"))?,
    };
    let time = list("time")?;
    let date = list("date")?;
    if time.is_some() && date.is_some() {
        return Err(ctx.err(line, what, "give `time` or `date`, not both"));
    }
    if let Some((patterns, date_only)) = time.map(|p| (p, false)).or(date.map(|p| (p, true))) {
        let compiled = patterns
            .iter()
            .map(|p| Pattern::compile(p, date_only))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ctx.err(line, what, e.to_string()))?;
        if compiled.is_empty() {
            return Err(ctx.err(line, what, "give at least one time pattern"));
        }
        if let Some(i) = compiled.iter().position(Pattern::has_literal_z)
            && zone != jiff::tz::Offset::UTC
        {
            return Err(ctx.err(
                line,
                what,
                format!(
                    "time pattern `{}`: a quoted 'Z' is only a letter, so these UTC times would be read in {zone}; write XXX to read the offset, or set zone = \"+00:00\" on this field",
                    patterns[i]
                ),
            ));
        }
        rule.time = Some(TimeRule {
            patterns: compiled,
            texts: patterns,
            zone,
            date_only,
        });
    }
    rule.coerce = match s("type")?.as_deref() {
        None => None,
        Some("string") => Some(Coerce::String),
        Some("integer") => Some(Coerce::Integer),
        Some("number") => Some(Coerce::Number),
        Some("boolean") => Some(Coerce::Boolean),
        Some(_) => {
            return Err(ctx.err(line, what, "`type` is string, integer, number or boolean"));
        }
    };
    rule.native = match s("native")?.as_deref() {
        None => None,
        Some("string") => Some(Native::String),
        Some("number") => Some(Native::Number),
        Some(_) => return Err(ctx.err(line, what, "`native` is string or number")),
    };
    if let Some(c) = s("check")? {
        rule.check = Some(Check::parse(&c).ok_or_else(|| {
            ctx.err(
                line,
                what,
                format!("unknown check `{c}` (known: {})", Check::NAMES),
            )
        })?);
    }
    match t.get("table") {
        None => {}
        Some(toml::Value::String(name)) => rule.table = Some(table(ctx, name, line, what)?),
        Some(v @ toml::Value::Table(_)) => {
            rule.table = Some(Arc::new(
                compile_table(&format!("{field} (inline)"), v)
                    .map_err(|r| ctx.err(line, what, r))?,
            ))
        }
        Some(_) => {
            return Err(ctx.err(
                line,
                what,
                "`table` names a table or is an inline table { map = {…} }",
            ));
        }
    }
    if let Some(w) = t.get("when") {
        rule.when = Some(compile_when(ctx, w, line, what, earlier)?);
    }
    rule.render = b("render")?.unwrap_or(true);
    if matches!(rule.source, Source::Const(_) | Source::Each { .. })
        && (rule.table.is_some() || rule.time.is_some() || rule.regex.is_some())
    {
        return Err(ctx.err(line, what, "const and each take no table, time or regex"));
    }
    Ok(rule)
}

fn compile_when(
    ctx: &Ctx,
    w: &toml::Value,
    line: usize,
    what: &str,
    earlier: &[String],
) -> Result<Cond, MappingError> {
    let bad = || {
        ctx.err(
            line,
            what,
            "`when` is { field = \"applicant.id_type\", equals = \"111\" } (or `in = [..]`, `present = true`; `path = \"SRC\"` instead of `field`)",
        )
    };
    let toml::Value::Table(t) = w else {
        return Err(bad());
    };
    let subject = match (t.get("field"), t.get("path")) {
        (Some(toml::Value::String(f)), None) => {
            if !earlier.iter().any(|e| e == f) {
                return Err(ctx.err(
                    line,
                    what,
                    format!("`when` refers to `{f}`, which is not mapped above this field"),
                ));
            }
            super::eval::CondSubject::Field(f.split('.').map(str::to_string).collect())
        }
        (None, Some(toml::Value::String(p))) => super::eval::CondSubject::Path(
            parse_path(p, ctx.format).map_err(|r| ctx.err(line, what, r))?,
        ),
        _ => return Err(bad()),
    };
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    let test = match (t.get("equals"), t.get("in"), t.get("present")) {
        (Some(v), None, None) => CondTest::Equals(vec![scalar(v).ok_or_else(bad)?]),
        (None, Some(toml::Value::Array(a)), None) => CondTest::Equals(
            a.iter()
                .map(|v| scalar(v).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
        ),
        (None, None, Some(toml::Value::Boolean(p))) => CondTest::Present(*p),
        _ => return Err(bad()),
    };
    if t.keys()
        .any(|k| !matches!(k.as_str(), "field" | "path" | "equals" | "in" | "present"))
    {
        return Err(bad());
    }
    Ok(Cond {
        subject,
        test,
        halfwidth: ctx.halfwidth,
        slot: super::layout::NO_FIELD,
    })
}

fn table(ctx: &mut Ctx, name: &str, line: usize, what: &str) -> Result<Arc<Table>, MappingError> {
    if let Some(t) = ctx.tables.get(name) {
        return Ok(t.clone());
    }
    let compiled = if let Some((tline, v)) = ctx.inline_tables.get(name).cloned() {
        compile_table(name, &v).map_err(|r| ctx.err(tline, format!("table `{name}`"), r))?
    } else {
        // tables/NAME.toml beside the mapping or in the nearest parent that has it
        let mut dir = Some(ctx.dir.as_path());
        let mut found = None;
        while let Some(d) = dir {
            let candidate = d.join("tables").join(format!("{name}.toml"));
            if ctx.files.exists(&candidate) {
                found = Some(candidate);
                break;
            }
            dir = d.parent().filter(|p| !p.as_os_str().is_empty());
        }
        if found.is_none()
            && ctx
                .files
                .exists(&Path::new("tables").join(format!("{name}.toml")))
        {
            found = Some(Path::new("tables").join(format!("{name}.toml")));
        }
        let Some(path) = found else {
            return Err(ctx.err(
                line,
                what,
                format!(
                    "table `{name}` is neither in this file's [tables] nor in a tables/{name}.toml beside it or above it"
                ),
            ));
        };
        let file = path.display().to_string();
        let bytes = ctx.files.read(&path).map_err(|source| MappingError::Read {
            file: file.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let v: toml::Value = toml::from_str::<toml::Table>(&text)
            .map(toml::Value::Table)
            .map_err(|e| MappingError::Syntax {
                file: file.clone(),
                message: e.to_string().trim_end().to_string(),
            })?;
        compile_table(name, &v).map_err(|reason| MappingError::Rule {
            file,
            line: 1,
            what: format!("table `{name}`"),
            reason,
        })?
    };
    let t = Arc::new(compiled);
    ctx.tables.insert(name.to_string(), t.clone());
    Ok(t)
}

fn compile_table(name: &str, v: &toml::Value) -> Result<Table, String> {
    let toml::Value::Table(t) = v else {
        return Err("a table is { unknown = \"reject\", map = { CODE = \"value\" } }".into());
    };
    for k in t.keys() {
        if !matches!(k.as_str(), "map" | "unknown" | "default" | "render") {
            return Err(format!(
                "unknown key `{k}` (known: map, unknown, default, render)"
            ));
        }
    }
    let Some(toml::Value::Table(map)) = t.get("map") else {
        return Err("a table needs `map = { CODE = \"value\", … }`".into());
    };
    let mut entries = Vec::new();
    for (k, v) in map {
        entries.push((k.clone(), to_json(v)?));
    }
    let unknown = match t.get("unknown").and_then(toml::Value::as_str) {
        None | Some("reject") => Unknown::Reject,
        Some("pass") => Unknown::Pass,
        Some("default") => Unknown::Default(
            t.get("default")
                .map(to_json)
                .transpose()?
                .ok_or("`unknown = \"default\"` needs `default = …`")?,
        ),
        Some(other) => {
            return Err(format!(
                "`unknown = \"{other}\"`: use reject, pass or default"
            ));
        }
    };
    let mut render = HashMap::new();
    if let Some(toml::Value::Table(r)) = t.get("render") {
        for (value, code) in r {
            let code = code
                .as_str()
                .ok_or("`render` maps canonical values to the code to write")?;
            render.insert(value.clone(), code.to_string());
        }
    }
    Ok(Table::new(name, entries, unknown, render))
}

fn to_json(v: &toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or("a number must be finite")?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(a) => Value::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
    })
}

/// `RECORDS/RECORD`, `ATTRS/ATTR[2]/UNID`, `@id`, `param/postdata`, `.` (the node),
/// `../@caseNo` (the enclosing element), `/Package/Head/SenderCode` (from the document).
/// XML names may carry a namespace prefix, which is ignored. Anything else (XPath
/// axes, wildcards, predicates, functions, JSONPath) is refused with the reason: a
/// path that compiled but could never read anything would fail records as `required`
/// with no hint why.
pub(crate) fn parse_path(text: &str, format: Format) -> Result<NPath, String> {
    let mut steps = Vec::new();
    let t = text.trim();
    if t.starts_with("//") || t.contains("//") {
        return Err(format!(
            "path `{text}`: `//` (anywhere below) is not supported; write each step, or `each` for a list"
        ));
    }
    let top = t.starts_with('/');
    let trimmed = t.trim_matches('/');
    if top {
        steps.push(Step::Top);
    }
    if !(trimmed.is_empty() || trimmed == ".") {
        let mut named = false;
        for seg in trimmed.split('/') {
            if seg == ".." {
                if top || named {
                    return Err(format!(
                        "path `{text}`: `..` goes only at the start of a path (`../@caseNo`, `../../Head/SenderCode`)"
                    ));
                }
                steps.push(Step::Up);
                continue;
            }
            named = true;
            if seg == "." {
                return Err(format!(
                    "path `{text}`: `.` is the element itself; write it alone, or leave it out of a longer path"
                ));
            }
            if let Some(a) = seg.strip_prefix('@') {
                if format == Format::Json {
                    return Err(format!("path `{text}`: attributes (@) are XML only"));
                }
                if let Some(reason) = bad_name(a, format) {
                    return Err(format!("path `{text}`: {reason}"));
                }
                steps.push(Step::Attr(local(a).to_string()));
                continue;
            }
            let (name, index) = match seg.find('[') {
                Some(open) if seg.ends_with(']') => {
                    let inside = &seg[open + 1..seg.len() - 1];
                    if inside == "*" {
                        return Err(format!(
                            "path `{text}`: `[*]` is not supported; `each` reads every element of a list"
                        ));
                    }
                    // Bounded: rendering makes the elements before the one indexed.
                    let n: usize = inside
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_INDEX).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "path `{text}`: an index is a number from 1 to {MAX_INDEX}, like NAME[1] (predicates such as [@type='1'] are not supported; use `when`)"
                            )
                        })?;
                    (&seg[..open], Some(n - 1))
                }
                Some(_) => return Err(format!("path `{text}`: `[` without `]`")),
                None => (seg, None),
            };
            if name.is_empty() && index.is_none() {
                return Err(format!("path `{text}` has an empty step"));
            }
            if !name.is_empty() {
                if let Some(reason) = bad_name(name, format) {
                    return Err(format!("path `{text}`: {reason}"));
                }
                let name = if format == Format::Xml {
                    local(name)
                } else {
                    name
                };
                steps.push(Step::Name(name.to_string()));
            }
            if let Some(i) = index {
                steps.push(Step::Index(i));
            }
        }
    }
    if top && !matches!(steps.get(1), Some(Step::Name(_))) {
        return Err(format!(
            "path `{text}`: a path from the document (`/`) names where to go: `/Package/Head/SenderCode`"
        ));
    }
    Ok(NPath {
        steps,
        text: if top {
            format!("/{trimmed}")
        } else {
            trimmed.to_string()
        },
        slot: super::plan::NO_SLOT,
    })
}

/// A path to a record root or list: written from the document element (a leading `/`
/// is allowed and means the same), never with `..`.
pub(crate) fn parse_root_path(text: &str, format: Format) -> Result<NPath, String> {
    let mut p = parse_path(text, format)?;
    if p.steps.first() == Some(&Step::Top) {
        p.steps.remove(0);
        p.text = p.text.trim_start_matches('/').to_string();
    }
    if p.steps.contains(&Step::Up) {
        return Err(format!(
            "path `{text}`: `..` has no meaning here; this path is written from the document element"
        ));
    }
    Ok(p)
}

/// Why a step's name is not one this path syntax reads, if it is not.
fn bad_name(name: &str, format: Format) -> Option<String> {
    if name.contains('*') {
        return Some(
            "wildcards (`*`) are not supported; name the element, or use `each` for all of them"
                .into(),
        );
    }
    if name.contains('(') || name.contains(')') {
        return Some(format!(
            "`{name}`: functions and axes (text(), parent::) are not supported; a path to an element reads its text, `..` is the enclosing element"
        ));
    }
    if name.contains("::") {
        return Some(format!(
            "`{name}`: axes (parent::, ancestor::) are not supported; `..` is the enclosing element"
        ));
    }
    match format {
        Format::Xml => {
            let ok = |c: char| {
                c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':') || !c.is_ascii()
            };
            let first = name.chars().next()?;
            if !name.chars().all(ok) || first.is_ascii_digit() || matches!(first, '-' | '.') {
                return Some(format!("`{name}` is not an XML name"));
            }
            None
        }
        Format::Json => {
            if name.starts_with('$') {
                return Some(format!(
                    "`{name}`: JSONPath (`$.a.b`) is not the path syntax; write keys separated by `/` (`a/b`)"
                ));
            }
            None
        }
    }
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn parse_template(tpl: &str, format: Format) -> Result<Vec<TPart>, String> {
    let mut parts = Vec::new();
    let mut rest = tpl;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TPart::Lit(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("template `{tpl}`: `{{` without `}}`"))?
            + open;
        parts.push(TPart::Path(parse_path(&rest[open + 1..close], format)?));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TPart::Lit(rest.to_string()));
    }
    if !parts.iter().any(|p| matches!(p, TPart::Path(_))) {
        return Err(format!(
            "template `{tpl}` names no source path; use `const` for a fixed value"
        ));
    }
    Ok(parts)
}
