//! What `hallgate map` and the mapping half of `hallgate check` do, kept out of
//! `main.rs` so tests and the demo can call them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::examples::guess_content_type;
use super::{Files, Limits, MappingSet};
use crate::record::Kind;

/// Exit codes of `hallgate map`.
pub const EXIT_OK: u8 = 0;
pub const EXIT_REJECTED: u8 = 1;
pub const EXIT_UNUSABLE: u8 = 2;

/// What to map.
pub struct MapRequest<'a> {
    pub inputs: &'a [PathBuf],
    pub content_type: Option<&'a str>,
    pub kind: Option<Kind>,
    /// Set as `source` on every record (the node the input came from).
    pub source: Option<&'a str>,
    pub limits: &'a Limits,
    /// Threads for a large input (cut into parts at record boundaries); 1 = serial.
    pub jobs: usize,
}

/// Parts of a large input are about this big.
const PART_BYTES: usize = 2 << 20;

/// What a thread made of one part of an input.
#[derive(Default)]
struct Done {
    lines: Vec<u8>,
    /// Records refused: their number within the part, and why.
    rejects: Vec<(usize, Vec<crate::record::FieldError>)>,
    records: usize,
}

/// Where the threads get their parts: in order, each with its number, until there
/// are no more.
trait PartSource: Sync {
    fn next(&self) -> Option<(usize, std::borrow::Cow<'_, [u8]>)>;
    fn content_type(&self) -> &str;
    /// How many parts there are, once that is known.
    fn count(&self) -> Option<usize>;
    /// Whether the parts stopped short (a read failed).
    fn failed(&self) -> bool {
        false
    }
}

/// The parts of a document in memory.
struct InMemory<'p, 'a> {
    parts: &'p super::split::Parts<'a>,
    next: std::sync::atomic::AtomicUsize,
}

impl PartSource for InMemory<'_, '_> {
    fn next(&self) -> Option<(usize, std::borrow::Cow<'_, [u8]>)> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (i < self.parts.len()).then(|| {
            let part = match self.parts.part(i) {
                std::borrow::Cow::Borrowed(s) => std::borrow::Cow::Borrowed(s.as_bytes()),
                std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.into_bytes()),
            };
            (i, part)
        })
    }
    fn content_type(&self) -> &str {
        self.parts.content_type()
    }
    fn count(&self) -> Option<usize> {
        Some(self.parts.len())
    }
}

/// How a streamed file is cut into parts.
enum Framing {
    /// After a newline.
    JsonLines,
    /// After a record's end tag; see [`super::split::XmlStream`].
    Xml(super::split::XmlStream),
}

/// A large JSON-lines or XML file read part by part while the threads decode: the
/// file is never held whole, and decoding starts with its first part.
struct Streamed {
    state: std::sync::Mutex<StreamState>,
    framing: Framing,
}

struct StreamState {
    file: std::fs::File,
    /// Bytes read after the end of the previous part.
    carry: Vec<u8>,
    next: usize,
    done: bool,
    failed: bool,
}

impl Streamed {
    /// A JSON-lines file.
    fn json_lines(path: &Path) -> std::io::Result<Streamed> {
        Ok(Streamed {
            state: std::sync::Mutex::new(StreamState {
                file: std::fs::File::open(path)?,
                carry: Vec::new(),
                next: 0,
                done: false,
                failed: false,
            }),
            framing: Framing::JsonLines,
        })
    }

    /// An XML file whose start shows it can be cut (None if it cannot).
    fn xml(set: &MappingSet, req: &MapRequest, path: &Path) -> Option<Streamed> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        let mut start = Vec::new();
        (&mut file)
            .take(HEAD_BYTES as u64)
            .read_to_end(&mut start)
            .ok()?;
        let stream = super::split::xml_stream(set, req.kind, req.limits, &start)?;
        Some(Streamed {
            state: std::sync::Mutex::new(StreamState {
                file,
                carry: start[stream.body_start..].to_vec(),
                next: 0,
                done: false,
                failed: false,
            }),
            framing: Framing::Xml(stream),
        })
    }
}

/// The first record of an XML file to be streamed must start within this many bytes.
const HEAD_BYTES: usize = 1 << 20;

/// Where the bytes read so far may be cut: just after the last newline, or the last
/// record end tag.
fn cut_at(framing: &Framing, buf: &[u8]) -> Option<usize> {
    match framing {
        Framing::JsonLines => buf.iter().rposition(|b| *b == b'\n').map(|nl| nl + 1),
        Framing::Xml(x) => buf
            .windows(x.close.len())
            .rposition(|w| w == x.close.as_slice())
            .map(|p| p + x.close.len()),
    }
}

