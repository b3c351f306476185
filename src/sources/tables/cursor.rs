//! A table source's cursor: the order values (order columns, then keys) of the
//! last row a full batch read, kept in the store's sync source as
//! `{"after": [...]}`. The next batch reads on from there with a range scan
//! instead of walking every row already marked from the top of the table, which
//! made a long drain quadratic. Every instance sharing the store reads on from the
//! same place. `{}` is the top: a pass ends with a batch that is not full, and the
//! next pass starts from the top, where rows written behind the cursor are found.
//!
//! It also owns which cases of a batch wait: those with a pending row in an
//! earlier table, or, in a table with order columns, behind the cursor.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{LEASE_MS, Prepared, TableError, TableReader};
use crate::frontdb::{Bound, Row, cell};
use crate::store::{PullAdvance, StoreError};
use crate::time::now_ms;

/// The stored cursor as a bound for `len` order columns; `None` at the top (or
/// for a cursor of another shape, as after a config change).
pub(super) fn parse(cursor: &str, len: usize) -> Option<Bound> {
    let value: Value = serde_json::from_str(cursor).ok()?;
    let after = value.get("after")?.as_array()?;
    let values: Option<Vec<String>> = after
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect();
    values.filter(|v| v.len() == len).map(Bound::After)
}

/// The cursor to store: after `values`, or the top.
pub(super) fn write(values: Option<&[String]>) -> String {
    match values {
        Some(v) => json!({ "after": v }).to_string(),
        None => "{}".to_string(),
    }
}

/// The order values of the last row, when every one is there (not NULL).
pub(super) fn last(rows: &[Row], order_at: &[usize]) -> Option<Vec<String>> {
    let row = rows.last()?;
    order_at
        .iter()
        .map(|&i| cell::text(row.get(i).and_then(Option::as_ref)))
        .collect()
}

impl TableReader {
    /// The cases among `rows` that still have a pending row in an earlier table,
    /// or (in a table with order columns read `from` a cursor) a pending row of
    /// this table behind the cursor, which must go first: then `behind` is true and
    /// the next batch reads from the top.
    pub(super) async fn held_cases(
        &self,
        t: &Prepared,
        rows: &[Row],
        case_at: usize,
        earlier: &[Prepared],
        from: Option<&Bound>,
    ) -> Result<(BTreeSet<String>, bool), TableError> {
        let cases: Vec<String> = rows
            .iter()
            .filter_map(|r| cell::text(r.get(case_at).and_then(Option::as_ref)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut held = BTreeSet::new();
        for e in earlier {
            let Some(case) = e.spec.case.as_deref() else {
                continue;
            };
            let read = e.read();
            let found = self
                .db
                .pending_cases(&read, case, &cases)
                .await
                .map_err(|err| self.db_error(err))?;
            held.extend(found);
        }
        let mut behind = false;
        if let (Some(Bound::After(v)), Some(case), false) =
            (from, t.spec.case.as_deref(), t.spec.order.is_empty())
        {
            let up_to = Bound::UpTo(v.clone());
            let found = self
                .db
                .pending_cases(&t.read_from(Some(&up_to)), case, &cases)
                .await
                .map_err(|err| self.db_error(err))?;
            behind = !found.is_empty();
            held.extend(found);
        }
        Ok((held, behind))
    }

    /// Send a table's next batch to the top (its cursor to `{}`).
    pub(super) async fn restart(&self, t: &Prepared) -> Result<(), TableError> {
        let at = now_ms();
        let advance = PullAdvance {
            node: t.name.clone(),
            owner: self.owner.clone(),
            cursor: write(None),
            at_ms: at,
            lease_until_ms: at + LEASE_MS,
            events: Vec::new(),
        };
        match self.intake.store.sync_advance(advance).await {
            Err(StoreError::LeaseLost(_)) => Ok(()),
            other => Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_odd_ones_are_the_top() {
        let v = vec!["g1".to_string(), "it's".to_string()];
        assert_eq!(parse(&write(Some(&v)), 2), Some(Bound::After(v.clone())));
        assert_eq!(parse(&write(Some(&v)), 1), None);
        assert_eq!(parse(&write(None), 2), None);
        assert_eq!(parse("not json", 1), None);
        assert_eq!(parse(r#"{"after":[1]}"#, 1), None);
    }

    #[test]
    fn the_last_row_with_a_null_has_no_cursor() {
        let rows: Vec<Row> = vec![
            vec![Some(b"a".to_vec()), Some(b"1".to_vec())],
            vec![Some(b"b".to_vec()), None],
        ];
        assert_eq!(last(&rows, &[0]), Some(vec!["b".to_string()]));
        assert_eq!(last(&rows, &[0, 1]), None);
        assert_eq!(last(&[], &[0]), None);
    }
}
