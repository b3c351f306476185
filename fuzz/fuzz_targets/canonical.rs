//! The canonical JSON intake path on arbitrary bytes: the first byte picks JSON or
//! JSON lines, the body is scanned against the limits, split into records and
//! checked as canonical records (control characters, identifiers' shapes, enums);
//! what passes is rendered with every shipped mapping of its kind and written back as
//! JSON. Errors, never panics, and nothing grows past the limits.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use hallgate::codec::{Bounds, Format, decode_canonical};
use hallgate::mapping::{Disk, Mapping};
use hallgate::record::Record;
use libfuzzer_sys::fuzz_target;

fn mappings() -> &'static Vec<Arc<Mapping>> {
    static SET: OnceLock<Vec<Arc<Mapping>>> = OnceLock::new();
    SET.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mappings");
        [
            "zj/application.toml",
            "zj/material.toml",
            "nat/application.toml",
            "gz/process.toml",
            "gz/result.toml",
            "sd/result.toml",
        ]
        .iter()
        .map(|f| Arc::new(Mapping::load(&root.join(f), &Disk).expect("shipped mapping")))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let format = if first % 2 == 0 {
        Format::Json
    } else {
        Format::JsonLines
    };
    let bounds = Bounds {
        max_depth: 64,
        max_string_bytes: 4096,
        max_elements: 2000,
    };
    let Ok(values) = decode_canonical(body, format, 100, &bounds) else {
        return;
    };
    for (i, v) in values.into_iter().enumerate() {
        let Ok(record) = Record::from_value(i, v, None) else {
            continue;
        };
        let json = record.to_json();
        assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
        let value = record.fields.to_value();
        for m in mappings().iter().filter(|m| m.kind == record.kind) {
            let _ = hallgate::mapping::render(m, std::slice::from_ref(&value));
        }
    }
});
