//! XML input: bytes in a declared legacy encoding to UTF-8 text, and a streaming
//! reader (quick-xml) that builds a small tree for one record at a time.
//!
//! Only what the record roots select is built; everything else is read and dropped.
//! No DTD is processed: a DOCTYPE is refused, and the only entities are the five
//! predefined ones and character references.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::decode::{DecodeError, Limits};
use super::eval::{Lookup, Tree};
use super::{NPath, Step};

const NONE: u32 = u32::MAX;

/// One element of a captured record.
#[derive(Debug)]
pub(crate) struct XNode<'a> {
    pub name: Cow<'a, str>,
    pub text: Cow<'a, str>,
    pub attrs: Vec<(String, String)>,
    /// The enclosing element ([`NONE`] for the captured root).
    parent: u32,
    first_child: u32,
    last_child: u32,
    has_children: bool,
}

/// What a name lookup reads of each node, kept apart from the nodes so that scanning
/// a record's children reads one small array.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// The name's length and first bytes, compared before the name itself.
    key: u64,
    next_sibling: u32,
}

/// A name's length and first seven bytes: equal names have equal keys.
pub(crate) fn name_key(name: &[u8]) -> u64 {
    let len = name.len().min(255) as u64;
    // Eight bytes loaded at once when there are eight (the eighth shifts out).
    if let Some(head) = name.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok()) {
        return len | (u64::from_le_bytes(head) << 8);
    }
    let mut k = len;
    for (i, b) in name.iter().take(7).enumerate() {
        k |= (*b as u64) << (8 * (i + 1));
    }
    k
}

/// The elements of one captured subtree; node 0 is its root.
#[derive(Debug, Default)]
pub(crate) struct Arena<'a> {
    pub nodes: Vec<XNode<'a>>,
    links: Vec<Link>,
}

impl<'a> Arena<'a> {
    fn clear(&mut self) {
        self.nodes.clear();
        self.links.clear();
    }

    fn push(
        &mut self,
        parent: Option<u32>,
        name: Cow<'a, str>,
        attrs: Vec<(String, String)>,
    ) -> u32 {
        let id = self.nodes.len() as u32;
        let key = name_key(name.as_bytes());
        self.nodes.push(XNode {
            name,
            text: Cow::Borrowed(""),
            attrs,
            parent: parent.unwrap_or(NONE),
            first_child: NONE,
            last_child: NONE,
            has_children: false,
        });
        self.links.push(Link {
            key,
            next_sibling: NONE,
        });
        if let Some(p) = parent {
            let p = p as usize;
            let last = self.nodes[p].last_child;
            if last == NONE {
                self.nodes[p].first_child = id;
            } else {
                self.links[last as usize].next_sibling = id;
            }
            self.nodes[p].last_child = id;
            self.nodes[p].has_children = true;
        }
        id
    }

    /// The enclosing element, if it was captured.
    pub fn parent(&self, node: u32) -> Option<u32> {
        match self.nodes[node as usize].parent {
            NONE => None,
            p => Some(p),
        }
    }

    pub fn children(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.nodes[node as usize].first_child;
        std::iter::from_fn(move || {
            if cur == NONE {
                return None;
            }
            let id = cur;
            cur = self.links[id as usize].next_sibling;
            Some(id)
        })
    }

    /// The `nth` child (from 0) named `name`: a path without an index reads the
    /// first, whatever other rules read. Names are compared by their keys first, so
    /// scanning a record's children costs little.
    fn named_child(&self, node: u32, name: &str, nth: usize) -> Option<u32> {
        let key = name_key(name.as_bytes());
        let mut cur = self.nodes[node as usize].first_child;
        let mut seen = 0;
        while let Some(link) = self.links.get(cur as usize) {
            if link.key == key && self.nodes[cur as usize].name == name {
                if seen == nth {
                    return Some(cur);
                }
                seen += 1;
            }
            cur = link.next_sibling;
        }
        None
    }

