//! The canonical record's own JSON values: what the mapping engine builds and the
//! checks read, cheaper to build than `serde_json::Value`.
//!
//! Keys and strings are `CompactString`s (up to 24 bytes stored inline, which holds
//! every canonical field name and most values: codes, ID numbers, mobiles, short
//! names), and an object is a vector of members kept sorted by key: no allocation
//! per key, none per short value, one per object. The order is the byte order of the
//! keys, the order `serde_json::Map` keeps, so a record writes the same JSON bytes
//! either way. Conversions to and from `serde_json::Value` are for the edges
//! (canonical JSON posted as is, rendering, tests).

use std::cmp::Ordering;

use compact_str::CompactString;
use serde::Serialize;
use serde_json::{Map, Number, Value};

/// A canonical JSON value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Val {
    #[default]
    Null,
    Bool(bool),
    Num(Number),
    Str(CompactString),
    Arr(Vec<Val>),
    Obj(Obj),
}

/// A JSON object: members sorted by key, keys unique; one allocation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Obj {
    members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq)]
struct Member {
    /// The key's first eight bytes as a big-endian number (zero-padded): ordering
    /// these orders the keys, unless two are equal.
    head: u64,
    key: CompactString,
    val: Val,
}

impl Member {
    fn new(key: CompactString, val: Val) -> Member {
        Member {
            head: head(&key),
            key,
            val,
        }
    }
}

/// A key's first eight bytes as a big-endian number (zero-padded).
pub(crate) fn head(s: &str) -> u64 {
    let mut w = 0u64;
    for (i, b) in s.bytes().take(8).enumerate() {
        w |= (b as u64) << (56 - 8 * i);
    }
    w
}

/// Byte order of two keys, deciding on the first eight bytes when they differ (most
/// field names do) without a call to `memcmp`.
fn key_cmp(a: &str, b: &str) -> Ordering {
    // Zero padding orders a proper prefix first, as byte order does; equal heads
    // (a key with a NUL byte among them) fall through to the full comparison.
    match head(a).cmp(&head(b)) {
        Ordering::Equal => a.cmp(b),
        other => other,
    }
}

impl Obj {
    pub fn new() -> Obj {
        Obj::default()
    }

