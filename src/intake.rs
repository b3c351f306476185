//! Intake (layer 4): the one admit-and-store path every source hands its records to
//! (DESIGN.md section 1, steps 3 to 7). A source brings bytes and the node that sent
//! them; [`Intake::admit`] decodes them with the node's mappings (or as canonical
//! JSON), validates, checks the item catalogue, authorises and routes each record;
//! the source then builds the message and [`Intake::commit`] stores it in one
//! transaction and wakes the delivery workers. What a source cannot take is a
//! [`Refusal`], the gateway's one error shape.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::http::StatusCode;

use crate::auth;
use crate::backlog::Backlog;
use crate::codec::{self, Format};
use crate::config::Config;
use crate::delivery::Wake;
use crate::hash::sha256_hex;
use crate::mapping::MappingSet;
use crate::record::{FieldError, Kind, Record, checks};
use crate::route::Router;
use crate::store::{AcceptOutcome, Grants, NewMessage, NewRecord, Store, StoreError};
use crate::sync::Catalogue;

/// What intake needs: the config, the store, the router, each node's mappings, the
/// item catalogue, and the delivery workers' wake-up.
pub struct Intake {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub router: Router,
    /// Each node's mappings (nodes without any send canonical JSON).
    pub mappings: Arc<BTreeMap<String, MappingSet>>,
    /// The item catalogue as last pulled (kept in the store, cached here).
    pub catalogue: Catalogue,
    pub wake: Wake,
    /// Destinations over their `max_backlog` (measured by [`Backlog::watch`]).
    pub backlog: Arc<Backlog>,
    /// Bodies decoded at once on the blocking pool (one per core).
    decoders: tokio::sync::Semaphore,
    /// Nodes whose identifiers have a syntax of their own.
    ids: BTreeMap<String, IdSyntax>,
    /// 电子监察, when enabled: each record's fact, and a new case's first row.
    pub supervision: Option<crate::supervise::AtIntake>,
}

/// A node's own syntax of case numbers and other identifiers (`accept.case_no_pattern`,
/// `accept.id_pattern`), anchored; where absent, [`checks::plain_identifier`].
#[derive(Debug, Default)]
struct IdSyntax {
    case_no: Option<(String, regex::Regex)>,
    other: Option<(String, regex::Regex)>,
}

/// Identifiers checked besides the case number.
const IDENTIFIERS: &[&str] = &["record_id", "material_id", "item_code"];

/// What is wrong with a record's case number or identifiers, if anything.
fn identifier_problem(syntax: Option<&IdSyntax>, r: &Record, index: usize) -> Option<FieldError> {
    let check = |field: &str, value: &str, pattern: Option<&(String, regex::Regex)>| {
        let (ok, shape) = match pattern {
            Some((text, re)) => (re.is_match(value), format!("must match `{text}`")),
            None => (
                checks::plain_identifier(value),
                "is 1 to 64 letters, digits, `-`, `_` or `.`".to_string(),
            ),
        };
        (!ok).then(|| FieldError {
            record: index,
            field: field.to_string(),
            source_path: None,
            rule: if field == "case_no" {
                "case_no"
            } else {
                "identifier"
            }
            .into(),
            message: format!(
                "{field} {shape} (it is {} characters long)",
                value.chars().count()
            ),
        })
    };
    if let Some(e) = check(
        "case_no",
        &r.case_no,
        syntax.and_then(|s| s.case_no.as_ref()),
    ) {
        return Some(e);
    }
    let other = syntax.and_then(|s| s.other.as_ref());
    for field in IDENTIFIERS {
        if let Some(v) = r.str_field(field)
            && let Some(e) = check(field, v, other)
        {
            return Some(e);
        }
    }
    if let Some(crate::record::Val::Arr(items)) = r.fields.get("materials") {
        for (n, m) in items.iter().enumerate() {
            if let Some(v) = m.get("material_id").and_then(crate::record::Val::as_str)
                && let Some(e) = check(&format!("materials[{n}].material_id"), v, other)
            {
                return Some(e);
            }
        }
    }
    None
}