    /// The nodes `steps` select below `node` (every match of the last name).
    pub fn select(&self, node: u32, steps: &[Step], out: &mut Vec<u32>) {
        let Some((last, parents)) = steps.split_last() else {
            out.push(node);
            return;
        };
        let mut cur = node;
        let mut i = 0;
        while i < parents.len() {
            // The index may be the last step (`ATTRS/ATTR[2]`).
            let nth = match steps.get(i + 1) {
                Some(Step::Index(n)) => *n,
                _ => 0,
            };
            match &parents[i] {
                Step::Name(n) => match self.named_child(cur, n, nth) {
                    Some(c) => cur = c,
                    None => return,
                },
                Step::Index(_) => {}
                Step::Attr(_) | Step::Up | Step::Top => return,
            }
            i += 1;
        }
        match last {
            Step::Name(n) => out.extend(
                self.children(cur)
                    .filter(|c| self.nodes[*c as usize].name == n.as_str()),
            ),
            Step::Index(_) => out.push(cur),
            Step::Attr(_) | Step::Up | Step::Top => {}
        }
    }
}

impl Tree for Arena<'_> {
    type Node = u32;
    fn lookup(&self, node: u32, path: &NPath) -> Lookup<'_> {
        let steps = &path.steps[..];
        let mut cur = node;
        let mut i = 0;
        while i < steps.len() {
            match &steps[i] {
                Step::Up => match self.nodes[cur as usize].parent {
                    NONE => return Lookup::Absent,
                    p => cur = p,
                },
                // `/DOC/…`: node 0 is the document element when a record is read
                // with its document around it.
                Step::Top => match steps.get(i + 1) {
                    Some(Step::Name(n)) if self.nodes.first().is_some_and(|d| d.name == *n) => {
                        cur = 0;
                        i += 1;
                    }
                    _ => return Lookup::Absent,
                },
                Step::Name(n) => {
                    let nth = match steps.get(i + 1) {
                        Some(Step::Index(k)) => *k,
                        _ => 0,
                    };
                    match self.named_child(cur, n, nth) {
                        Some(c) => cur = c,
                        None => return Lookup::Absent,
                    }
                }
                Step::Index(_) => {}
                Step::Attr(a) => {
                    return match self.nodes[cur as usize].attrs.iter().find(|(k, _)| k == a) {
                        Some((_, v)) => Lookup::Str(v),
                        None => Lookup::Absent,
                    };
                }
            }
            i += 1;
        }
        let n = &self.nodes[cur as usize];
        if n.has_children {
            Lookup::Composite
        } else {
            Lookup::Str(&n.text)
        }
    }

    fn each(&self, node: u32, path: &NPath, out: &mut Vec<u32>) {
        self.select(node, &path.steps, out);
    }
}

/// Bytes to UTF-8 text: a BOM wins, then the XML declaration's encoding, then UTF-8.
/// Invalid bytes for the encoding are an error with their offset.
pub(crate) fn to_text(bytes: &[u8]) -> Result<Cow<'_, str>, DecodeError> {
    let (encoding, body) = if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        (enc, &bytes[bom..])
    } else {
        (declared(bytes)?.unwrap_or(encoding_rs::UTF_8), bytes)
    };
    if encoding == encoding_rs::UTF_8 {
        // encoding_rs checks UTF-8 faster than `std::str::from_utf8` (SIMD), and
        // borrows the input when it is valid.
        if let Some(text) = encoding.decode_without_bom_handling_and_without_replacement(body) {
            return Ok(text);
        }
        return Err(DecodeError::Encoding {
            encoding: "UTF-8".into(),
            offset: encoding_rs::Encoding::utf8_valid_up_to(body) + (bytes.len() - body.len()),
        });
    }
    if let Some(text) = encoding.decode_without_bom_handling_and_without_replacement(body) {
        return Ok(text);
    }
    // Find the first bad byte for the message.
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(body.len() * 2);
    let (result, read) = decoder.decode_to_string_without_replacement(body, &mut out, true);
    let offset = match result {
        encoding_rs::DecoderResult::Malformed(bad, after) => {
            read.saturating_sub(bad as usize + after as usize)
        }
        _ => read,
    };
    Err(DecodeError::Encoding {
        encoding: encoding.name().into(),
        offset: offset + (bytes.len() - body.len()),
    })
}

