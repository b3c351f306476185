//! The mapping engine as an integrator meets it: `hallgate map` and `hallgate check`
//! on the shipped mappings and the shared samples, hostile inputs, compile errors,
//! and rendering back (decode(render(r)) == r).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hallgate::mapping::{Disk, Limits, Mapping, MappingSet};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hallgate");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (sample, node, content type)
const SAMPLES: &[(&str, &str, &str)] = &[
    ("zj/application.xml", "zj-tonglu", "application/xml"),
    (
        "zj/application.form",
        "zj-tonglu",
        "application/x-www-form-urlencoded",
    ),
    ("soap/application.xml", "zj-tonglu", "text/xml"),
    ("nat/application.json", "nat-hall", "application/json"),
    ("gz/process.json", "gz-yunyan", "application/json"),
    ("gz/result.json", "gz-yunyan", "application/json"),
    ("sd/result.xml", "sd-xintai", "application/xml"),
    ("js/case-package.xml", "js-jiangning", "application/xml"),
];

fn expected_of(sample: &str) -> PathBuf {
    let p = repo().join("examples/samples").join(sample);
    if sample.ends_with(".form") {
        PathBuf::from(format!("{}.expected.jsonl", p.display()))
    } else {
        p.with_extension("expected.jsonl")
    }
}

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("JSON line");
            if let Some(m) = v.as_object_mut() {
                m.remove("source");
            }
            v
        })
        .collect()
}

fn run(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run hallgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn map_reproduces_every_sample_through_the_demo_nodes() {
    for (sample, node, ct) in SAMPLES {
        let input = repo().join("examples/samples").join(sample);
        let (code, stdout, stderr) = run(
            &[
                "--config",
                "hallgate.toml",
                "map",
                "--node",
                node,
                "--content-type",
                ct,
                input.to_str().unwrap(),
            ],
            &repo(),
        );
        assert_eq!(code, 0, "{sample}: exit {code}, stderr: {stderr}");
        let got: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
            .collect();
        for g in &got {
            assert_eq!(g["source"], *node, "{sample}: source is the sending node");
        }
        let expected = jsonl(&std::fs::read_to_string(expected_of(sample)).unwrap());
        assert_eq!(jsonl(&stdout), expected, "{sample}");
    }
}

#[test]
fn map_with_one_mapping_file_and_sniffed_format() {
    let (code, stdout, _) = run(
        &[
            "map",
            "--mapping",
            "mappings/sd/result.toml",
            "examples/samples/sd/result.xml",
        ],
        &repo(),
    );
    assert_eq!(code, 0);
    assert_eq!(
        jsonl(&stdout),
        jsonl(&std::fs::read_to_string(expected_of("sd/result.xml")).unwrap())
    );
}

#[test]
fn a_repeated_element_reads_as_its_first_for_every_rule() {
    // APPLY_CARDTYPE feeds applicant.id_type and, through a table, applicant.type:
    // both must read the same (first) element, whatever the rules read before.
    // Fails when a lookup resumes after the element an earlier rule found.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dup.xml");
    std::fs::write(
        &input,
        "<RECORDS><RECORD><PROJID>330122260324000009</PROJID><SERVICECODE>X1</SERVICECODE>\
         <AREACODE>330122</AREACODE><APPLYNAME>张三</APPLYNAME>\
         <APPLY_CARDTYPE>111</APPLY_CARDTYPE><APPLY_CARDNUMBER>11010519491231002X</APPLY_CARDNUMBER>\
         <APPLY_CARDTYPE>001</APPLY_CARDTYPE><PROJID>999</PROJID></RECORD></RECORDS>",
    )
    .unwrap();
    let (code, stdout, stderr) = run(
        &[
            "map",
            "--mapping",
            "mappings/zj/application.toml",
            input.to_str().unwrap(),
        ],
        &repo(),
    );
    assert_eq!(code, 0, "{stderr}");
    let records = jsonl(&stdout);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["case_no"], "330122260324000009");
    assert_eq!(r["applicant"]["id_type"], "111");
    assert_eq!(r["applicant"]["type"], "person", "{r}");
}

#[test]
fn rejected_records_exit_1_with_one_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.json");
    // record 0 valid; record 1: wrong ID check digit, unknown channel, a bad date
    std::fs::write(
        &input,
        r#"[{"ProjectNo":"350205260401000200","TaskCode":"T1","RegionCode":"350205"},
            {"ProjectNo":"350205260401000201","TaskCode":"T1","RegionCode":"350205",
             "ApplyerPageType":"111","ApplyerPageCode":"350205195912280258",
             "ApplyChannel":"7","ApplyDate":"2026-13-01 08:00:00"}]"#,
    )
    .unwrap();
    let (code, stdout, stderr) = run(
        &[
            "map",
            "--mapping",
            "mappings/nat/application.toml",
            input.to_str().unwrap(),
        ],
        &repo(),
    );
    assert_eq!(code, 1, "stderr: {stderr}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "the valid record is still printed"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.contains(&"record 1: channel (ApplyChannel): unknown_code: `7` is not in table `apply_from` (known: 1, 2, 9)"),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("record 1: submitted_at (ApplyDate): time: ")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("record 1: applicant.id_no (ApplyerPageCode): id_no: ")),
        "{stderr}"
    );
    // personal data never appears in the messages
    assert!(!stderr.contains("350205195912280258"), "{stderr}");
}

