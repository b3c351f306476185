//! Sealing and opening, without a database.

use super::*;
use crate::config::Config;

fn config(encrypt: &str, keys: &[(&str, &str)]) -> Config {
    let mut text = format!(
        "[gateway]\nid = \"gw\"\nlisten = \"127.0.0.1:0\"\n\n[store]\nencrypt = \"{encrypt}\"\nkeys = ["
    );
    for (i, (id, file)) in keys.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(&format!("{{ id = \"{id}\", secret_file = \"{file}\" }}"));
    }
    text.push_str("]\n");
    Config::parse_unchecked(&text, std::path::Path::new("/tmp/x/hallgate.toml")).unwrap()
}

fn keys(dir: &std::path::Path, encrypt: &str, ids: &[(&str, &str)]) -> DataKeys {
    let mut list = Vec::new();
    for (id, value) in ids {
        let file = dir.join(format!("{id}.key"));
        std::fs::write(&file, value).unwrap();
        list.push((*id, file.to_str().unwrap().to_string()));
    }
    let refs: Vec<(&str, &str)> = list.iter().map(|(a, b)| (*a, b.as_str())).collect();
    DataKeys::from_config(&config(encrypt, &refs))
        .unwrap()
        .unwrap()
}

const RECORD: &str = r#"{"applicant":{"id_no":"350205195912280259","id_type":"111","name":"林晓东","type":"person"},"case_no":"350205261204000001","case_pwd":"558120","contact":{"mobile":"18659201234","name":"林晓东"},"item_code":"X1","kind":"application","materials":[{"name":"申请书","sort":1}],"op":"upsert"}"#;

#[test]
fn personal_fields_are_sealed_and_open_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, key) in [
        ("sm4-gcm", "0123456789abcdeffedcba9876543210"),
        ("aes-256-gcm", &"ab".repeat(32)[..]),
    ] {
        let k = keys(dir.path(), alg, &[("k1", key)]);
        let sealed = k.seal_record(RECORD).unwrap();
        for clear in ["350205195912280259", "林晓东", "18659201234", "558120"] {
            assert!(!sealed.contains(clear), "{alg}: {clear} in {sealed}");
        }
        // Not personal: still there, still queryable.
        assert!(sealed.contains("\"op\":\"upsert\"") && sealed.contains("申请书"));
        assert_eq!(k.open_record(&sealed).unwrap(), RECORD, "{alg}");
        assert_eq!(DataKeys::keys_of(sealed.as_bytes()), ["k1"]);
        let body = k.seal_body(RECORD.as_bytes());
        assert!(!String::from_utf8_lossy(&body).contains("林晓东"));
        assert_eq!(k.open_body(&body).unwrap(), RECORD.as_bytes());
        assert_eq!(
            k.open_body(b"plain, from before").unwrap(),
            b"plain, from before"
        );
        assert!(k.seal_body(b"").is_empty());
    }
}

#[test]
fn a_wrong_or_missing_key_never_reads_ciphertext_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keys(
        dir.path(),
        "sm4-gcm",
        &[("k1", "0123456789abcdeffedcba9876543210")],
    );
    let sealed = k1.seal_record(RECORD).unwrap();
    let wrong = keys(
        dir.path(),
        "sm4-gcm",
        &[("k1", "fedcba98765432100123456789abcdef")],
    );
    assert!(
        matches!(wrong.open_record(&sealed), Err(StoreError::Corrupt(m)) if m.contains("does not decrypt"))
    );
    let other = keys(
        dir.path(),
        "sm4-gcm",
        &[("k2", "fedcba98765432100123456789abcdef")],
    );
    assert!(
        matches!(other.open_record(&sealed), Err(StoreError::Corrupt(m)) if m.contains("does not hold"))
    );
    // Rotation: the new key first, the old one still readable.
    let both = keys(
        dir.path(),
        "sm4-gcm",
        &[
            ("k2", "fedcba98765432100123456789abcdef"),
            ("k1", "0123456789abcdeffedcba9876543210"),
        ],
    );
    assert_eq!(both.open_record(&sealed).unwrap(), RECORD);
    assert_eq!(
        DataKeys::keys_of(both.seal_record(RECORD).unwrap().as_bytes()),
        ["k2"]
    );
}

#[test]
fn bad_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "0123").unwrap();
    let e = DataKeys::from_config(&config("sm4-gcm", &[("k1", short.to_str().unwrap())]))
        .err()
        .unwrap();
    assert!(e.to_string().contains("16 bytes"), "{e}");
    let e = DataKeys::from_config(&config("sm4-gcm", &[]))
        .err()
        .unwrap();
    assert!(e.to_string().contains("keys"), "{e}");
    let e = DataKeys::from_config(&config("rot13", &[])).err().unwrap();
    assert!(e.to_string().contains("sm4-gcm"), "{e}");
    assert!(
        DataKeys::from_config(&config("off", &[]))
            .unwrap()
            .is_none()
    );
}