/// The encoding named in `<?xml … encoding="…"?>`, if any.
pub(crate) fn declared(
    bytes: &[u8],
) -> Result<Option<&'static encoding_rs::Encoding>, DecodeError> {
    let head = &bytes[..bytes.len().min(256)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let head = &head[start..];
    if !head.starts_with(b"<?xml") {
        return Ok(None);
    }
    let Some(end) = head.windows(2).position(|w| w == b"?>") else {
        return Ok(None);
    };
    let decl = &head[..end];
    let Some(at) = decl.windows(8).position(|w| w == b"encoding") else {
        return Ok(None);
    };
    let rest = &decl[at + 8..];
    let Some(q) = rest.iter().position(|b| *b == b'"' || *b == b'\'') else {
        return Ok(None);
    };
    let quote = rest[q];
    let value = &rest[q + 1..];
    let Some(close) = value.iter().position(|b| *b == quote) else {
        return Ok(None);
    };
    let label = &value[..close];
    encoding_rs::Encoding::for_label(label)
        .map(Some)
        .ok_or_else(|| DecodeError::UnknownEncoding(String::from_utf8_lossy(label).into_owned()))
}

/// What the streaming reader does with each complete record it captured.
pub(crate) trait Sink<'a, T> {
    /// `root` is the index of the root path that matched. Returns an error to stop.
    fn record(&mut self, tree: &T, root: usize) -> Result<(), DecodeError>;
}

/// How a record is kept while it streams: as an element tree ([`ArenaCapture`]) or
/// in the slots of a mapping's read plan ([`super::plan::Slots`]).
pub(crate) trait Capture<'a> {
    type Tree;
    /// A new record starts (its element comes next, through `open`).
    fn begin(&mut self);
    /// An element opens inside the record, its own element first; `name` is its
    /// local name.
    fn open(
        &mut self,
        name: Cow<'a, str>,
        e: &BytesStart<'_>,
        pos: usize,
        limits: &Limits,
    ) -> Result<(), DecodeError>;
    /// Text (or a character reference, or CDATA) in the innermost open element.
    fn text(&mut self, s: Cow<'a, str>, limits: &Limits, pos: usize) -> Result<(), DecodeError>;
    /// The innermost open element closes; `true` when that was the record's element.
    fn close(&mut self) -> bool;
    /// How many elements are open.
    fn depth(&self) -> usize;
    fn tree(&self) -> &Self::Tree;
}

/// Every attribute of an element, unescaped and within the limits, to `f` with its
/// local name: what is not read is still checked.
#[inline]
pub(crate) fn attributes(
    e: &BytesStart<'_>,
    pos: usize,
    limits: &Limits,
    f: impl FnMut(&[u8], Cow<'_, str>),
) -> Result<(), DecodeError> {
    // Most elements have none: no iterator (and no call) for them. XML whitespace
    // only (a form feed is not, and the parser refuses it).
    if e.attributes_raw()
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        return Ok(());
    }
    each_attribute(e, pos, limits, f)
}

/// Attributes in one pass: quick-xml's own duplicate check compares each name with
/// every one before it (quadratic: 300,000 attributes took about 50 s), so it is off,
/// and duplicates are found here with a set once there are more than a few.
fn each_attribute(
    e: &BytesStart<'_>,
    pos: usize,
    limits: &Limits,
    mut f: impl FnMut(&[u8], Cow<'_, str>),
) -> Result<(), DecodeError> {
    const FEW: usize = 8;
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut many: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    for (n, a) in e.attributes().with_checks(false).enumerate() {
        if n >= limits.max_attributes {
            return Err(DecodeError::TooManyAttributes {
                limit: limits.max_attributes,
                offset: pos,
            });
        }
        let a = a.map_err(|err| DecodeError::Syntax {
            offset: pos,
            reason: err.to_string(),
        })?;
        let key: &[u8] = a.key.into_inner();
        let repeated = if n < FEW {
            seen.contains(&key) || {
                seen.push(key);
                false
            }
        } else {
            if many.is_empty() {
                many.extend(seen.iter().copied());
            }
            !many.insert(key)
        };
        if repeated {
            return Err(DecodeError::Syntax {
                offset: pos,
                reason: format!(
                    "attribute `{}` is given twice on one element",
                    String::from_utf8_lossy(key)
                ),
            });
        }
        let value = a.unescape_value().map_err(|err| match err {
            // An entity no DTD declares: the same error as in text.
            quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(
                _,
                name,
            )) => DecodeError::Entity { name, offset: pos },
            err => DecodeError::Syntax {
                offset: pos,
                reason: err.to_string(),
            },
        })?;
        check_len(value.len(), limits, pos)?;
        f(a.key.local_name().as_ref(), value);
    }
    Ok(())
}

