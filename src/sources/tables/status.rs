//! What an operator sees of the 前置库: each table source's rows by flag (pending,
//! done, failed, read from the table itself), what the store holds of it (records
//! stored, batches, last success and error, lease), and `hallgate tables check`,
//! which connects and names every configured table or column that is missing or of
//! an unusable type, for sources and destinations alike.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::config::{Config, TableSettings};
use crate::frontdb::{self, FrontDb};
use crate::record::mask_text;
use crate::store::{Store, SyncSource};
use crate::time::{now_ms, rfc3339};

/// Every table source of the config, with its flags counted in the 前置库 and its
/// state in the store. A 前置库 that cannot be read shows its error instead of counts.
pub async fn status(config: &Config, store: &dyn Store) -> Vec<Value> {
    let stored: HashMap<String, SyncSource> = store
        .sync_sources()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.node.clone(), s))
        .collect();
    let now = now_ms();
    let mut out = Vec::new();
    for (id, node) in &config.nodes {
        let Some(settings) = node.get_ref().tables.as_ref() else {
            continue;
        };
        if settings.source.is_empty() {
            continue;
        }
        let db = open(config, settings);
        for spec in &settings.source {
            let name = format!("{id}/{}", spec.table);
            let row = stored.get(&name);
            let counts = match &db {
                Ok(db) => flag_counts(&**db, &spec.table, &spec.flag).await,
                Err(e) => Err(e.clone()),
            };
            let (pending, done, failed, db_error) = match &counts {
                Ok(c) => {
                    let sum = |values: &[&str]| -> u64 {
                        c.iter()
                            .filter(|(f, _)| match f {
                                None => values.contains(&""),
                                Some(f) => values.contains(&f.as_str()),
                            })
                            .map(|(_, n)| n)
                            .sum()
                    };
                    let mut pending_values: Vec<&str> =
                        spec.pending.iter().map(String::as_str).collect();
                    pending_values.push("");
                    (
                        Some(sum(&pending_values)),
                        Some(sum(&[spec.done.as_str()])),
                        Some(sum(&[spec.failed.as_str()])),
                        None,
                    )
                }
                Err(e) => (None, None, None, Some(e.clone())),
            };
            let last_success = row.and_then(|r| r.last_success_ms);
            let lag = match (pending, last_success) {
                (Some(0), _) => Some(0.0),
                (_, Some(t)) => Some(((now - t).max(0) as f64) / 1000.0),
                _ => None,
            };
            out.push(json!({
                "node": id,
                "table": spec.table,
                "kind": spec.kind,
                "pending": pending,
                "done": done,
                "failed": failed,
                "db_error": db_error,
                "records_stored": row.map(|r| r.pulled).unwrap_or(0),
                "batches": row.map(|r| r.pages).unwrap_or(0),
                "lag_seconds": lag,
                "paused": row.is_some_and(|r| r.paused),
                "last_success": last_success.map(rfc3339),
                "last_error": row.and_then(|r| r.last_error.clone()),
                "last_error_at": row.and_then(|r| r.last_error_ms).map(rfc3339),
                "held_by": row.and_then(|r| {
                    r.lease_owner.clone().filter(|_| r.lease_until_ms.is_some_and(|u| u > now))
                }),
            }));
        }
    }
    out
}

fn open(config: &Config, settings: &TableSettings) -> Result<std::sync::Arc<dyn FrontDb>, String> {
    let password = frontdb::password(settings, &config.base_dir()).map_err(|e| e.to_string())?;
    frontdb::open(settings, password, &config.base_dir()).map_err(|e| e.to_string())
}

async fn flag_counts(
    db: &dyn FrontDb,
    table: &str,
    flag: &str,
) -> Result<Vec<(Option<String>, u64)>, String> {
    let shape = db
        .shape(table)
        .await
        .map_err(|e| mask_text(&e.to_string()))?
        .ok_or_else(|| format!("there is no table `{table}`"))?;
    db.flag_counts(&shape, flag)
        .await
        .map_err(|e| mask_text(&e.to_string()))
}

/// [`status`] as text for people.
pub fn status_text(tables: &[Value]) -> String {
    let mut out = String::new();
    for t in tables {
        let text = |k: &str| t[k].as_str().unwrap_or("-").to_string();
        let num = |k: &str| t[k].as_u64().map_or("?".to_string(), |n| n.to_string());
        out.push_str(&format!(
            "{}/{} (前置库, {}){}\n",
            text("node"),
            text("table"),
            text("kind"),
            if t["paused"].as_bool() == Some(true) {
                "  (PAUSED)"
            } else {
                ""
            }
        ));
        match t["db_error"].as_str() {
            Some(e) => out.push_str(&format!("  rows          cannot be read: {e}\n")),
            None => out.push_str(&format!(
                "  rows          {} pending, {} done (1), {} failed (2)\n",
                num("pending"),
                num("done"),
                num("failed")
            )),
        }
        out.push_str(&format!(
            "  lag           {}\n  last success  {}\n  last error    {}{}\n  stored        {} records in {} batches\n",
            t["lag_seconds"].as_f64().map_or("-".into(), |l| format!("{l:.1} s")),
            text("last_success"),
            text("last_error"),
            t["last_error_at"].as_str().map(|a| format!(" (at {a})")).unwrap_or_default(),
            t["records_stored"],
            t["batches"],
        ));
    }
    out
}

/// `hallgate tables check --node ID`: connect, read every configured table's
/// columns; one line per table, and whether anything is wrong.
pub async fn check(config: &Config, node: &str) -> Result<(Vec<String>, bool), String> {
    let settings = config
        .node(node)
        .and_then(|n| n.tables.as_ref())
        .ok_or_else(|| format!("node `{node}` has no [nodes.{node}.tables]"))?;
    let db = open(config, settings)?;
    let mut lines = Vec::new();
    let mut ok = true;
    let say = |spec_table: &str, role: &str, problems: Vec<String>, columns: usize| {
        if problems.is_empty() {
            vec![format!("ok    {spec_table} ({role}): {columns} columns")]
        } else {
            problems
                .into_iter()
                .map(|p| format!("FAIL  {spec_table} ({role}): {p}"))
                .collect()
        }
    };
    for spec in &settings.source {
        let (problems, columns) = match db.shape(&spec.table).await {
            Err(e) => return Err(mask_text(&e.to_string())),
            Ok(None) => (vec![format!("there is no table `{}`", spec.table)], 0),
            Ok(Some(shape)) => (
                frontdb::check::source_problems(spec, &shape, db.driver()),
                shape.columns.len(),
            ),
        };
        ok &= problems.is_empty();
        lines.extend(say(&spec.table, "source", problems, columns));
    }
    for spec in &settings.destination {
        let (problems, columns) = match db.shape(&spec.table).await {
            Err(e) => return Err(mask_text(&e.to_string())),
            Ok(None) => (vec![format!("there is no table `{}`", spec.table)], 0),
            Ok(Some(shape)) => (
                frontdb::check::destination_problems(spec, &shape, db.driver()),
                shape.columns.len(),
            ),
        };
        ok &= problems.is_empty();
        lines.extend(say(&spec.table, "destination", problems, columns));
    }
    Ok((lines, ok))
}
