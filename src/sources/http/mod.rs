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

mod body;

use crate::auth::envelope::Opening;
use crate::auth::refusals::{self, Refusals, Refused};
use crate::auth::{self, token::Verifier};
use crate::codec::Format;
use crate::event::{Event, EventKind};
use crate::hash::sha256_hex;
use crate::intake::{Admission, Admitted, Intake, Refusal, too_large};
use crate::limits::SenderLimits;
use crate::record::{FieldError, Kind, Record};
use crate::store::{AcceptOutcome, NewMessage};
use crate::time::now_ms;
use crate::tls::Peer;

/// The push source: intake, the token verifier, the senders' rates, the refusals
/// before a node is known, and the budgets of requests and body bytes in progress
/// (the gateway's, and each node's share).
pub struct HttpSource {
    pub intake: Arc<Intake>,
    pub tokens: Arc<Verifier>,
    pub limits: SenderLimits,
    pub refusals: Arc<Refusals>,
    in_flight: Semaphore,
    node_slots: std::collections::HashMap<String, Semaphore>,
    body_budget: Arc<Semaphore>,
    /// The nodes that must sign (SM2) or encrypt (SM4) their bodies; a node whose
    /// settings do not load is refused rather than read unchecked.
    openings: std::collections::HashMap<String, Result<Opening, String>>,
}

/// One pushed request.
pub struct Push<'a> {
    /// From `/v1/records/{kind}`: only mappings of this kind are tried.
    pub kind: Option<Kind>,
    /// `?partial=true`: store the valid records and report the rest.
    pub partial: bool,
    pub headers: &'a HeaderMap,
    /// The connection: its address and TLS client certificate.
    pub peer: Option<&'a Peer>,
    pub body: Body,
    /// The request's id (`X-Request-Id`, or one made up by the API).
    pub request_id: Option<String>,
}

impl HttpSource {
    pub fn new(intake: Arc<Intake>, tokens: Arc<Verifier>, refusals: Arc<Refusals>) -> HttpSource {
        let config = intake.config.clone();
        let l = &config.limits;
        let node_slots = config
            .nodes
            .iter()
            .filter_map(|(id, n)| {
                let a = n.get_ref().accept.as_ref()?;
                Some((id.clone(), Semaphore::new(l.node_share(a.max_in_flight))))
            })
            .collect();
        let openings = config
            .nodes
            .iter()
            .filter_map(|(id, n)| {
                let n = n.get_ref();
                match Opening::new(&config, id, n.sm2_sign.as_ref(), n.sm4.as_ref()) {
                    Ok(None) => None,
                    Ok(Some(o)) => Some((id.clone(), Ok(o))),
                    Err(e) => Some((id.clone(), Err(e.to_string()))),
                }
            })
            .collect();
        HttpSource {
            openings,
            limits: SenderLimits::new(&config),
            in_flight: Semaphore::new(l.max_in_flight),
            node_slots,
            body_budget: Arc::new(Semaphore::new(
                l.max_in_flight_body_bytes.min(Semaphore::MAX_PERMITS),
            )),
            intake,
            tokens,
            refusals,
        }
    }