/// A record kept as an element tree: what any path can read.
#[derive(Default)]
pub(crate) struct ArenaCapture<'a> {
    arena: Arena<'a>,
    open: Vec<u32>,
}

impl<'a> Capture<'a> for ArenaCapture<'a> {
    type Tree = Arena<'a>;

    fn begin(&mut self) {
        self.arena.clear();
        self.open.clear();
    }

    fn open(
        &mut self,
        name: Cow<'a, str>,
        e: &BytesStart<'_>,
        pos: usize,
        limits: &Limits,
    ) -> Result<(), DecodeError> {
        let mut attrs = Vec::new();
        attributes(e, pos, limits, |key, value| {
            attrs.push((
                String::from_utf8_lossy(key).into_owned(),
                value.into_owned(),
            ))
        })?;
        let id = self.arena.push(self.open.last().copied(), name, attrs);
        self.open.push(id);
        Ok(())
    }

    fn text(&mut self, s: Cow<'a, str>, limits: &Limits, pos: usize) -> Result<(), DecodeError> {
        match self.open.last() {
            Some(&cur) => append(&mut self.arena, cur, s, limits, pos),
            None => Ok(()),
        }
    }

    fn close(&mut self) -> bool {
        if let Some(id) = self.open.pop() {
            let node = &mut self.arena.nodes[id as usize];
            if node.has_children && node.text.trim().is_empty() {
                node.text = Cow::Borrowed("");
            }
        }
        self.open.is_empty()
    }

    fn depth(&self) -> usize {
        self.open.len()
    }

    fn tree(&self) -> &Arena<'a> {
        &self.arena
    }
}

/// Which element sequences start a record.
pub(crate) struct Roots<'r> {
    pub paths: Vec<&'r [Step]>,
}

impl Roots<'_> {
    /// Index of the root path equal to `stack` followed by `name`, if any.
    fn matches_with(&self, stack: &[Cow<str>], name: &[u8]) -> Option<usize> {
        self.paths.iter().position(|p| {
            let mut names = p.iter().filter_map(|s| match s {
                Step::Name(n) => Some(n.as_bytes()),
                _ => None,
            });
            stack.iter().all(|s| names.next() == Some(s.as_bytes()))
                && names.next() == Some(name)
                && names.next().is_none()
        })
    }
}

/// The document element's local name, read without building anything.
pub(crate) fn root_name(text: &str, limits: &Limits) -> Result<String, DecodeError> {
    let mut reader = Reader::from_str(text);
    loop {
        let pos = reader.buffer_position() as usize;
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                return Ok(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Ok(Event::DocType(_)) => return Err(DecodeError::Doctype { offset: pos }),
            Ok(Event::Eof) => return Err(DecodeError::Empty),
            Ok(Event::Text(t)) if !t.iter().all(u8::is_ascii_whitespace) => {
                return Err(DecodeError::Syntax {
                    offset: pos,
                    reason: "text before the document element".into(),
                });
            }
            Ok(_) => {}
            Err(e) => {
                return Err(DecodeError::Syntax {
                    offset: reader.error_position() as usize,
                    reason: e.to_string(),
                });
            }
        }
        if pos > limits.max_body_bytes {
            return Err(DecodeError::Empty);
        }
    }
}

/// Whether `text` is the start of a document that stops in the document element's
/// content (depth 1): not inside a comment, CDATA section, tag or child element, and
/// with no `record` element in it (one written `<x:RECORD>` would be read again with
/// every part). A part made of it and whole records then reads as the same document
/// does.
pub(crate) fn open_prefix(text: &str, record: &str) -> bool {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut seen_root = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e))
                if depth > 0 && e.local_name().as_ref() == record.as_bytes() =>
            {
                return false;
            }
            Ok(Event::Start(_)) => {
                if depth == 0 && seen_root {
                    return false;
                }
                depth += 1;
                seen_root = true;
            }
            Ok(Event::Empty(_)) if depth == 0 => return false,
            Ok(Event::End(_)) => match depth.checked_sub(1) {
                Some(0) | None => return false,
                Some(d) => depth = d,
            },
            Ok(Event::DocType(_)) | Err(_) => return false,
            Ok(Event::Eof) => return depth == 1,
            Ok(_) => {}
        }
    }
}

