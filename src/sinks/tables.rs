//! The table sink: a node that takes its records in its 前置库
//! (`[[nodes.ID.tables.destination]]`). One attempt renders the record with the
//! node's mapping of its kind into rows (a JSON mapping whose fields are the
//! table's columns), and writes them, with the consumer's flag set to pending, in one
//! database transaction together with the delivery's key in `hallgate_delivery_keys`
//! (`frontdb::KEYS_TABLE`). An attempt made again after a crash finds the key and
//! writes nothing: the consumer never reads a record twice because of the gateway.
//!
//! Upsert by key, or delete-then-insert for the case (`mode`). Values the database
//! refuses (too long, wrong type) dead-letter the delivery with its message; an
//! unreachable database is retried. The consumer's refusals (`2`) are read back by
//! [`watch_refusals`].

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::OnceCell;

use super::{Attempt, Outcome, Sink, SinkFuture};
use crate::config::{TableDestination, TableSettings, WriteMode};
use crate::frontdb::{self, FrontDb, FrontDbError, Shape, TableWrite, WriteRow, Written, cell};
use crate::hash::sha256_hex;
use crate::mapping::MappingSet;
use crate::record::mask_text;
use crate::store::LeasedDelivery;
use crate::time::now_ms;

/// A destination table with its shape.
#[derive(Debug, Clone)]
pub struct Target {
    pub spec: TableDestination,
    pub shape: Shape,
}

/// One node's table destination.
pub struct TableSink {
    db: Arc<dyn FrontDb>,
    node: String,
    zone: i32,
    render: Option<MappingSet>,
    settings: TableSettings,
    targets: OnceCell<Vec<Target>>,
}