    /// Take one pushed body: the sender, its limits, the body, then
    /// [`Intake::admit`] and [`Intake::commit`]; `202` only after the commit.
    pub async fn receive(&self, push: Push<'_>) -> Result<Response, Refusal> {
        let Push {
            kind,
            partial,
            headers,
            peer,
            body,
            request_id,
        } = push;
        let state = self;
        let started = Instant::now();
        // A peer that spent its budget of refusals is turned away before any work.
        if let Err(wait) = state.refusals.admit(peer) {
            return Err(throttled(&state.refusals, peer, wait).await);
        }
        let Ok(_permit) = state.in_flight.try_acquire() else {
            return Err(overloaded(
                "too many requests in progress; send again shortly",
            ));
        };
        let who = match auth::identify(
            &state.intake.config,
            &state.tokens,
            headers,
            peer.and_then(|p| p.cert.as_ref()),
        )
        .await
        {
            Ok(who) => who,
            Err(e) => return Err(unauthenticated(&state.refusals, peer, &e).await),
        };
        if let Err(e) = auth::claim_once(&*state.intake.store, &who).await {
            return Err(unauthenticated(&state.refusals, peer, &e).await);
        }
        let (node, token) = (who.node, who.token);
        tracing::Span::current().record("node", node.as_str());
        // The node's share of the in-flight budget: one node never holds the others' slots.
        let _node_slot = match state.node_slots.get(&node).map(Semaphore::try_acquire) {
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => {
                metrics::counter!("hallgate_records_rejected_total", "node" => node.clone(), "reason" => "node_busy")
                    .increment(1);
                return Err(overloaded(&format!(
                    "node `{node}` has its share of requests in progress ([limits] max_in_flight_per_node); send again shortly"
                )));
            }
            None => None,
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
            let declared = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared.is_some_and(|len| len > limits.max_body_bytes) {
                return Err(too_large(limits.max_body_bytes));
            }
            let sealed = state.openings.get(&node);
            if !state.intake.mappings.contains_key(&node) && sealed.is_none() {
                // Refuse an unknown content type before reading the body.
                Format::from_content_type(content_type.as_deref()).map_err(|e| {
                    Refusal::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        e.to_string(),
                    )
                })?;
            }
            let read = body::read(body, declared, limits, &state.body_budget).await?;
            let (bytes, content_type) = match sealed {
                None => (read.bytes.clone(), content_type.clone()),
                Some(opening) => open(opening, headers, kind, &read.bytes, content_type.clone())?,
            };
            let admitted = state.intake.admit_async(&node, kind, bytes.clone(), content_type.clone(), Admission::Body).await?;
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
                grants: crate::intake::grants(&state.intake.config, &node),
                request_id: request_id.clone(),
            };
            tracing::Span::current().record("message_id", msg.id.as_str());
            match state.intake.commit(msg).await? {
            AcceptOutcome::Accepted(resp) => {
                // A record already accepted in the same version is a duplicate, not
                // a new acceptance.
                let new = resp.records.iter().filter(|r| r.status == "accepted").count() as u64;
                let dup = resp.records.len() as u64 - new;
                metrics::counter!("hallgate_records_accepted_total", "node" => node.clone())
                    .increment(new);
                crate::observe::minutes::accepted(new);
                metrics::counter!("hallgate_records_duplicate_total", "node" => node.clone())
                    .increment(dup);
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
                metrics::counter!("hallgate_records_duplicate_total", "node" => node.clone())
                    .increment(resp.records.len() as u64);
                let mut r = (StatusCode::ACCEPTED, Json(resp)).into_response();
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                Ok(r)
            }
            AcceptOutcome::NotParty(records) => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "not_a_party",
                "records for cases this node is not a party of; nothing was stored",
            )
            .with_details(
                records
                    .iter()
                    .map(|r| FieldError {
                        record: r.index,
                        field: "case_no".into(),
                        source_path: None,
                        rule: "not_a_party".into(),
                        message: format!(
                            "node `{node}` did not open this case, is not routed its records and is not granted its region or item"
                        ),
                    })
                    .collect(),
            )),
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
                && e.code != "not_a_party"
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
                    "peer": peer.map(|p| p.addr.to_string()),
                    "client_cert": peer.and_then(|p| p.cert.as_ref()).map(|c| c.describe()),
                    "request_id": request_id,
                });
                if let Err(err) = state.intake.store.audit(ev).await {
                    tracing::error!(error = %err, "could not audit a rejection");
                }
            }
        }
        result
    }
}

/// Check a node's SM2 signature and decrypt its SM4 body: the plaintext and its type.
fn open(
    opening: &Result<Opening, String>,
    headers: &HeaderMap,
    kind: Option<Kind>,
    body: &[u8],
    content_type: Option<String>,
) -> Result<(bytes::Bytes, Option<String>), Refusal> {
    let opening = opening.as_ref().map_err(|e| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "guomi_unavailable",
            format!("this node's sm2_sign/sm4 settings cannot be used: {e}"),
        )
    })?;
    let path = kind.map_or_else(|| "/v1/records".to_string(), |k| format!("/v1/records/{k}"));
    match opening.open(headers, &path, body) {
        Ok((plain, decrypted_type)) => Ok((plain, decrypted_type.or(content_type))),
        Err(e) if e.is_signature() => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            e.to_string(),
        )),
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_ciphertext",
            e.to_string(),
        )),
    }
}

/// 503 with Retry-After.
fn overloaded(message: &str) -> Refusal {
    let mut e = Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
    e.retry_after = Some(1);
    e
}

/// 401, counted against the peer's refusal budget and audited (at once when the
/// credentials named a node, else with the other refusals of that peer).
pub async fn unauthenticated(
    refusals: &Refusals,
    peer: Option<&Peer>,
    e: &auth::AuthError,
) -> Refusal {
    metrics::counter!("hallgate_auth_failures_total", "reason" => e.reason()).increment(1);
    let mut r = Refused::of(peer, 401, "unauthenticated", e.to_string());
    r.node = e.named_node().map(str::to_string);
    refusals.refused(r).await;
    Refusal::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
}

/// 429 before authentication: the peer spent its budget of refusals.
pub async fn throttled(refusals: &Refusals, peer: Option<&Peer>, wait: u64) -> Refusal {
    let message = format!(
        "too many refused requests from this address; send again in {wait} s with valid credentials"
    );
    refusals
        .refused(Refused::of(peer, 429, refusals::THROTTLED, message.clone()))
        .await;
    let mut e = Refusal::new(StatusCode::TOO_MANY_REQUESTS, refusals::THROTTLED, message);
    e.retry_after = Some(wait.max(1));
    e
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
