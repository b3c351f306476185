//! The HTTP push source: `POST /v1/records` (api/records.rs routes it here). It runs
//! the front of DESIGN.md section 1 in order — the in-flight budget, the sender
//! (token, certificate), its rate, the body's size and type — then hands the body to
//! [`Intake::admit`] and [`Intake::commit`], and answers `202 Accepted` only after
//! the store has committed. Every refusal is audited and answered as a [`Refusal`]
//! naming the record, field and rule.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::auth::{self, token::Verifier};
use crate::codec::Format;
use crate::event::{Event, EventKind};
use crate::hash::sha256_hex;
use crate::intake::{Admission, Admitted, Intake, Refusal, too_large};
use crate::limits::SenderLimits;
use crate::record::{FieldError, Kind, Record};
use crate::store::{AcceptOutcome, NewMessage};
use crate::time::now_ms;
use crate::tls::PeerCert;

/// The push source: intake, the token verifier, the senders' rates, and the budget
/// of requests decoded or committed at once.
pub struct HttpSource {
    pub intake: Arc<Intake>,
    pub tokens: Arc<Verifier>,
    pub limits: SenderLimits,
    pub in_flight: Semaphore,
}

/// One pushed request.
pub struct Push<'a> {
    /// From `/v1/records/{kind}`: only mappings of this kind are tried.
    pub kind: Option<Kind>,
    /// `?partial=true`: store the valid records and report the rest.
    pub partial: bool,
    pub headers: &'a HeaderMap,
    /// The TLS client certificate of the connection, if any.
    pub peer: Option<&'a PeerCert>,
    pub body: Body,
}

