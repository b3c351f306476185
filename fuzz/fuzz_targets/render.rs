//! Rendering arbitrary JSON values with every shipped mapping: errors, never panics.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use hallgate::mapping::{Disk, Mapping};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mappings");
    for f in ["zj/application.toml", "nat/application.toml", "gz/process.toml", "sd/result.toml"] {
        if let Ok(m) = Mapping::load(&root.join(f), &Disk) {
            let _ = hallgate::mapping::render(&Arc::new(m), std::slice::from_ref(&value));
        }
    }
});