impl PartSource for Streamed {
    fn next(&self) -> Option<(usize, std::borrow::Cow<'_, [u8]>)> {
        use std::io::Read;
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if g.done {
            return None;
        }
        let mut buf = std::mem::take(&mut g.carry);
        buf.reserve(PART_BYTES + 4096);
        loop {
            if buf.len() >= PART_BYTES
                && let Some(cut) = cut_at(&self.framing, &buf)
            {
                g.carry = buf[cut..].to_vec();
                buf.truncate(cut);
                break;
            }
            let start = buf.len();
            buf.resize(start + PART_BYTES, 0);
            let n = match g.file.read(&mut buf[start..]) {
                Ok(n) => n,
                Err(_) => {
                    // The caller reads the file whole and reports the error.
                    g.failed = true;
                    0
                }
            };
            buf.truncate(start + n);
            if n == 0 {
                g.done = true;
                break;
            }
        }
        let i = g.next;
        let part = match &self.framing {
            Framing::JsonLines => {
                if i == 0 && buf.starts_with(b"\xEF\xBB\xBF") {
                    buf.drain(..3);
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    g.done = true;
                    return None;
                }
                buf
            }
            Framing::Xml(x) => {
                // The last part runs to the end of the file, which closes the document.
                let tail: &[u8] = if g.done { b"" } else { &x.tail };
                let mut part = Vec::with_capacity(x.head.len() + buf.len() + tail.len());
                part.extend_from_slice(&x.head);
                part.extend_from_slice(&buf);
                part.extend_from_slice(tail);
                part
            }
        };
        g.next += 1;
        Some((i, std::borrow::Cow::Owned(part)))
    }
    fn content_type(&self) -> &str {
        match self.framing {
            Framing::JsonLines => "application/x-ndjson",
            // Each part has the file's own declaration, so it is transcoded as the
            // file would be.
            Framing::Xml(_) => "application/xml",
        }
    }
    fn count(&self) -> Option<usize> {
        let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.done.then_some(g.next)
    }
    fn failed(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).failed
    }
}

/// Decode the parts on `req.jobs` threads and write them in order. `Err((n, code))`:
/// a part could not be decoded on its own; the first `n` records were written (with
/// the exit code so far), and the input must be decoded whole for the rest (which
/// reports the problem as usual).
fn map_parts(
    set: &MappingSet,
    source: &dyn PartSource,
    req: &MapRequest,
    label: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, (usize, u8)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Condvar, Mutex};
    let abort = AtomicBool::new(false);
    // Each part's result by number, until the writer takes it.
    let results: Mutex<std::collections::BTreeMap<usize, Result<Done, ()>>> =
        Mutex::new(std::collections::BTreeMap::new());
    let ready = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..req.jobs {
            scope.spawn(|| {
                loop {
                    // Finished parts wait for the writer; past a few, stop taking
                    // more (a slow reader of the output must not make them pile up).
                    {
                        let mut g = results.lock().unwrap_or_else(|p| p.into_inner());
                        while g.len() >= 2 * req.jobs && !abort.load(Ordering::Relaxed) {
                            g = ready.wait(g).unwrap_or_else(|p| p.into_inner());
                        }
                    }
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some((i, text)) = source.next() else {
                        // Under the lock, so the writer cannot miss it.
                        let _g = results.lock().unwrap_or_else(|p| p.into_inner());
                        ready.notify_all();
                        return;
                    };
                    let mut done = Done::default();
                    // A panic here (a bug: no input should cause one) must not leave
                    // the writer waiting for this part forever: the part is reported
                    // unusable and the serial decode takes over from it.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        set.decode_each(
                            &text,
                            Some(source.content_type()),
                            req.kind,
                            req.limits,
                            &mut |c| {
                                done.records += 1;
                                match c.result {
                                    Ok(mut r) => {
                                        if let Some(s) = req.source {
                                            r.set_source(s);
                                        }
                                        r.fields.write_json(&mut done.lines);
                                        done.lines.push(b'\n');
                                    }
                                    Err(errors) => done.rejects.push((c.index, errors)),
                                }
                                Ok(())
                            },
                        )
                    }));
                    drop(text);
                    // A part with no record (the end of a file after its last record)
                    // is fine here: the whole input had records if others had.
                    let result = match result {
                        Ok(Ok(()) | Err(super::DecodeError::NoRecords(_))) => Ok(done),
                        Ok(Err(_)) | Err(_) => Err(()),
                    };
                    let mut g = results.lock().unwrap_or_else(|p| p.into_inner());
                    g.insert(i, result);
                    ready.notify_all();
                }
            });
        }
        let mut code = EXIT_OK;
        let mut written = 0usize;
        let mut i = 0;
        loop {
            let part = {
                let mut g = results.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(p) = g.remove(&i) {
                        ready.notify_all(); // a worker may be waiting for room
                        break Some(p);
                    }
                    // The source is exhausted and part i was never made.
                    if source.count().is_some_and(|n| i >= n) {
                        break None;
                    }
                    g = ready.wait(g).unwrap_or_else(|p| p.into_inner());
                }
            };
            let Some(part) = part else {
                break;
            };
            // A part that cannot stand alone, or one past the record limit the whole
            // input is held to: the serial decode goes on from here.
            let done = match part {
                Ok(done) if written + done.records <= req.limits.max_records => done,
                _ => {
                    // Under the lock, so a worker waiting for room cannot miss it.
                    let _g = results.lock().unwrap_or_else(|p| p.into_inner());
                    abort.store(true, Ordering::Relaxed);
                    ready.notify_all();
                    return Err((written, code));
                }
            };
            let _ = out.write_all(&done.lines);
            for (_, errors) in done.rejects {
                code = code.max(EXIT_REJECTED);
                for mut e in errors {
                    e.record += written;
                    let _ = writeln!(err, "{label}{e}");
                }
            }
            written += done.records;
            i += 1;
        }
        // A read error, or no record at all (the serial decode says so).
        if source.failed() || written == 0 {
            return Err((written, code));
        }
        Ok(code)
    })
}