impl HttpSource {
    /// Take one pushed body: the sender, its limits, the body, then
    /// [`Intake::admit`] and [`Intake::commit`]; `202` only after the commit.
    pub async fn receive(&self, push: Push<'_>) -> Result<Response, Refusal> {
        let Push {
            kind,
            partial,
            headers,
            peer,
            body,
        } = push;
        let state = self;
        let started = Instant::now();
        let Ok(_permit) = state.in_flight.try_acquire() else {
            let mut e = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in progress; send again shortly",
            );
            e.retry_after = Some(1);
            return Err(e);
        };
        let (node, token) =
            match auth::identify(&state.intake.config, &state.tokens, headers, peer).await {
                Ok(who) => (who.node, who.token),
                Err(e) => {
                    let mut ev = Event::new(now_ms(), EventKind::TokenRefused);
                    ev.detail = json!({
                        "status": 401,
                        "code": "unauthenticated",
                        "message": e.to_string(),
                    });
                    if let Err(err) = state.intake.store.audit(ev).await {
                        tracing::error!(error = %err, "could not audit a refused request");
                    }
                    return Err(Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthenticated",
                        e.to_string(),
                    ));
                }
            };
        if let Err(wait) = state.limits.check(&node) {
            metrics::counter!("hallgate_records_rejected_total", "node" => node.clone(), "reason" => "rate_limited")
            .increment(1);
            let mut e = Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("node `{node}` is over its rate; send again in {wait} s"),
            );
            e.retry_after = Some(wait.max(1));
            return Err(e);
        }
        let received_at = now_ms();
        let limits = &state.intake.config.limits;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let result =
        async {
            if let Some(len) = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                && len > limits.max_body_bytes
            {
                return Err(too_large(limits.max_body_bytes));
            }
            if !state.intake.mappings.contains_key(&node) {
                // Refuse an unknown content type before reading the body.
                Format::from_content_type(content_type.as_deref()).map_err(|e| {
                    Refusal::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        e.to_string(),
                    )
                })?;
            }
            let bytes = axum::body::to_bytes(body, limits.max_body_bytes)
                .await
                .map_err(|_| too_large(limits.max_body_bytes))?;
            let admitted = state.intake.admit(&node, kind, &bytes, content_type.as_deref(), Admission::Body)?;
            let Admitted { records, new_records, errors, rejected: rejected_records } = admitted;
            if !errors.is_empty() && (!partial || records.is_empty()) {
                return Err(Refusal::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_records",
                    format!(
                        "{} problem(s) in {} record(s); nothing was stored",
                        errors.len(),
                        rejected_records.len()
                    ),
                )
                .with_details(errors));
            }
            let idempotency_key = idempotency_key(headers, &records)?;
            let msg = NewMessage {
                token: token.clone(),
                id: uuid::Uuid::now_v7().to_string(),
                source: node.clone(),
                received_at_ms: received_at,
                content_type: content_type.clone(),
                idempotency_key,
                body_sha256: sha256_hex(&bytes),
                body: bytes,
                records: new_records,
                pull: None,
            };
            let count = msg.records.len() as u64;
            match state.intake.commit(msg).await? {
            AcceptOutcome::Accepted(resp) => {
                metrics::counter!("hallgate_records_accepted_total", "node" => node.clone())
                    .increment(count);
                if errors.is_empty() {
                    return Ok((StatusCode::ACCEPTED, Json(resp)).into_response());
                }
                // ?partial=true: the valid records are stored; say which were not.
                let mut ev = Event::new(received_at, EventKind::Rejected);
                ev.node = Some(node.clone());
                ev.detail = json!({
                    "status": 202,
                    "code": "partial",
                    "reasons": errors,
                    "message": format!("{} record(s) of a partial body were refused", rejected_records.len()),
                });
                if let Err(err) = state.intake.store.audit(ev).await {
                    tracing::error!(error = %err, "could not audit the refused part of a body");
                }
                let mut body = serde_json::to_value(&resp).unwrap_or_else(|_| json!({}));
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("rejected".into(), json!(errors));
                }
                Ok((StatusCode::ACCEPTED, Json(body)).into_response())
            }
            AcceptOutcome::Replayed(resp) => {
                let mut r = (StatusCode::ACCEPTED, Json(resp)).into_response();
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                Ok(r)
            }
            AcceptOutcome::TokenReplayed => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "token_replayed",
                auth::token::TokenError::Replayed.to_string(),
            )),
            AcceptOutcome::Stale(stale) => Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "stale_version",
                "a newer version of these records was already accepted; nothing was stored",
            )
            .with_details(
                stale
                    .iter()
                    .map(|s| FieldError {
                        record: s.index,
                        field: "version".into(),
                        source_path: None,
                        rule: "stale_version".into(),
                        message: format!(
                            "version {} is older than version {} already accepted for this record",
                            s.version, s.accepted_version
                        ),
                    })
                    .collect(),
            )),
        }
        }
        .await;
        metrics::histogram!("hallgate_accept_seconds").record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            metrics::counter!("hallgate_records_rejected_total", "node" => node.clone(), "reason" => e.code)
            .increment(1);
            // Stale versions and replayed tokens were audited by the store, in the
            // transaction that found them.
            if e.status != StatusCode::SERVICE_UNAVAILABLE
                && e.code != "stale_version"
                && e.code != "token_replayed"
            {
                let kind = if e.status == StatusCode::FORBIDDEN {
                    EventKind::AuthorizationRefused
                } else if e.status == StatusCode::UNAUTHORIZED {
                    EventKind::TokenRefused
                } else {
                    EventKind::Rejected
                };
                let mut ev = Event::new(received_at, kind);
                ev.node = Some(node);
                ev.detail = json!({
                    "status": e.status.as_u16(),
                    "code": e.code,
                    "reasons": e.details,
                    "message": e.message,
                });
                if let Err(err) = state.intake.store.audit(ev).await {
                    tracing::error!(error = %err, "could not audit a rejection");
                }
            }
        }
        result
    }
}

/// The sender's `Idempotency-Key`, or, when every record carries a record id and a
/// version, a key derived from them (so a blind resend gets the first answer).
fn idempotency_key(headers: &HeaderMap, records: &[Record]) -> Result<Option<String>, Refusal> {
    if let Some(v) = headers.get("idempotency-key") {
        let key = v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 200)
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_idempotency_key",
                    "Idempotency-Key must be 1 to 200 visible ASCII characters",
                )
            })?;
        return Ok(Some(format!("h:{key}")));
    }
    Ok(crate::intake::derived_key(records))
}
