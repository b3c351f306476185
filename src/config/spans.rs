//! Where a key is in the configuration text, so that every problem is reported at
//! the key's own line (`file:line: key: problem`), and a type error names its key.
//! The text is parsed again, with spans (`toml::de::DeTable`), only when a problem
//! is being reported.

use toml::de::{DeTable, DeValue};

/// The line (1-based) of the deepest key of the dotted path that `message` starts
/// with (`nodes.city.destination.concurrency: …`), if the text has it.
pub(super) fn key_line(text: &str, message: &str) -> Option<usize> {
    let path = message.split([':', ' ']).next()?;
    if !path.contains('.') || path.contains('`') {
        return None;
    }
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    for part in path.split('.') {
        let (key, value) = table.get_key_value(part)?;
        found = Some(key.span().start);
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|at| super::line_of(text, at))
}

/// The dotted path of the deepest key whose key or value holds `offset` (arrays of
/// tables as `routes[2]`). Every table is searched: a table's own span covers only
/// its header, not the keys under it.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    find(root.get_ref(), offset)
}

fn find(table: &DeTable<'_>, offset: usize) -> Option<String> {
    for (key, value) in table {
        let name = key.get_ref().to_string();
        let (k, v) = (key.span(), value.span());
        let here = (k.start.min(v.start)..k.end.max(v.end)).contains(&offset);
        let deeper =
            match value.get_ref() {
                DeValue::Table(t) => find(t, offset),
                DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| match item
                    .get_ref()
                {
                    DeValue::Table(t) => find(t, offset).map(|p| format!("[{i}].{p}")),
                    _ => None,
                }),
                _ => None,
            };
        match (deeper, here) {
            (Some(p), _) if p.starts_with('[') => return Some(format!("{name}{p}")),
            (Some(p), _) => return Some(format!("{name}.{p}")),
            (None, true) => return Some(name),
            (None, false) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[gateway]\nid = \"g\"\nlisten = \"x\"\n\n[nodes.city]\nname = \"c\"\ndestination = { url = \"u\", concurrency = 0 }\n\n[[routes]]\nname = \"r\"\nto = [\"city\"]\n";

    #[test]
    fn a_problem_is_at_its_keys_line() {
        assert_eq!(key_line(TEXT, "gateway.listen: bad"), Some(3));
        assert_eq!(
            key_line(
                TEXT,
                "nodes.city.destination.concurrency: must be at least 1"
            ),
            Some(7)
        );
        assert_eq!(key_line(TEXT, "nodes.city.name: x"), Some(6));
        assert_eq!(key_line(TEXT, "nodes.nowhere.x: y"), None);
        assert_eq!(key_line(TEXT, "routes `r`.to: unknown"), None);
    }

    #[test]
    fn a_type_error_names_its_key() {
        let at = TEXT.find("0 }").expect("zero");
        assert_eq!(
            key_at(TEXT, at).as_deref(),
            Some("nodes.city.destination.concurrency")
        );
        let at = TEXT.find("[\"city\"]").expect("to");
        assert_eq!(key_at(TEXT, at).as_deref(), Some("routes[0].to"));
        let at = TEXT.find("\"x\"").expect("listen");
        assert_eq!(key_at(TEXT, at).as_deref(), Some("gateway.listen"));
    }
}