/// Stream `text`, capturing each element whose path from the document element
/// matches one of `roots` into `capture`, and hand each to `sink`.
pub(crate) fn stream<'a, C: Capture<'a>>(
    text: &'a str,
    roots: &Roots,
    limits: &Limits,
    capture: &mut C,
    sink: &mut dyn Sink<'a, C::Tree>,
) -> Result<(), DecodeError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Cow<'a, str>> = Vec::new();
    // Text is taken as it stands unless a line end needs normalising: one search of
    // the whole document spares one per text node.
    let has_cr = memchr::memchr(b'\r', text.as_bytes()).is_some();
    // While capturing: the root index that matched.
    let mut capturing: Option<usize> = None;
    let mut seen_root = false;
    let mut elements = 0usize;
    loop {
        let pos = reader.buffer_position() as usize;
        // Matched in place (not moved out of the `Result` first): moving each event
        // cost a store-forwarding stall per event.
        let event = reader.read_event();
        let empty = matches!(event, Ok(Event::Empty(_)));
        match event {
            Err(e) => {
                return Err(DecodeError::Syntax {
                    offset: reader.error_position() as usize,
                    reason: e.to_string(),
                });
            }
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let open = capture.depth();
                if stack.is_empty() && open == 0 && seen_root {
                    return Err(DecodeError::Syntax {
                        offset: pos,
                        reason: "a second document element".into(),
                    });
                }
                seen_root = true;
                elements += 1;
                if elements > limits.max_elements {
                    return Err(DecodeError::TooManyElements {
                        limit: limits.max_elements,
                        offset: pos,
                    });
                }
                let depth = stack.len() + open + 1;
                if depth > limits.max_depth {
                    return Err(DecodeError::TooDeep {
                        limit: limits.max_depth,
                        offset: pos,
                    });
                }
                // The local name, as quick-xml takes it (after the first `:`), with
                // one search.
                let raw = e.name();
                let raw = raw.as_ref();
                let local = match memchr::memchr(b':', raw) {
                    Some(i) => &raw[i + 1..],
                    None => raw,
                };
                let starts = if capturing.is_none() {
                    roots.matches_with(&stack, local)
                } else {
                    None
                };
                // The name is a slice of the input (found by its address, so no
                // second comparison or UTF-8 check); a copy if it is not.
                let start = (local.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
                let name: Cow<'a, str> = match text.get(start..start + local.len()) {
                    Some(slice) if slice.as_ptr() == local.as_ptr() => Cow::Borrowed(slice),
                    _ => Cow::Owned(String::from_utf8_lossy(local).into_owned()),
                };
                if capturing.is_some() {
                    capture.open(name, &e, pos, limits)?;
                } else if let Some(r) = starts {
                    capture.begin();
                    capture.open(name, &e, pos, limits)?;
                    capturing = Some(r);
                } else {
                    stack.push(name);
                }
                if empty {
                    if capturing.is_none() {
                        stack.pop();
                    } else {
                        end_element(capture, &mut capturing, sink)?;
                    }
                }
            }
            Ok(Event::End(_)) => {
                if capturing.is_some() {
                    end_element(capture, &mut capturing, sink)?;
                } else {
                    stack.pop();
                }
            }
            Ok(Event::Text(t)) => {
                if capturing.is_some() {
                    // The text is a slice of the input: take it as such (no second
                    // UTF-8 check) unless line ends need normalising.
                    let raw: &[u8] = &t;
                    let start = (raw.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
                    let s = match text.get(start..start + raw.len()) {
                        Some(slice)
                            if slice.as_ptr() == raw.as_ptr()
                                && !(has_cr && raw.contains(&b'\r')) =>
                        {
                            Cow::Borrowed(slice)
                        }
                        _ => t.xml10_content().map_err(|err| DecodeError::Syntax {
                            offset: pos,
                            reason: err.to_string(),
                        })?,
                    };
                    capture.text(s, limits, pos)?;
                } else if stack.is_empty() && !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(DecodeError::Syntax {
                        offset: pos,
                        reason: "text outside the document element".into(),
                    });
                }
            }
            Ok(Event::CData(c)) => {
                if capturing.is_some() {
                    let s = c.decode().map_err(|err| DecodeError::Syntax {
                        offset: pos,
                        reason: err.to_string(),
                    })?;
                    capture.text(s, limits, pos)?;
                }
            }
            Ok(Event::GeneralRef(r)) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &r[..] {
                        b"lt" => '<',
                        b"gt" => '>',
                        b"amp" => '&',
                        b"apos" => '\'',
                        b"quot" => '"',
                        other => {
                            return Err(DecodeError::Entity {
                                name: String::from_utf8_lossy(other).into_owned(),
                                offset: pos,
                            });
                        }
                    },
                    Err(err) => {
                        return Err(DecodeError::Syntax {
                            offset: pos,
                            reason: err.to_string(),
                        });
                    }
                };
                if capturing.is_some() {
                    let mut buf = [0u8; 4];
                    let s: &str = ch.encode_utf8(&mut buf);
                    capture.text(Cow::Owned(s.to_string()), limits, pos)?;
                }
            }
            Ok(Event::DocType(_)) => return Err(DecodeError::Doctype { offset: pos }),
            Ok(Event::Eof) => {
                if !stack.is_empty() || capturing.is_some() {
                    return Err(DecodeError::Syntax {
                        offset: pos,
                        reason: "the document ends before its elements are closed (truncated?)"
                            .into(),
                    });
                }
                if !seen_root {
                    return Err(DecodeError::Empty);
                }
                return Ok(());
            }
            Ok(Event::Decl(_) | Event::PI(_) | Event::Comment(_)) => {}
        }
    }
}

