//! The shape of the code, checked (docs/architecture.md):
//! - the library's modules sit in layers, and a module imports only from its own
//!   layer or below;
//! - the top-level modules import each other without a cycle;
//! - no file in `src/` but the mapping engine's and the store engines' is over 600
//!   lines;
//! - docs/architecture.md names only files that exist.
//!
//! Imports are read from the source text: every `crate::NAME` path (in `use` lines,
//! `use crate::{a, b}` groups and paths inside code) and every `super::` chain that
//! climbs to the crate root. Comments, strings and character literals are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of the library and its layer, bottom up. A module missing
/// here fails the check: a new module must say where it belongs.
const LAYERS: &[(&str, u8)] = &[
    // 1. basics: config types, the canonical record, audit events and hashing, time.
    ("codec", 1),
    ("config", 1),
    ("event", 1),
    ("guomi", 1),
    ("hash", 1),
    ("keys", 1),
    ("observe", 1),
    ("record", 1),
    ("time", 1),
    ("tls", 1),
    // 2. the mapping engine.
    ("mapping", 2),
    // 3. the durable store.
    ("frontdb", 3),
    ("store", 3),
    // 4. the pipeline: auth, routing, intake and its sources, delivery and its sinks,
    //    sync, the audit tools.
    ("audit", 4),
    ("auth", 4),
    ("delivery", 4),
    ("intake", 4),
    ("backlog", 4),
    ("limits", 4),
    ("route", 4),
    ("sinks", 4),
    ("sources", 4),
    ("supervise", 4),
    ("sync", 4),
    // 5. the HTTP API.
    ("api", 5),
    ("console", 5),
    // 6. wiring, the demo and the simulated peers.
    ("demo", 6),
    ("gateway", 6),
    ("receiver", 6),
];

/// Files allowed past [`MAX_LINES`]: the mapping engine and the store engines.
fn may_be_long(rel: &str) -> bool {
    rel.starts_with("src/mapping/")
        || rel == "src/store/sqlite.rs"
        || rel == "src/store/postgres.rs"
}

