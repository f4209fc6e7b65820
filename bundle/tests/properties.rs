//! Property tests: canonical JSON is insensitive to formatting and idempotent; a signature holds for any
//! bundle and breaks on any single-byte change of a raw-hashed file or of the token.

use std::collections::BTreeMap;

use proptest::prelude::*;
use regent_bundle::canonical::{canonicalize_json, parse, CanonicalValue};
use regent_bundle::signing::{
    generate_key_pem, sign, signing_key_from_pem, verify, Keyring, SignClaims, VerifyOptions,
};
use regent_bundle::{Bundle, SIGNATURES_FILE};

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn keys_sorted(v: &CanonicalValue) -> bool {
    match v {
        CanonicalValue::Object(m) => {
            m.keys()
                .zip(m.keys().skip(1))
                .all(|(a, b)| a.as_bytes() < b.as_bytes())
                && m.values().all(keys_sorted)
        }
        CanonicalValue::Array(a) => a.iter().all(keys_sorted),
        _ => true,
    }
}

proptest! {
    #[test]
    fn canonical_ignores_formatting_and_is_idempotent(v in json_value()) {
        let compact = canonicalize_json(serde_json::to_string(&v).unwrap().as_bytes()).unwrap();
        let pretty = canonicalize_json(serde_json::to_string_pretty(&v).unwrap().as_bytes()).unwrap();
        prop_assert_eq!(&compact, &pretty);
        prop_assert_eq!(&canonicalize_json(&compact).unwrap(), &compact);
        prop_assert!(keys_sorted(&parse(&compact).unwrap()));
        // The canonical text is still the same JSON document.
        let back: serde_json::Value = serde_json::from_slice(&compact).unwrap();
        prop_assert_eq!(back, v);
    }

    #[test]
    fn canonical_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }
}

fn key() -> regent_bundle::signing::SigningKey {
    signing_key_from_pem(&generate_key_pem().0, "k").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn signature_holds_and_any_byte_change_breaks_it(
        body in "[a-z_ ]{0,40}",
        data in json_value(),
        pick in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        target_token in any::<bool>(),
    ) {
        let k = key();
        let mut ring = Keyring::new();
        ring.insert("k", k.verifying_key());
        let module = format!("package p\n\n# {body}\nallow := true\n");
        let files: BTreeMap<String, Vec<u8>> = [
            ("p/p.rego".to_string(), module.into_bytes()),
            ("d/data.json".to_string(), serde_json::to_vec(&serde_json::json!({"v": data})).unwrap()),
        ].into_iter().collect();
        let mut b = Bundle::from_files(files).unwrap();
        sign(&mut b, &k, "k", &SignClaims::default()).unwrap();
        prop_assert!(verify(&b, &ring, &VerifyOptions::default()).is_ok());

        let target = if target_token { SIGNATURES_FILE } else { "p/p.rego" };
        let mut all: BTreeMap<String, Vec<u8>> = b.files().map(|(p, d)| (p.to_string(), d.to_vec())).collect();
        let bytes = all.get_mut(target).unwrap();
        let i = pick.index(bytes.len());
        bytes[i] ^= flip;
        // The change either makes the bundle unreadable or fails verification; it never verifies.
        if let Ok(changed) = Bundle::from_files(all) {
            prop_assert!(verify(&changed, &ring, &VerifyOptions::default()).is_err());
        }
    }
}
