//! The answer tap, for the test suite's schema check: when the environment variable
//! `HALLGATE_ANSWER_LOG` names a folder (scripts/test.sh sets it), every answer is
//! appended there, one JSON line per answer (method, path template, status, content
//! type and body), and `tests/fixtures/openapi_check.py --answers` then validates
//! each one against `/openapi.json`. Unset, as in production, it costs one check of
//! a value read once. Bodies are the masked answers the caller received; bodies over
//! [`MAX_TAPPED`] are noted without their content.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};

/// Largest body written to the tap.
const MAX_TAPPED: usize = 1 << 20;

/// The tap's file, when the tap is on.
fn sink() -> Option<&'static Mutex<std::fs::File>> {
    static SINK: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let dir = std::env::var_os("HALLGATE_ANSWER_LOG")?;
        let path = std::path::Path::new(&dir).join(format!("answers-{}.jsonl", std::process::id()));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    })
    .as_ref()
}

pub async fn tap(req: Request, next: Next) -> Response {
    let Some(file) = sink() else {
        return next.run(req).await;
    };
    let method = req.method().as_str().to_ascii_lowercase();
    // Only answers of a route: an unknown path has no template to check against.
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let response = next.run(req).await;
    let Some(template) = template else {
        return response;
    };
    // A body of unknown or large size is passed on untouched, and only noted.
    if response
        .body()
        .size_hint()
        .upper()
        .is_none_or(|n| n > MAX_TAPPED as u64)
    {
        let status = response.status().as_u16();
        write(
            file,
            &json!({"method": method, "path": template, "status": status, "body_skipped": true}),
        );
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_TAPPED).await {
        Ok(b) => b,
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let line = json!({
        "method": method,
        "path": template,
        "status": parts.status.as_u16(),
        "content_type": content_type,
        "body": body,
    });
    write(file, &line);
    Response::from_parts(parts, Body::from(bytes))
}

fn write(file: &Mutex<std::fs::File>, line: &Value) {
    let mut text = line.to_string();
    text.push('\n');
    if let Ok(mut f) = file.lock() {
        let _ = f.write_all(text.as_bytes());
    }
}
