//! Reconciliation (对账).
//!
//! Reconciliation compares what the gateway exchanged with a node over a time range
//! (records delivered to it, records pulled from it: the store's
//! [`crate::store::Store::exchanged`]) with what the node says it holds (its
//! holdings and count APIs, docs/sync.md), record by record on identity, version and
//! `op`. Both sides are read over the range widened by a slack (their clock, our
//! delivery lag); a record is reported only when its own time falls inside the range.
//! `--requeue` puts what they are missing back in the delivery queue under the
//! delivery's own Idempotency-Key, so a receiver that did have it answers 409.
//! Backfill ([`super::backfill`]) re-sends the deliveries of a range the same way.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Api, SyncError, settings};
use crate::config::Config;
use crate::event::{Event, EventKind};
use crate::hash::sha256_hex;
use crate::record::{Kind, identity_of};
use crate::store::{DeliveryState, Exchanged, Store};
use crate::time::{now_ms, rfc3339};

/// One entry of a node's holdings list (docs/sync.md).
#[derive(Debug, Clone, Deserialize)]
pub struct Holding {
    pub kind: Kind,
    pub case_no: String,
    #[serde(default)]
    pub record_id: Option<String>,
    #[serde(default)]
    pub material_id: Option<String>,
    #[serde(default)]
    pub step_no: Option<i64>,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub op: Option<String>,
    /// When the node stored or last changed it (RFC 3339). Records read through the
    /// node's mappings have none: the node's list already covers the range.
    #[serde(default)]
    pub at: Option<String>,
}

impl Holding {
    /// A summary of a record the node's mappings read from its own format.
    fn from_record(v: &serde_json::Value) -> Option<Holding> {
        let s = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        Some(Holding {
            kind: Kind::parse(v.get("kind")?.as_str()?)?,
            case_no: s("case_no")?,
            record_id: s("record_id"),
            material_id: s("material_id"),
            step_no: v.get("step_no").and_then(serde_json::Value::as_i64),
            version: v.get("version").and_then(serde_json::Value::as_i64),
            op: s("op"),
            at: None,
        })
    }
}

/// One page of a holdings list: summaries (docs/sync.md), or — when the node answers
/// in its own format — its records read through its mappings.
fn holdings_page(
    answer: &super::Answer,
    mappings: Option<&crate::mapping::MappingSet>,
    limits: &crate::mapping::Limits,
) -> Result<Vec<Holding>, SyncError> {
    let summaries = serde_json::from_slice::<Vec<Holding>>(&answer.body);
    let (Err(e), Some(set)) = (&summaries, mappings) else {
        return summaries.map_err(|e| SyncError::BadAnswer {
            url: answer.url.clone(),
            reason: e.to_string(),
        });
    };
    let decoded = match set.decode(&answer.body, answer.content_type.as_deref(), None, limits) {
        Ok(d) => d,
        Err(crate::mapping::DecodeError::NoRecords(_)) => return Ok(Vec::new()),
        Err(d) => {
            return Err(SyncError::BadAnswer {
                url: answer.url.clone(),
                reason: format!("neither summaries ({e}) nor records its mappings read ({d})"),
            });
        }
    };
    decoded
        .into_iter()
        .map(|d| {
            d.result
                .ok()
                .and_then(|v| Holding::from_record(&v.to_value()))
                .ok_or_else(|| SyncError::BadAnswer {
                    url: answer.url.clone(),
                    reason: format!(
                        "record {} of the list has no kind or case_no after its mapping",
                        d.index
                    ),
                })
        })
        .collect()
}

/// One difference found.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// `missing_theirs`, `missing_ours`, `version_mismatch`, `state_mismatch`.
    pub problem: &'static str,
    pub kind: Kind,
    pub case_no: String,
    pub identity: String,
    /// `delivered` or `pulled`: how the record went between us (ours only).
    pub direction: Option<&'static str>,
    pub our_version: Option<i64>,
    pub their_version: Option<i64>,
    pub our_op: Option<String>,
    pub their_op: Option<String>,
    /// Our delivery state (a dead letter they are missing says why).
    pub our_state: Option<DeliveryState>,
    pub at: String,
    #[serde(skip)]
    pub delivery_id: Option<i64>,
}