/// Why records were not taken: the one error shape of the gateway. The HTTP API
/// answers with it as `{"error": {"code", "message", "details": [...]}}`
/// (api/error.rs); the pull source records its code and message; `details` name the
/// record, field and rule.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    pub retry_after: Option<u64>,
    /// Close the connection after answering (a body cut short is not read on).
    pub close: bool,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            close: false,
        }
    }

    pub fn with_details(mut self, details: Vec<FieldError>) -> Refusal {
        self.details = details;
        self
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        match e {
            StoreError::NotFound => {
                Refusal::new(StatusCode::NOT_FOUND, "not_found", "no such item")
            }
            StoreError::NotDead(_) => Refusal::new(StatusCode::CONFLICT, "not_dead", e.to_string()),
            other => {
                tracing::error!(error = %other, "store failure");
                let mut err = Refusal::new(
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
    pub rejected: BTreeSet<usize>,
}

impl Intake {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        mappings: Arc<BTreeMap<String, MappingSet>>,
        catalogue: Catalogue,
        wake: Wake,
    ) -> Intake {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // The patterns were checked with the config (`Config::problems`).
        let anchored = |p: &Option<String>| {
            p.as_ref().and_then(|text| {
                regex::Regex::new(&format!("^(?:{text})$"))
                    .ok()
                    .map(|re| (text.clone(), re))
            })
        };
        let ids = config
            .nodes
            .iter()
            .filter_map(|(id, n)| {
                let a = n.get_ref().accept.as_ref()?;
                let s = IdSyntax {
                    case_no: anchored(&a.case_no_pattern),
                    other: anchored(&a.id_pattern),
                };
                (s.case_no.is_some() || s.other.is_some()).then(|| (id.clone(), s))
            })
            .collect();
        let router = Router::new(&config);
        Intake {
            ids,
            supervision: None,
            backlog: Arc::new(Backlog::new(&config, &router)),
            router,
            config,
            store,
            mappings,
            catalogue,
            wake,
            decoders: tokio::sync::Semaphore::new(cores),
        }
    }

    /// [`Intake::admit`] without holding up the threads that answer requests: a body
    /// over `[limits] blocking_decode_bytes` is decoded on the blocking pool, at most
    /// one per core at a time (others wait their turn), so health checks and other
    /// nodes' small requests are answered meanwhile.
    pub async fn admit_async(
        self: &Arc<Self>,
        node: &str,
        kind: Option<Kind>,
        bytes: bytes::Bytes,
        content_type: Option<String>,
        admission: Admission,
    ) -> Result<Admitted, Refusal> {
        if bytes.len() < self.config.limits.blocking_decode_bytes {
            return self.admit(node, kind, &bytes, content_type.as_deref(), admission);
        }
        let _slot = self.decoders.acquire().await.map_err(|_| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is stopping",
            )
        })?;
        let this = self.clone();
        let node = node.to_string();
        tokio::task::spawn_blocking(move || {
            this.admit(&node, kind, &bytes, content_type.as_deref(), admission)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "a decode task failed");
            Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "decode_failed",
                "the body could not be decoded; nothing was stored",
            ))
        })
    }

    /// Run a body through decode, validate, catalogue, authorise and route (DESIGN.md
    /// section 1, steps 3 to 6) for `node`. Pushed bodies and pulled pages both come
    /// through here. Counts what it sees in the metrics.
    pub fn admit(
        &self,
        node: &str,
        kind: Option<Kind>,
        bytes: &[u8],
        content_type: Option<&str>,
        admission: Admission,
    ) -> Result<Admitted, Refusal> {
        let limits = &self.config.limits;
        let mut records = Vec::new();
        // Place of each record in the body (a record's index in answers).
        let mut indices = Vec::new();
        // Records accepted with an ID number that failed its check (`id_checks`).
        let mut id_flagged: BTreeSet<usize> = BTreeSet::new();
        let flag_ids = self
            .config
            .node(node)
            .is_some_and(|n| n.id_checks == crate::config::IdChecks::Flag);
        let mut errors = Vec::new();
        match self.mappings.get(node) {
            Some(set) => {
                let checked = match crate::mapping::decode_and_check(
                    set,
                    bytes,
                    content_type,
                    kind,
                    &crate::mapping::Limits::of(&self.config.limits),
                ) {
                    Ok(c) => c,
                    // An empty page: nothing new at the source.
                    Err(crate::mapping::DecodeError::NoRecords(_))
                        if admission == Admission::Page =>
                    {
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
                            if c.id_flagged {
                                id_flagged.insert(c.index);
                            }
                        }
                        Err(mut e) => errors.append(&mut e),
                    }
                }
            }
            None => {
                let format = Format::from_content_type(content_type).map_err(|e| {
                    Refusal::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        e.to_string(),
                    )
                })?;
                let bounds = codec::Bounds {
                    max_depth: limits.max_depth,
                    max_string_bytes: limits.max_string_bytes,
                    max_elements: limits.max_elements,
                };
                let values = match codec::decode_canonical(
                    bytes,
                    format,
                    limits.max_records_per_body,
                    &bounds,
                ) {
                    Ok(v) => v,
                    // An empty page: nothing new at the source.
                    Err(codec::CodecError::Empty) if admission == Admission::Page => Vec::new(),
                    Err(e @ codec::CodecError::TooManyRecords { .. }) => {
                        return Err(Refusal::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "too_many_records",
                            e.to_string(),
                        ));
                    }
                    Err(e) => {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            e.code(),
                            e.to_string(),
                        ));
                    }
                };
                for (i, v) in values.into_iter().enumerate() {
                    let checked = if flag_ids {
                        Record::from_value_flagging_ids(i, v, kind)
                    } else {
                        Record::from_value(i, v, kind).map(|r| (r, false))
                    };
                    match checked {
                        Ok((mut r, flagged)) => {
                            r.set_source(node);
                            records.push(r);
                            indices.push(i);
                            if flagged {
                                id_flagged.insert(i);
                            }
                        }
                        Err(mut e) => errors.append(&mut e),
                    }
                }
            }
        }
        let policy = self
            .config
            .nodes
            .get(node)
            .map(|n| n.get_ref().catalogue)
            .unwrap_or_default();
        let mut kept = Vec::with_capacity(records.len());
        let mut new_records = Vec::with_capacity(records.len());
        let syntax = self.ids.get(node);
        for (r, i) in records.into_iter().zip(indices) {
            if r.kind == Kind::Alert {
                errors.push(FieldError {
                    record: i,
                    field: "kind".into(),
                    source_path: None,
                    rule: "not_allowed".into(),
                    message: "alert records are made by the gateway's supervision; a node cannot send them".into(),
                });
                continue;
            }
            if let Some(e) = identifier_problem(syntax, &r, i) {
                errors.push(e);
                continue;
            }
            let mut flags = Vec::new();
            if id_flagged.contains(&i) {
                flags.push(crate::record::lenient::ID_FLAG.to_string());
            }
            if let Some(problem) = self.catalogue.check(policy, &r) {
                match policy {
                    crate::config::CataloguePolicy::Refuse => {
                        errors.push(problem.field_error(i));
                        continue;
                    }
                    _ => flags.push(problem.code().to_string()),
                }
            }
            if let Err(f) = auth::authorize(&self.config, node, i, &r) {
                let e = FieldError {
                    record: f.index,
                    field: f.field.to_string(),
                    source_path: None,
                    rule: "not_allowed".into(),
                    message: f.to_string(),
                };
                if admission == Admission::Body {
                    return Err(
                        Refusal::new(StatusCode::FORBIDDEN, "forbidden", f.to_string())
                            .with_details(vec![e]),
                    );
                }
                errors.push(e);
                continue;
            }
            let destinations = match self.router.route(node, &r) {
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
                        return Err(Refusal::new(
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
            let fact = self
                .supervision
                .as_ref()
                .and_then(|s| s.fact(&r, &flags, self.config.supervision.clock.now_ms()));
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
                region: r.str_field("region").map(str::to_string),
                item_code: r.str_field("item_code").map(str::to_string),
                fact,
            });
            kept.push(r);
        }
        let rejected: BTreeSet<usize> = errors.iter().map(|e| e.record).collect();
        metrics::counter!("hallgate_records_received_total", "node" => node.to_string())
            .increment((kept.len() + rejected.len()) as u64);
        // Back-pressure: a pushed body waits while a destination of its records is
        // full. (A pull source pauses before it fetches; a page fetched is stored.)
        if admission == Admission::Body
            && let Some((dest, level)) = self.backlog.over(
                new_records
                    .iter()
                    .flat_map(|r| r.destinations.iter().map(String::as_str)),
            )
        {
            let mut e = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backlog_full",
                format!(
                    "{}; nothing was stored, send again later",
                    self.backlog.describe(&dest, &level)
                ),
            );
            e.retry_after = Some(self.backlog.retry_after());
            return Err(e);
        }
        Ok(Admitted {
            records: kept,
            new_records,
            errors,
            rejected,
        })
    }

    /// Store a message with its records, deliveries and audit events in one transaction
    /// (DESIGN.md section 1, step 7), then wake the delivery workers of the destinations
    /// of the records it accepted.
    pub async fn commit(&self, msg: NewMessage) -> Result<AcceptOutcome, StoreError> {
        let outcome = self.store.accept(msg).await?;
        if let AcceptOutcome::Accepted(resp) | AcceptOutcome::Replayed(resp) = &outcome {
            for r in resp.records.iter().filter(|r| r.status == "accepted") {
                for d in &r.destinations {
                    self.wake.wake(d);
                }
            }
        }
        Ok(outcome)
    }
}