/// Fold a parallel run's exit code into `code`; the records written when the rest
/// must be decoded whole, or None when the input is done.
fn settle(result: Result<u8, (usize, u8)>, code: &mut u8) -> Option<usize> {
    match result {
        Ok(c) => {
            *code = (*code).max(c);
            None
        }
        Err((written, c)) => {
            *code = (*code).max(c);
            Some(written)
        }
    }
}

fn read_input(p: &Path) -> std::io::Result<Vec<u8>> {
    if p == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(p)
    }
}

/// Decode every input, print canonical records as JSON lines on `out` and one line
/// per problem on `err`. Returns the exit code: 0 all valid, 1 a record rejected,
/// 2 an input unusable.
pub fn map(set: &MappingSet, req: &MapRequest, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let mut code = EXIT_OK;
    let many = req.inputs.len() > 1;
    for input in req.inputs {
        let label = if many {
            format!("{}: ", input.display())
        } else {
            String::new()
        };
        let ct = req
            .content_type
            .map(str::to_string)
            .or_else(|| guess_content_type(input));
        let mut skip = 0;
        // A large JSON-lines or XML file is read part by part while it is decoded, on
        // one thread or several alike (so the output never depends on `--jobs`: a bad
        // byte late in the file stops it there, after the records before it, as a
        // syntax error does). A body read whole (stdin) is checked whole first.
        let size = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0);
        let essence = ct.as_deref().map(crate::codec::essence);
        let streamed = if input != Path::new("-")
            && size >= 2 * PART_BYTES as u64
            && size <= req.limits.max_body_bytes as u64
        {
            match essence.as_deref() {
                Some("application/x-ndjson" | "application/jsonl" | "application/json-lines") => {
                    Streamed::json_lines(input).ok()
                }
                Some("application/xml" | "text/xml") | None => Streamed::xml(set, req, input),
                _ => None,
            }
        } else {
            None
        };
        if let Some(stream) = streamed {
            match settle(map_parts(set, &stream, req, &label, out, err), &mut code) {
                None => continue,
                Some(written) => skip = written,
            }
        }
        let body = match read_input(input) {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(err, "{}: cannot read: {e}", input.display());
                code = code.max(EXIT_UNUSABLE);
                continue;
            }
        };
        if req.jobs > 1
            && skip == 0
            && let Some(parts) =
                super::split::cut(set, &body, ct.as_deref(), req.kind, req.limits, PART_BYTES)
        {
            let source = InMemory {
                parts: &parts,
                next: std::sync::atomic::AtomicUsize::new(0),
            };
            match settle(map_parts(set, &source, req, &label, out, err), &mut code) {
                None => continue,
                Some(written) => skip = written,
            }
        }
        let mut line = Vec::with_capacity(2048);
        let result = set.decode_each(&body, ct.as_deref(), req.kind, req.limits, &mut |c| {
            if c.index < skip {
                return Ok(());
            }
            match c.result {
                Ok(mut r) => {
                    if let Some(s) = req.source {
                        r.set_source(s);
                    }
                    line.clear();
                    r.fields.write_json(&mut line);
                    line.push(b'\n');
                    let _ = out.write_all(&line);
                }
                Err(errors) => {
                    code = code.max(EXIT_REJECTED);
                    for e in errors {
                        let _ = writeln!(err, "{label}{e}");
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            let _ = writeln!(err, "{}: unusable input: {e}", input.display());
            code = code.max(EXIT_UNUSABLE);
        }
    }
    let _ = out.flush();
    code
}

/// Render canonical JSON lines files with the node's mapping of each record's kind
/// (or the one mapping given); native bodies go to `out`, one per kind per input.
pub fn render(
    set: &MappingSet,
    inputs: &[PathBuf],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut code = EXIT_OK;
    for input in inputs {
        let body = match read_input(input) {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(err, "{}: cannot read: {e}", input.display());
                code = EXIT_UNUSABLE;
                continue;
            }
        };
        let text = String::from_utf8_lossy(&body);
        let mut by_kind: Vec<(Kind, Vec<Value>)> = Vec::new();
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let v: Value = match serde_json::from_str(l) {
                Ok(v) => v,
                Err(e) => {
                    let _ = writeln!(err, "{}:{}: not JSON: {e}", input.display(), i + 1);
                    code = EXIT_UNUSABLE;
                    continue;
                }
            };
            let kind = v
                .get("kind")
                .and_then(Value::as_str)
                .and_then(Kind::parse)
                .or_else(|| (set.mappings.len() == 1).then(|| set.mappings[0].kind));
            let Some(kind) = kind else {
                let _ = writeln!(
                    err,
                    "{}:{}: a record without a known kind",
                    input.display(),
                    i + 1
                );
                code = code.max(EXIT_REJECTED);
                continue;
            };
            match by_kind.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, list)) => list.push(v),
                None => by_kind.push((kind, vec![v])),
            }
        }
        // The parts of one package render together: one document, each case's
        // records put back under its package element.
        let parts: Option<Vec<&super::Mapping>> = by_kind
            .iter()
            .map(|(k, _)| set.for_render(*k).map(|m| &**m))
            .collect();
        if let Some(parts) =
            parts.filter(|p| !p.is_empty() && p.iter().all(|m| m.package.is_some()))
        {
            let records: Vec<Value> = by_kind.into_iter().flat_map(|(_, r)| r).collect();
            match super::render_package(&parts, &records) {
                Ok(bytes) => {
                    let _ = out.write_all(&bytes);
                }
                Err(e) => {
                    let _ = writeln!(err, "{}: {e}", input.display());
                    code = code.max(EXIT_REJECTED);
                }
            }
            continue;
        }
        for (kind, records) in by_kind {
            let Some(mapping) = set.for_render(kind) else {
                let _ = writeln!(
                    err,
                    "{}: no mapping renders {kind} records",
                    input.display()
                );
                code = code.max(EXIT_REJECTED);
                continue;
            };
            match super::render(mapping, &records) {
                Ok(bytes) => {
                    let _ = out.write_all(&bytes);
                }
                Err(e) => {
                    let _ = writeln!(err, "{}: {e}", input.display());
                    code = code.max(EXIT_REJECTED);
                }
            }
        }
    }
    let _ = out.flush();
    code
}

/// Run the examples of every mapping in `sets` (node id, set). Prints one line per
/// example and the diff of each failure; returns whether all passed.
pub fn run_examples(
    sets: &[(String, &MappingSet)],
    limits: &Limits,
    files: &dyn Files,
    out: &mut dyn Write,
) -> bool {
    let mut ok = true;
    let mut seen = std::collections::HashSet::new();
    for (node, set) in sets {
        for m in &set.mappings {
            // A file shared by nodes is run once per node: forms and SOAP bodies use
            // the node's whole set.
            if !seen.insert((node.clone(), m.file.clone())) {
                continue;
            }
            let who = if *node == m.file {
                m.file.clone()
            } else {
                format!("{node} {}", m.file)
            };
            for ex in &m.examples {
                match ex.run(set, limits, files) {
                    Ok(()) => {
                        let _ = writeln!(out, "ok    {who}: {}", ex.name);
                    }
                    Err(lines) => {
                        ok = false;
                        let _ = writeln!(out, "FAIL  {who}: {}", ex.name);
                        for l in lines {
                            let _ = writeln!(out, "        {l}");
                        }
                    }
                }
            }
        }
    }
    ok
}
