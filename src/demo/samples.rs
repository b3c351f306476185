//! The demo's sample messages (examples/samples, as their senders post them) and the
//! mapping files compiled into the binary, so the demo runs from any folder.

/// A sample message as its sender posts it: native body and content type.
pub struct Sample {
    pub name: &'static str,
    pub sender: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// The canonical records the mapping must make of it.
    pub expected: &'static str,
}

/// The shared samples (examples/samples), in the order a day at the hall might see them.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "zj/application.xml",
        sender: "zj-tonglu",
        content_type: "application/xml",
        body: include_bytes!("../../examples/samples/zj/application.xml"),
        expected: include_str!("../../examples/samples/zj/application.expected.jsonl"),
    },
    Sample {
        name: "zj/application.form",
        sender: "zj-tonglu",
        content_type: "application/x-www-form-urlencoded",
        body: include_bytes!("../../examples/samples/zj/application.form"),
        expected: include_str!("../../examples/samples/zj/application.form.expected.jsonl"),
    },
    Sample {
        name: "soap/application.xml",
        sender: "zj-tonglu",
        content_type: "text/xml; charset=utf-8",
        body: include_bytes!("../../examples/samples/soap/application.xml"),
        expected: include_str!("../../examples/samples/soap/application.expected.jsonl"),
    },
    Sample {
        name: "nat/application.json",
        sender: "nat-hall",
        content_type: "application/json",
        body: include_bytes!("../../examples/samples/nat/application.json"),
        expected: include_str!("../../examples/samples/nat/application.expected.jsonl"),
    },
    Sample {
        name: "gz/process.json",
        sender: "gz-yunyan",
        content_type: "application/json",
        body: include_bytes!("../../examples/samples/gz/process.json"),
        expected: include_str!("../../examples/samples/gz/process.expected.jsonl"),
    },
    Sample {
        name: "gz/result.json",
        sender: "gz-yunyan",
        content_type: "application/json",
        body: include_bytes!("../../examples/samples/gz/result.json"),
        expected: include_str!("../../examples/samples/gz/result.expected.jsonl"),
    },
    Sample {
        name: "sd/result.xml",
        sender: "sd-xintai",
        content_type: "application/xml",
        body: include_bytes!("../../examples/samples/sd/result.xml"),
        expected: include_str!("../../examples/samples/sd/result.expected.jsonl"),
    },
    Sample {
        name: "js/case-package.xml",
        sender: "js-jiangning",
        content_type: "application/xml",
        body: include_bytes!("../../examples/samples/js/case-package.xml"),
        expected: include_str!("../../examples/samples/js/case-package.expected.jsonl"),
    },
];

/// The mapping files the demo configuration names, embedded so the demo runs from
/// any folder (a file of the same path on disk is not consulted).
pub const FILES: crate::mapping::Embedded = crate::mapping::Embedded(&[
    (
        "mappings/gz/process.toml",
        include_bytes!("../../mappings/gz/process.toml"),
    ),
    (
        "mappings/gz/result.toml",
        include_bytes!("../../mappings/gz/result.toml"),
    ),
    (
        "mappings/js/application.toml",
        include_bytes!("../../mappings/js/application.toml"),
    ),
    (
        "mappings/js/process.toml",
        include_bytes!("../../mappings/js/process.toml"),
    ),
    (
        "mappings/js/result.toml",
        include_bytes!("../../mappings/js/result.toml"),
    ),
    (
        "mappings/js-qzk/inf_apply.toml",
        include_bytes!("../../mappings/js-qzk/inf_apply.toml"),
    ),
    (
        "mappings/js-qzk/inf_apply_result.toml",
        include_bytes!("../../mappings/js-qzk/inf_apply_result.toml"),
    ),
    (
        "mappings/nat/application.toml",
        include_bytes!("../../mappings/nat/application.toml"),
    ),
    (
        "mappings/sd/result.toml",
        include_bytes!("../../mappings/sd/result.toml"),
    ),
    (
        "mappings/sd/alert.toml",
        include_bytes!("../../mappings/sd/alert.toml"),
    ),
    (
        "mappings/tables/applicant_type.toml",
        include_bytes!("../../mappings/tables/applicant_type.toml"),
    ),
    (
        "mappings/tables/apply_from.toml",
        include_bytes!("../../mappings/tables/apply_from.toml"),
    ),
    (
        "mappings/tables/item_type.toml",
        include_bytes!("../../mappings/tables/item_type.toml"),
    ),
    (
        "mappings/tables/sync_status.toml",
        include_bytes!("../../mappings/tables/sync_status.toml"),
    ),
    (
        "mappings/tables/time_unit.toml",
        include_bytes!("../../mappings/tables/time_unit.toml"),
    ),
    (
        "mappings/zj/application.toml",
        include_bytes!("../../mappings/zj/application.toml"),
    ),
    (
        "mappings/zj/material.toml",
        include_bytes!("../../mappings/zj/material.toml"),
    ),
]);