/// What a reconciliation found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub node: String,
    pub from: String,
    pub to: String,
    /// Distinct records on our side in the range.
    pub ours: usize,
    /// Distinct records in their holdings list in the range.
    pub theirs: usize,
    /// What their count API said for the widened range (it should equal the list).
    pub their_count: Option<u64>,
    pub their_listed: usize,
    /// Our deliveries still under way (not counted as missing).
    pub in_flight: usize,
    pub differences: Vec<Difference>,
    pub requeued: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
            && self
                .their_count
                .is_none_or(|c| c == self.their_listed as u64)
    }

    fn count(&self, problem: &str) -> usize {
        self.differences
            .iter()
            .filter(|d| d.problem == problem)
            .count()
    }

    /// The summary line and the table, for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "reconciliation with {} from {} to {}\n  ours: {}   theirs: {}   their count: {}   in flight: {}\n  missing on their side: {}   missing on ours: {}   version mismatches: {}   state mismatches: {}\n",
            self.node,
            self.from,
            self.to,
            self.ours,
            self.theirs,
            self.their_count
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            self.in_flight,
            self.count("missing_theirs"),
            self.count("missing_ours"),
            self.count("version_mismatch"),
            self.count("state_mismatch"),
        );
        if let Some(c) = self.their_count
            && c != self.their_listed as u64
        {
            out.push_str(&format!(
                "  their count API says {c}, their list gave {}\n",
                self.their_listed
            ));
        }
        if self.differences.is_empty() {
            out.push_str("  clean: both sides hold the same records\n");
        } else {
            out.push_str(&format!(
                "\n{:<17} {:<12} {:<24} {:<10} {:>5} {:>5} {:<8} {}\n",
                "problem", "kind", "case_no", "direction", "ours", "their", "state", "at"
            ));
            for d in &self.differences {
                let v = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                out.push_str(&format!(
                    "{:<17} {:<12} {:<24} {:<10} {:>5} {:>5} {:<8} {}\n",
                    d.problem,
                    d.kind.as_str(),
                    d.case_no,
                    d.direction.unwrap_or("-"),
                    v(d.our_version),
                    v(d.their_version),
                    d.our_state.map(|s| s.as_str()).unwrap_or("-"),
                    d.at
                ));
            }
        }
        if self.requeued > 0 {
            out.push_str(&format!(
                "  requeued {} deliveries; the gateway sends them again\n",
                self.requeued
            ));
        }
        out
    }

    /// The differences as CSV (a header line, one row per difference).
    pub fn csv(&self) -> Result<Vec<u8>, SyncError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let err = |e: csv::Error| SyncError::Other(format!("CSV: {e}"));
        w.write_record([
            "problem",
            "kind",
            "case_no",
            "identity",
            "direction",
            "our_version",
            "their_version",
            "our_op",
            "their_op",
            "our_state",
            "at",
        ])
        .map_err(err)?;
        for d in &self.differences {
            let v = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
            w.write_record([
                d.problem,
                d.kind.as_str(),
                &d.case_no,
                &d.identity,
                d.direction.unwrap_or(""),
                &v(d.our_version),
                &v(d.their_version),
                d.our_op.as_deref().unwrap_or(""),
                d.their_op.as_deref().unwrap_or(""),
                d.our_state.map(|s| s.as_str()).unwrap_or(""),
                &d.at,
            ])
            .map_err(err)?;
        }
        w.into_inner()
            .map_err(|e| SyncError::Other(format!("CSV: {e}")))
    }
}

/// Our side, one entry per record identity: its latest version.
struct Ours {
    latest: Exchanged,
}