#[test]
fn hostile_inputs_are_unusable_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let deep_xml = format!(
        "<RECORDS>{}{}</RECORDS>",
        "<a>".repeat(200_000),
        "</a>".repeat(200_000)
    );
    let deep_json = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "laughs.xml",
            "zj/application",
            br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]><RECORDS><RECORD><PROJID>&lol2;</PROJID></RECORD></RECORDS>"#.to_vec(),
            "DOCTYPE at byte offset 21",
        ),
        (
            "xxe.xml",
            "zj/application",
            br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><RECORDS><RECORD><PROJID>&x;</PROJID></RECORD></RECORDS>"#.to_vec(),
            "DOCTYPE",
        ),
        (
            "entity.xml",
            "zj/application",
            b"<RECORDS><RECORD><PROJID>&x;</PROJID></RECORD></RECORDS>".to_vec(),
            "entity `&x;` at byte offset 25",
        ),
        (
            "attribute-entity.xml",
            "zj/application",
            b"<RECORDS><RECORD NO=\"&x;\"><PROJID>1</PROJID></RECORD></RECORDS>".to_vec(),
            "entity `&x;` at byte offset 9",
        ),
        ("deep.xml", "zj/application", deep_xml.into_bytes(), "nesting deeper than 64 levels"),
        ("deep.json", "nat/application", deep_json.into_bytes(), "nesting deeper than 64 levels at byte offset 64"),
        (
            "truncated.xml",
            "zj/application",
            b"<RECORDS><RECORD><PROJID>330122260324000001</PROJID>".to_vec(),
            "truncated",
        ),
        (
            "gbk.xml",
            "zj/application",
            b"<?xml version=\"1.0\" encoding=\"GBK\"?><RECORDS><RECORD><PROJID>\x81\x20</PROJID></RECORD></RECORDS>".to_vec(),
            "invalid bytes for the declared encoding GBK at byte offset 61",
        ),
        (
            "huge-number.json",
            "nat/application",
            br#"{"ProjectNo":"1","TaskCode":"T","PromiseTimeLimit":1e999999}"#.to_vec(),
            "number out of range",
        ),
    ];
    for (name, mapping, body, reason) in cases {
        let input = dir.path().join(name);
        std::fs::write(&input, body).unwrap();
        let (code, stdout, stderr) = run(
            &[
                "map",
                "--mapping",
                &format!("mappings/{mapping}.toml"),
                input.to_str().unwrap(),
            ],
            &repo(),
        );
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stdout.is_empty(), "{name}: nothing printed");
        assert!(stderr.contains("unusable input"), "{name}: {stderr}");
        assert!(
            stderr.contains(reason),
            "{name}: want `{reason}` in: {stderr}"
        );
    }
}

