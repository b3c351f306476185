//! The HTTP face of the gateway (axum): record intake, health, metrics, and the
//! operator's queries over messages, cases and deliveries.
//!
//! Intake runs the flow of DESIGN.md section 1 in order — limits, sender, decode,
//! validate, authorise, route — and answers `202 Accepted` only after the store has
//! committed. Every refusal is a JSON error naming the record, field and rule.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::audit::{Event, EventKind, sha256_hex};
use crate::auth;
use crate::codec::{self, Format};
use crate::config::Config;
use crate::delivery::Wake;
use crate::record::{FieldError, Kind, Record, mask_personal};
use crate::route::Router as RecordRouter;
use crate::store::{
    AcceptOutcome, DeliveryFilter, DeliveryState, NewMessage, NewRecord, Store, StoreError, now_ms,
};

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub config: Arc<Config>,
    pub gateway_keys: Arc<crate::auth::outbound::GatewayKeys>,
    pub limits: crate::limits::SenderLimits,
    pub tokens: auth::token::Verifier,
    pub store: Arc<dyn Store>,
    pub router: RecordRouter,
    pub wake: Wake,
    pub in_flight: Semaphore,
    /// Each node's mappings (nodes without any send canonical JSON).
    pub mappings: Arc<std::collections::BTreeMap<String, crate::mapping::MappingSet>>,
    /// The item catalogue as last pulled (kept in the store, cached here).
    pub catalogue: crate::sync::Catalogue,
}

