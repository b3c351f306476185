//! The mapping engine against the raw decoders on the same bytes (criterion).
//!
//! Workloads are made by `bash benches/mapping.sh` (50,000 records each with
//! benches/baselines/gen_records.py) in target/bench-data; run this after it, or on
//! its own once the files exist: `cargo bench --bench engine`.
//!
//! For each workload: `raw` is the floor (quick-xml event loop decoding every text
//! node after transcoding; serde_json into `Value` line by line), `engine` is the
//! shipped mapping decoding and validating every record, `engine+json` also writes
//! each canonical record as a JSON line (what `hallgate map` does, without the I/O).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hallgate::mapping::{Disk, Limits, Mapping, MappingSet};
use quick_xml::events::Event;

/// The allocator the shipped binary uses (src/main.rs), for the raw decoders and the
/// engine alike: the engine is measured as it runs in `hallgate`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data")
}

fn set(file: &str) -> MappingSet {
    let m = Mapping::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(file), &Disk)
        .expect("shipped mapping");
    MappingSet::new(vec![Arc::new(m)])
}

fn raw_xml(bytes: &[u8]) -> usize {
    let (text, _, _) = encoding_rs::Encoding::for_label(
        if bytes.starts_with(b"<?xml version=\"1.0\" encoding=\"gb18030\"") {
            b"gb18030"
        } else {
            b"utf-8"
        },
    )
    .unwrap_or(encoding_rs::UTF_8)
    .decode(bytes);
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut total = 0usize;
    let mut records = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Text(t)) => total += t.xml10_content().map(|c| c.len()).unwrap_or(0),
            Ok(Event::GeneralRef(r)) => total += r.len(),
            Ok(Event::End(e)) if e.local_name().as_ref() == b"RECORD" => records += 1,
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    std::hint::black_box(total);
    records
}

fn raw_json_lines(bytes: &[u8]) -> usize {
    let mut n = 0;
    for line in bytes.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(line).expect("JSON");
        std::hint::black_box(&v);
        n += 1;
    }
    n
}

fn engine(set: &MappingSet, bytes: &[u8], ct: &str, json: bool) -> usize {
    let limits = Limits {
        max_body_bytes: 1 << 30,
        max_records: usize::MAX,
        max_elements: usize::MAX,
        ..Limits::default()
    };
    let mut n = 0;
    let mut out = Vec::with_capacity(4096);
    set.decode_each(bytes, Some(ct), None, &limits, &mut |c| {
        if let Ok(r) = c.result {
            if json {
                out.clear();
                r.fields.write_json(&mut out);
                std::hint::black_box(&out);
            }
            n += 1;
        }
        Ok(())
    })
    .expect("workload decodes");
    n
}

fn bench(c: &mut Criterion) {
    let workloads = [
        (
            "zj-xml-utf8",
            "zj-utf8.xml",
            "mappings/zj/application.toml",
            "application/xml",
        ),
        (
            "zj-xml-gb18030",
            "zj-gb18030.xml",
            "mappings/zj/application.toml",
            "application/xml",
        ),
        (
            "nat-jsonl",
            "nat.jsonl",
            "mappings/nat/application.toml",
            "application/x-ndjson",
        ),
    ];
    for (name, file, mapping, ct) in workloads {
        let path = data_dir().join(file);
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!(
                "{}: missing; run `bash benches/mapping.sh` first",
                path.display()
            );
            return;
        };
        let set = set(mapping);
        let records = engine(&set, &bytes, ct, false);
        let mut g = c.benchmark_group(name);
        g.sample_size(10);
        g.throughput(Throughput::Elements(records as u64));
        let xml = file.ends_with(".xml");
        g.bench_function(BenchmarkId::new("raw", records), |b| {
            b.iter(|| {
                if xml {
                    raw_xml(&bytes)
                } else {
                    raw_json_lines(&bytes)
                }
            })
        });
        g.bench_function(BenchmarkId::new("engine", records), |b| {
            b.iter(|| engine(&set, &bytes, ct, false))
        });
        g.bench_function(BenchmarkId::new("engine+json", records), |b| {
            b.iter(|| engine(&set, &bytes, ct, true))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