#[test]
fn check_passes_and_shows_a_diff_when_an_expected_output_is_edited() {
    // The shipped config authenticates its senders: until their key pairs are made
    // (`hallgate keys nodes`), check names the missing public key.
    let fresh = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("mappings"), &fresh.path().join("mappings"));
    copy_tree(&repo().join("examples"), &fresh.path().join("examples"));
    std::fs::copy(
        repo().join("hallgate.toml"),
        fresh.path().join("hallgate.toml"),
    )
    .unwrap();
    let (code, _, stderr) = run(&["--config", "hallgate.toml", "check"], fresh.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("nodes.zj-tonglu.auth:") && stderr.contains("zj-tonglu.pub.pem"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(
        &["--config", "hallgate.toml", "keys", "nodes"],
        fresh.path(),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("5 key pair(s) made"), "{stdout}");
    let (code, stdout, stderr) = run(&["--config", "hallgate.toml", "check"], fresh.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("ok    zj-tonglu mappings/zj/application.toml: form with baseInfoXml"));
    assert!(
        stdout.contains("ok    js-jiangning mappings/js/application.toml: a package: the application, two steps and the result, in that order"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hallgate.toml: ok (8 nodes, 4 routes, 12 mappings)"),
        "{stdout}"
    );

    // The same copy, with one expected value edited.
    let dir = fresh;
    let expected = dir
        .path()
        .join("examples/samples/nat/application.expected.jsonl");
    let text = std::fs::read_to_string(&expected).unwrap();
    std::fs::write(
        &expected,
        text.replace("\"林晓东\", \"type\"", "\"林晓冬\", \"type\""),
    )
    .unwrap();
    let (code, stdout, _) = run(&["--config", "hallgate.toml", "check"], dir.path());
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("FAIL  nat-hall mappings/nat/application.toml: one application"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"record 0: applicant.name: expected "林晓冬", got "林晓东""#),
        "{stdout}"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_mapping_that_cannot_compile_names_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "kind = \"application\"\nformat = \"xml\"\nroot = \"R/R\"\n[fields]\ncase_no = \"A\"\nitem_code = { path = \"B\", tabel = \"x\" }\n",
            ":6: field `item_code`: unknown key `tabel`",
        ),
        (
            "kind = \"application\"\nformat = \"xml\"\nroot = \"R/R\"\n[fields]\ncase_no = { template = \"{A}-{B}\" }\n",
            ":5: field `case_no`: uses template, which cannot be rendered back",
        ),
        (
            "kind = \"application\"\nformat = \"json\"\nroot = \"\"\n[fields]\ncase_no = \"A\"\nchannel = { path = \"C\", table = \"nowhere\" }\n",
            ":6: field `channel`: table `nowhere` is neither",
        ),
        (
            "kind = \"application\"\nformat = \"xml\"\nroot = \"R/R\"\n[fields]\nsubmitted_at = { path = \"T\", time = \"yy-MM-dd\" }\n",
            ":5: field `submitted_at`: time pattern `yy-MM-dd`: the year is written yyyy",
        ),
        (
            "kind = \"result\"\nformat = \"json\"\nroot = \"rows\"\n[fields]\ncase_no = \"P\"\ndescription = \"notes[4000000000]\"\n",
            ":6: field `description`: path `notes[4000000000]`: an index is a number from 1 to 1000",
        ),
        (
            "kind = \"application\"\nformat = \"xml\"\nroot = \"R/R\"\n[fields]\nsubmitted_at = { path = \"T\", time = \"yyyy-MM-dd'T'HH:mm:ss'Z'\" }\n",
            ":5: field `submitted_at`: time pattern `yyyy-MM-dd'T'HH:mm:ss'Z'`: a quoted 'Z' is only a letter",
        ),
        (
            "kind = \"application\"\nformat = \"xml\"\nroot = \"R/R\"\n[fields]\nregion = { path = \"A\", when = { field = \"op\", equals = \"x\" } }\nop = \"B\"\n",
            ":5: field `region`: `when` refers to `op`, which is not mapped above this field",
        ),
        (
            "kind = \"process\"\nformat = \"xml\"\nroot = \"R/R\"\n[fields]\ncase_no = \"A\"\nnodename = \"B\"\n",
            ":6: field `nodename`: not a canonical process field (docs/records.md); did you mean `node_name`?",
        ),
        (
            "kind = \"process\"\nformat = \"json\"\nroot = \"\"\n[fields]\nstarted_at = { path = \"B\", time = \"yyyy-MM-dd HH:MM:ss\" }\n",
            ":5: field `started_at`: time pattern `yyyy-MM-dd HH:MM:ss`: the month (MM; minutes are mm) appears twice",
        ),
        (
            "kind = \"process\"\nformat = \"json\"\nroot = \"\"\n[fields]\ncase_no = \"A\"\n[[examples]]\ninput_text = \"{}\"\nreject = \"requird\"\n",
            ":6: examples: `reject = \"requird\"` is not an error code",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("m{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let err = Mapping::load(&path, &Disk)
            .expect_err("must not compile")
            .to_string();
        assert!(err.contains(&format!("m{i}.toml{want}")), "case {i}: {err}");
    }
}

/// Render one canonical record with `m`, decode the native body again, and check
/// decode(render(r)) == r; returns the native body. `what` names the case.
fn round_trip(m: &Arc<Mapping>, record: &Value, what: &str) -> Vec<u8> {
    let native = hallgate::mapping::render(m, std::slice::from_ref(record))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let again = MappingSet::new(vec![m.clone()])
        .decode(&native, None, None, &Limits::default())
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", String::from_utf8_lossy(&native)));
    assert_eq!(again.len(), 1, "{what}");
    assert_eq!(
        &again[0].result.as_ref().unwrap().to_value(),
        record,
        "{what}: decode(render(r)) != r\n{}",
        String::from_utf8_lossy(&native)
    );
    native
}

fn node_set(node: &str) -> MappingSet {
    let config = hallgate::config::Config::load(&repo().join("hallgate.toml")).unwrap();
    hallgate::mapping::load_sets(&config, &Disk)
        .unwrap()
        .remove(node)
        .unwrap()
}

/// Every sample decodes, renders back to its node's native format, and decodes to
/// the same canonical records again.
#[test]
fn samples_round_trip_through_render() {
    let limits = Limits::default();
    for (sample, node, ct) in SAMPLES {
        let set = node_set(node);
        let body = std::fs::read(repo().join("examples/samples").join(sample)).unwrap();
        let decoded = set.decode(&body, Some(ct), None, &limits).unwrap();
        for d in decoded {
            round_trip(&d.mapping, &d.result.expect("valid").to_value(), sample);
        }
    }
}

#[test]
fn rendered_xml_uses_the_declared_encoding() {
    let m = Arc::new(Mapping::load(&repo().join("mappings/zj/application.toml"), &Disk).unwrap());
    let expected = jsonl(&std::fs::read_to_string(expected_of("zj/application.xml")).unwrap());
    let native = hallgate::mapping::render(&m, &expected).unwrap();
    assert!(native.starts_with(b"<?xml version=\"1.0\" encoding=\"GBK\"?><RECORDS><RECORD>"));
    assert!(
        std::str::from_utf8(&native).is_err(),
        "GBK bytes, not UTF-8"
    );
    let (text, _, bad) = encoding_rs::GBK.decode(&native);
    assert!(!bad);
    assert!(text.contains("<SERVICENAME>公共场所卫生许可</SERVICENAME>"));
    assert!(
        text.contains("<INFOTYPE>承诺件</INFOTYPE>"),
        "table inverse"
    );
    assert!(
        text.contains("<RECEIVETIME>2026-03-24 09:15:02</RECEIVETIME>"),
        "time pattern"
    );
    assert!(
        text.contains("<ATTRS><ATTR><UNID>"),
        "materials as repeated children"
    );
}

/// A dialect connected by writing a mapping only: the mapping a first-time
/// integrator wrote from docs/mappings.md (GBK XML, values in attributes) passes its
/// examples, and its output round-trips through render.
#[test]
fn a_mapping_written_from_the_docs_alone_passes_its_examples() {
    let (code, stdout, stderr) = run(
        &["check", "--mapping", "tests/fixtures/nh/process.toml"],
        &repo(),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{stdout}"
    );
    let (code, native, _) = run(
        &[
            "map",
            "--render",
            "--mapping",
            "tests/fixtures/nh/process.toml",
            "tests/fixtures/nh/steps.expected.jsonl",
        ],
        &repo(),
    );
    assert_eq!(code, 0);
    assert!(
        native.contains("<Step CaseNo=\"440605260510000021\""),
        "{native}"
    );
}

/// SOAP 1.2 with the record in CDATA, a multipart form whose attrXml part is GBK with
/// its own declaration, and JSON lines: all through the demo nodes' mappings.
/// Two mappings share a record root and `match` decides which reads each record: the
/// same in a plain body and in a SOAP envelope carrying the records as elements.
/// Fails when the envelope hands every record to every mapping with that root.
#[test]
fn match_decides_between_mappings_in_soap_as_in_plain_xml() {
    let compile = |text: &str| {
        Arc::new(Mapping::compile(text, &repo().join("mappings/t.toml"), &Disk).expect("compiles"))
    };
    let set = MappingSet::new(vec![
        compile(
            "kind = \"process\"\nformat = \"xml\"\nroot = \"RECORDS/RECORD\"\nmatch = { path = \"STEP\", present = true }\n[fields]\ncase_no = \"PROJID\"\nnode_name = \"STEP\"\n",
        ),
        compile(
            "kind = \"result\"\nformat = \"xml\"\nroot = \"RECORDS/RECORD\"\nmatch = { path = \"RESULT\", present = true }\n[fields]\ncase_no = \"PROJID\"\ndescription = \"RESULT\"\n",
        ),
    ]);
    let records = "<RECORDS><RECORD><PROJID>P1</PROJID><STEP>受理</STEP></RECORD><RECORD><PROJID>P1</PROJID><RESULT>准予许可</RESULT></RECORD></RECORDS>";
    let soap = format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><op>{records}</op></s:Body></s:Envelope>"
    );
    let read = |body: &str| -> Vec<Value> {
        hallgate::mapping::decode_and_check(
            &set,
            body.as_bytes(),
            Some("text/xml"),
            None,
            &Limits::default(),
        )
        .unwrap()
        .into_iter()
        .map(|c| c.result.expect("valid").fields.to_value())
        .collect()
    };
    let plain = read(records);
    assert_eq!(plain.len(), 2, "{plain:?}");
    assert_eq!(plain[0]["kind"], "process");
    assert_eq!(plain[1]["kind"], "result");
    assert_eq!(read(&soap), plain);
}

/// Rule semantics on small inputs, XML and JSON alike (each case failed before its fix):
/// a path list passes an empty value to the next path; numbers go through regex and
/// checks as text; a numeric document type still selects the ID number check; a
/// mapping's `id_no` check takes a lower-case `x`; `each` with an index takes that
/// element; with `trim = false` spaces before an entity stay; a `when` on a source path
/// sees the value after the half-width step.
#[test]
fn rule_semantics_hold_for_xml_and_json() {
    fn decode(mapping: &str, ct: &str, body: &str) -> Vec<Result<Value, Vec<String>>> {
        let m = Mapping::compile(mapping, &repo().join("mappings/t.toml"), &Disk)
            .unwrap_or_else(|e| panic!("{e}"));
        let set = MappingSet::new(vec![Arc::new(m)]);
        hallgate::mapping::decode_and_check(
            &set,
            body.as_bytes(),
            Some(ct),
            None,
            &Limits::default(),
        )
        .unwrap()
        .into_iter()
        .map(|c| {
            c.result
                .map(|r| r.fields.to_value())
                .map_err(|e| e.iter().map(|e| e.to_string()).collect())
        })
        .collect()
    }
    let head = |format: &str, root: &str| {
        format!(
            "kind = \"application\"\nformat = \"{format}\"\nroot = \"{root}\"\n[fields]\ncase_no = \"PROJID\"\nitem_code = \"CODE\"\n"
        )
    };
    // A path list: an empty first element or key does not hide the second.
    let ids = "applicant.id_type = { const = \"111\" }\napplicant.id_no = { path = [\"SFZH\", \"ZJHM\"] }\n";
    let xml = decode(
        &(head("xml", "RECORDS/RECORD") + ids),
        "application/xml",
        "<RECORDS><RECORD><PROJID>P1</PROJID><CODE>C</CODE><SFZH> </SFZH><ZJHM>350205195912280259</ZJHM></RECORD></RECORDS>",
    );
    let json = decode(
        &(head("json", "") + ids),
        "application/json",
        r#"[{"PROJID":"P1","CODE":"C","SFZH":"","ZJHM":"350205195912280259"},{"PROJID":"P2","CODE":"C","SFZH":null,"ZJHM":"350205195912280259"}]"#,
    );
    for r in xml.iter().chain(&json) {
        assert_eq!(
            r.as_ref().unwrap()["applicant"]["id_no"],
            "350205195912280259",
            "{r:?}"
        );
    }
    // Numbers through regex and checks; a numeric document type; a lower-case x.
    let rules = "region = { path = \"XZQH\", regex = '^(\\d{6})', render = false }\nextra = { path = \"X\" }\n";
    let rules = rules.replace("extra = { path = \"X\" }\n", "contact.id_no = { path = \"LXRZJ\", check = \"id_no\" }\napplicant.id_type = \"ZJLX\"\napplicant.id_no = \"ZJHM\"\n");
    let got = decode(
        &(head("json", "") + &rules),
        "application/json",
        r#"[{"PROJID":"P1","CODE":"C","XZQH":420102000000,"LXRZJ":"33012219580905367x"},
            {"PROJID":"P2","CODE":"C","ZJLX":111,"ZJHM":"350205195912280258"}]"#,
    );
    let first = got[0].as_ref().unwrap();
    assert_eq!(first["region"], "420102");
    assert_eq!(first["contact"]["id_no"], "33012219580905367X");
    let errors = got[1].as_ref().unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("applicant.id_no") && e.contains("id_no:")),
        "{errors:?}"
    );
    let checked = decode(
        &(head("json", "") + "region = { path = \"XZQH\", check = \"region\" }\n"),
        "application/json",
        r#"{"PROJID":"P1","CODE":"C","XZQH":420102}"#,
    );
    assert_eq!(checked[0].as_ref().unwrap()["region"], "420102");
    // `each` with an index: that element only, as in JSON.
    let each = "[fields.materials]\neach = \"ATTRS/ATTR[2]\"\nfields.name = \"NAME\"\n";
    let xml = decode(
        &(head("xml", "RECORDS/RECORD") + each),
        "application/xml",
        "<RECORDS><RECORD><PROJID>P1</PROJID><CODE>C</CODE><ATTRS><ATTR><NAME>one</NAME></ATTR><ATTR><NAME>two</NAME></ATTR></ATTRS></RECORD></RECORDS>",
    );
    assert_eq!(
        xml[0].as_ref().unwrap()["materials"],
        serde_json::json!([{"name": "two"}])
    );
    // An element with no values is left out: a field it lacks is not an error.
    let xml = decode(
        &(head("xml", "RECORDS/RECORD")
            + "[fields.materials]\neach = \"ATTRS/ATTR\"\nfields.name = { path = \"NAME\", required = true }\n"),
        "application/xml",
        "<RECORDS><RECORD><PROJID>P1</PROJID><CODE>C</CODE><ATTRS><ATTR> </ATTR><ATTR><NAME>two</NAME></ATTR></ATTRS></RECORD></RECORDS>",
    );
    assert_eq!(
        xml[0].as_ref().unwrap()["materials"],
        serde_json::json!([{"name": "two"}])
    );
    // trim = false keeps the space before an entity.
    let xml = decode(
        &(head("xml", "RECORDS/RECORD") + "project_name = { path = \"D\", trim = false }\n"),
        "application/xml",
        "<RECORDS><RECORD><PROJID>P1</PROJID><CODE>C</CODE><D> &amp; B</D></RECORD></RECORDS>",
    );
    assert_eq!(xml[0].as_ref().unwrap()["project_name"], " & B");
    // A `when` on a source path compares after the file's half-width step, as the
    // field itself reads the value.
    let xml = decode(
        "kind = \"application\"\nformat = \"xml\"\nroot = \"RECORDS/RECORD\"\nhalfwidth = true\n[fields]\ncase_no = \"PROJID\"\nitem_code = \"CODE\"\napplicant.id_type = \"ZJLX\"\napplicant.legal_rep = { path = \"FR\", when = { path = \"ZJLX\", equals = \"001\" } }\n",
        "application/xml",
        "<RECORDS><RECORD><PROJID>P1</PROJID><CODE>C</CODE><ZJLX>００１</ZJLX><FR>张三</FR></RECORD></RECORDS>",
    );
    let r = xml[0].as_ref().unwrap();
    assert_eq!(r["applicant"]["id_type"], "001");
    assert_eq!(r["applicant"]["legal_rep"], "张三", "{r}");
}

