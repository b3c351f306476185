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
    // The record element's name: the same for every mapping that reads this root, and
    // below the document element.
    let mut name: Option<&str> = None;
    for m in candidates.iter().filter(|m| m.format == Format::Xml) {
        for r in &m.roots {
            let names: Vec<&str> = r
                .steps
                .iter()
                .map(|s| match s {
                    Step::Name(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect::<Option<_>>()?;
            if names.first() != Some(&root.as_str()) {
                continue;
            }
            let last = *names.last()?;
            if names.len() < 2 || name.is_some_and(|n| n != last) {
                return None;
            }
            name = Some(last);
        }
    }
    let name = name?;
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let t = text.as_ref();
    // The first record's start tag.
    let mut first_start = None;
    let mut from = 0;
    while let Some(p) = t[from..].find(&open) {
        let at = from + p;
        match t.as_bytes().get(at + open.len()) {
            Some(b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/') => {
                first_start = Some(at);
                break;
            }
            _ => from = at + open.len(),
        }
    }
    let first_start = first_start?;
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
    if prefix_start > first_start {
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