/// An error answer: `{"error": {"code", "message", "details": [...]}}`.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Vec<FieldError>) -> ApiError {
        self.details = details;
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such item")
            }
            StoreError::NotDead(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_dead", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "store failure");
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store could not commit; send again with the same Idempotency-Key (a repeat is recognised)",
                );
                err.retry_after = Some(1);
                err
            }
        }
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> ApiError {
        match e {
            crate::audit::AuditError::Store(s) => s.into(),
            other => {
                tracing::error!(error = %other, "audit failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "audit_error",
                    other.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// The router with every endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/records", post(post_records_any))
        .route("/v1/records/{kind}", post(post_records_kind))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/.well-known/jwks.json",
            get(
                |State(state): State<Arc<AppState>>| async move { Json(state.gateway_keys.jwks()) },
            ),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/messages/{id}", get(get_message))
        .route("/v1/cases/{case_no}", get(get_case))
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/deliveries/{id}/retry", post(retry_delivery))
        .route("/v1/audit", get(audit_query))
        .route("/v1/cases/{case_no}/timeline", get(case_timeline))
        .route("/v1/sync", get(sync_status))
        .with_state(state)
}

/// `?partial=true`: store the valid records of a body and report the rest, instead
/// of refusing the whole body.
#[derive(Debug, Default, serde::Deserialize)]
struct IntakeQuery {
    #[serde(default)]
    partial: bool,
}

/// The TLS client certificate of the connection, when the gateway serves HTTPS and
/// the client presented one.
type Peer = Option<axum::Extension<Option<crate::auth::tls::PeerCert>>>;

fn peer_cert(p: &Peer) -> Option<&crate::auth::tls::PeerCert> {
    p.as_ref().and_then(|e| e.0.as_ref())
}

async fn post_records_any(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Query(q): Query<IntakeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    intake(&state, None, q.partial, &headers, peer_cert(&peer), body).await
}

async fn post_records_kind(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Path(kind): Path<String>,
    Query(q): Query<IntakeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = Kind::parse(&kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_kind",
            "record kinds are application, material, process and result",
        )
    })?;
    intake(
        &state,
        Some(kind),
        q.partial,
        &headers,
        peer_cert(&peer),
        body,
    )
    .await
}

async fn intake(
    state: &AppState,
    kind: Option<Kind>,
    partial: bool,
    headers: &HeaderMap,
    peer: Option<&crate::auth::tls::PeerCert>,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Ok(_permit) = state.in_flight.try_acquire() else {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in progress; send again shortly",
        );
        e.retry_after = Some(1);
        return Err(e);
    };
    let (node, token) = match auth::identify(&state.config, &state.tokens, headers, peer).await {
        Ok(who) => (who.node, who.token),
        Err(e) => {
            let mut ev = Event::new(now_ms(), EventKind::TokenRefused);
            ev.detail = json!({
                "status": 401,
                "code": "unauthenticated",
                "message": e.to_string(),
            });
            if let Err(err) = state.store.audit(ev).await {
                tracing::error!(error = %err, "could not audit a refused request");
            }
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                e.to_string(),
            ));
        }
    };
    if let Err(wait) = state.limits.check(&node) {
        metrics::counter!("hallgate_records_rejected_total", "node" => node.clone(), "reason" => "rate_limited")
            .increment(1);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("node `{node}` is over its rate; send again in {wait} s"),
        );
        e.retry_after = Some(wait.max(1));
        return Err(e);
    }
    let received_at = now_ms();
    let limits = &state.config.limits;
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
            if !state.mappings.contains_key(&node) {
                // Refuse an unknown content type before reading the body.
                Format::from_content_type(content_type.as_deref()).map_err(|e| {
                    ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        e.to_string(),
                    )
                })?;
            }
            let bytes = axum::body::to_bytes(body, limits.max_body_bytes)
                .await
                .map_err(|_| too_large(limits.max_body_bytes))?;
            let admitted = admit(state, &node, kind, &bytes, content_type.as_deref(), Admission::Body)?;
            let Admitted { records, new_records, errors, rejected: rejected_records } = admitted;
            if !errors.is_empty() && (!partial || records.is_empty()) {
                return Err(ApiError::new(
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
            match state.store.accept(msg).await? {
            AcceptOutcome::Accepted(resp) => {
                for r in resp.records.iter().filter(|r| r.status == "accepted") {
                    for d in &r.destinations {
                        state.wake.wake(d);
                    }
                }
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
                if let Err(err) = state.store.audit(ev).await {
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
            AcceptOutcome::TokenReplayed => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_replayed",
                auth::token::TokenError::Replayed.to_string(),
            )),
            AcceptOutcome::Stale(stale) => Err(ApiError::new(
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
            if let Err(err) = state.store.audit(ev).await {
                tracing::error!(error = %err, "could not audit a rejection");
            }
        }
    }
    result
}

/// How [`admit`] treats a record it cannot authorise or route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A pushed body: the whole request is refused (403, 422 `no_route`), so the
    /// sender learns at once.
    Body,
    /// A pulled page: the record is left out with its error, and the rest goes on.
    Page,
}

/// The records of one body, decoded with the sender's mappings, validated, checked
/// against the item catalogue, authorised and routed.
pub struct Admitted {
    /// The valid records…
    pub records: Vec<Record>,
    /// …as the store takes them.
    pub new_records: Vec<NewRecord>,
    /// What is wrong with the records that were left out.
    pub errors: Vec<FieldError>,
    /// Indexes of the records left out.
    pub rejected: std::collections::BTreeSet<usize>,
}

/// Run a body through decode, validate, catalogue, authorise and route (DESIGN.md
/// section 1, steps 3 to 6) for `node`. Pushed bodies and pulled pages both come
/// through here. Counts what it sees in the metrics.
pub fn admit(
    state: &AppState,
    node: &str,
    kind: Option<Kind>,
    bytes: &[u8],
    content_type: Option<&str>,
    admission: Admission,
) -> Result<Admitted, ApiError> {
    let limits = &state.config.limits;
    let mut records = Vec::new();
    // Place of each record in the body (a record's index in answers).
    let mut indices = Vec::new();
    let mut errors = Vec::new();
    match state.mappings.get(node) {
        Some(set) => {
            let checked = match crate::mapping::decode_and_check(
                set,
                bytes,
                content_type,
                kind,
                &state.config.mapping_limits(),
            ) {
                Ok(c) => c,
                // An empty page: nothing new at the source.
                Err(crate::mapping::DecodeError::NoRecords(_)) if admission == Admission::Page => {
                    Vec::new()
                }
                Err(e) => return Err(decode_error(e)),
            };
            for c in checked {
                match c.result {
                    Ok(mut r) => {
                        r.set_source(node);
                        records.push(r);
                        indices.push(c.index);
                    }
                    Err(mut e) => errors.append(&mut e),
                }
            }
        }
        None => {
            let format = Format::from_content_type(content_type).map_err(|e| {
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    e.to_string(),
                )
            })?;
            let values = match codec::decode_canonical(bytes, format, limits.max_records_per_body) {
                Ok(v) => v,
                // An empty page: nothing new at the source.
                Err(codec::CodecError::Empty) if admission == Admission::Page => Vec::new(),
                Err(e @ codec::CodecError::TooManyRecords { .. }) => {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_many_records",
                        e.to_string(),
                    ));
                }
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_body",
                        e.to_string(),
                    ));
                }
            };
            for (i, v) in values.into_iter().enumerate() {
                match Record::from_value(i, v, kind) {
                    Ok(mut r) => {
                        r.set_source(node);
                        records.push(r);
                        indices.push(i);
                    }
                    Err(mut e) => errors.append(&mut e),
                }
            }
        }
    }
    let policy = state
        .config
        .nodes
        .get(node)
        .map(|n| n.get_ref().catalogue)
        .unwrap_or_default();
    let mut kept = Vec::with_capacity(records.len());
    let mut new_records = Vec::with_capacity(records.len());
    for (r, i) in records.into_iter().zip(indices) {
        let mut flags = Vec::new();
        if let Some(problem) = state.catalogue.check(policy, &r) {
            match policy {
                crate::config::CataloguePolicy::Refuse => {
                    errors.push(problem.field_error(i));
                    continue;
                }
                _ => flags.push(problem.code().to_string()),
            }
        }
        if let Err(f) = auth::authorize(&state.config, node, i, &r) {
            let e = FieldError {
                record: f.index,
                field: f.field.to_string(),
                source_path: None,
                rule: "not_allowed".into(),
                message: f.to_string(),
            };
            if admission == Admission::Body {
                return Err(
                    ApiError::new(StatusCode::FORBIDDEN, "forbidden", f.to_string())
                        .with_details(vec![e]),
                );
            }
            errors.push(e);
            continue;
        }
        let destinations = match state.router.route(node, &r) {
            Ok(d) => d,
            Err(e) => {
                let fe = FieldError {
                    record: i,
                    field: "kind".into(),
                    source_path: None,
                    rule: "no_route".into(),
                    message: e.to_string(),
                };
                if admission == Admission::Body {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "no_route",
                        e.to_string(),
                    )
                    .with_details(vec![fe]));
                }
                errors.push(fe);
                continue;
            }
        };
        let canonical = r.to_json();
        new_records.push(NewRecord {
            index: i,
            kind: r.kind,
            case_no: r.case_no.clone(),
            identity: r.identity(),
            version: r.version(),
            step_no: r.step_no(),
            label: r.label(),
            sha256: sha256_hex(canonical.as_bytes()),
            canonical,
            destinations,
            flags,
        });
        kept.push(r);
    }
    let rejected: std::collections::BTreeSet<usize> = errors.iter().map(|e| e.record).collect();
    metrics::counter!("hallgate_records_received_total", "node" => node.to_string())
        .increment((kept.len() + rejected.len()) as u64);
    Ok(Admitted {
        records: kept,
        new_records,
        errors,
        rejected,
    })
}

