//! Every decoder and the mapping engine on arbitrary bytes: the first byte picks the
//! content type, the rest is the body; all shipped mappings are the inbound set.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use hallgate::mapping::{Disk, Limits, Mapping, MappingSet};
use libfuzzer_sys::fuzz_target;

fn set() -> &'static MappingSet {
    static SET: OnceLock<MappingSet> = OnceLock::new();
    SET.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mappings");
        let files = [
            "zj/application.toml",
            "zj/material.toml",
            "nat/application.toml",
            "gz/process.toml",
            "gz/result.toml",
            "sd/result.toml",
        ];
        MappingSet::new(
            files
                .iter()
                .map(|f| Arc::new(Mapping::load(&root.join(f), &Disk).expect("shipped mapping")))
                .collect(),
        )
    })
}

const TYPES: [Option<&str>; 6] = [
    None,
    Some("application/xml"),
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=B"),
    Some("application/x-ndjson"),
];

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let ct = TYPES[*first as usize % TYPES.len()];
    if let Ok(records) = hallgate::mapping::decode_and_check(set(), body, ct, None, &Limits::default()) {
        // Whatever decoded must render back without panicking.
        for r in records {
            if let Ok(rec) = r.result {
                let v = rec.fields.to_value();
                let _ = hallgate::mapping::render(&r.mapping, &[v]);
            }
        }
    }
});