/// A table's `render` choice for its default value (`default = "other"`, `render =
/// { other = "9" }` in the shipped national mapping) renders, and reads back.
#[test]
fn a_table_default_renders_with_its_render_code() {
    let m = Arc::new(Mapping::load(&repo().join("mappings/nat/application.toml"), &Disk).unwrap());
    let record = serde_json::json!({"kind": "application", "case_no": "X1", "item_code": "T1",
        "region": "350205", "applicant": {"type": "other"}});
    let native = round_trip(&m, &record, "applicant.type other");
    let text = String::from_utf8(native).unwrap();
    assert!(text.contains(r#""ApplyerType":"9""#), "{text}");
}

/// Paths with an index render to that place (`NOTE[2]` is the second NOTE element, the
/// second item of the JSON list), in either order of the rules, and read back.
#[test]
fn indexed_paths_render_to_their_place() {
    for (format, root) in [("xml", "RECORDS/RECORD"), ("json", "rows")] {
        for fields in [
            "description = \"NOTE[1]\"\nreason = \"NOTE[2]\"\n",
            "reason = \"NOTE[2]\"\ndescription = \"NOTE[1]\"\n",
        ] {
            let text = format!(
                "kind = \"result\"\nformat = \"{format}\"\nroot = \"{root}\"\n[fields]\ncase_no = \"PROJID\"\n{fields}"
            );
            let m =
                Arc::new(Mapping::compile(&text, &repo().join("mappings/t.toml"), &Disk).unwrap());
            let record = serde_json::json!({"kind": "result", "case_no": "P1",
                "description": "first", "reason": "second"});
            round_trip(&m, &record, format);
        }
    }
    // `each` over an indexed path: the list is written where it is read from.
    for (format, root, each, items) in [
        (
            "xml",
            "RECORDS/RECORD",
            "ITEMS/ITEM[2]",
            serde_json::json!([{"name": "b"}]),
        ),
        (
            "xml",
            "RECORDS/RECORD",
            "G[2]/ITEM",
            serde_json::json!([{"name": "a"}, {"name": "b"}]),
        ),
        (
            "json",
            "rows",
            "groups[2]/items",
            serde_json::json!([{"name": "a"}, {"name": "b"}]),
        ),
        (
            "json",
            "rows",
            "items[2]",
            serde_json::json!([{"name": "b"}]),
        ),
    ] {
        let text = format!(
            "kind = \"result\"\nformat = \"{format}\"\nroot = \"{root}\"\n[fields]\ncase_no = \"PROJID\"\n[fields.ext.items]\neach = \"{each}\"\nfields.name = \"N\"\n"
        );
        let m = Arc::new(Mapping::compile(&text, &repo().join("mappings/t.toml"), &Disk).unwrap());
        let record =
            serde_json::json!({"kind": "result", "case_no": "P1", "ext": {"items": items}});
        round_trip(&m, &record, each);
    }
}

/// An error names the source the value was read from: the second path of a list,
/// the later of two rules for a field, the element a list item came from when an
/// empty one before it was left out.
#[test]
fn errors_name_the_source_the_value_came_from() {
    let text = "kind = \"application\"\nformat = \"xml\"\nroot = \"RECORDS/RECORD\"\n[fields]\ncase_no = \"PROJID\"\nitem_code = \"CODE\"\napplicant.id_type = { const = \"111\" }\napplicant.id_no = { path = [\"SFZH\", \"ZJHM\"] }\ncontact.mobile = { path = \"SJ\", when = { path = \"SJLX\", equals = \"1\" } }\n\"contact.mobile\" = \"LXDH\"\n[fields.materials]\neach = \"ATTRS/ATTR\"\nfields.name = \"NAME\"\nfields.sort = \"SORT\"\n";
    let m = Mapping::compile(text, &repo().join("mappings/t.toml"), &Disk)
        .unwrap_or_else(|e| panic!("{e}"));
    let set = MappingSet::new(vec![Arc::new(m)]);
    let body = "<RECORDS><RECORD><PROJID>P1</PROJID><CODE>C</CODE><ZJHM>350205195912280258</ZJHM><SJ>13906711234</SJ><LXDH>1390671123</LXDH><ATTRS><ATTR></ATTR><ATTR><NAME>营业执照</NAME><SORT>x</SORT></ATTR></ATTRS></RECORD></RECORDS>";
    let got = hallgate::mapping::decode_and_check(
        &set,
        body.as_bytes(),
        Some("application/xml"),
        None,
        &Limits::default(),
    )
    .unwrap();
    let errors: Vec<String> = got[0]
        .result
        .as_ref()
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    for want in [
        "record 0: applicant.id_no (ZJHM): id_no:",
        "record 0: contact.mobile (LXDH): mobile:",
        "record 0: materials[0].sort (ATTRS/ATTR[2]/SORT): type:",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{want}\n{errors:#?}"
        );
    }
}

#[test]
fn soap_1_2_multipart_and_json_lines() {
    let set = node_set("zj-tonglu");
    let limits = Limits::default();
    let record = "<RECORD><PROJID>330122260326000016</PROJID><SERVICECODE>913301228R1PEH3X3L01XK0031200Y0001</SERVICECODE><APPLYNAME>周伟</APPLYNAME><AREACODE>330122</AREACODE><INFOTYPE>即办件</INFOTYPE></RECORD>";
    let soap12 = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>
<m:receiveBaseInfo xmlns:m="http://ws.exchange.zwfw.gov.cn/"><m:xmlStr><![CDATA[<?xml version="1.0" encoding="GBK"?>{record}]]></m:xmlStr></m:receiveBaseInfo>
</env:Body></env:Envelope>"#
    );
    let got = hallgate::mapping::decode_and_check(
        &set,
        soap12.as_bytes(),
        Some("application/soap+xml; charset=utf-8"),
        None,
        &limits,
    )
    .unwrap();
    let r = got[0].result.as_ref().expect("valid");
    assert_eq!(r.case_no, "330122260326000016");
    assert_eq!(r.fields["case_type"], "immediate");

    // multipart: baseInfoXml in UTF-8 text, attrXml as GBK bytes with its declaration
    let attr = "<?xml version=\"1.0\" encoding=\"GBK\"?><RECORDS><RECORD><UNID>u1</UNID><PROJID>330122260326000016</PROJID><ATTRNAME>营业执照</ATTRNAME><TAKETYPE>纸质收取</TAKETYPE></RECORD></RECORDS>";
    let (gbk, _, _) = encoding_rs::GBK.encode(attr);
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--XyZ\r\nContent-Disposition: form-data; name=\"appId\"\r\n\r\nzj-tl\r\n",
    );
    body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"baseInfoXml\"\r\nContent-Type: text/xml; charset=utf-8\r\n\r\n");
    body.extend_from_slice(record.as_bytes());
    body.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"attrXml\"; filename=\"attr.xml\"\r\nContent-Type: application/xml\r\n\r\n");
    body.extend_from_slice(&gbk);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let got = hallgate::mapping::decode_and_check(
        &set,
        &body,
        Some("multipart/form-data; boundary=XyZ"),
        None,
        &limits,
    )
    .unwrap();
    let kinds: Vec<String> = got
        .iter()
        .map(|c| c.result.as_ref().expect("valid").kind.to_string())
        .collect();
    assert_eq!(kinds, ["application", "material"]);
    let material = got[1].result.as_ref().unwrap();
    assert_eq!(material.fields["name"], "营业执照");
    assert_eq!(material.fields["submit_type"], "paper");

    // JSON lines: one national application per line
    let nat = node_set("nat-hall");
    let line = std::fs::read_to_string(repo().join("examples/samples/nat/application.json"))
        .unwrap()
        .replace('\n', "");
    let lines = format!(
        "{line}\n{}\n",
        line.replace("350205260401000123", "350205260401000124")
    );
    let got = hallgate::mapping::decode_and_check(
        &nat,
        lines.as_bytes(),
        Some("application/x-ndjson"),
        None,
        &limits,
    )
    .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].result.as_ref().unwrap().case_no,
        "350205260401000124"
    );
}