/// A body no mapping could read: 415 for a content type, 413 over a limit, else 400,
/// with the stable code and the reason (and byte offset) in the message.
fn decode_error(e: crate::mapping::DecodeError) -> ApiError {
    let status = match &e {
        crate::mapping::DecodeError::UnsupportedContentType(_) => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        e if e.is_too_large() => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(
        status,
        crate::mapping::examples::error_code(&e),
        crate::record::mask_text(&e.to_string()),
    )
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("body is larger than the limit of {limit} bytes"),
    )
}

/// The sender's `Idempotency-Key`, or, when every record carries a record id and a
/// version, a key derived from them (so a blind resend gets the first answer).
fn idempotency_key(headers: &HeaderMap, records: &[Record]) -> Result<Option<String>, ApiError> {
    if let Some(v) = headers.get("idempotency-key") {
        let key = v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 200)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_idempotency_key",
                    "Idempotency-Key must be 1 to 200 visible ASCII characters",
                )
            })?;
        return Ok(Some(format!("h:{key}")));
    }
    let mut parts = Vec::with_capacity(records.len());
    for r in records {
        match (r.str_field("record_id"), r.version()) {
            (Some(id), Some(v)) => parts.push(format!("{}\u{1f}{id}\u{1f}{v}", r.kind)),
            _ => return Ok(None),
        }
    }
    Ok(Some(format!(
        "r:{}",
        sha256_hex(parts.join("\u{1e}").as_bytes())
    )))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": e.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    if let Ok(depths) = state.store.queue_depths().await {
        for (dest, _) in state.config.destinations() {
            let d = depths.iter().find(|d| d.destination == dest);
            metrics::gauge!("hallgate_queue_depth", "destination" => dest.to_string())
                .set(d.map_or(0.0, |d| d.pending as f64));
            metrics::gauge!("hallgate_dead_letters", "destination" => dest.to_string())
                .set(d.map_or(0.0, |d| d.dead as f64));
        }
    }
    let text = crate::observe::prometheus()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn masked<T: Serialize>(v: &T) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    mask_personal(&mut v);
    v
}