pub(super) fn progress(len: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}} eta {{eta}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// Compare what we exchanged with `node` from `from_ms` to `to_ms` with what it holds.
pub async fn reconcile(
    config: &Config,
    store: &dyn Store,
    api: &Api,
    mappings: Option<&crate::mapping::MappingSet>,
    from_ms: i64,
    to_ms: i64,
    slack_ms: i64,
) -> Result<Report, SyncError> {
    let node = api.node.as_str();
    let s = settings(config, node)?;
    if from_ms > to_ms {
        return Err(SyncError::Other(format!(
            "the range is empty: --from {} is after --to {}",
            rfc3339(from_ms),
            rfc3339(to_ms)
        )));
    }
    if from_ms > now_ms() {
        return Err(SyncError::Other(format!(
            "the range starts in the future ({}): nothing has been exchanged yet",
            rfc3339(from_ms)
        )));
    }
    let holdings_url = s
        .holdings_url
        .as_deref()
        .ok_or_else(|| SyncError::NotConfigured {
            node: node.to_string(),
            key: "holdings_url",
        })?;
    let (wide_from, wide_to) = (from_ms - slack_ms, to_ms + slack_ms);
    let range = |f: i64, t: i64| vec![("from", rfc3339(f)), ("to", rfc3339(t))];
    let their_count = match &s.count_url {
        Some(url) => {
            let (v, _): (serde_json::Value, _) = api
                .get_json(url, &range(wide_from, wide_to), 1 << 20)
                .await?;
            Some(
                v.get("count")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| SyncError::BadAnswer {
                        url: url.clone(),
                        reason: "expected {\"count\": N}".into(),
                    })?,
            )
        }
        None => None,
    };
    // Theirs, page by page.
    let bar = progress(their_count.unwrap_or(0), "their records");
    let mut theirs: HashMap<(Kind, String), Holding> = HashMap::new();
    let mut listed = 0usize;
    let size = s.page_size.max(1);
    let max_bytes = config.limits.max_body_bytes.max(64 << 20);
    for page in 1u32.. {
        let mut q = range(wide_from, wide_to);
        q.push(("page", page.to_string()));
        q.push(("size", size.to_string()));
        let answer = api.get(holdings_url, &q, max_bytes).await?;
        let list = holdings_page(
            &answer,
            mappings,
            &crate::mapping::Limits::of(&config.limits),
        )?;
        let n = list.len();
        listed += n;
        bar.inc(n as u64);
        for h in list {
            let identity = identity_of(
                h.kind,
                &h.case_no,
                h.record_id.as_deref(),
                h.material_id.as_deref(),
                h.step_no.unwrap_or(0),
            );
            match theirs.get(&(h.kind, identity.clone())) {
                Some(o) if o.version >= h.version => {}
                _ => {
                    theirs.insert((h.kind, identity), h);
                }
            }
        }
        if n < size {
            break;
        }
    }
    bar.finish_and_clear();
    // Ours.
    let mut ours: HashMap<(Kind, String), Ours> = HashMap::new();
    for e in store.exchanged(node, wide_from, wide_to).await? {
        let key = (e.kind, e.identity.clone());
        match ours.get(&key) {
            Some(o)
                if (o.latest.version, o.latest.received_ms, o.latest.delivery_id)
                    >= (e.version, e.received_ms, e.delivery_id) => {}
            _ => {
                ours.insert(key, Ours { latest: e });
            }
        }
    }
    let inside = |t: i64| t >= from_ms && t <= to_ms;
    // A record without its own time was listed for the range: it counts as inside.
    let their_at = |h: &Holding| match &h.at {
        Some(t) => crate::time::parse_time(t).unwrap_or(i64::MIN),
        None => from_ms.max(to_ms.min(now_ms())),
    };
    let mut report = Report {
        node: node.to_string(),
        from: rfc3339(from_ms),
        to: rfc3339(to_ms),
        ours: ours.values().filter(|o| inside(o.latest.at_ms)).count(),
        theirs: theirs.values().filter(|h| inside(their_at(h))).count(),
        their_count,
        their_listed: listed,
        in_flight: 0,
        differences: Vec::new(),
        requeued: 0,
    };
    let diff =
        |problem, o: Option<&Exchanged>, h: Option<&Holding>, key: &(Kind, String)| Difference {
            problem,
            kind: key.0,
            case_no: o
                .map(|o| o.case_no.clone())
                .or_else(|| h.map(|h| h.case_no.clone()))
                .unwrap_or_default(),
            identity: key.1.clone(),
            direction: o.map(|o| o.direction),
            our_version: o.and_then(|o| o.version),
            their_version: h.and_then(|h| h.version),
            our_op: o.map(|o| o.op.clone()),
            their_op: h.map(|h| h.op.clone().unwrap_or_else(|| "upsert".into())),
            our_state: o.and_then(|o| o.state),
            at: o
                .map(|o| rfc3339(o.at_ms))
                .or_else(|| h.and_then(|h| h.at.clone()))
                .unwrap_or_default(),
            delivery_id: o.and_then(|o| o.delivery_id),
        };
    let mut keys: Vec<&(Kind, String)> = ours.keys().chain(theirs.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let o = ours.get(key).map(|o| &o.latest);
        let h = theirs.get(key);
        match (o, h) {
            (Some(o), None) if inside(o.at_ms) => {
                if o.state == Some(DeliveryState::Pending) {
                    report.in_flight += 1;
                } else {
                    report
                        .differences
                        .push(diff("missing_theirs", Some(o), None, key));
                }
            }
            (None, Some(h)) if inside(their_at(h)) => {
                report
                    .differences
                    .push(diff("missing_ours", None, Some(h), key));
            }
            (Some(o), Some(h)) if inside(o.at_ms) || inside(their_at(h)) => {
                if o.state == Some(DeliveryState::Pending) {
                    report.in_flight += 1;
                } else if o.version != h.version {
                    report
                        .differences
                        .push(diff("version_mismatch", Some(o), Some(h), key));
                } else if o.op != h.op.as_deref().unwrap_or("upsert") {
                    report
                        .differences
                        .push(diff("state_mismatch", Some(o), Some(h), key));
                }
            }
            _ => {}
        }
    }
    report.differences.sort_by(|a, b| {
        (a.problem, &a.at, &a.case_no, &a.identity).cmp(&(
            b.problem,
            &b.at,
            &b.case_no,
            &b.identity,
        ))
    });
    Ok(report)
}