#[test]
fn a_string_over_the_limit_is_unusable() {
    let set = node_set("zj-tonglu");
    let limits = Limits {
        max_string_bytes: 64,
        ..Limits::default()
    };
    let long = format!(
        "<RECORDS><RECORD><PROJID>330122260324000001</PROJID><PROJECTNAME>{}</PROJECTNAME></RECORD></RECORDS>",
        "长".repeat(30)
    );
    let err = set
        .decode(long.as_bytes(), Some("application/xml"), None, &limits)
        .expect_err("over the limit");
    assert!(
        err.to_string()
            .starts_with("a string longer than 64 bytes at byte offset"),
        "{err}"
    );
}

/// A large gb2312 file made of the Zhejiang sample's records, `copies` times, with
/// `between` after every record (comments that mention the end tag, to tempt the
/// cutter) and `tail` after the last.
fn big_zj(copies: usize, between: &str, tail: &[u8]) -> Vec<u8> {
    let sample = std::fs::read(repo().join("examples/samples/zj/application.xml")).unwrap();
    let start = find(&sample, b"<RECORD>").unwrap();
    let end = find(&sample, b"</RECORDS>").unwrap();
    let records = &sample[start..end];
    let mut out = sample[..start].to_vec();
    for _ in 0..copies {
        out.extend_from_slice(records);
        out.extend_from_slice(between.as_bytes());
    }
    out.extend_from_slice(tail);
    out
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// `hallgate map --jobs 1 … -` with the file on stdin: a body read whole and decoded
/// as one document (never cut), the reference for the parallel decode.
fn map_whole(path: &Path, mapping: &str) -> (i32, String, String) {
    map_stdin(path, mapping, "1")
}

/// `hallgate map --jobs N … -`: the file on stdin (read whole; on two threads it is
/// cut in memory).
fn map_stdin(path: &Path, mapping: &str, jobs: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["map", "--jobs", jobs, "--mapping", mapping, "-"])
        .current_dir(repo())
        .stdin(std::fs::File::open(path).unwrap())
        .output()
        .expect("run hallgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        // Problems with the input name it: the same as for the file.
        String::from_utf8_lossy(&out.stderr).replace("-: ", &format!("{}: ", path.display())),
    )
}

