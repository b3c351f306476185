//! Issue 20: whole-case packages, fields from enclosing elements and the document,
//! namespaces written back — as the library decodes and renders them, as
//! `hallgate map` and xmllint see them, and through the real server.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{DEFAULT_ROUTES, Harness, wait_until};
use hallgate::mapping::{Disk, Limits, Mapping, MappingSet, decode_and_check, render_package};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hallgate");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const JS: [&str; 3] = [
    "mappings/js/application.toml",
    "mappings/js/process.toml",
    "mappings/js/result.toml",
];

fn set_of(files: &[&str]) -> MappingSet {
    MappingSet::new(
        files
            .iter()
            .map(|f| Arc::new(Mapping::load(&repo().join(f), &Disk).expect("mapping compiles")))
            .collect(),
    )
}

fn compiled(text: &str) -> Result<Mapping, String> {
    Mapping::compile(text, Path::new("mappings/test/t.toml"), &Disk).map_err(|e| e.to_string())
}

/// Decode and validate; every record must be valid.
fn decode(set: &MappingSet, body: &[u8], ct: &str) -> Vec<Value> {
    decode_and_check(set, body, Some(ct), None, &Limits::default())
        .expect("usable")
        .into_iter()
        .map(|c| match c.result {
            Ok(r) => {
                let mut v = r.fields.to_value();
                v.as_object_mut().map(|m| m.remove("source"));
                v
            }
            Err(e) => panic!("record {} refused: {e:?}", c.index),
        })
        .collect()
}

fn render(set: &MappingSet, records: &[Value]) -> Vec<u8> {
    let parts: Vec<&Mapping> = set.mappings.iter().map(|m| &**m).collect();
    render_package(&parts, records).expect("renders")
}

/// `CASE kind` or `CASE process N`.
fn label(r: &Value) -> String {
    let case = r["case_no"].as_str().unwrap_or("?");
    match r["step_no"].as_u64() {
        Some(n) => format!("{case} {} {n}", r["kind"].as_str().unwrap_or("?")),
        None => format!("{case} {}", r["kind"].as_str().unwrap_or("?")),
    }
}

fn labels(records: &[Value]) -> Vec<String> {
    records.iter().map(label).collect()
}

/// A Jiangsu package of `cases`, each with `steps` steps; the Result is written
/// before the Steps, as some halls do: the order stored is the case's order anyway.
fn js_package(cases: &[&str], steps: usize) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><ns2:CasePackage xmlns:ns2="http://yzw.js.gov.cn/exchange/v2"><ns2:Head><ns2:SenderCode>320115</ns2:SenderCode></ns2:Head>"#,
    );
    for c in cases {
        s.push_str(&format!(
            r#"<ns2:Case caseNo="{c}" area="320115"><ns2:Result><ns2:ResultCode>2</ns2:ResultCode><ns2:FinishTime>2026-12-04 15:30:00</ns2:FinishTime></ns2:Result><ns2:BaseInfo><ns2:ItemCode>320115-SP-0007</ns2:ItemCode><ns2:ApplyTime>2026-12-03 09:12:40</ns2:ApplyTime></ns2:BaseInfo><ns2:Steps>"#
        ));
        for n in 1..=steps {
            s.push_str(&format!(
                "<ns2:Step><ns2:StepNo>{n}</ns2:StepNo><ns2:NodeName>环节{n}</ns2:NodeName><ns2:State>1</ns2:State></ns2:Step>"
            ));
        }
        s.push_str("</ns2:Steps></ns2:Case>");
    }
    s.push_str("</ns2:CasePackage>");
    s
}

#[test]
fn a_package_becomes_its_records_in_case_order_and_renders_back() {
    let set = set_of(&JS);
    for steps in [0, 1, 5] {
        let body = js_package(&["320115261203000011", "320115261203000012"], steps);
        let records = decode(&set, body.as_bytes(), "application/xml");
        assert_eq!(records.len(), 2 * (steps + 2), "{steps} steps");
        let mut want = Vec::new();
        for c in ["320115261203000011", "320115261203000012"] {
            want.push(format!("{c} application"));
            want.extend((1..=steps).map(|n| format!("{c} process {n}")));
            want.push(format!("{c} result"));
        }
        assert_eq!(labels(&records), want);
        for r in &records {
            // The enclosing Case element's attributes reached every record.
            assert_eq!(r["region"], "320115", "{r}");
        }
        assert_eq!(records[0]["ext"]["sender_code"], "320115");
        // Rendered back as one package and decoded again: the same records.
        let again = decode(&set, &render(&set, &records), "application/xml");
        assert_eq!(again, records, "{steps} steps");
    }
}