/// The deliveries a `--requeue` sends again: records delivered to them that they are
/// missing or hold in an older version or another state.
pub fn to_requeue(report: &Report) -> Vec<i64> {
    report
        .differences
        .iter()
        .filter(|d| d.direction == Some("delivered"))
        .filter(|d| match d.problem {
            "missing_theirs" | "state_mismatch" => true,
            "version_mismatch" => d.their_version < d.our_version,
            _ => false,
        })
        .filter_map(|d| d.delivery_id)
        .collect()
}

/// Audit a reconciliation (and requeue what they are missing when asked).
pub async fn record(
    store: &dyn Store,
    report: &mut Report,
    requeue: bool,
    operator: &str,
) -> Result<(), SyncError> {
    let at = now_ms();
    if requeue {
        let ids = to_requeue(report);
        if !ids.is_empty() {
            let mut e = Event::new(at, EventKind::Requeued);
            e.node = Some(report.node.clone());
            e.detail = json!({
                "reason": "reconciliation",
                "deliveries": ids,
                "from": report.from,
                "to": report.to,
                "by": operator,
            });
            report.requeued = store.requeue(ids, at, e).await?;
        }
    }
    let csv = report.csv()?;
    let mut e = Event::new(at, EventKind::Reconciled);
    e.node = Some(report.node.clone());
    let counts: BTreeMap<&str, usize> = [
        "missing_theirs",
        "missing_ours",
        "version_mismatch",
        "state_mismatch",
    ]
    .into_iter()
    .map(|p| (p, report.count(p)))
    .collect();
    e.detail = json!({
        "from": report.from,
        "to": report.to,
        "ours": report.ours,
        "theirs": report.theirs,
        "their_count": report.their_count,
        "their_listed": report.their_listed,
        "in_flight": report.in_flight,
        "differences": counts,
        "clean": report.is_clean(),
        "requeued": report.requeued,
        "report_sha256": sha256_hex(&csv),
        "by": operator,
    });
    store.audit(e).await?;
    Ok(())
}
