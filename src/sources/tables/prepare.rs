//! A table source's tables as the database has them: each configured table's shape,
//! checked against the config (every named column there, of a usable type), so a
//! wrong name stops the start-up with the table and column named.

use super::TableError;
use crate::config::{TableSettings, TableSource};
use crate::frontdb::{Bound, FrontDb, PendingRead, Shape, bound_usable};

/// The longest error text written when the error column's length is unknown.
const MAX_ERROR_CHARS: usize = 500;

/// A configured table with the shape the database gave for it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub spec: TableSource,
    pub shape: Shape,
    /// ORDER BY: the order columns, then the keys.
    pub(super) order: Vec<String>,
    /// Its name in the store's sync sources: `NODE/TABLE`.
    pub name: String,
    pub(super) error_chars: usize,
    /// Whether batches follow a cursor (the last row read) through the order, or
    /// each starts from the top. With order columns besides the keys a cursor
    /// needs a case column: a row that lands behind the cursor is then found by its
    /// case (`TableReader::held_cases`).
    pub(super) cursor: bool,
    /// Where the columns the source uses are in a row (the shape's order): the
    /// order columns then keys, the keys, the version and the case.
    pub(super) at: Positions,
}

/// Column positions in a row read from the table.
#[derive(Debug, Clone, Default)]
pub(super) struct Positions {
    pub order: Vec<usize>,
    pub keys: Vec<usize>,
    pub version: Option<usize>,
    pub case: Option<usize>,
}

impl Prepared {
    /// The table's pending rows, a batch at a time, in order.
    pub fn read(&self) -> PendingRead<'_> {
        self.read_from(None)
    }

    /// The pending rows after (or up to) a place in the order.
    pub fn read_from<'a>(&'a self, bound: Option<&'a Bound>) -> PendingRead<'a> {
        PendingRead {
            shape: &self.shape,
            flag: &self.spec.flag,
            pending: &self.spec.pending,
            order: &self.order,
            limit: self.spec.batch,
            bound,
        }
    }
}

/// Read the shape of every configured table of a node; a missing table or column
/// is named.
pub async fn prepare(
    node: &str,
    settings: &TableSettings,
    db: &dyn FrontDb,
) -> Result<Vec<Prepared>, TableError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for spec in &settings.source {
        let shape = db
            .shape(&spec.table)
            .await
            .map_err(|source| TableError::Db {
                node: node.to_string(),
                source,
            })?;
        let Some(shape) = shape else {
            problems.push(format!("there is no table `{}`", spec.table));
            continue;
        };
        let found = crate::frontdb::check::source_problems(spec, &shape, db.driver());
        if !found.is_empty() {
            problems.extend(found);
            continue;
        }
        let error_chars = shape
            .column(&spec.error, db.driver())
            .and_then(|c| c.max_chars)
            .map_or(MAX_ERROR_CHARS, |n| {
                usize::try_from(n).unwrap_or(MAX_ERROR_CHARS)
            });
        let mut order = spec.order.clone();
        order.extend(
            spec.keys
                .iter()
                .filter(|k| !spec.order.contains(k))
                .cloned(),
        );
        let cursor = (spec.order.is_empty() || spec.case.is_some())
            && bound_usable(&shape, &order, db.driver());
        let driver = db.driver();
        let index_of = |name: &str| {
            shape
                .columns
                .iter()
                .position(|c| driver.same_name(&c.name, name))
        };
        let at = Positions {
            order: order.iter().filter_map(|c| index_of(c)).collect(),
            keys: spec.keys.iter().filter_map(|k| index_of(k)).collect(),
            version: spec.version.as_deref().and_then(index_of),
            case: spec.case.as_deref().and_then(index_of),
        };
        out.push(Prepared {
            cursor,
            at,
            name: format!("{node}/{}", spec.table),
            spec: spec.clone(),
            shape,
            order,
            error_chars: error_chars.min(MAX_ERROR_CHARS),
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(TableError::Shape {
            node: node.to_string(),
            problems,
        })
    }
}
