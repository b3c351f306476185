//! A 前置库 table against its config: every column the config names is there, of a
//! type it can serve as. Start-up, `hallgate tables check` and the table sink all
//! ask here, so a problem is named the same way everywhere.

use super::{ColumnType, Shape};
use crate::config::{Driver, TableDestination, TableSource};

/// What is wrong with `spec` against the table's `shape`, naming table and column.
pub fn source_problems(spec: &TableSource, shape: &Shape, driver: Driver) -> Vec<String> {
    let mut out = Vec::new();
    let t = &spec.table;
    for (key, name) in spec.named_columns() {
        match shape.column(name, driver) {
            None => out.push(format!(
                "table `{t}` has no column `{name}` (tables.source.{key})"
            )),
            Some(c) => {
                let usable = match key {
                    "flag" => c.ty == ColumnType::Text || c.ty == ColumnType::Integer,
                    "error" => c.ty == ColumnType::Text,
                    "sync_date" => c.ty == ColumnType::DateTime || c.ty == ColumnType::Text,
                    "keys" | "version" => c.ty != ColumnType::Blob,
                    _ => true,
                };
                if !usable {
                    out.push(format!(
                        "table `{t}` column `{name}` is {}, which cannot serve as tables.source.{key}",
                        c.type_name
                    ));
                }
            }
        }
    }
    out
}

/// What is wrong with a destination's `spec` against its table's `shape`.
pub fn destination_problems(spec: &TableDestination, shape: &Shape, driver: Driver) -> Vec<String> {
    spec.named_columns()
        .into_iter()
        .filter(|(_, c)| shape.column(c, driver).is_none())
        .map(|(key, c)| {
            format!(
                "table `{}` has no column `{c}` (tables.destination.{key})",
                spec.table
            )
        })
        .collect()
}
