//! Cutting a large document into parts that decode on their own, at record
//! boundaries, so that `hallgate map` can decode a big file on several threads.
//!
//! Only two shapes are cut: XML whose records are elements below the document
//! element (`RECORDS/RECORD`), cut after a `</RECORD>` end tag, each part wrapped in
//! the document's opening (without its XML declaration: the text is already UTF-8)
//! and closing; and JSON lines, cut after a newline. A cut that lands somewhere it
//! should not (inside a comment or CDATA section that happens to contain the end
//! tag, inside a pretty-printed JSON object) makes a part fail to decode, and the
//! caller then decodes the document whole, which reports the problem exactly as it
//! would have anyway. Records keep their order; their numbers are the serial ones
//! once each part's count is added to the parts before it.

use std::borrow::Cow;
use std::sync::Arc;

use super::decode::{Container, container};
use super::{Format, Limits, Mapping, MappingSet, Step, xml};
use crate::record::Kind;

/// A document cut into parts.
pub struct Parts<'a> {
    text: Cow<'a, str>,
    kind: PartsKind,
    /// Where each part starts (the first from `start`), and where the last one ends.
    cuts: Vec<usize>,
}

enum PartsKind {
    /// Each part is `prefix + text[cut_i..cut_i+1] + suffix`.
    Xml {
        prefix: (usize, usize),
        suffix: usize,
    },
    JsonLines,
}

impl<'a> Parts<'a> {
    pub fn len(&self) -> usize {
        self.cuts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The content type the parts are decoded with.
    pub fn content_type(&self) -> &'static str {
        match self.kind {
            PartsKind::Xml { .. } => "application/xml",
            PartsKind::JsonLines => "application/x-ndjson",
        }
    }

    /// Part `i`, as a document of its own.
    pub fn part(&self, i: usize) -> Cow<'_, str> {
        let body = &self.text[self.cuts[i]..self.cuts[i + 1]];
        match self.kind {
            PartsKind::JsonLines => Cow::Borrowed(body),
            PartsKind::Xml { prefix, suffix } => {
                let head = &self.text[prefix.0..prefix.1];
                let tail = &self.text[suffix..];
                let mut s = String::with_capacity(head.len() + body.len() + tail.len());
                s.push_str(head);
                s.push_str(body);
                s.push_str(tail);
                Cow::Owned(s)
            }
        }
    }
}

/// Parts of about `part_bytes` each, or None when the document is not one of the
/// shapes that can be cut safely, is too small to be worth it, or cannot be read (the
/// serial decode then says why).
pub fn cut<'a>(
    set: &MappingSet,
    body: &'a [u8],
    content_type: Option<&str>,
    kind: Option<Kind>,
    limits: &Limits,
    part_bytes: usize,
) -> Option<Parts<'a>> {
    if body.len() < part_bytes.saturating_mul(2) || body.len() > limits.max_body_bytes {
        return None;
    }
    let candidates: Vec<&Arc<Mapping>> = set
        .mappings
        .iter()
        .filter(|m| kind.is_none_or(|k| m.kind == k))
        .collect();
    let first = body
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(body)
        .iter()
        .copied()
        .find(|c| !c.is_ascii_whitespace())?;
    match (container(content_type).ok()?, first) {
        (Container::Xml | Container::Sniff, b'<') => {
            xml_parts(&candidates, body, limits, part_bytes)
        }
        (Container::Json | Container::Sniff, b'{') => json_lines_parts(body, part_bytes),
        _ => None,
    }
}

fn json_lines_parts(body: &[u8], part_bytes: usize) -> Option<Parts<'_>> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).ok()?;
    let mut cuts = vec![0];
    let mut at = part_bytes;
    while at < text.len() {
        let nl = text.as_bytes()[at..].iter().position(|b| *b == b'\n')?;
        let cut = at + nl + 1;
        if cut >= text.len() {
            break;
        }
        cuts.push(cut);
        at = cut + part_bytes;
    }
    cuts.push(text.len());
    (cuts.len() > 2).then_some(Parts {
        text: Cow::Borrowed(text),
        kind: PartsKind::JsonLines,
        cuts,
    })
}