/// A body no mapping could read: 415 for a content type, 413 over a limit, else 400,
/// with the stable code and the reason (and byte offset) in the message.
fn decode_error(e: crate::mapping::DecodeError) -> Refusal {
    let status = match &e {
        crate::mapping::DecodeError::UnsupportedContentType(_) => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        e if e.is_too_large() => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    Refusal::new(
        status,
        crate::mapping::examples::error_code(&e),
        crate::record::mask_text(&e.to_string()),
    )
}

/// The refusal of a body over `max_body_bytes`.
pub fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("body is larger than the limit of {limit} bytes"),
    )
}

/// The cases `node` may add to, and read, without being their party: those of the
/// regions and items its `accept` entry names (an empty list grants nothing).
pub fn grants(config: &Config, node: &str) -> Grants {
    match config.node(node).and_then(|n| n.accept.as_ref()) {
        Some(a) => Grants {
            regions: a.regions.clone(),
            item_codes: a.item_codes.clone(),
        },
        None => Grants::default(),
    }
}

/// With no `Idempotency-Key` from the sender: when every record carries a record id
/// and a version, a key derived from them (so a blind resend gets the first answer).
pub fn derived_key(records: &[Record]) -> Option<String> {
    let mut parts = Vec::with_capacity(records.len());
    for r in records {
        match (r.str_field("record_id"), r.version()) {
            (Some(id), Some(v)) => parts.push(format!("{}\u{1f}{id}\u{1f}{v}", r.kind)),
            _ => return None,
        }
    }
    Some(format!("r:{}", sha256_hex(parts.join("\u{1e}").as_bytes())))
}
