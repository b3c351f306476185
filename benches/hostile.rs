//! What hostile shapes cost to decode, at 1 MB and at 8 MB of input (criterion): the
//! time per MB should stay flat, showing the cost is linear in the input. The limits
//! that would refuse these bodies are lifted here, so the decoding itself is measured
//! (the gateway refuses them at `max_attributes`, `max_elements` or `max_depth` long
//! before).
//!
//! `cargo bench --bench hostile`; BENCHMARKS.md has the figures.

use std::path::Path;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hallgate::codec::{Bounds, Format, decode_canonical};
use hallgate::mapping::{Disk, Limits, Mapping, MappingSet};
use hallgate::record::Record;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MB: usize = 1 << 20;

fn zj() -> MappingSet {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let m = Mapping::load(&root.join("mappings/zj/application.toml"), &Disk).expect("mapping");
    MappingSet::new(vec![Arc::new(m)])
}

fn open() -> Limits {
    Limits {
        max_body_bytes: 64 * MB,
        max_records: usize::MAX,
        max_elements: usize::MAX,
        max_attributes: usize::MAX,
        max_string_bytes: 64 * MB,
        max_depth: 64,
    }
}

/// One record element carrying as many attributes as fit in `size` bytes.
fn many_attributes(size: usize) -> Vec<u8> {
    let mut s = String::with_capacity(size + 64);
    s.push_str("<RECORDS><RECORD");
    let mut i = 0;
    while s.len() < size {
        s.push_str(&format!(" a{i}=\"1\""));
        i += 1;
    }
    s.push_str("><PROJID>330122260324000001</PROJID></RECORD></RECORDS>");
    s.into_bytes()
}

/// Records of 200 attributes each, filling `size` bytes.
fn attribute_records(size: usize) -> Vec<u8> {
    let one: String = {
        let mut r = String::from("<RECORD");
        for i in 0..200 {
            r.push_str(&format!(" a{i}=\"v\""));
        }
        r.push_str("><PROJID>330122260324000001</PROJID></RECORD>");
        r
    };
    let mut s = String::from("<RECORDS>");
    while s.len() < size {
        s.push_str(&one);
    }
    s.push_str("</RECORDS>");
    s.into_bytes()
}

/// One canonical object with as many keys as fit.
fn many_keys(size: usize) -> Vec<u8> {
    let mut s =
        String::from("{\"kind\":\"application\",\"case_no\":\"C1\",\"item_code\":\"I1\",\"ext\":{");
    let mut i = 0;
    while s.len() < size {
        s.push_str(&format!("\"k{i}\":1,"));
        i += 1;
    }
    s.push_str("\"end\":1}}");
    s.into_bytes()
}

/// A long array of tiny items.
fn tiny_items(size: usize) -> Vec<u8> {
    let mut s = String::from("[");
    while s.len() < size {
        s.push_str("{},");
    }
    s.push_str("{}]");
    s.into_bytes()
}

/// JSON lines of records nested just under the depth limit in `ext`.
fn deep_lines(size: usize) -> Vec<u8> {
    let nest = |d: usize| format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d));
    let line = format!(
        "{{\"kind\":\"application\",\"case_no\":\"C1\",\"item_code\":\"I1\",\"ext\":{}}}\n",
        nest(61)
    );
    let mut s = String::new();
    while s.len() < size {
        s.push_str(&line);
    }
    s.into_bytes()
}

/// An application whose materials list fills `size` bytes of canonical JSON, as a
/// value to render.
fn many_materials(size: usize) -> serde_json::Value {
    let one = serde_json::json!({"material_id": "m", "name": "申请书", "sort": 1,
                                 "submit_type": "upload", "necessity": "required"});
    let per = one.to_string().len() + 1;
    let materials: Vec<serde_json::Value> = (0..size / per)
        .map(|i| {
            let mut m = one.clone();
            m["material_id"] = serde_json::json!(format!("m{i}"));
            m
        })
        .collect();
    serde_json::json!({"kind": "application", "case_no": "350205260401000123", "region": "350205",
                       "item_code": "I1", "materials": materials})
}

/// The canonical path: scan, split, check each record (what a canonical node costs).
fn canonical(body: &[u8], format: Format) -> usize {
    let bounds = Bounds {
        max_depth: 64,
        max_string_bytes: 64 * MB,
        max_elements: usize::MAX,
    };
    decode_canonical(body, format, usize::MAX, &bounds)
        .map(|vs| {
            vs.into_iter()
                .enumerate()
                .filter(|(i, v)| Record::from_value(*i, v.clone(), None).is_ok())
                .count()
        })
        .unwrap_or(0)
}

fn hostile(c: &mut Criterion) {
    let set = zj();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let zj_m =
        Arc::new(Mapping::load(&root.join("mappings/zj/application.toml"), &Disk).expect("zj"));
    let nat_m =
        Arc::new(Mapping::load(&root.join("mappings/nat/application.toml"), &Disk).expect("nat"));
    let limits = open();
    let mut g = c.benchmark_group("hostile");
    g.sample_size(10);
    for size in [MB, 8 * MB] {
        let label = format!("{}MB", size / MB);
        g.throughput(Throughput::Bytes(size as u64));
        let body = many_attributes(size);
        g.bench_with_input(
            BenchmarkId::new("xml-one-element-attributes", &label),
            &body,
            |b, body| {
                b.iter(|| {
                    set.decode(body, Some("application/xml"), None, &limits)
                        .map(|d| d.len())
                })
            },
        );
        let body = attribute_records(size);
        g.bench_with_input(
            BenchmarkId::new("xml-records-200-attributes", &label),
            &body,
            |b, body| {
                b.iter(|| {
                    set.decode(body, Some("application/xml"), None, &limits)
                        .map(|d| d.len())
                })
            },
        );
        let body = many_keys(size);
        g.bench_with_input(
            BenchmarkId::new("json-one-object-keys", &label),
            &body,
            |b, body| b.iter(|| canonical(body, Format::Json)),
        );
        let body = tiny_items(size);
        g.bench_with_input(
            BenchmarkId::new("json-tiny-items", &label),
            &body,
            |b, body| b.iter(|| canonical(body, Format::Json)),
        );
        let body = deep_lines(size);
        g.bench_with_input(
            BenchmarkId::new("json-lines-depth-63", &label),
            &body,
            |b, body| b.iter(|| canonical(body, Format::JsonLines)),
        );
        let record = many_materials(size);
        for (name, m) in [
            ("render-xml-materials", &zj_m),
            ("render-json-materials", &nat_m),
        ] {
            g.bench_with_input(BenchmarkId::new(name, &label), &record, |b, record| {
                b.iter(|| {
                    hallgate::mapping::render(m, std::slice::from_ref(record)).map(|v| v.len())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, hostile);
criterion_main!(benches);
