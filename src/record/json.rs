//! Canonical records written as JSON, byte for byte what `serde_json` writes, with a
//! faster path for strings that need no escaping.

/// Whether any of the eight bytes in `x` is `"`, `\\` or a control character.
fn needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |y: u64| y.wrapping_sub(ONES) & !y & HIGHS;
    // A byte below 0x20 (bytes of 0x80 and up are excluded by `!x`).
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
    zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64)) | control != 0
}

/// A JSON string, byte for byte what `serde_json` writes, with a faster path for
/// text that needs no escaping (eight bytes are checked at a time). Every canonical
/// record `hallgate map` prints goes through this ([`super::Obj::write_json`]).
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.push(b'"');
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        if needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    out.extend_from_slice(&bytes[..i]);
    let mut start = i;
    for (j, &b) in bytes.iter().enumerate().skip(i) {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..j]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
                start = j + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..j]);
        out.extend_from_slice(escape);
        start = j + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::super::Val;
    use serde_json::Value;

    proptest::proptest! {
        #[test]
        fn write_json_writes_what_serde_json_writes(s in "\\PC*", t in proptest::collection::vec(0u8..0x80, 0..40)) {
            let ascii = String::from_utf8(t).unwrap_or_default();
            let v = serde_json::json!({"a": s, "b": [ascii, 1, 2.5, null, true], "c": {"d": s}});
            let mut ours = Vec::new();
            Val::from(&v).write_json(&mut ours);
            proptest::prop_assert_eq!(ours, serde_json::to_vec(&v).unwrap_or_default());
        }
    }

    #[test]
    fn write_json_escapes_like_serde_json() {
        for s in [
            "",
            "plain ascii text here",
            "引号\"和\\反斜杠",
            "tab\tnew\nline\r\u{1}\u{1f}\u{7f}",
            "12345678\"",
            "1234567\u{0}",
        ] {
            let v = Value::String(s.to_string());
            let mut ours = Vec::new();
            Val::from(&v).write_json(&mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
    }
}
