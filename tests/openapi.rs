//! `/openapi.json` against independent tools (openapi-spec-validator and jsonschema,
//! from PyPI, installed by scripts/test.sh): the document is valid OpenAPI 3.1, and
//! the answers of every endpoint it describes, each status this test provokes,
//! validate against the schemas it gives for them.

mod common;

use std::process::Command;

use common::*;
use hallgate::receiver::Script;
use serde_json::{Value, json};

const TO_CITY: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

fn operators(t: String) -> String {
    t.replace(
        "level = \"department\"\ndestination",
        "level = \"department\"\nroles = [\"operator\", \"auditor\"]\ndestination",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_describes_the_answers() {
    let h = Harness::with_config(TO_CITY, operators).await;
    h.city.set_script(Script {
        status: 422,
        ..Script::default()
    });
    let mut answers: Vec<Value> = Vec::new();
    let call = |method: &'static str, path: String, node: &'static str, body: Option<Value>| {
        let url = format!("{}{path}", h.url);
        let req = match method {
            "get" => h.client.get(url),
            _ => h.client.post(url),
        };
        let req = req.header("x-hallgate-node", node);
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(b.to_string()),
            None => req,
        };
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value =
                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
            (status, body)
        }
    };
    let mut keep = |template: &str, method: &str, status: u16, body: Value| {
        answers.push(json!({"path": template, "method": method, "status": status, "body": body}));
    };

    let case = "350205261204000701";
    let (s, b) = call(
        "post",
        "/v1/records".into(),
        "district-a",
        Some(application(case, "350205")),
    )
    .await;
    assert_eq!(s, 202);
    let message = b["message_id"].as_str().unwrap().to_string();
    keep("/v1/records", "post", s, b);
    let mut bad = application("350205261204000702", "350205");
    bad["applicant"]["id_no"] = json!("350205195912280250");
    let (s, b) = call("post", "/v1/records".into(), "district-a", Some(bad)).await;
    assert_eq!(s, 422);
    keep("/v1/records", "post", s, b);
    let (s, b) = call(
        "post",
        "/v1/records/result".into(),
        "district-a",
        Some(application(case, "350205")),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    keep("/v1/records/{kind}", "post", s, b);

    wait_until(20, "a dead letter", || {
        h.count("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 1
    })
    .await;
    let (s, b) = call("get", "/v1/deliveries".into(), "supervision", None).await;
    let id = b["deliveries"][0]["id"].as_i64().unwrap();
    keep("/v1/deliveries", "get", s, b);
    let (s, b) = call("get", format!("/v1/deliveries/{id}"), "supervision", None).await;
    keep("/v1/deliveries/{id}", "get", s, b);
    let (s, b) = call("get", "/v1/deliveries/999999".into(), "supervision", None).await;
    assert_eq!(s, 404);
    keep("/v1/deliveries/{id}", "get", s, b);
    // From here the city takes them: a retried delivery is pending, then delivered,
    // never dead again, so a second retry of it is a conflict.
    h.city.set_script(Script::default());
    let (s, b) = call(
        "post",
        "/v1/deliveries/retry".into(),
        "supervision",
        Some(json!({"destination": "city", "state": "dead"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    keep("/v1/deliveries/retry", "post", s, b);
    let (s, b) = call(
        "post",
        "/v1/deliveries/retry".into(),
        "district-a",
        Some(json!({"destination": "city"})),
    )
    .await;
    assert_eq!(s, 403);
    keep("/v1/deliveries/retry", "post", s, b);
    let (s, b) = call(
        "post",
        format!("/v1/deliveries/{id}/retry"),
        "supervision",
        None,
    )
    .await;
    assert_eq!(s, 409, "{b}");
    keep("/v1/deliveries/{id}/retry", "post", s, b);
    let (s, b) = call("get", "/v1/destinations".into(), "supervision", None).await;
    keep("/v1/destinations", "get", s, b);
    let (s, b) = call(
        "post",
        "/v1/destinations/province/pause".into(),
        "supervision",
        None,
    )
    .await;
    keep("/v1/destinations/{id}/pause", "post", s, b);
    let (s, b) = call(
        "post",
        "/v1/destinations/province/resume".into(),
        "supervision",
        None,
    )
    .await;
    keep("/v1/destinations/{id}/resume", "post", s, b);
    let (s, b) = call(
        "post",
        "/v1/destinations/nowhere/pause".into(),
        "supervision",
        None,
    )
    .await;
    assert_eq!(s, 404);
    keep("/v1/destinations/{id}/pause", "post", s, b);
    let (s, b) = call("get", format!("/v1/cases/{case}"), "district-a", None).await;
    assert_eq!(s, 200, "{b}");
    keep("/v1/cases/{case_no}", "get", s, b);
    let (s, b) = call("get", format!("/v1/messages/{message}"), "district-a", None).await;
    assert_eq!(s, 200, "{b}");
    keep("/v1/messages/{id}", "get", s, b);
    let (s, b) = call("get", "/v1/audit?limit=5".into(), "supervision", None).await;
    assert_eq!(s, 200, "{b}");
    keep("/v1/audit", "get", s, b);
    let (s, b) = call(
        "get",
        format!("/v1/cases/{case}/timeline"),
        "supervision",
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    keep("/v1/cases/{case_no}/timeline", "get", s, b);
    let (s, b) = call("get", "/v1/sync".into(), "supervision", None).await;
    keep("/v1/sync", "get", s, b);
    let (s, b) = call("get", "/readyz".into(), "supervision", None).await;
    keep("/readyz", "get", s, b);

    let (s, spec) = h.get("/openapi.json").await;
    assert_eq!(s, 200);
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    for path in [
        "/v1/records",
        "/v1/deliveries/retry",
        "/v1/destinations/{id}/pause",
        "/metrics",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is described");
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    assert!(spec["components"]["securitySchemes"]["mtls"].is_object());
    let file = h.dir.path().join("openapi.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let check = |answers: &[Value]| {
        let pydeps = std::env::var("HALLGATE_PYDEPS")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/pydeps").into());
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/openapi_check.py"
        ))
        .arg(&file)
        .env("PYTHONPATH", pydeps);
        run_with_stdin(cmd, Value::Array(answers.to_vec()).to_string().as_bytes())
    };
    let out = check(&answers);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: an answer of the wrong shape is caught.
    let wrong = [
        json!({"path": "/v1/deliveries", "method": "get", "status": 200,
                        "body": {"deliveries": "not a list", "next_after": null}}),
    ];
    let out = check(&wrong);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("not of type"));
    assert_eq!(answers.len(), 19);
}
