//! Properties of the mapping engine: for invertible mappings decode(render(r)) == r,
//! in XML (in a legacy encoding) and in JSON; and no input makes a decoder panic.

use std::path::Path;
use std::sync::Arc;

use hallgate::mapping::{Disk, Limits, Mapping, MappingSet};
use proptest::prelude::*;
use serde_json::{Value, json};

const XML_MAPPING: &str = r#"
kind = "application"
format = "xml"
root = "ROWS/ROW"
encoding = "gb18030"
[tables.kinds]
map = { "1" = "immediate", "2" = "promised", "3" = "joint" }
[fields]
case_no = { path = "@id", required = true }
item_code = "ITEM/CODE"
item_name = "ITEM/NAME"
case_type = { path = "KIND", table = "kinds" }
submitted_at = { path = "WHEN", time = "yyyy/M/d H:mm:ss" }
accepted_at = { path = "ACCEPTED", time = "yyyyMMddHHmmss" }
region = "AREA"
version = { path = "VER", type = "integer" }
channel = { const = "online" }
promise.value = { path = "DAYS", type = "integer" }
[fields.materials]
each = "FILES/FILE"
fields.material_id = "@no"
fields.name = "."
"#;

const JSON_MAPPING: &str = r#"
kind = "application"
format = "json"
root = "data/rows"
[tables.kinds]
map = { "1" = "immediate", "2" = "promised", "3" = "joint" }
[fields]
case_no = { path = "id", required = true }
item_code = "item/code"
item_name = "item/name"
case_type = { path = "kind", table = "kinds" }
submitted_at = { path = "when", time = "epoch_ms", native = "string" }
accepted_at = { path = "accepted", time = "yyyy-MM-dd'T'HH:mm:ss" }
region = "area"
version = { path = "ver", type = "integer" }
channel = { const = "online" }
promise.value = { path = "days", type = "integer", native = "string" }
[fields.materials]
each = "files"
fields.material_id = "no"
fields.name = "name"
"#;

fn mapping(text: &str) -> Arc<Mapping> {
    Arc::new(Mapping::compile(text, Path::new("prop.toml"), &Disk).expect("compiles"))
}

/// Text as halls send it: Chinese, Latin, digits and the characters XML must escape;
/// trimmed and never empty (an empty value is absent by the rules).
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9桐庐县卫生健康局公共场所许可申请&<>\"'（）：/_-][a-zA-Z0-9桐庐县卫生 健康局&<>\"'（）：/_-]{0,30}[a-zA-Z0-9局证号&<>]")
        .expect("regex")
}

fn time() -> impl Strategy<Value = String> {
    // whole seconds between 2000 and 2099, written in +08:00
    (946_684_800i64..4_102_444_800i64).prop_map(|s| {
        let ts = jiff::Timestamp::from_second(s).expect("in range");
        let dt = jiff::tz::Offset::constant(8).to_datetime(ts);
        format!("{}+08:00", dt.strftime("%Y-%m-%dT%H:%M:%S"))
    })
}

fn record() -> impl Strategy<Value = Value> {
    (
        "[0-9]{18}",
        "[A-Z0-9]{10,34}",
        text(),
        prop_oneof![Just("immediate"), Just("promised"), Just("joint")],
        time(),
        time(),
        0u32..100_000,
        0i64..10_000,
        proptest::collection::vec(("[0-9a-f]{32}", text()), 0..4),
    )
        .prop_map(
            |(case_no, code, name, case_type, t1, t2, version, days, mats)| {
                let mut r = json!({
                    "kind": "application",
                    "case_no": case_no,
                    "item_code": code,
                    "item_name": name,
                    "case_type": case_type,
                    "submitted_at": t1,
                    "accepted_at": t2,
                    "region": "330122",
                    "version": version,
                    "channel": "online",
                    "promise": {"value": days},
                });
                if !mats.is_empty() {
                    r["materials"] = Value::Array(
                        mats.into_iter()
                            .map(|(id, name)| json!({"material_id": id, "name": name}))
                            .collect(),
                    );
                }
                r
            },
        )
}

fn round_trip(m: &Arc<Mapping>, records: &[Value]) -> Result<(), TestCaseError> {
    let native =
        hallgate::mapping::render(m, records).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let set = MappingSet::new(vec![m.clone()]);
    let decoded = set
        .decode(&native, None, None, &Limits::default())
        .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&native))))?;
    prop_assert_eq!(decoded.len(), records.len());
    for (d, r) in decoded.iter().zip(records) {
        prop_assert_eq!(
            d.result.as_ref().ok().map(|o| o.to_value()),
            Some(r.clone()),
            "{}",
            String::from_utf8_lossy(&native)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn xml_in_gb18030_round_trips(records in proptest::collection::vec(record(), 1..5)) {
        round_trip(&mapping(XML_MAPPING), &records)?;
    }

    #[test]
    fn json_round_trips(records in proptest::collection::vec(record(), 1..5)) {
        round_trip(&mapping(JSON_MAPPING), &records)?;
    }

    /// Any bytes, under any content type, give records or an error — never a panic.
    #[test]
    fn decoders_never_panic_on_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        ct in prop_oneof![
            Just(None),
            Just(Some("application/xml")),
            Just(Some("application/json")),
            Just(Some("application/x-www-form-urlencoded")),
            Just(Some("multipart/form-data; boundary=XyZ")),
        ],
    ) {
        let set = shipped();
        let _ = set.decode(&body, ct, None, &Limits::default());
    }

    /// Samples cut short or with bytes changed: no panic, and an error or records.
    #[test]
    fn mangled_samples_never_panic(
        which in 0usize..7,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let (file, ct) = SAMPLES[which];
        let mut body = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/samples").join(file)).unwrap();
        for (at, b) in flips {
            let i = at.index(body.len());
            body[i] = b;
        }
        body.truncate(cut.index(body.len() + 1));
        let _ = shipped().decode(&body, Some(ct), None, &Limits::default());
    }

    /// XML-shaped noise: tags, entities, CDATA, declarations in random order.
    #[test]
    fn xml_noise_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("<RECORDS>"), Just("</RECORDS>"), Just("<RECORD>"), Just("</RECORD>"),
        Just("<PROJID>"), Just("</PROJID>"), Just("<ATTRS><ATTR>"), Just("</ATTR></ATTRS>"),
        Just("&amp;"), Just("&#x41;"), Just("&#0;"), Just("&#xFFFFFFFF;"), Just("&lol;"),
        Just("<![CDATA[x]]>"), Just("<?xml version=\"1.0\" encoding=\"gbk\"?>"),
        Just("<!DOCTYPE x>"), Just("<!-- c -->"), Just("330122"), Just("中文"),
        Just("<a b=\"&quot;\"/>"), Just("<soap:Envelope xmlns:soap=\"s\"><soap:Body><op><xmlStr>"),
        Just("</xmlStr></op></soap:Body></soap:Envelope>"), Just("&lt;RECORD&gt;"),
    ], 0..40)) {
        let body = parts.concat();
        let _ = shipped().decode(body.as_bytes(), Some("application/xml"), None, &Limits::default());
    }
}

const SAMPLES: [(&str, &str); 7] = [
    ("zj/application.xml", "application/xml"),
    ("zj/application.form", "application/x-www-form-urlencoded"),
    ("soap/application.xml", "text/xml"),
    ("nat/application.json", "application/json"),
    ("gz/process.json", "application/json"),
    ("gz/result.json", "application/json"),
    ("sd/result.xml", "application/xml"),
];

/// Every shipped mapping in one set.
fn shipped() -> MappingSet {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
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
}
