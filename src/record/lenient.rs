//! Records from a node whose ID numbers are flagged rather than refused
//! (`[nodes.ID] id_checks = "flag"`): a record whose only problems are its ID
//! numbers' checks is accepted as it came, and said to be flagged (`id_no_invalid`,
//! supervision's data-quality code 0006). Any other problem still refuses it.

use super::value::{Obj, Val};
use super::{FieldError, Kind, Record, schema};

/// The rules that check ID numbers (居民身份证号码, 统一社会信用代码).
pub const ID_RULES: [&str; 2] = ["id_no", "uscc"];

/// The flag a record accepted with a malformed ID number carries.
pub const ID_FLAG: &str = "id_no_invalid";

impl Record {
    /// [`Record::from_obj_known`], flagging ID numbers instead of refusing them: the
    /// record, and whether an ID number failed its check.
    pub fn from_obj_flagging_ids(
        index: usize,
        fields: Obj,
        expected: Option<Kind>,
        known: schema::Known,
    ) -> Result<(Record, bool), Vec<FieldError>> {
        let copy = fields.clone();
        let errors = match Record::from_obj_known(index, fields, expected, known) {
            Ok(r) => return Ok((r, false)),
            Err(errors) => errors,
        };
        if !errors.iter().all(|e| ID_RULES.contains(&e.rule.as_str())) {
            return Err(errors);
        }
        // Check the rest without the failing ID numbers, then put them back as sent.
        let mut stripped = copy.clone();
        let mut kept = Vec::new();
        for e in &errors {
            if let Some(v) = take(&mut stripped, &e.field) {
                kept.push((e.field.clone(), v));
            }
        }
        let mut r = Record::from_obj_known(index, stripped, expected, known)?;
        for (field, v) in kept {
            put(&mut r.fields, &field, v);
        }
        Ok((r, true))
    }

    /// [`Record::from_obj_flagging_ids`] for a JSON value.
    pub fn from_value_flagging_ids(
        index: usize,
        value: serde_json::Value,
        expected: Option<Kind>,
    ) -> Result<(Record, bool), Vec<FieldError>> {
        match value {
            serde_json::Value::Object(m) => {
                Record::from_obj_flagging_ids(index, Obj::from(m), expected, Default::default())
            }
            other => Record::from_value(index, other, expected).map(|r| (r, false)),
        }
    }
}

// Canonical fields nest one level at most (`applicant.id_no`).
fn take(fields: &mut Obj, path: &str) -> Option<Val> {
    match path.split_once('.') {
        None => fields.remove(path),
        Some((outer, inner)) => match fields.get_mut(outer)? {
            Val::Obj(m) => m.remove(inner),
            _ => None,
        },
    }
}

fn put(fields: &mut Obj, path: &str, v: Val) {
    match path.split_once('.') {
        None => {
            fields.insert(path, v);
        }
        Some((outer, inner)) => {
            if let Some(Val::Obj(m)) = fields.get_mut(outer) {
                m.insert(inner, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(id_no: &str, mobile: &str) -> serde_json::Value {
        json!({"kind": "application", "case_no": "C-1", "item_code": "X",
               "applicant": {"type": "person", "id_type": "111", "id_no": id_no},
               "contact": {"mobile": mobile}})
    }

    #[test]
    fn a_bad_id_number_alone_is_flagged_and_kept_as_sent() {
        let (r, flagged) =
            Record::from_value_flagging_ids(0, app("350205195912280250", "18659201234"), None)
                .expect("accepted with a flag");
        assert!(flagged);
        assert_eq!(
            r.path_text("applicant.id_no").as_deref(),
            Some("350205195912280250")
        );
        let (_, flagged) =
            Record::from_value_flagging_ids(0, app("350205195912280259", "18659201234"), None)
                .expect("valid");
        assert!(!flagged);
    }

    #[test]
    fn any_other_problem_still_refuses() {
        let errors = Record::from_value_flagging_ids(0, app("350205195912280250", "123"), None)
            .expect_err("a bad mobile refuses");
        assert!(
            errors.iter().any(|e| e.field == "contact.mobile"),
            "{errors:?}"
        );
    }
}