fn xml_parts<'a>(
    candidates: &[&Arc<Mapping>],
    body: &'a [u8],
    limits: &Limits,
    part_bytes: usize,
) -> Option<Parts<'a>> {
    let text = xml::to_text(body).ok()?;
    let root = xml::root_name(&text, limits).ok()?;
    let (name, _) = record_name(candidates, &root)?;
    let close = format!("</{name}>");
    let t = text.as_ref();
    let first_start = start_tag(t.as_bytes(), name)?;
    let last_end = t.rfind(&close)? + close.len();
    if last_end <= first_start {
        return None;
    }
    // The opening without the XML declaration (the parts are UTF-8 text).
    let lead = t.len()
        - t.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n'])
            .len();
    let prefix_start = if t[lead..].starts_with("<?xml") {
        lead + t[lead..].find("?>")? + 2
    } else {
        lead
    };
    if prefix_start > first_start || !xml::open_prefix(&t[..first_start], name) {
        return None;
    }
    // What follows the last `</RECORD>` is copied into every part: only end tags,
    // comments and processing instructions may be there, not a record written
    // `<RECORD/>` or `<x:RECORD>` (it would be read once per part).
    let after = &t.as_bytes()[last_end..];
    if after
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'<' && !matches!(after.get(i + 1), Some(b'/' | b'!' | b'?')))
    {
        return None;
    }
    let mut cuts = vec![first_start];
    let mut at = first_start + part_bytes;
    while at < last_end {
        // Bytes, not text: `at` may fall inside a character.
        let Some(p) = find(&t.as_bytes()[at..last_end], close.as_bytes()) else {
            break;
        };
        let cut = at + p + close.len();
        if cut >= last_end {
            break;
        }
        cuts.push(cut);
        at = cut + part_bytes;
    }
    cuts.push(last_end);
    (cuts.len() > 2).then_some(Parts {
        kind: PartsKind::Xml {
            prefix: (prefix_start, first_start),
            suffix: last_end,
        },
        text,
        cuts,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The record element's name below the document element `root`, and how deep the
/// records sit (2 for `RECORDS/RECORD`): the same for every mapping that reads this
/// root, or None.
fn record_name<'m>(candidates: &[&'m Arc<Mapping>], root: &str) -> Option<(&'m str, usize)> {
    let mut found: Option<(&str, usize)> = None;
    for m in candidates.iter().filter(|m| m.format == Format::Xml) {
        // Records read with their document around them are not cut apart from it.
        if m.needs_document {
            return None;
        }
        for r in &m.roots {
            let names: Vec<&str> = r
                .steps
                .iter()
                .map(|s| match s {
                    Step::Name(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect::<Option<_>>()?;
            if names.first() != Some(&root) {
                continue;
            }
            let last = *names.last()?;
            if names.len() < 2 || found.is_some_and(|(n, d)| n != last || d != names.len()) {
                return None;
            }
            found = Some((last, names.len()));
        }
    }
    found
}

/// Where the first `<name` start tag is (followed by a space, `>` or `/`).
fn start_tag(bytes: &[u8], name: &str) -> Option<usize> {
    let open = format!("<{name}");
    let mut from = 0;
    while let Some(p) = find(&bytes[from..], open.as_bytes()) {
        let at = from + p;
        match bytes.get(at + open.len()) {
            Some(b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/') => return Some(at),
            _ => from = at + open.len(),
        }
    }
    None
}

/// How an XML file is read part by part without holding it whole: each part is
/// `head` (everything before the first record: BOM, declaration, the document
/// element's start tag) + whole records + `tail` (the document element's end tag),
/// and the last one `head` + the rest of the file. Parts keep the file's encoding
/// (and its declaration), so each is transcoded on its own thread.
pub struct XmlStream {
    pub head: Vec<u8>,
    /// Where the first record starts in the bytes given to [`xml_stream`].
    pub body_start: usize,
    /// The record's end tag (`</RECORD>`): a part ends just after one.
    pub close: Vec<u8>,
    pub tail: Vec<u8>,
}

/// Whether an XML file whose first bytes are `start` can be read part by part: in
/// UTF-8 or the GB encodings (where `<` is never part of a longer character, so an
/// end tag found in the bytes is one), records right below the document element,
/// the first of them within `start`.
pub fn xml_stream(
    set: &MappingSet,
    kind: Option<Kind>,
    limits: &Limits,
    start: &[u8],
) -> Option<XmlStream> {
    let (encoding, bom) = match encoding_rs::Encoding::for_bom(start) {
        Some((e, n)) => (e, n),
        None => (xml::declared(start).ok()?.unwrap_or(encoding_rs::UTF_8), 0),
    };
    if ![encoding_rs::UTF_8, encoding_rs::GBK, encoding_rs::GB18030].contains(&encoding) {
        return None;
    }
    // Enough text to name the document element (a character cut at the end of
    // `start` does not matter here).
    let (text, _) = encoding.decode_without_bom_handling(&start[bom..]);
    let root = xml::root_name(&text, limits).ok()?;
    let candidates: Vec<&Arc<Mapping>> = set
        .mappings
        .iter()
        .filter(|m| kind.is_none_or(|k| m.kind == k))
        .collect();
    let (name, depth) = record_name(&candidates, &root)?;
    if depth != 2 {
        return None; // the tail would have to close more than the document element
    }
    let body_start = start_tag(start, name)?;
    // The document element's name as written (perhaps with a prefix): the first start
    // tag that is not a declaration, processing instruction, comment or DOCTYPE.
    let mut at = bom;
    let qname = loop {
        let lt = at + start[at..body_start].iter().position(|b| *b == b'<')?;
        match start.get(lt + 1) {
            Some(b'?' | b'!') => at = lt + 1,
            _ => {
                let rest = &start[lt + 1..body_start];
                let end = rest
                    .iter()
                    .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/'))?;
                break &rest[..end];
            }
        }
    };
    let local = qname.rsplit(|b| *b == b':').next()?;
    if local != root.as_bytes() {
        return None;
    }
    // The head must end in the document element's content, not in a comment that
    // happens to hold `<RECORD`: a part would read differently otherwise.
    let (head_text, _) = encoding.decode_without_bom_handling(&start[bom..body_start]);
    if !xml::open_prefix(&head_text, name) {
        return None;
    }
    let mut tail = b"</".to_vec();
    tail.extend_from_slice(qname);
    tail.push(b'>');
    Some(XmlStream {
        head: start[..body_start].to_vec(),
        body_start,
        close: format!("</{name}>").into_bytes(),
        tail,
    })
}
