//! Mappings in the server: native bodies decoded with the sending node's mappings,
//! invalid bodies refused whole (422) unless `?partial=true`, hostile bodies 400/413,
//! and deliveries rendered with the destination's mapping.

mod common;

use common::{DEFAULT_ROUTES, Harness, wait_until};
use hallgate::mapping::{Disk, Limits, Mapping, MappingSet};
use serde_json::Value;

/// district-b sends Zhejiang XML and forms, district-a national JSON and Shandong
/// result XML; the supervision platform takes results as Shandong XML.
fn with_mappings(text: String) -> String {
    let m = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings");
    text.replace(
        "accept = { kinds = [\"application\", \"material\"], regions = [\"330122\"] }",
        &format!(
            "accept = {{ kinds = [\"application\", \"material\"], regions = [\"330122\"] }}\nmappings = [\"{m}/zj/application.toml\", \"{m}/zj/material.toml\"]"
        ),
    )
    .replace(
        "accept = { kinds = [\"application\", \"material\", \"process\", \"result\"], regions = [\"350205\"] }",
        &format!(
            "accept = {{ kinds = [\"application\", \"material\", \"process\", \"result\"], regions = [\"350205\"] }}\nmappings = [\"{m}/nat/application.toml\", \"{m}/sd/result.toml\"]"
        ),
    )
    .replace(
        "[nodes.supervision]\n",
        &format!("[nodes.supervision]\nmappings = [\"{m}/sd/result.toml\"]\n"),
    )
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/examples/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const SD_RESULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DATA><EA_JC_STEP_DONE><ORGBUSNO>SD-HC-1</ORGBUSNO><PROJID>350205260401000123</PROJID>
<DATAVER>1</DATAVER><REGION_ID>350205</REGION_ID><DONERESULT>0</DONERESULT>
<CERTIFICATENAM>不动产权证书</CERTIFICATENAM><CERTIFICATENO>闽(2026)厦门市不动产权第0001号</CERTIFICATENO>
<CERTIFICATELIMIT>2076-04-06</CERTIFICATELIMIT><PUBLISHER>厦门市自然资源和规划局海沧分局</PUBLISHER>
<ISFEE>1</ISFEE><FEE>80.5</FEE><TRANSACTOR>林晓东</TRANSACTOR><OCCURTIME>2026-04-07 16:30:00</OCCURTIME>
</EA_JC_STEP_DONE></DATA>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_bodies_are_decoded_and_rendered_for_the_destination() {
    let h = Harness::with_config(DEFAULT_ROUTES, with_mappings).await;
    let url = format!("{}/v1/records", h.url);
    // gb2312 XML with two applications
    let (status, body) = json(
        h.raw(
            &url,
            Some("district-b"),
            Some("application/xml"),
            sample("zj/application.xml"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["records"].as_array().unwrap().len(), 2);
    // a form with an application and two materials
    let (status, body) = json(
        h.raw(
            &url,
            Some("district-b"),
            Some("application/x-www-form-urlencoded"),
            sample("zj/application.form"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let kinds: Vec<&str> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["application", "material", "material"]);
    // the stored canonical record is the mapping's output
    let (status, case) = h.get("/v1/cases/330122260325000007").await;
    assert_eq!(status, 200, "{case}");
    // a Shandong result XML from district-a: supervision gets it back as that XML
    let (status, body) = json(
        h.raw(
            &url,
            Some("district-a"),
            Some("application/xml"),
            SD_RESULT.as_bytes().to_vec(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_until(10, "supervision receives the result", || {
        !h.supervision.accepted().is_empty()
    })
    .await;
    let arrival = h.supervision.accepted()[0].clone();
    let ct = arrival
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert_eq!(ct, "application/xml; charset=UTF-8");
    let text = String::from_utf8(arrival.raw.clone()).unwrap();
    assert!(text.contains("<DONERESULT>0</DONERESULT>"), "{text}");
    assert!(text.contains("<ISFEE>1</ISFEE><FEE>80.5</FEE>"), "{text}");
    assert!(
        text.contains("<STDVER>2</STDVER>"),
        "render constant: {text}"
    );
    // decoding what supervision received gives what district-a sent
    let sd = MappingSet::new(vec![std::sync::Arc::new(
        Mapping::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/sd/result.toml"),
            &Disk,
        )
        .unwrap(),
    )]);
    let limits = Limits::default();
    let sent = sd
        .decode(SD_RESULT.as_bytes(), None, None, &limits)
        .unwrap();
    let got = sd.decode(&arrival.raw, Some(&ct), None, &limits).unwrap();
    assert_eq!(got[0].result, sent[0].result);
    // the city platform (no mappings) gets canonical JSON of the same record
    wait_until(10, "the city receives the result", || {
        h.city.accepted().iter().any(|a| a.kind == "result")
    })
    .await;
    let city = h
        .city
        .accepted()
        .into_iter()
        .find(|a| a.kind == "result")
        .unwrap();
    let canonical: Value = serde_json::from_slice(&city.raw).unwrap();
    assert_eq!(
        canonical["fee"],
        serde_json::json!({"charged": true, "amount": 80.5})
    );
    assert_eq!(canonical["certificate"]["valid_to"], "2076-04-06");
    assert_eq!(canonical["source"], "district-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_record_refuses_the_body_unless_partial() {
    let h = Harness::with_config(DEFAULT_ROUTES, with_mappings).await;
    let body = r#"[{"ProjectNo":"350205260401000300","TaskCode":"T1","RegionCode":"350205"},
        {"ProjectNo":"350205260401000301","TaskCode":"T1","RegionCode":"350205",
         "ApplyerPageType":"111","ApplyerPageCode":"350205195912280258"}]"#;
    let (status, resp) = json(
        h.raw(
            format!("{}/v1/records", h.url),
            Some("district-a"),
            Some("application/json"),
            body,
        )
        .await,
    )
    .await;
    assert_eq!(status, 422, "{resp}");
    let d = &resp["error"]["details"][0];
    assert_eq!(d["record"], 1);
    assert_eq!(d["field"], "applicant.id_no");
    assert_eq!(d["source_path"], "ApplyerPageCode");
    assert_eq!(d["rule"], "id_no");
    assert!(
        !resp.to_string().contains("350205195912280258"),
        "masked: {resp}"
    );
    let (status, _) = h.get("/v1/cases/350205260401000300").await;
    assert_eq!(status, 404, "nothing of the body was stored");

    let (status, resp) = json(
        h.raw(
            format!("{}/v1/records?partial=true", h.url),
            Some("district-a"),
            Some("application/json"),
            body,
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["records"].as_array().unwrap().len(), 1);
    assert_eq!(resp["records"][0]["index"], 0);
    assert_eq!(resp["rejected"][0]["record"], 1);
    assert_eq!(resp["rejected"][0]["rule"], "id_no");
    let (status, _) = h.get("/v1/cases/350205260401000300").await;
    assert_eq!(status, 200, "the valid record was stored");
    let (status, _) = h.get("/v1/cases/350205260401000301").await;
    assert_eq!(status, 404, "the invalid one was not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_400_or_413_with_a_reason() {
    let h = Harness::with_config(DEFAULT_ROUTES, with_mappings).await;
    let url = format!("{}/v1/records", h.url);
    let many: String = format!(
        "<RECORDS>{}</RECORDS>",
        "<RECORD><PROJID>330122260324000001</PROJID></RECORD>".repeat(101)
    );
    // (what, node, content type, body, status, error code)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("doctype", "district-b", "application/xml",
         br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aa">]><RECORDS/>"#.to_vec(), 400, "doctype"),
        ("entity", "district-b", "application/xml",
         b"<RECORDS><RECORD><PROJID>&a;</PROJID></RECORD></RECORDS>".to_vec(), 400, "entity"),
        ("deep", "district-b", "application/xml",
         format!("<RECORDS>{}{}</RECORDS>", "<a>".repeat(100), "</a>".repeat(100)).into_bytes(), 400, "too_deep"),
        ("deep json", "district-a", "application/json",
         format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes(), 400, "too_deep"),
        ("truncated", "district-b", "application/xml",
         b"<RECORDS><RECORD><PROJID>3301".to_vec(), 400, "syntax"),
        ("bad gbk", "district-b", "application/xml",
         b"<?xml version=\"1.0\" encoding=\"gbk\"?><RECORDS><RECORD><PROJID>\xff\xff</PROJID></RECORD></RECORDS>".to_vec(), 400, "encoding"),
        ("huge number", "district-a", "application/json",
         br#"{"ProjectNo":"1","TaskCode":"T","DataVer":1e999999}"#.to_vec(), 400, "syntax"),
        ("too many records", "district-b", "application/xml", many.into_bytes(), 413, "too_many_records"),
        ("plain text", "district-b", "text/plain", b"hello".to_vec(), 415, "unsupported_media_type"),
        ("no mapping for it", "district-b", "application/json", br#"{"a":1}"#.to_vec(), 400, "no_mapping"),
    ];
    for (name, node, ct, body, want_status, want_code) in cases {
        let (status, resp) = json(h.raw(&url, Some(node), Some(ct), body).await).await;
        assert_eq!(status, want_status, "{name}: {resp}");
        assert_eq!(resp["error"]["code"], want_code, "{name}: {resp}");
        assert!(
            resp["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}