fn end_element<'a, C: Capture<'a>>(
    capture: &mut C,
    capturing: &mut Option<usize>,
    sink: &mut dyn Sink<'a, C::Tree>,
) -> Result<(), DecodeError> {
    if capture.close()
        && let Some(root) = capturing.take()
    {
        sink.record(capture.tree(), root)?;
    }
    Ok(())
}

fn append<'a>(
    arena: &mut Arena<'a>,
    node: u32,
    s: Cow<'a, str>,
    limits: &Limits,
    pos: usize,
) -> Result<(), DecodeError> {
    let n = &mut arena.nodes[node as usize];
    // Whitespace between child elements is layout, dropped; before an entity in a
    // value (`<D> &amp; B</D>`) it is part of the value (`trim = false` keeps it).
    if n.has_children && s.bytes().all(|b| b.is_ascii_whitespace()) {
        return Ok(());
    }
    if n.text.is_empty() {
        check_len(s.len(), limits, pos)?;
        n.text = s;
    } else {
        check_len(n.text.len() + s.len(), limits, pos)?;
        n.text.to_mut().push_str(&s);
    }
    Ok(())
}

pub(crate) fn check_len(len: usize, limits: &Limits, offset: usize) -> Result<(), DecodeError> {
    if len > limits.max_string_bytes {
        return Err(DecodeError::StringTooLong {
            limit: limits.max_string_bytes,
            offset,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::name_key;

    /// The key as first written: the length, then the first seven bytes.
    fn reference(name: &[u8]) -> u64 {
        let mut k = name.len().min(255) as u64;
        for (i, b) in name.iter().take(7).enumerate() {
            k |= (*b as u64) << (8 * (i + 1));
        }
        k
    }

    #[test]
    fn name_keys_are_the_length_and_first_seven_bytes() {
        let long = "X".repeat(300);
        for name in [
            "",
            "A",
            "PROJID",
            "SERVICE",
            "SERVICEC",
            "APPLY_CARDNUMBER",
            "APPLY_CARDTYPE",
            "申请人",
            "x:RECORD",
            &long,
        ] {
            assert_eq!(
                name_key(name.as_bytes()),
                reference(name.as_bytes()),
                "{name}"
            );
        }
        assert_ne!(name_key(b"APPLY_CARDNUMBER"), name_key(b"APPLY_CARDTYPE"));
    }
}