    pub fn with_capacity(n: usize) -> Obj {
        Obj {
            members: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        let h = head(key);
        let mut lo = 0;
        let mut hi = self.members.len();
        while lo < hi {
            let mid = (lo + hi) / 2;
            let m = &self.members[mid];
            let ord = match m.head.cmp(&h) {
                Ordering::Equal => m.key.as_str().cmp(key),
                other => other,
            };
            match ord {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    pub fn get(&self, key: &str) -> Option<&Val> {
        self.find(key).ok().map(|i| &self.members[i].val)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Val> {
        match self.find(key) {
            Ok(i) => Some(&mut self.members[i].val),
            Err(_) => None,
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    pub fn reserve(&mut self, n: usize) {
        self.members.reserve(n);
    }

    /// Append a member whose key (with its [`head`]) orders after every key there (a
    /// debug build checks).
    pub(crate) fn push_last(&mut self, key: &CompactString, head: u64, value: Val) {
        debug_assert!(
            self.members
                .last()
                .is_none_or(|m| key_cmp(&m.key, key) == Ordering::Less)
        );
        debug_assert_eq!(head, self::head(key));
        self.members.push(Member {
            head,
            key: key.clone(),
            val: value,
        });
    }

    /// Set `key` to `value`, returning the value it replaces.
    pub fn insert(&mut self, key: &str, value: Val) -> Option<Val> {
        match self.find(key) {
            Ok(i) => Some(std::mem::replace(&mut self.members[i].val, value)),
            Err(i) => {
                self.members
                    .insert(i, Member::new(CompactString::new(key), value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Val> {
        match self.find(key) {
            Ok(i) => Some(self.members.remove(i).val),
            Err(_) => None,
        }
    }

    /// The object at `key`, made (replacing anything else there) if need be.
    pub fn object_at(&mut self, key: &str) -> &mut Obj {
        let i = match self.find(key) {
            Ok(i) => {
                if !matches!(self.members[i].val, Val::Obj(_)) {
                    self.members[i].val = Val::Obj(Obj::new());
                }
                i
            }
            Err(i) => {
                self.members.insert(
                    i,
                    Member::new(CompactString::new(key), Val::Obj(Obj::new())),
                );
                i
            }
        };
        match &mut self.members[i].val {
            Val::Obj(o) => o,
            // Made an object just above.
            _ => unreachable!("object_at always leaves an object"),
        }
    }

    /// Members in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Val)> {
        self.members.iter().map(|m| (m.key.as_str(), &m.val))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Val)> {
        self.members
            .iter_mut()
            .map(|m| (m.key.as_str(), &mut m.val))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.key.as_str())
    }

    /// The value at a path of keys.
    pub fn pointer(&self, path: &[impl AsRef<str>]) -> Option<&Val> {
        let (first, rest) = path.split_first()?;
        let mut v = self.get(first.as_ref())?;
        for p in rest {
            v = v.get(p.as_ref())?;
        }
        Some(v)
    }

    /// Compact JSON, the bytes `serde_json` writes for the same object.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            super::json::write_str(&m.key, out);
            out.push(b':');
            m.val.write_json(out);
        }
        out.push(b'}');
    }

    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        // Written from `str`s and ASCII only.
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.to_map())
    }

    pub fn to_map(&self) -> Map<String, Value> {
        self.members
            .iter()
            .map(|m| (m.key.to_string(), m.val.to_value()))
            .collect()
    }
}

impl From<Map<String, Value>> for Obj {
    fn from(map: Map<String, Value>) -> Obj {
        Obj::from_members(
            map.into_iter()
                .map(|(k, v)| (CompactString::from(k), Val::from(v)))
                .collect(),
        )
    }
}

impl Obj {
    /// An object of unique keys in any order (a `serde_json::Map` is already in key
    /// order, unless serde_json's `preserve_order` is on).
    fn from_members(mut members: Vec<(CompactString, Val)>) -> Obj {
        if !members.is_sorted_by(|a, b| key_cmp(&a.0, &b.0) == Ordering::Less) {
            members.sort_by(|a, b| key_cmp(&a.0, &b.0));
            members.dedup_by(|b, a| a.0 == b.0);
        }
        Obj {
            members: members
                .into_iter()
                .map(|(k, v)| Member::new(k, v))
                .collect(),
        }
    }
}

impl std::ops::Index<&str> for Obj {
    type Output = Val;
    /// The member `key`, or `Null` (as `serde_json::Value` indexes).
    fn index(&self, key: &str) -> &Val {
        static NULL: Val = Val::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl Val {
    pub fn str(s: &str) -> Val {
        Val::Str(CompactString::new(s))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Val::Num(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Val::Num(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Val::Num(_))
    }

    pub fn is_boolean(&self) -> bool {
        matches!(self, Val::Bool(_))
    }

    pub fn as_object(&self) -> Option<&Obj> {
        match self {
            Val::Obj(o) => Some(o),
            _ => None,
        }
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Val> {
        match self {
            Val::Obj(o) => o.get(key),
            _ => None,
        }
    }

    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Val::Null => out.extend_from_slice(b"null"),
            Val::Bool(true) => out.extend_from_slice(b"true"),
            Val::Bool(false) => out.extend_from_slice(b"false"),
            Val::Num(n) => {
                // A number always serialises.
                let _ = serde_json::to_writer(&mut *out, n);
            }
            Val::Str(s) => super::json::write_str(s, out),
            Val::Arr(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
            Val::Obj(o) => o.write_json(out),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => Value::Number(n.clone()),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Arr(items) => Value::Array(items.iter().map(Val::to_value).collect()),
            Val::Obj(o) => o.to_value(),
        }
    }
}

impl From<Value> for Val {
    fn from(v: Value) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(b),
            Value::Number(n) => Val::Num(n),
            Value::String(s) => Val::Str(CompactString::from(s)),
            Value::Array(items) => Val::Arr(items.into_iter().map(Val::from).collect()),
            Value::Object(m) => Val::Obj(Obj::from(m)),
        }
    }
}

impl From<&Value> for Val {
    fn from(v: &Value) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.clone()),
            Value::String(s) => Val::str(s),
            Value::Array(items) => Val::Arr(items.iter().map(Val::from).collect()),
            Value::Object(m) => Val::Obj(Obj::from_members(
                m.iter()
                    .map(|(k, v)| (CompactString::new(k), Val::from(v)))
                    .collect(),
            )),
        }
    }
}

impl PartialEq<&str> for Val {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<str> for Val {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::new();
        self.write_json(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

impl Serialize for Val {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Null => s.serialize_unit(),
            Val::Bool(b) => s.serialize_bool(*b),
            Val::Num(n) => n.serialize(s),
            Val::Str(v) => s.serialize_str(v),
            Val::Arr(items) => s.collect_seq(items),
            Val::Obj(o) => o.serialize(s),
        }
    }
}

impl Serialize for Obj {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.members.iter().map(|m| (m.key.as_str(), &m.val)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_serde_json_does_and_json_bytes_match() {
        let v = serde_json::json!({
            "submitted_at": "2026-03-24T07:56:00+08:00",
            "submit": 1, "a": null, "applicant": {"name": "张三", "id_no": "x\"\n"},
            "ab\u{0}c": true, "ab": [1, 2.5, {"z": 1, "y": [] }], "": "", "abcdefgh1": 1,
            "abcdefgh": 2, "é": "é"
        });
        let obj = match Val::from(&v) {
            Val::Obj(o) => o,
            other => panic!("not an object: {other:?}"),
        };
        assert_eq!(obj.to_json(), serde_json::to_string(&v).unwrap());
        assert_eq!(obj.to_value(), v);
        let from_owned = Obj::from(v.as_object().unwrap().clone());
        assert_eq!(from_owned, obj);
        assert_eq!(serde_json::to_string(&obj).unwrap(), obj.to_json());
    }

    proptest::proptest! {
        /// Keys with long shared heads, NUL bytes and multi-byte text, inserted in any
        /// order: the object orders and writes them as serde_json does.
        #[test]
        fn any_keys_in_any_order_write_as_serde_json(
            keys in proptest::collection::vec("(abcdefgh|a|\\x00|é|z){0,4}", 0..24)
        ) {
            let mut obj = Obj::new();
            let mut map = Map::new();
            for (i, k) in keys.iter().enumerate() {
                obj.insert(k, Val::Num(i.into()));
                map.insert(k.clone(), Value::from(i));
            }
            proptest::prop_assert_eq!(obj.to_json(), serde_json::to_string(&map).unwrap());
            proptest::prop_assert_eq!(&Obj::from(map.clone()), &obj);
            for k in &keys {
                proptest::prop_assert_eq!(obj.get(k).map(Val::to_value), map.get(k).cloned());
            }
        }
    }

    #[test]
    fn insert_keeps_order_and_replaces() {
        let mut o = Obj::new();
        for k in [
            "region",
            "case_no",
            "applicant",
            "kind",
            "case_pwd",
            "region",
        ] {
            o.insert(k, Val::str(k));
        }
        assert_eq!(
            o.keys().collect::<Vec<_>>(),
            ["applicant", "case_no", "case_pwd", "kind", "region"]
        );
        o.object_at("applicant").insert("name", Val::str("张三"));
        assert_eq!(o.pointer(&["applicant", "name"]), Some(&Val::str("张三")));
        assert_eq!(o.remove("kind"), Some(Val::str("kind")));
        assert!(o.get("kind").is_none());
        assert_eq!(o["missing"], Val::Null);
    }
}