/// Who reads the operator endpoints: every node's data (operators, auditors, and
/// anyone when `trust_node_header` marks a development set-up) or one node's own.
enum Reader {
    All,
    Node(String),
}

async fn reader(state: &AppState, headers: &HeaderMap, peer: &Peer) -> Result<Reader, ApiError> {
    match auth::caller(&state.config, &state.tokens, headers, peer_cert(peer)).await {
        Ok(who) if state.config.reads_everything(&who.node) => Ok(Reader::All),
        Ok(who) => Ok(Reader::Node(who.node)),
        Err(auth::AuthError::NoCredentials | auth::AuthError::MissingNode)
            if state.config.gateway.trust_node_header =>
        {
            Ok(Reader::All)
        }
        Err(e) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            e.to_string(),
        )),
    }
}

/// Refuse a read and keep the refusal as evidence.
async fn refuse_read(state: &AppState, node: &str, what: String) -> ApiError {
    let mut ev = Event::new(now_ms(), EventKind::AuthorizationRefused);
    ev.node = Some(node.to_string());
    ev.detail = json!({ "status": 403, "code": "forbidden", "message": what });
    if let Err(err) = state.store.audit(ev).await {
        tracing::error!(error = %err, "could not audit a refused read");
    }
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", what)
}

async fn get_message(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = reader(&state, &headers, &peer).await?;
    match state.store.message(&id).await? {
        Some(m) => {
            if let Reader::Node(n) = &who
                && *n != m.source
            {
                let what = format!("node `{n}` may read only the messages it sent");
                return Err(refuse_read(&state, n, what).await);
            }
            Ok(Json(masked(&m)))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no message with that id",
        )),
    }
}

async fn get_case(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(case_no): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = reader(&state, &headers, &peer).await?;
    let records = state.store.case(&case_no).await?;
    if records.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no records for that case",
        ));
    }
    // A node reads a case it sent records of or receives records of.
    if let Reader::Node(n) = &who
        && !records
            .iter()
            .any(|r| r.source == *n || r.deliveries.iter().any(|d| d.destination == *n))
    {
        let what = format!("node `{n}` neither sent nor receives records of this case");
        return Err(refuse_read(&state, n, what).await);
    }
    Ok(Json(
        json!({ "case_no": case_no, "records": masked(&records) }),
    ))
}