#[test]
fn a_rule_reads_the_head_from_a_record_under_the_body() {
    let m = compiled(
        r#"
kind = "process"
format = "xml"
root = "Package/Body/Step"
[fields]
case_no = { path = "CaseNo", required = true }
step_no = { path = "No", type = "integer" }
ext.sender_code = "/Package/Head/SenderCode"
ext.batch = "../@batch"
"#,
    )
    .expect("compiles");
    assert!(m.package().is_none());
    let set = MappingSet::new(vec![Arc::new(m)]);
    let body = r#"<Package><Head><SenderCode>SZ-0512</SenderCode></Head><Body batch="7"><Step><CaseNo>320505260101000001</CaseNo><No>1</No></Step><Step><CaseNo>320505260101000001</CaseNo><No>2</No></Step></Body></Package>"#;
    let records = decode(&set, body.as_bytes(), "application/xml");
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["ext"]["sender_code"], "SZ-0512", "{r}");
        assert_eq!(r["ext"]["batch"], "7", "{r}");
    }
    // Rendered back, the Head comes before the Body and holds the value once.
    let text =
        String::from_utf8(hallgate::mapping::render(&set.mappings[0], &records).expect("renders"))
            .unwrap();
    assert!(
        text.contains(
            "<Package><Head><SenderCode>SZ-0512</SenderCode></Head><Body batch=\"7\"><Step>"
        ),
        "{text}"
    );
    assert_eq!(decode(&set, text.as_bytes(), "application/xml"), records);
}

const JSON_APPLICATION: &str = r#"
kind = "application"
format = "json"
package = "case"
root = "case/baseInfo"
[fields]
case_no = { path = "../caseNo", required = true }
region = "../area"
ext.sender_code = "/head/senderCode"
item_code = { path = "itemCode", required = true }
"#;

const JSON_PROCESS: &str = r#"
kind = "process"
format = "json"
package = "case"
root = "case/steps"
[fields]
case_no = { path = "../caseNo", required = true }
region = "../area"
step_no = { path = "stepNo", type = "integer" }
node_name = "nodeName"
"#;

const JSON_RESULT: &str = r#"
kind = "result"
format = "json"
package = "case"
root = "case/result"
[fields]
case_no = { path = "../caseNo", required = true }
region = "../area"
outcome = { path = "code", table = { map = { "1" = "issued", "2" = "returned" } } }
"#;

fn json_case(no: &str) -> Value {
    json!({"caseNo": no, "area": "440106",
        "result": {"code": "1"},
        "steps": [{"stepNo": 1, "nodeName": "受理"}, {"stepNo": 2, "nodeName": "审批"}],
        "baseInfo": {"itemCode": "440106-XK-0001"}})
}

#[test]
fn json_packages_read_one_case_or_a_list_and_render_the_same_shape() {
    let set = MappingSet::new(
        [JSON_APPLICATION, JSON_PROCESS, JSON_RESULT]
            .iter()
            .map(|t| Arc::new(compiled(t).expect("compiles")))
            .collect(),
    );
    let one = json!({"head": {"senderCode": "GZ-TH"}, "case": json_case("440106261204000001")});
    let records = decode(&set, one.to_string().as_bytes(), "application/json");
    assert_eq!(
        labels(&records),
        [
            "440106261204000001 application",
            "440106261204000001 process 1",
            "440106261204000001 process 2",
            "440106261204000001 result"
        ]
    );
    assert_eq!(records[0]["ext"]["sender_code"], "GZ-TH");
    assert!(records.iter().all(|r| r["region"] == "440106"));
    // Rendered: the same shape (one case: an object; steps: a list).
    let rendered: Value = serde_json::from_slice(&render(&set, &records)).unwrap();
    assert_eq!(rendered["head"]["senderCode"], "GZ-TH");
    assert_eq!(rendered["case"]["caseNo"], "440106261204000001");
    assert_eq!(rendered["case"]["steps"].as_array().map(Vec::len), Some(2));
    assert!(rendered["case"]["baseInfo"].is_object(), "{rendered}");
    let again = decode(&set, rendered.to_string().as_bytes(), "application/json");
    assert_eq!(again, records);
    // Two cases: a list under `case`, each case's records together.
    let two = json!({"case": [json_case("440106261204000002"), json_case("440106261204000003")]});
    let records = decode(&set, two.to_string().as_bytes(), "application/json");
    assert_eq!(records.len(), 8);
    assert_eq!(records[3]["case_no"], "440106261204000002");
    assert_eq!(records[3]["kind"], "result");
    assert_eq!(records[4]["kind"], "application");
    let rendered = render(&set, &records);
    assert_eq!(decode(&set, &rendered, "application/json"), records);
}

