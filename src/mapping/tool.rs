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

/// Decode the parts on `req.jobs` threads and write them in order. `Err(n)`: a part
/// could not be decoded on its own; the first `n` records were written, and the
/// input must be decoded whole for the rest (which reports the problem as usual).
fn map_parts(
    set: &MappingSet,
    parts: &super::split::Parts<'_>,
    req: &MapRequest,
    label: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, usize> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    let n = parts.len();
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<Done, ()>>>> =
        Mutex::new(std::iter::repeat_with(|| None).take(n).collect());
    let ready = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..req.jobs.min(n) {
            scope.spawn(|| {
                loop {
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let text = parts.part(i);
                    let mut done = Done::default();
                    let result = set.decode_each(
                        text.as_bytes(),
                        Some(parts.content_type()),
                        req.kind,
                        req.limits,
                        &mut |c| {
                            done.records += 1;
                            match c.result {
                                Ok(mut r) => {
                                    if let Some(s) = req.source {
                                        r.set_source(s);
                                    }
                                    crate::codec::write_object(&r.fields, &mut done.lines);
                                    done.lines.push(b'\n');
                                }
                                Err(errors) => done.rejects.push((c.index, errors)),
                            }
                            Ok(())
                        },
                    );
                    let mut g = slots.lock().unwrap_or_else(|p| p.into_inner());
                    g[i] = Some(result.map(|()| done).map_err(|_| ()));
                    ready.notify_all();
                }
            });
        }
        let mut code = EXIT_OK;
        let mut written = 0usize;
        for i in 0..n {
            let part = {
                let mut g = slots.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(p) = g[i].take() {
                        break p;
                    }
                    g = ready.wait(g).unwrap_or_else(|p| p.into_inner());
                }
            };
            let Ok(done) = part else {
                abort.store(true, Ordering::Relaxed);
                return Err(written);
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
        }
        Ok(code)
    })
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
        let body = match read_input(input) {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(err, "{}: cannot read: {e}", input.display());
                code = code.max(EXIT_UNUSABLE);
                continue;
            }
        };
        let ct = req
            .content_type
            .map(str::to_string)
            .or_else(|| guess_content_type(input));
        let mut skip = 0;
        if req.jobs > 1
            && let Some(parts) =
                super::split::cut(set, &body, ct.as_deref(), req.kind, req.limits, PART_BYTES)
        {
            match map_parts(set, &parts, req, &label, out, err) {
                Ok(c) => {
                    code = code.max(c);
                    continue;
                }
                Err(written) => skip = written,
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
                    crate::codec::write_object(&r.fields, &mut line);
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
