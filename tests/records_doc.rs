//! docs/records.md documents the canonical record as the code knows it: every field
//! of every kind and every value of every enumeration appears in its kind's section,
//! every field the page lists is one the code knows, every shared code table is
//! named, and each kind's example is a valid canonical record.

use std::path::PathBuf;

use hallgate::record::schema::{COMMON_FIELDS, Shape, fields_of, is_known_field, shapes};
use hallgate::record::{Kind, Record};

fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/records.md");
    std::fs::read_to_string(path).expect("docs/records.md")
}

/// The text of the section headed `## {title}`, up to the next `## `.
fn section<'a>(doc: &'a str, title: &str) -> &'a str {
    let head = format!("\n## {title}\n");
    let start = doc
        .find(&head)
        .unwrap_or_else(|| panic!("docs/records.md has no section `## {title}`"));
    let rest = &doc[start + head.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The first cell of each table row: the fields a section lists.
fn listed_fields(section: &str) -> Vec<String> {
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect()
}

#[test]
fn every_field_and_enumeration_value_is_documented() {
    let doc = doc();
    let common = section(&doc, "Common fields");
    for field in COMMON_FIELDS.iter().chain(&["kind", "source", "ext"]) {
        assert!(
            listed_fields(common).iter().any(|f| f == field),
            "common field `{field}` is not in the table of `## Common fields`"
        );
    }
    for kind in Kind::ALL {
        let s = section(&doc, kind.as_str());
        let listed = listed_fields(s);
        for field in fields_of(kind) {
            assert!(
                listed.iter().any(|f| f == field),
                "{kind} field `{field}` is not in the table of `## {kind}`"
            );
        }
        for (field, shape) in shapes(kind) {
            if let Shape::Enum(values) = shape {
                let row = s
                    .lines()
                    .find(|l| l.starts_with(&format!("| `{field}` |")))
                    .unwrap_or_else(|| panic!("no row for {kind} `{field}`"));
                for v in *values {
                    assert!(
                        row.contains(&format!("`{v}`")),
                        "{kind} `{field}`: value `{v}` is not documented"
                    );
                }
            }
        }
        // Nothing listed that the code does not know.
        for field in &listed {
            assert!(
                is_known_field(kind, None, field),
                "docs/records.md lists `{field}` under `## {kind}`, which the code does not know"
            );
        }
    }
    for v in ["application", "material", "process", "result"] {
        assert!(common.contains(&format!("`{v}`")), "kind `{v}`");
    }
}

#[test]
fn every_shared_code_table_is_named() {
    let doc = doc();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings/tables");
    for entry in std::fs::read_dir(&dir).expect("mappings/tables") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            doc.contains(&format!("`mappings/tables/{name}`")),
            "code table mappings/tables/{name} is not in docs/records.md"
        );
    }
}

#[test]
fn each_kind_has_a_valid_example() {
    let doc = doc();
    for kind in Kind::ALL {
        let s = section(&doc, kind.as_str());
        let start = s
            .find("```json\n")
            .unwrap_or_else(|| panic!("`## {kind}` has no JSON example"));
        let body = &s[start + 8..];
        let json = &body[..body.find("```").expect("closing fence")];
        let value: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{kind} example: {e}"));
        let record = Record::from_value(0, value, None)
            .unwrap_or_else(|e| panic!("{kind} example is not a valid record: {e:?}"));
        assert_eq!(record.kind, kind);
    }
}