fn xmllint(schema: &Path, doc: &Path) -> (bool, String) {
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema)
        .arg(doc)
        .output()
        .expect("xmllint runs (Debian: libxml2-utils)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_namespaced_render_validates_against_the_receivers_schema() {
    let dir = tempfile::tempdir().unwrap();
    let xsd = repo().join("examples/samples/js/case-package.xsd");
    // `hallgate map --render` with the three parts, as an integrator tries it.
    let mut args = vec!["map".to_string(), "--render".to_string()];
    for f in JS {
        args.push("--mapping".into());
        args.push(repo().join(f).display().to_string());
    }
    args.push(
        repo()
            .join("examples/samples/js/case-package.expected.jsonl")
            .display()
            .to_string(),
    );
    let out = std::process::Command::new(BIN)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = dir.path().join("rendered.xml");
    std::fs::write(&rendered, &out.stdout).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#"<ns2:CasePackage xmlns:ns2="http://yzw.js.gov.cn/exchange/v2""#),
        "{text}"
    );
    let (ok, why) = xmllint(&xsd, &rendered);
    assert!(ok, "{why}\n{text}");
    // The same records rendered without the namespace are refused by the schema:
    // the check above could fail.
    let plain = text
        .replace("ns2:", "")
        .replace(r#" xmlns:ns2="http://yzw.js.gov.cn/exchange/v2""#, "");
    let unqualified = dir.path().join("plain.xml");
    std::fs::write(&unqualified, plain).unwrap();
    let (ok, why) = xmllint(&xsd, &unqualified);
    assert!(!ok, "a document without the namespace validated");
    assert!(why.contains("CasePackage"), "{why}");
}

#[test]
fn qualify_document_prefixes_the_document_element_only() {
    let m = compiled(
        r#"
kind = "result"
format = "xml"
root = "apply/result"
[namespaces]
ns2 = "http://yzw.js.gov.cn/exchange/v2"
[render]
namespace = "ns2"
qualify = "document"
[fields]
case_no = "caseNo"
"#,
    )
    .expect("compiles");
    let out = hallgate::mapping::render(&m, &[json!({"kind": "result", "case_no": "1"})]).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.trim_end().ends_with(
            r#"<ns2:apply xmlns:ns2="http://yzw.js.gov.cn/exchange/v2"><result><caseNo>1</caseNo></result></ns2:apply>"#
        ),
        "{text}"
    );
}