const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source with comments, string literals and character literals blanked out
/// (lines kept, so positions still name the right line).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            while i < b.len() && b[i] != b'\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r'
            && (next == Some(b'"') || next == Some(b'#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // A raw string: r"…", r#"…"#, r##"…"##.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &x in &b[i..j.min(b.len())] {
                blank(&mut out, x);
            }
            i = j;
        } else if c == b'"' {
            blank(&mut out, c);
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                blank(&mut out, b[i]);
                i += 1;
            }
            if i < b.len() {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\u{1f}', '"'), not a lifetime ('a).
            let end = if next == Some(b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                // `'` is ASCII, so the next byte starts a character.
                let len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
            };
            match end {
                Some(e) => {
                    for &x in &b[i..=e] {
                        blank(&mut out, x);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The identifier at `i`, if any.
fn ident_at(b: &[u8], mut i: usize) -> (String, usize) {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    (String::from_utf8_lossy(&b[start..i]).into_owned(), i)
}

/// The first names of each path in a `{ … }` group starting at `i` (just after `{`).
fn group_heads(b: &[u8], mut i: usize, out: &mut Vec<(String, usize)>) {
    let mut depth = 1;
    let mut expect_head = true;
    while i < b.len() && depth > 0 {
        match b[i] {
            b'{' => {
                depth += 1;
                expect_head = false;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                i += 1;
            }
            b',' if depth == 1 => {
                expect_head = true;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ if expect_head && depth == 1 => {
                let (name, end) = ident_at(b, i);
                if !name.is_empty() {
                    out.push((name, i));
                }
                expect_head = false;
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
}

/// The top-level modules a file refers to, each with the line of its first use.
fn imports(code: &str, depth: usize) -> BTreeMap<String, usize> {
    let b = code.as_bytes();
    let line = |pos: usize| b[..pos].iter().filter(|&&c| c == b'\n').count() + 1;
    let mut heads: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at_word = i == 0 || !is_ident(b[i - 1]) && b[i - 1] != b':';
        if at_word && b[i..].starts_with(b"crate::") {
            let j = i + "crate::".len();
            if b.get(j) == Some(&b'{') {
                group_heads(b, j + 1, &mut heads);
            } else {
                let (name, _) = ident_at(b, j);
                if !name.is_empty() {
                    heads.push((name, i));
                }
            }
            i = j;
            continue;
        }
        if at_word && b[i..].starts_with(b"super::") {
            // super::super::x from a file `depth` modules below the root.
            let mut j = i;
            let mut ups = 0;
            while b[j..].starts_with(b"super::") {
                ups += 1;
                j += "super::".len();
            }
            if ups >= depth {
                if b.get(j) == Some(&b'{') {
                    group_heads(b, j + 1, &mut heads);
                } else {
                    let (name, _) = ident_at(b, j);
                    if !name.is_empty() {
                        heads.push((name, i));
                    }
                }
            }
            i = j;
            continue;
        }
        i += 1;
    }
    let mut out = BTreeMap::new();
    for (name, pos) in heads {
        out.entry(name).or_insert_with(|| line(pos));
    }
    out
}

struct Module {
    /// `src/…` path of each file, with what it imports.
    files: Vec<(String, BTreeMap<String, usize>)>,
}

fn library() -> BTreeMap<String, Module> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules: BTreeMap<String, Module> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(root()).expect("under root");
        let rel_s = rel.to_string_lossy().replace('\\', "/");
        let parts: Vec<&str> = rel_s
            .trim_start_matches("src/")
            .trim_end_matches(".rs")
            .split('/')
            .collect();
        let top = parts[0];
        // The crate roots and the binary's own modules are not library layers.
        if top == "lib" || top == "main" || top == "cli" {
            continue;
        }
        // Module depth below the crate root: src/a.rs and src/a/mod.rs are 1.
        let depth = parts.len() - usize::from(parts.last() == Some(&"mod"));
        let text = std::fs::read_to_string(&path).expect("read source");
        let imp = imports(&code_only(&text), depth);
        modules
            .entry(top.to_string())
            .or_insert(Module { files: Vec::new() })
            .files
            .push((rel_s, imp));
    }
    modules
}

fn layer(name: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// Every import that climbs to a higher layer, and every module without a layer.
fn violations(modules: &BTreeMap<String, Module>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, m) in modules {
        let Some(own) = layer(name) else {
            out.push(format!(
                "src/{name}: module `{name}` has no layer: add it to LAYERS in tests/layers.rs and to docs/architecture.md"
            ));
            continue;
        };
        for (file, imports) in &m.files {
            for (target, line) in imports {
                if target == name || !modules.contains_key(target) {
                    continue;
                }
                match layer(target) {
                    Some(l) if l > own => out.push(format!(
                        "{file}:{line}: `{name}` (layer {own}) imports `{target}` (layer {l}): imports only go downward"
                    )),
                    _ => {}
                }
            }
        }
    }
    out
}

/// A cycle among the top-level modules, as a path `a -> b -> a`, if there is one.
fn cycle(modules: &BTreeMap<String, Module>) -> Option<Vec<String>> {
    let edges: BTreeMap<&str, BTreeSet<&str>> = modules
        .iter()
        .map(|(name, m)| {
            let targets = m
                .files
                .iter()
                .flat_map(|(_, imp)| imp.keys())
                .map(String::as_str)
                .filter(|t| *t != name && modules.contains_key(*t))
                .collect();
            (name.as_str(), targets)
        })
        .collect();
    // Depth-first search with colours: 1 on the path, 2 done.
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        colour.insert(n, 1);
        path.push(n);
        for &t in edges.get(n).into_iter().flatten() {
            match colour.get(t).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| *p == t).unwrap_or(0);
                    let mut c: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                    c.push(t.to_string());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(t, edges, colour, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        colour.insert(n, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for &n in edges.keys() {
        if colour.get(n).copied().unwrap_or(0) == 0 {
            let mut path = Vec::new();
            if let Some(c) = visit(n, &edges, &mut colour, &mut path) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn imports_only_go_downward() {
    let modules = library();
    let v = violations(&modules);
    assert!(v.is_empty(), "layer violations:\n{}", v.join("\n"));
}

#[test]
fn top_level_modules_form_no_cycle() {
    let modules = library();
    if let Some(c) = cycle(&modules) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn every_layer_entry_is_a_module() {
    let modules = library();
    let stale: Vec<&str> = LAYERS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !modules.contains_key(*n))
        .collect();
    assert!(
        stale.is_empty(),
        "LAYERS names modules that do not exist: {stale:?}"
    );
}

#[test]
fn source_files_stay_readable() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut long = Vec::new();
    for p in files {
        let rel = p
            .strip_prefix(root())
            .expect("under root")
            .to_string_lossy()
            .replace('\\', "/");
        let lines = std::fs::read_to_string(&p).expect("read").lines().count();
        if lines > MAX_LINES && !may_be_long(&rel) {
            long.push(format!("{rel}: {lines} lines (at most {MAX_LINES})"));
        }
    }
    assert!(long.is_empty(), "files too long:\n{}", long.join("\n"));
}

/// Paths docs/architecture.md names: text in backticks or link targets that start
/// with one of the repository's folders.
fn named_paths(doc: &str) -> Vec<String> {
    const FOLDERS: &[&str] = &[
        "src/",
        "tests/",
        "docs/",
        "benches/",
        "scripts/",
        "mappings/",
        "examples/",
        "certs/",
        "fuzz/",
        ".ci/",
    ];
    let mut out = Vec::new();
    let mut candidates = Vec::new();
    for part in doc.split('`').skip(1).step_by(2) {
        candidates.push(part.to_string());
    }
    for part in doc.split("](").skip(1) {
        if let Some(end) = part.find(')') {
            let target = &part[..end];
            // A link beside this page (`records.md`) is a file in docs/.
            if !target.contains('/') && !target.contains(':') && target.ends_with(".md") {
                candidates.push(format!("docs/{target}"));
            } else {
                candidates.push(target.to_string());
            }
        }
    }
    for c in candidates {
        let c = c.trim().trim_start_matches("../");
        let c = c.split('#').next().unwrap_or("");
        if FOLDERS.iter().any(|f| c.starts_with(f))
            && !c.contains(char::is_whitespace)
            && !c.contains('*')
        {
            out.push(c.trim_end_matches(['.', ',', ':', ';']).to_string());
        }
    }
    out
}

#[test]
fn architecture_doc_names_only_files_that_exist() {
    let doc =
        std::fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let named = named_paths(&doc);
    assert!(
        named.len() >= 20,
        "docs/architecture.md should name the files a record passes through; found {named:?}"
    );
    let missing: Vec<&String> = named.iter().filter(|p| !root().join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names files that do not exist: {missing:?}"
    );
    // Every module of the library is placed in the document.
    for (name, _) in LAYERS {
        let file = root().join(format!("src/{name}.rs"));
        let shown = if file.exists() {
            format!("src/{name}.rs")
        } else {
            format!("src/{name}/")
        };
        assert!(
            doc.contains(&shown),
            "docs/architecture.md does not place module `{name}` ({shown})"
        );
    }
}

#[test]
fn the_reader_sees_through_comments_strings_and_groups() {
    let src = r#####"
use crate::{config::Config, store::{self, Store}};
// use crate::gateway;
/* crate::api */
fn f() { let s = "crate::demo"; let r = r#"crate::sync"#; let c = '"'; crate::route::x(); }
fn g<'a>(x: &'a str) -> &'a str { super::super::audit::y(x) }
"#####;
    let imp = imports(&code_only(src), 2);
    let names: Vec<&str> = imp.keys().map(String::as_str).collect();
    assert_eq!(names, ["audit", "config", "route", "store"]);
    assert_eq!(imp["route"], 5);
    // One level down, super:: stays inside the module.
    let imp = imports(&code_only(src), 3);
    assert!(!imp.contains_key("audit"));
}

/// Text files of the repository (not build output, not git's own).
fn repo_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let p = entry.expect("entry").path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if !matches!(name, "target" | ".git" | "corpus" | "artifacts") {
                repo_files(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

#[test]
fn the_repository_stands_alone() {
    // Nothing may need a folder beside the clone (the design notes, baselines and
    // generators the project grew up with are its own files now).
    let beside = concat!("..", "/shared");
    let mut files = Vec::new();
    repo_files(&root(), &mut files);
    let mut found = Vec::new();
    for p in files {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue; // not text
        };
        if text.contains(beside) {
            found.push(p.strip_prefix(root()).unwrap_or(&p).display().to_string());
        }
    }
    assert!(found.is_empty(), "files that refer to {beside}: {found:?}");
}