/// The checks on a large input: one thread and two give the same exit code, records
/// and problems, and so does the whole document, except for `late bad byte`: read
/// part by part, the file stops at the bad byte after the records before it (at least
/// `before` of them), as at a syntax error, while a body read whole is refused whole.
fn same_as_whole(
    name: &str,
    want: i32,
    whole: (i32, String, String),
    one: (i32, &str, &str),
    two: (i32, String, String),
    before: usize,
) {
    let (c0, out0, err0) = whole;
    let (c1, out1, err1) = one;
    let (c2, out2, err2) = two;
    assert_eq!(c1, want, "{name}: {err1}");
    assert_eq!(c2, c1, "{name}: {err2}");
    assert_eq!(out2.lines().count(), out1.lines().count(), "{name}");
    assert!(out2 == out1, "{name}: the same records in the same order");
    assert_eq!(
        err2, err1,
        "{name}: the same problems, the same record numbers"
    );
    if name == "late bad byte" {
        assert!(
            out1.lines().count() >= before,
            "{name}: the parts before it"
        );
        assert!(err1.contains("byte offset"), "{name}: {err1}");
        assert_eq!(c0, 2, "{name}: {err0}");
        assert!(
            out0.is_empty(),
            "{name}: a body read whole is refused whole"
        );
    } else {
        assert_eq!(c0, c1, "{name}: whole: {err0}");
        assert!(
            out0 == out1,
            "{name}: the same records as the whole document"
        );
        assert_eq!(
            err0, err1,
            "{name}: the same problems as the whole document"
        );
    }
}

