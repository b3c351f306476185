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
//!
//! `package`: whole-case packages (mappings/js, 10,000 cases of an application, three
//! steps and a result, 50,000 records in one document read with the document around
//! each record) against the same records sent one kind per message (three documents
//! read through read plans by mappings with the same fields), made in memory.

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

/// 10,000 cases as one package document, and as three documents of one kind each.
fn package_workloads() -> (String, [String; 3]) {
    let mut pkg = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><ns2:CasePackage xmlns:ns2="http://yzw.js.gov.cn/exchange/v2"><ns2:Head><ns2:SenderCode>320115</ns2:SenderCode></ns2:Head>"#,
    );
    let mut apps = String::from("<BaseInfos>");
    let mut steps = String::from("<Steps>");
    let mut results = String::from("<Results>");
    for i in 0..10_000 {
        let case = format!("3201152612030{i:05}");
        let app = "<ItemCode>320115-SP-0007</ItemCode><ItemName>食品经营许可（新办）</ItemName><ApplyTime>2026-12-03 09:12:40</ApplyTime><AcceptTime>2026-12-03 09:30:05</AcceptTime><ApplyerName>周敏</ApplyerName><ApplyerCardType>111</ApplyerCardType><ApplyerCardNo>320115198805121231</ApplyerCardNo><PromiseValue>5</PromiseValue><PromiseUnit>G</PromiseUnit>";
        let step = |n: u32| {
            format!(
                "<StepNo>{n}</StepNo><NodeName>审批</NodeName><State>1</State><StartTime>2026-12-03 10:02:00</StartTime><EndTime>2026-12-04 15:20:00</EndTime><Handler>吴静</Handler><Opinion>同意</Opinion>"
            )
        };
        let result = "<ResultCode>1</ResultCode><FinishTime>2026-12-04 15:30:00</FinishTime><DeptName>南京市江宁区行政审批局</DeptName><CertName>食品经营许可证</CertName><CertNo>JY13201150070007</CertNo>";
        let ids = format!("<CaseNo>{case}</CaseNo><Area>320115</Area>");
        pkg.push_str(&format!(
            r#"<ns2:Case caseNo="{case}" area="320115"><ns2:BaseInfo>{app}</ns2:BaseInfo><ns2:Steps>"#
        ));
        apps.push_str(&format!("<BaseInfo>{ids}{app}</BaseInfo>"));
        for n in 1..=3 {
            pkg.push_str(&format!("<ns2:Step>{}</ns2:Step>", step(n)));
            steps.push_str(&format!("<Step>{ids}{}</Step>", step(n)));
        }
        pkg.push_str(&format!(
            "</ns2:Steps><ns2:Result>{result}</ns2:Result></ns2:Case>"
        ));
        results.push_str(&format!("<Result>{ids}{result}</Result>"));
    }
    pkg.push_str("</ns2:CasePackage>");
    apps.push_str("</BaseInfos>");
    steps.push_str("</Steps>");
    results.push_str("</Results>");
    (pkg, [apps, steps, results])
}

/// A part of the Jiangsu package as a mapping of its own: its own root, and the case
/// number and region as child elements.
fn one_kind(file: &str, root: &str, up: &str) -> MappingSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join(file))
        .expect("shipped mapping")
        .lines()
        .filter(|l| !l.starts_with("package") && !l.starts_with("ext.sender_code"))
        .map(|l| match l.split_once(" = ") {
            Some(("root", _)) => format!("root = \"{root}\""),
            _ => l
                .replace(&format!("{up}@caseNo"), "CaseNo")
                .replace(&format!("{up}@area"), "Area"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let m = Mapping::compile(&text, &dir.join(file), &Disk).expect("one-kind mapping");
    MappingSet::new(vec![Arc::new(m)])
}

fn package(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let parts = ["application", "process", "result"].map(|k| {
        Arc::new(Mapping::load(&dir.join(format!("mappings/js/{k}.toml")), &Disk).expect("js"))
    });
    let pkg_set = MappingSet::new(parts.to_vec());
    let singles = [
        one_kind("mappings/js/application.toml", "BaseInfos/BaseInfo", "../"),
        one_kind("mappings/js/process.toml", "Steps/Step", "../../"),
        one_kind("mappings/js/result.toml", "Results/Result", "../"),
    ];
    let (pkg, docs) = package_workloads();
    let records = engine(&pkg_set, pkg.as_bytes(), "application/xml", false);
    let apart: usize = singles
        .iter()
        .zip(&docs)
        .map(|(s, d)| engine(s, d.as_bytes(), "application/xml", false))
        .sum();
    assert_eq!((records, apart), (50_000, 50_000), "every record valid");
    let mut g = c.benchmark_group("package");
    g.sample_size(10);
    g.throughput(Throughput::Elements(records as u64));
    g.bench_function(BenchmarkId::new("one-kind-per-message", records), |b| {
        b.iter(|| {
            singles
                .iter()
                .zip(&docs)
                .map(|(s, d)| engine(s, d.as_bytes(), "application/xml", false))
                .sum::<usize>()
        })
    });
    g.bench_function(BenchmarkId::new("package", records), |b| {
        b.iter(|| engine(&pkg_set, pkg.as_bytes(), "application/xml", false))
    });
    g.finish();
}

criterion_group!(benches, bench, package);
criterion_main!(benches);