impl TableSink {
    pub fn new(
        node: &str,
        settings: &TableSettings,
        db: Arc<dyn FrontDb>,
        render: Option<MappingSet>,
    ) -> Result<TableSink, FrontDbError> {
        Ok(TableSink {
            zone: settings.zone_seconds().map_err(FrontDbError::Query)?,
            db,
            node: node.to_string(),
            render,
            settings: settings.clone(),
            targets: OnceCell::new(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The destination tables' shapes (read once), checked against the config; the
    /// delivery-key table is created if missing.
    pub async fn targets(&self) -> Result<&[Target], FrontDbError> {
        self.targets
            .get_or_try_init(|| prepare(&self.node, &self.settings, &*self.db))
            .await
            .map(Vec::as_slice)
    }

    async fn attempt(&self, d: &LeasedDelivery) -> Attempt {
        let targets = match self.targets().await {
            Ok(t) => t,
            Err(e @ FrontDbError::Rejected(_)) => return attempt(dead(e.to_string()), &[]),
            Err(e) => return attempt(retry(e.to_string()), &[]),
        };
        let Some(target) = targets.iter().find(|t| t.spec.kind == d.kind) else {
            return attempt(
                dead(format!(
                    "no table of node `{}` takes {} records",
                    self.node, d.kind
                )),
                &[],
            );
        };
        let rendered = match self.render(d) {
            Ok(r) => r,
            Err(reason) => return attempt(dead(reason), &[]),
        };
        let rows = match self.rows(target, &rendered) {
            Ok(r) => r,
            Err(reason) => return attempt(dead(reason), &rendered),
        };
        let spec = &target.spec;
        let row_key = rows
            .first()
            .map(|row| {
                spec.keys
                    .iter()
                    .map(|k| {
                        row.iter()
                            .find(|(c, _)| c.eq_ignore_ascii_case(k))
                            .and_then(|(_, v)| v.clone())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .unwrap_or_default();
        let write = TableWrite {
            shape: &target.shape,
            keys: &spec.keys,
            mode: spec.mode,
            case: match (spec.mode, &spec.case) {
                (WriteMode::ReplaceCase, Some(c)) => Some((c.as_str(), d.case_no.clone())),
                _ => None,
            },
            rows,
            delivery_key: &d.idempotency_key,
            delivery_id: d.id,
            row_key,
            at: cell::local_time(now_ms(), self.zone),
        };
        // The receipt names the row, as a receiving platform's 回执 names its record.
        let receipt = |rows: u64| {
            serde_json::json!({
                "table": spec.table,
                "rows": rows,
                "receipt_no": format!("{}:{}", spec.table, write.row_key),
            })
            .to_string()
        };
        let outcome = match self.db.write(&write).await {
            Ok(Written::Now(n)) => Outcome::Delivered {
                status: 200,
                receipt: receipt(n),
                duplicate: false,
            },
            Ok(Written::Before) => Outcome::Delivered {
                status: 200,
                receipt: receipt(0),
                duplicate: true,
            },
            Err(e @ FrontDbError::Rejected(_)) => dead(format!("{}: {e}", spec.table)),
            Err(e) => retry(format!("{}: {e}", spec.table)),
        };
        attempt(outcome, &rendered)
    }

    /// The record rendered by the node's mapping of its kind.
    fn render(&self, d: &LeasedDelivery) -> Result<Vec<u8>, String> {
        let Some(m) = self.render.as_ref().and_then(|s| s.for_render(d.kind)) else {
            return Err(format!(
                "node `{}` has no mapping that renders {} records into its table",
                self.node, d.kind
            ));
        };
        let v: Value = serde_json::from_str(&d.canonical).map_err(|e| e.to_string())?;
        crate::mapping::render(m, &[v]).map_err(|e| format!("cannot render with {}: {e}", m.file))
    }

    /// The rendered JSON (an object, or a list of them) as rows of the table, the
    /// consumer's flag set to pending and its error cleared.
    fn rows(&self, target: &Target, rendered: &[u8]) -> Result<Vec<WriteRow>, String> {
        let spec = &target.spec;
        let driver = self.db.driver();
        let v: Value = serde_json::from_slice(rendered)
            .map_err(|e| format!("the mapping did not render JSON rows: {e}"))?;
        let objects = match v {
            Value::Array(items) => items,
            other => vec![other],
        };
        let mut rows = Vec::with_capacity(objects.len());
        for o in objects {
            let Value::Object(fields) = o else {
                return Err("the mapping rendered something other than rows (objects)".into());
            };
            let mut row = Vec::with_capacity(fields.len() + 2);
            for (name, value) in &fields {
                if name.eq_ignore_ascii_case(&spec.flag) || name.eq_ignore_ascii_case(&spec.error) {
                    continue;
                }
                let Some(c) = target.shape.column(name, driver) else {
                    return Err(format!(
                        "table `{}` has no column `{name}` (rendered by the mapping)",
                        spec.table
                    ));
                };
                let text = cell::column_text(c.ty, value, self.zone)
                    .map_err(|e| format!("column {name}: {e}"))?;
                row.push((c.name.clone(), text));
            }
            for (column, value) in [
                (&spec.flag, Some(spec.pending.clone())),
                (&spec.error, None),
            ] {
                if let Some(c) = target.shape.column(column, driver) {
                    row.push((c.name.clone(), value));
                }
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

/// Read the destination tables' shapes and check them; create the key table.
async fn prepare(
    node: &str,
    settings: &TableSettings,
    db: &dyn FrontDb,
) -> Result<Vec<Target>, FrontDbError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for spec in &settings.destination {
        let Some(shape) = db.shape(&spec.table).await? else {
            problems.push(format!("there is no table `{}`", spec.table));
            continue;
        };
        problems.extend(frontdb::check::destination_problems(
            spec,
            &shape,
            db.driver(),
        ));
        out.push(Target {
            spec: spec.clone(),
            shape,
        });
    }
    if !problems.is_empty() {
        return Err(FrontDbError::Rejected(format!(
            "前置库 of node `{node}` does not match the config: {}",
            problems.join("; ")
        )));
    }
    db.ensure_keys().await?;
    Ok(out)
}

fn dead(reason: String) -> Outcome {
    Outcome::Dead {
        status: None,
        reason: mask_text(&reason),
    }
}

fn retry(error: String) -> Outcome {
    Outcome::Retry {
        status: None,
        error: mask_text(&error),
        retry_after_ms: None,
    }
}

fn attempt(outcome: Outcome, sent: &[u8]) -> Attempt {
    Attempt {
        outcome,
        request_sha256: sha256_hex(sent),
    }
}

impl Sink for TableSink {
    fn send<'a>(&'a self, delivery: &'a LeasedDelivery) -> SinkFuture<'a> {
        Box::pin(self.attempt(delivery))
    }
}

/// Connect (lazily) to a node's 前置库 for its table destination.
pub fn open(
    config: &crate::config::Config,
    node: &str,
    settings: &TableSettings,
    render: Option<MappingSet>,
) -> Result<TableSink, FrontDbError> {
    let password = frontdb::password(settings, &config.base_dir())?;
    let db = frontdb::open(settings, password, &config.base_dir())?;
    TableSink::new(node, settings, db, render)
}

/// Read back the consumers' refusals of a node's table destination until
/// `shutdown`: each row its consumer marked `failed` turns its delivery from
/// delivered to dead-lettered with the consumer's reason (audited, shown, and
/// retryable by an operator, which writes it again), and its key is forgotten.
pub async fn watch_refusals(
    sink: TableSink,
    store: Arc<dyn crate::store::Store>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let interval = sink
        .settings
        .destination
        .iter()
        .map(|d| d.receipt_interval_ms)
        .min()
        .unwrap_or(2_000);
    loop {
        if let Err(e) = refusals_once(&sink, &*store).await {
            tracing::warn!(node = %sink.node, error = %mask_text(&e.to_string()), "cannot read the 前置库 consumer's flags");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(interval)) => {}
        }
    }
}

/// One pass over the destination tables; how many refusals were recorded.
pub async fn refusals_once(
    sink: &TableSink,
    store: &dyn crate::store::Store,
) -> Result<usize, TableSinkError> {
    let mut n = 0;
    for t in sink.targets().await? {
        let read = frontdb::RefusalRead {
            shape: &t.shape,
            keys: &t.spec.keys,
            flag: &t.spec.flag,
            failed: &t.spec.failed,
            error: &t.spec.error,
            limit: 500,
        };
        for r in sink.db.refused(&read).await? {
            let reason = mask_text(&format!(
                "the consumer refused it ({} {} = {}): {}",
                t.spec.table, t.spec.flag, t.spec.failed, r.error
            ));
            if store
                .consumer_refused(r.delivery_id, reason, now_ms())
                .await?
            {
                metrics::counter!("hallgate_deliveries_dead_total", "destination" => sink.node.clone())
                    .increment(1);
                n += 1;
            }
            sink.db.forget(&r.delivery_key).await?;
        }
    }
    Ok(n)
}

/// Why reading the consumers' flags failed.
#[derive(Debug, thiserror::Error)]
pub enum TableSinkError {
    #[error(transparent)]
    Db(#[from] FrontDbError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A refusal watcher for every node with table destinations (each with its own
/// connections).
pub fn refusal_watchers(config: &crate::config::Config) -> Result<Vec<TableSink>, FrontDbError> {
    let mut out = Vec::new();
    for (id, n) in &config.nodes {
        if let Some(t) = n
            .get_ref()
            .tables
            .as_ref()
            .filter(|t| !t.destination.is_empty())
        {
            out.push(open(config, id, t, None)?);
        }
    }
    Ok(out)
}