fn map_big(path: &Path, jobs: &str) -> (i32, String, String) {
    run(
        &[
            "map",
            "--jobs",
            jobs,
            "--mapping",
            "mappings/zj/application.toml",
            path.to_str().unwrap(),
        ],
        &repo(),
    )
}

#[test]
fn large_inputs_decoded_on_several_threads_give_the_serial_output() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, i32); 12] = [
        // A record after the last `</RECORD>`, self-closing or prefixed: what follows
        // the last cut must not be copied into every part (it was read once per part).
        (
            "self-closing record last",
            big_zj(2500, "\n", b"<RECORD PROJID=\"TAIL\"/></RECORDS>\n"),
            1,
        ),
        (
            "prefixed record last",
            big_zj(
                2500,
                "\n",
                b"<x:RECORD xmlns:x=\"urn:x\"><PROJID>330122260324999999</PROJID><SERVICECODE>X1</SERVICECODE><AREACODE>330122</AREACODE></x:RECORD></RECORDS>\n",
            ),
            0,
        ),
        // A record written with a prefix before the first plain one: it must not
        // become part of every part's head (it would be read again with each).
        (
            "prefixed record first",
            {
                let body = big_zj(2500, "\n", b"</RECORDS>\n");
                let at = find(&body, b"<RECORD>").unwrap();
                let end = find(&body, b"</RECORD>").unwrap() + b"</RECORD>".len();
                let inner = &body[at + b"<RECORD>".len()..end - b"</RECORD>".len()];
                let mut b = body[..at].to_vec();
                b.extend_from_slice(b"<x:RECORD xmlns:x=\"urn:x\">");
                b.extend_from_slice(inner);
                b.extend_from_slice(b"</x:RECORD>\n");
                b.extend_from_slice(&body[at..]);
                b
            },
            0,
        ),
        // A record refused early, then a cut in a comment sends the rest to the whole
        // decode: the exit code still says a record was refused.
        (
            "refused, then decoded whole",
            {
                let mut b = big_zj(1500, "\n", b"");
                let at = find(&b, b"330122198011096180").unwrap();
                b[at + 17] = b'1';
                let rest = big_zj(1000, "<!-- </RECORD> -->\n", b"</RECORDS>\n");
                b.extend_from_slice(&rest[find(&rest, b"<RECORD>").unwrap()..]);
                b
            },
            1,
        ),
        // Plain: cut in parts, decoded in parallel.
        ("plain", big_zj(2500, "\n", b"</RECORDS>\n"), 0),
        // A byte that is not GBK, two thirds into the file.
        (
            "late bad byte",
            {
                let mut b = big_zj(2500, "\n", b"</RECORDS>\n");
                let at = b.len() * 2 / 3;
                let at = at + find(&b[at..], b"<CONTACTMAN>").unwrap() + b"<CONTACTMAN>".len();
                b.splice(at..at, [0x81, 0x20]);
                b
            },
            2,
        ),
        // The same in GB18030 (each part keeps the declaration and is transcoded on
        // its own thread).
        (
            "gb18030",
            {
                let body = big_zj(2500, "\n", b"</RECORDS>\n");
                let (text, _, bad) = encoding_rs::GBK.decode(&body);
                assert!(!bad);
                let text = text.replacen("encoding=\"gb2312\"", "encoding=\"gb18030\"", 1);
                let (bytes, _, bad) = encoding_rs::GB18030.encode(&text);
                assert!(!bad);
                bytes.into_owned()
            },
            0,
        ),
        // A comment before the first record holds its start tag, and comments sit
        // between records: a part must not begin inside that first comment (it would
        // swallow records up to the next `-->` without an error).
        (
            "record tag in a leading comment",
            {
                let body = big_zj(2500, "<!-- x -->\n", b"</RECORDS>\n");
                let at = find(&body, b"<RECORD>").unwrap();
                let mut b = body[..at].to_vec();
                b.extend_from_slice(b"<!-- <RECORD> -->\n");
                b.extend_from_slice(&body[at..]);
                b
            },
            0,
        ),
        // After the last record, more than a part's worth of comment: the last part
        // holds no record.
        (
            "long tail",
            {
                let mut tail = b"<!-- ".to_vec();
                tail.extend(std::iter::repeat_n(b'x', 3 << 20));
                tail.extend_from_slice(b" -->\n</RECORDS>\n");
                big_zj(2500, "\n", &tail)
            },
            0,
        ),
        // Every record followed by a comment holding the end tag: some cuts land in a
        // comment, those parts fail on their own, and the input is decoded whole.
        (
            "comments",
            big_zj(2500, "<!-- </RECORD> -->\n", b"</RECORDS>\n"),
            0,
        ),
        // Truncated: the last part is unusable; the output up to there is the same.
        (
            "truncated",
            big_zj(2500, "\n", b"<RECORD><PROJID>1</PROJ"),
            2,
        ),
        // A record in the middle with a bad ID check digit: record numbers match.
        (
            "one bad record",
            {
                let mut b = big_zj(1200, "\n", b"");
                let bad = big_zj(1, "\n", b"");
                let s = find(&bad, b"<RECORD>").unwrap();
                let mut record = bad[s..].to_vec();
                let at = find(&record, b"330122198011096180").unwrap();
                record[at + 17] = b'1'; // a wrong check digit (ASCII in gb2312 too)
                b.extend_from_slice(&record);
                b.extend_from_slice(&big_zj(1300, "\n", b"</RECORDS>\n")[s..]);
                b
            },
            1,
        ),
    ];
    for (name, body, want) in cases {
        let path = dir.path().join("big.xml");
        std::fs::write(&path, &body).unwrap();
        assert!(body.len() > 5 << 20, "{name}: big enough to be cut");
        let (c1, out1, err1) = map_big(&path, "1");
        let whole = map_whole(&path, "mappings/zj/application.toml");
        assert!(
            map_stdin(&path, "mappings/zj/application.toml", "2") == whole,
            "{name}: stdin on two threads reads as stdin on one"
        );
        same_as_whole(
            name,
            want,
            whole,
            (c1, &out1, &err1),
            map_big(&path, "2"),
            1000,
        );
        if name == "one bad record" {
            assert!(
                err1.contains("record 2400: contact.id_no"),
                "{name}: {err1}"
            );
        }
    }
}

