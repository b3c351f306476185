//! The one JSON error shape: a [`Refusal`] answers as
//! `{"error": {"code", "message", "details": [...]}}` with its status, and
//! `Retry-After` when it says when to come back.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::audit::AuditError;
use crate::intake::Refusal;

impl From<AuditError> for Refusal {
    fn from(e: AuditError) -> Refusal {
        match e {
            AuditError::Store(s) => s.into(),
            other => {
                tracing::error!(error = %other, "audit failure");
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "audit_error",
                    other.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