#[derive(Debug, Deserialize)]
struct DeliveryQuery {
    state: Option<String>,
    destination: Option<String>,
    case_no: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /v1/sync`: every pull source's cursor, lag, last success and error, and the
/// item catalogue's size (operators and auditors only).
async fn sync_status(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    if let Reader::Node(n) = reader(&state, &headers, &peer).await? {
        let what = format!("node `{n}` may not read the sync status (operators and auditors only)");
        return Err(refuse_read(&state, &n, what).await);
    }
    Ok(Json(
        crate::sync::status(&state.config, &*state.store).await?,
    ))
}

async fn list_deliveries(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Query(mut q): Query<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    // A node lists only the deliveries made to it.
    if let Reader::Node(n) = reader(&state, &headers, &peer).await? {
        if q.destination.as_ref().is_some_and(|d| *d != n) {
            let what = format!("node `{n}` may list only the deliveries made to it");
            return Err(refuse_read(&state, &n, what).await);
        }
        q.destination = Some(n);
    }
    let st = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "state must be pending, delivered or dead",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let items = state
        .store
        .deliveries(DeliveryFilter {
            state: st,
            destination: q.destination,
            case_no: q.case_no,
            after_id: q.after,
            limit,
        })
        .await?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(Json(json!({ "deliveries": items, "next_after": next })))
}

async fn retry_delivery(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    if let Reader::Node(n) = reader(&state, &headers, &peer).await? {
        let what = format!("node `{n}` is not an operator: only operators put dead letters back");
        return Err(refuse_read(&state, &n, what).await);
    }
    let view = state.store.retry_dead(id, now_ms()).await?;
    state.wake.wake(&view.destination);
    Ok(Json(json!({ "delivery": view })))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    case_no: Option<String>,
    node: Option<String>,
    kind: Option<String>,
    event: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

/// Parse `2026-04-01`, `2026-04-01T09:00:00+08:00` or `2026-04-01 09:00:00` (+08:00)
/// to milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let tz = jiff::tz::TimeZone::fixed(jiff::tz::offset(8));
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return dt.to_zoned(tz).ok().map(|z| z.timestamp().as_millisecond());
    }
    s.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(tz).ok())
        .map(|z| z.timestamp().as_millisecond())
}

/// The node asking for audit data: auditors see everything, others only events
/// that name them.
async fn audit_scope(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<&crate::auth::tls::PeerCert>,
    asked: Option<String>,
) -> Result<Option<String>, ApiError> {
    let caller = auth::caller(&state.config, &state.tokens, headers, peer)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()))?
        .node;
    if state.config.is_auditor(&caller) {
        return Ok(asked);
    }
    match asked {
        Some(n) if n != caller => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("node `{caller}` is not an auditor and may query only its own events"),
        )),
        _ => Ok(Some(caller)),
    }
}

async fn audit_query(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let node = audit_scope(&state, &headers, peer_cert(&peer), q.node).await?;
    let time = |v: &Option<String>, name: &str| -> Result<Option<i64>, ApiError> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => parse_time(t).map(Some).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    format!("{name}: `{t}` is not a date or RFC 3339 time"),
                )
            }),
        }
    };
    if let Some(e) = q.event.as_deref()
        && crate::audit::EventKind::parse(e).is_none()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("unknown event `{e}`"),
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .store
        .audit_events(crate::store::AuditFilter {
            after_seq: q.after,
            case_no: q.case_no,
            node,
            kind: q.kind,
            event: q.event,
            from_ms: time(&q.from, "from")?,
            to_ms: time(&q.to, "to")?,
            limit,
            ..Default::default()
        })
        .await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    let events: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.insert("at".into(), Value::String(crate::store::rfc3339(r.at_ms)));
            }
            mask_personal(&mut v);
            v
        })
        .collect();
    Ok(Json(json!({ "events": events, "next_after": next })))
}

async fn case_timeline(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Path(case_no): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = audit_scope(&state, &headers, peer_cert(&peer), None).await?;
    let rows = crate::audit::timeline::case_rows(state.store.as_ref(), &case_no, node).await?;
    if rows.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no events for that case",
        ));
    }
    let config = state.config.clone();
    let name = move |id: &str| config.node(id).map(|n| n.name.clone()).unwrap_or_default();
    let steps = crate::audit::timeline::build(&rows, &name);
    let mut v = json!({
        "case_no": case_no,
        "text": crate::audit::timeline::render(&case_no, &steps),
        "steps": steps,
    });
    mask_personal(&mut v);
    Ok(Json(v))
}