#[test]
fn large_json_lines_streamed_on_several_threads_give_the_serial_output() {
    let dir = tempfile::tempdir().unwrap();
    let sample: Value = serde_json::from_slice(
        &std::fs::read(repo().join("examples/samples/nat/application.json")).unwrap(),
    )
    .unwrap();
    let line = serde_json::to_string(&sample).unwrap();
    let mut bad = sample.clone();
    bad["ApplyerPageCode"] = Value::String("350205195912280258".into());
    let bad_line = serde_json::to_string(&bad).unwrap();
    let lines = |n: usize| format!("{line}\n").repeat(n);
    let cases: [(&str, Vec<u8>, i32); 4] = [
        ("plain", lines(6000).into_bytes(), 0),
        // A record refused in the middle: same record numbers.
        (
            "one bad record",
            format!("{}{bad_line}\n{}", lines(3000), lines(3000)).into_bytes(),
            1,
        ),
        // Not JSON at the end: exit 2 with the same output before it.
        (
            "broken",
            format!("{}{{\"ProjectNo\": \n", lines(6000)).into_bytes(),
            2,
        ),
        // Not UTF-8 two thirds in (a byte 0xFF in a name).
        (
            "late bad byte",
            {
                let mut b = lines(4000).into_bytes();
                let at = b.len() + line.find("林").unwrap();
                b.extend_from_slice(format!("{line}\n{}", lines(2000)).as_bytes());
                b[at] = 0xFF;
                b
            },
            2,
        ),
    ];
    for (name, body, want) in cases {
        let path = dir.path().join("big.jsonl");
        std::fs::write(&path, &body).unwrap();
        assert!(body.len() > 5 << 20, "{name}: big enough to be streamed");
        let map = |jobs: &str| {
            run(
                &[
                    "map",
                    "--jobs",
                    jobs,
                    "--mapping",
                    "mappings/nat/application.toml",
                    path.to_str().unwrap(),
                ],
                &repo(),
            )
        };
        let (c1, out1, err1) = map("1");
        same_as_whole(
            name,
            want,
            map_whole(&path, "mappings/nat/application.toml"),
            (c1, &out1, &err1),
            map("2"),
            2000,
        );
        if want == 1 {
            assert!(
                err1.contains("record 3000: applicant.id_no"),
                "{name}: {err1}"
            );
        }
    }
}

#[test]
fn the_record_limit_holds_for_a_large_file_decoded_in_parts() {
    // The node's limits from a config that takes big files but few records each.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("mappings"), &dir.path().join("mappings"));
    copy_tree(&repo().join("examples"), &dir.path().join("examples"));
    let config = std::fs::read_to_string(repo().join("hallgate.toml"))
        .unwrap()
        .replacen("max_body_bytes = 4194304", "max_body_bytes = 67108864", 1)
        .replacen(
            "max_records_per_body = 1000",
            "max_records_per_body = 3000",
            1,
        );
    std::fs::write(dir.path().join("hallgate.toml"), config).unwrap();
    let path = dir.path().join("big.xml");
    let body = big_zj(2500, "\n", b"</RECORDS>\n");
    std::fs::write(&path, &body).unwrap();
    let map = |jobs: &str| {
        run(
            &[
                "--config",
                "hallgate.toml",
                "map",
                "--node",
                "zj-tonglu",
                "--jobs",
                jobs,
                path.to_str().unwrap(),
            ],
            dir.path(),
        )
    };
    let (c1, out1, err1) = map("1");
    let (c2, out2, err2) = map("2");
    // 5,000 records against a limit of 3,000: the first 3,000, then the refusal.
    assert_eq!(c1, 2, "{err1}");
    assert_eq!(out1.lines().count(), 3000, "{err1}");
    assert!(err1.contains("more than 3000 records"), "{err1}");
    assert_eq!((c2, &out2, &err2), (c1, &out1, &err1));
}