/// Each new mistake an integrator can make, and the message that says what to do.
#[test]
fn every_new_mistake_is_a_compile_error_that_says_why() {
    let xml = |fields: &str| {
        format!(
            "kind = \"process\"\nformat = \"xml\"\nroot = \"RECORDS/RECORD\"\n[fields]\ncase_no = \"NO\"\n{fields}\n"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (xml("node_name = \"../../@caseNo\""), "climbs 2 levels, above the document"),
        (xml("node_name = \"A/../B\""), "`..` goes only at the start of a path"),
        (xml("node_name = \"//B\""), "`//` (anywhere below) is not supported"),
        (xml("node_name = \"A/*\""), "wildcards (`*`) are not supported"),
        (xml("node_name = \"A/text()\""), "functions and axes"),
        (xml("node_name = \"parent::A\""), "axes (parent::, ancestor::) are not supported"),
        (xml("node_name = \"A[*]\""), "`[*]` is not supported; `each` reads every element"),
        (xml("node_name = \"A[@type='1']\""), "predicates such as [@type='1'] are not supported"),
        (xml("node_name = \"A/./B\""), "`.` is the element itself"),
        (xml("node_name = \"A B\""), "`A B` is not an XML name"),
        (xml("node_name = \"/Other/Head/X\""), "starts at `Other`, but the records' document element is `RECORDS`"),
        (xml("node_name = \"/\""), "a path from the document (`/`) names where to go"),
        (xml("node_name = { path = \"X\", when = { path = \"../../../Y\", present = true } }"), "climbs 3 levels"),
        (
            xml("ext.items = { each = \"../ITEMS/ITEM\", fields.a = \"A\" }"),
            "a list is read inside the record",
        ),
        (
            xml("ext.items = { each = \"ITEMS/ITEM\", fields.a = \"../A\" }"),
            "inside `each`, paths read the item",
        ),
        (
            "kind = \"process\"\nformat = \"xml\"\nroot = \"RECORDS/RECORD\"\npackage = \"Package/Case\"\n[fields]\ncase_no = \"NO\"\n".into(),
            "the record root `RECORDS/RECORD` does not lie inside the package `Package/Case`",
        ),
        (
            "kind = \"process\"\nformat = \"xml\"\nroot = \"Case/Step\"\npackage = \"Case/Step\"\n[fields]\ncase_no = \"NO\"\n".into(),
            "does not lie inside the package",
        ),
        (
            "kind = \"process\"\nformat = \"xml\"\nroot = \"Case/Step\"\npackage = \"Case/@no\"\n[fields]\ncase_no = \"NO\"\n".into(),
            "a package is a path of element names",
        ),
        (
            "kind = \"process\"\nformat = \"xml\"\nroot = \"../Case/Step\"\n[fields]\ncase_no = \"NO\"\n".into(),
            "`..` has no meaning here",
        ),
        (
            "kind = \"process\"\nformat = \"json\"\nroot = \"$.rows\"\n[fields]\ncase_no = \"NO\"\n".into(),
            "JSONPath (`$.a.b`) is not the path syntax",
        ),
        (
            xml("[render]\nconstants = { \"../STDVER\" = \"2\" }"),
            "constants are written in each record",
        ),
        (
            xml("[namespaces]\nns2 = \"urn:x\"\n[render]\nnamespace = \"ns3\""),
            "`[render] namespace = \"ns3\"` is not declared in [namespaces] (declared: ns2)",
        ),
        (xml("[namespaces]\n1ns = \"urn:x\""), "`1ns` is not a namespace prefix"),
        (xml("[namespaces]\nns2 = \"urn:a b\""), "is not a namespace name"),
        (
            xml("[namespaces]\nns2 = \"urn:x\"\n[render]\nnamespace = \"ns2\"\nqualify = \"some\""),
            "use \"all\" (every element carries the prefix) or \"document\"",
        ),
        (xml("[render]\nqualify = \"all\""), "set that prefix too"),
        (
            xml("[render]\nattributes = { \"foo:bar\" = \"1\" }"),
            "attribute `foo:bar`: the prefix `foo` is not declared",
        ),
        (
            xml("[render]\nattributes = { \"xmlns:a\" = \"urn:a\" }"),
            "declare namespaces in [namespaces], not as attributes",
        ),
        (
            "kind = \"process\"\nformat = \"json\"\nroot = \"rows\"\n[namespaces]\nns2 = \"urn:x\"\n[fields]\ncase_no = \"NO\"\n".into(),
            "are for XML mappings",
        ),
    ];
    for (text, want) in &cases {
        match compiled(text) {
            Ok(_) => panic!("compiled, but should not:\n{text}"),
            Err(e) => assert!(e.contains(want), "want `{want}` in: {e}\n{text}"),
        }
    }
    // What is allowed still compiles: `..` up to the document element, `/` from it.
    for ok in [
        xml("node_name = \"../@batch\""),
        xml("node_name = \"/RECORDS/Head/X\""),
        xml(
            "[namespaces]\n\"\" = \"urn:x\"\n[render]\nnamespace = \"\"\nattributes = { \"xsi:noNamespaceSchemaLocation\" = \"a.xsd\" }",
        ),
    ] {
        assert!(compiled(&ok).is_ok(), "{:?}\n{ok}", compiled(&ok).err());
    }
}

/// district-a sends Jiangsu packages too; the province takes them as packages.
fn with_packages(text: String) -> String {
    let m = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/js");
    let list = format!("[\"{m}/application.toml\", \"{m}/process.toml\", \"{m}/result.toml\"]");
    text.replace(
        "regions = [\"350205\"] }",
        &format!("regions = [\"350205\", \"320115\"] }}\nmappings = {list}"),
    )
    .replace(
        "[nodes.province]\n",
        &format!("[nodes.province]\nmappings = {list}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_stores_a_package_as_one_message_and_delivers_in_order() {
    let h = Harness::with_config(DEFAULT_ROUTES, with_packages).await;
    h.province.set_mappings(set_of(&JS));
    let body = js_package(&["320115261203000021"], 3);
    let resp = h
        .raw(
            format!("{}/v1/records", h.url),
            Some("district-a"),
            Some("application/xml"),
            body,
        )
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let answer: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let kinds: Vec<&str> = answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["application", "process", "process", "process", "result"]
    );
    let message = &answer["message_id"];
    assert!(message.is_string(), "{answer}");
    wait_until(10, "the city receives all five", || {
        h.city.accepted().len() == 5
    })
    .await;
    let order: Vec<String> = h.city.accepted().iter().map(|a| label(&a.body)).collect();
    assert_eq!(
        order,
        [
            "320115261203000021 application",
            "320115261203000021 process 1",
            "320115261203000021 process 2",
            "320115261203000021 process 3",
            "320115261203000021 result"
        ]
    );
    // The province takes packages: each record arrives as a package of its part,
    // in the schema's namespace, and reads back as the record stored.
    wait_until(10, "the province receives two", || {
        h.province.accepted().len() == 2
    })
    .await;
    let set = set_of(&JS);
    for a in h.province.accepted() {
        let text = String::from_utf8_lossy(&a.raw).into_owned();
        assert!(
            text.contains(r#"<ns2:Case caseNo="320115261203000021" area="320115">"#),
            "{text}"
        );
        let back = decode(&set, &a.raw, "application/xml");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0]["case_no"], "320115261203000021");
    }
}
