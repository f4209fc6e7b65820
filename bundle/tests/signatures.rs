//! Signing and verification: OPA's worked example as test vectors, a full round trip, and every way a
//! signature must be refused.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use regent_bundle::signing::{
    check_not_rollback, file_digest, generate_key_pem, sign, signing_key_from_pem, verify, Keyring,
    SignClaims, SigningKey, VerifyError, VerifyOptions,
};
use regent_bundle::{Bundle, UnpackLimits, SIGNATURES_FILE};

const MANIFEST: &str = r#"{"revision":"git-3f2a9c1","roots":["authz"],"rego_version":1}"#;
const DATA: &str = r#"{"roles":{"admin":["read","write"]}}"#;
const POLICY: &str = "package authz\n\ndefault allow := false\n";

fn example_files() -> BTreeMap<String, Vec<u8>> {
    [
        (".manifest", MANIFEST),
        ("authz/data.json", DATA),
        ("authz/policy.rego", POLICY),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
    .collect()
}

fn key() -> SigningKey {
    let (private, _) = generate_key_pem();
    signing_key_from_pem(&private, "test").unwrap()
}

fn keyring(kid: &str, k: &SigningKey) -> Keyring {
    let mut ring = Keyring::new();
    ring.insert(kid, k.verifying_key());
    ring
}

fn signed(k: &SigningKey, kid: &str, claims: &SignClaims) -> Bundle {
    let mut b = Bundle::from_files(example_files()).unwrap();
    sign(&mut b, k, kid, claims).unwrap();
    b
}

/// Re-reads a bundle with one file replaced (what an attacker can do to an archive).
fn with_file(b: &Bundle, path: &str, bytes: Option<&[u8]>) -> Bundle {
    let mut files: BTreeMap<String, Vec<u8>> = b
        .files()
        .map(|(p, d)| (p.to_string(), d.to_vec()))
        .collect();
    match bytes {
        Some(d) => files.insert(path.to_string(), d.to_vec()),
        None => files.remove(path),
    };
    Bundle::from_files(files).unwrap()
}

fn token_of(b: &Bundle) -> String {
    let v: serde_json::Value = serde_json::from_slice(b.file(SIGNATURES_FILE).unwrap()).unwrap();
    v["signatures"][0].as_str().unwrap().to_string()
}

fn with_token(b: &Bundle, token: &str) -> Bundle {
    let file = serde_json::json!({ "signatures": [token] }).to_string();
    with_file(b, SIGNATURES_FILE, Some(file.as_bytes()))
}

/// Builds a token with an arbitrary header and payload, signed by `k`.
fn forge(k: &SigningKey, header: serde_json::Value, payload: serde_json::Value) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    );
    format!(
        "{input}.{}",
        B64.encode(k.sign(input.as_bytes()).to_bytes())
    )
}

fn payload_of(b: &Bundle) -> serde_json::Value {
    let t = token_of(b);
    serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[test]
fn worked_example_hashes_match_opa() {
    // The three digests from OPA's worked example (reference notes §2).
    let cases = [
        (
            ".manifest",
            MANIFEST,
            "627c3a33582830cfdb059bae24969cbb418f949ce0d5c5c9acc0b5674a6f9b0f",
        ),
        (
            "authz/data.json",
            DATA,
            "541293c752ee1bcacf8902fab6fef3a644a350cd8425a4d4945ba0feec6d929c",
        ),
        (
            "authz/policy.rego",
            POLICY,
            "284cf8f3a3b4995be32213d6dcbab17dd5d0ea4863e8bb3b02d598e5fc23d131",
        ),
    ];
    for (name, content, want) in cases {
        assert_eq!(
            file_digest(name, content.as_bytes(), "SHA-256")
                .unwrap()
                .unwrap(),
            want,
            "{name}"
        );
    }
    // Whitespace and key order do not change a structured file's digest; they do change a module's.
    let pretty =
        "{\n  \"roots\": [\"authz\"],\n  \"rego_version\": 1,\n  \"revision\": \"git-3f2a9c1\"\n}";
    assert_eq!(
        file_digest(".manifest", pretty.as_bytes(), "SHA-256").unwrap(),
        file_digest(".manifest", MANIFEST.as_bytes(), "SHA-256").unwrap()
    );
    // data.yaml is structured (hashed as canonical JSON), data.yml is hashed raw: OPA's quirk.
    let yaml = b"roles:\n  admin: [read, write]\n";
    assert_eq!(
        file_digest("authz/data.yaml", yaml, "SHA-256")
            .unwrap()
            .unwrap(),
        cases[1].2
    );
    assert_ne!(
        file_digest("authz/data.yml", yaml, "SHA-256")
            .unwrap()
            .unwrap(),
        cases[1].2
    );
}

#[test]
fn round_trip_sign_verify_through_archive() {
    let k = key();
    let b = signed(
        &k,
        "k1",
        &SignClaims {
            iss: Some("regent".into()),
            scope: Some("write".into()),
            iat: Some(1_735_689_600),
        },
    );
    let bytes = b.to_tar_gz().unwrap();
    let back = Bundle::from_tar_gz(&bytes, &UnpackLimits::default()).unwrap();
    let v = verify(
        &back,
        &keyring("k1", &k),
        &VerifyOptions {
            scope: Some("write".into()),
        },
    )
    .unwrap();
    assert_eq!(v.kid, "k1");
    assert_eq!(v.iat, Some(1_735_689_600));
    assert_eq!(v.revision.as_deref(), Some("git-3f2a9c1"));
    assert_eq!(v.iss.as_deref(), Some("regent"));
    // The payload carries OPA's shape: files with SHA-256, numeric iat.
    let p = payload_of(&back);
    assert_eq!(p["files"].as_array().unwrap().len(), 3);
    assert_eq!(p["files"][0]["algorithm"], "SHA-256");
    assert!(p["iat"].is_i64());
    let header: serde_json::Value = serde_json::from_slice(
        &B64.decode(token_of(&back).split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header,
        serde_json::json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"})
    );
}

#[test]
fn rotation_keyring_accepts_each_trusted_kid() {
    let (old, new) = (key(), key());
    let mut ring = Keyring::new();
    ring.insert("old", old.verifying_key());
    ring.insert("new", new.verifying_key());
    for (kid, k) in [("old", &old), ("new", &new)] {
        let b = signed(k, kid, &SignClaims::default());
        assert_eq!(
            verify(&b, &ring, &VerifyOptions::default()).unwrap().kid,
            kid
        );
    }
    // A token claiming the other kid does not verify with the wrong key.
    let b = signed(&old, "new", &SignClaims::default());
    assert_eq!(
        verify(&b, &ring, &VerifyOptions::default()).unwrap_err(),
        VerifyError::BadSignature("new".into())
    );
}

#[test]
fn every_tamper_is_refused_with_its_own_error() {
    let k = key();
    let ring = keyring("k1", &k);
    let opts = VerifyOptions::default();
    let b = signed(&k, "k1", &SignClaims::default());
    assert!(verify(&b, &ring, &opts).is_ok());

    let unsigned = with_file(&b, SIGNATURES_FILE, None);
    assert_eq!(
        verify(&unsigned, &ring, &opts).unwrap_err(),
        VerifyError::MissingSignatures
    );

    let modified = with_file(
        &b,
        "authz/policy.rego",
        Some(b"package authz\n\ndefault allow := true\n"),
    );
    assert!(
        matches!(verify(&modified, &ring, &opts), Err(VerifyError::SizeMismatch { file, .. }) if file == "authz/policy.rego")
    );

    let data = with_file(
        &b,
        "authz/data.json",
        Some(br#"{"roles":{"admin":["read","wrote"]}}"#),
    );
    assert!(
        matches!(verify(&data, &ring, &opts), Err(VerifyError::DigestMismatch { file, .. }) if file == "authz/data.json")
    );

    let extra = with_file(&b, "authz/extra.rego", Some(b"package authz.extra\n"));
    assert_eq!(
        verify(&extra, &ring, &opts).unwrap_err(),
        VerifyError::FileNotSigned("authz/extra.rego".into())
    );

    let missing = with_file(&b, "authz/data.json", None);
    assert_eq!(
        verify(&missing, &ring, &opts).unwrap_err(),
        VerifyError::SignedFilesMissing(vec!["authz/data.json".into()])
    );

    let other = key();
    assert_eq!(
        verify(&b, &keyring("k1", &other), &opts).unwrap_err(),
        VerifyError::BadSignature("k1".into())
    );
    assert_eq!(
        verify(&b, &keyring("k2", &k), &opts).unwrap_err(),
        VerifyError::UnknownKid("k1".into())
    );

    let two = serde_json::json!({"signatures": [token_of(&b), token_of(&b)]}).to_string();
    assert_eq!(
        verify(
            &with_file(&b, SIGNATURES_FILE, Some(two.as_bytes())),
            &ring,
            &opts
        )
        .unwrap_err(),
        VerifyError::TokenCount(2)
    );
    let none = br#"{"signatures": []}"#;
    assert_eq!(
        verify(&with_file(&b, SIGNATURES_FILE, Some(none)), &ring, &opts).unwrap_err(),
        VerifyError::TokenCount(0)
    );
    assert!(matches!(
        verify(
            &with_file(&b, SIGNATURES_FILE, Some(b"not json")),
            &ring,
            &opts
        ),
        Err(VerifyError::BadSignaturesFile(_))
    ));
    assert!(matches!(
        verify(&with_token(&b, "a.b"), &ring, &opts),
        Err(VerifyError::MalformedToken(_))
    ));

    // Flipping one bit of the signature.
    let t = token_of(&b);
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut raw = B64.decode(sig).unwrap();
    raw[0] ^= 1;
    let flipped = format!("{input}.{}", B64.encode(raw));
    assert_eq!(
        verify(&with_token(&b, &flipped), &ring, &opts).unwrap_err(),
        VerifyError::BadSignature("k1".into())
    );
}

#[test]
fn hmac_none_and_algorithms_unfit_for_the_key_and_missing_kid_are_refused() {
    let k = key();
    let ring = keyring("k1", &k);
    let b = signed(&k, "k1", &SignClaims::default());
    let payload = payload_of(&b);
    for alg in ["none", "HS256", "eddsa"] {
        let t = forge(
            &k,
            serde_json::json!({"alg": alg, "kid": "k1"}),
            payload.clone(),
        );
        assert_eq!(
            verify(&with_token(&b, &t), &ring, &VerifyOptions::default()).unwrap_err(),
            VerifyError::AlgorithmNotAllowed(alg.into())
        );
    }
    for alg in ["RS256", "ES256"] {
        let t = forge(
            &k,
            serde_json::json!({"alg": alg, "kid": "k1"}),
            payload.clone(),
        );
        assert_eq!(
            verify(&with_token(&b, &t), &ring, &VerifyOptions::default()).unwrap_err(),
            VerifyError::AlgorithmMismatch {
                kid: "k1".into(),
                alg: alg.into(),
                key: "Ed25519".into()
            }
        );
    }
    let t = forge(&k, serde_json::json!({"alg": "EdDSA"}), payload.clone());
    assert_eq!(
        verify(&with_token(&b, &t), &ring, &VerifyOptions::default()).unwrap_err(),
        VerifyError::MissingKid
    );
    // OPA's deprecated payload `keyid` is honoured as a fallback.
    let mut p = payload.clone();
    p["keyid"] = "k1".into();
    let t = forge(&k, serde_json::json!({"alg": "EdDSA"}), p);
    assert_eq!(
        verify(&with_token(&b, &t), &ring, &VerifyOptions::default())
            .unwrap()
            .kid,
        "k1"
    );
    // Unsupported digest algorithms are named.
    let mut p = payload.clone();
    p["files"][0]["algorithm"] = "MD5".into();
    let t = forge(&k, serde_json::json!({"alg": "EdDSA", "kid": "k1"}), p);
    assert!(
        matches!(verify(&with_token(&b, &t), &ring, &VerifyOptions::default()), Err(VerifyError::UnsupportedHashAlgorithm { algorithm, .. }) if algorithm == "MD5")
    );
    // A signed revision that disagrees with the manifest.
    let mut p = payload;
    p["revision"] = "other".into();
    let t = forge(&k, serde_json::json!({"alg": "EdDSA", "kid": "k1"}), p);
    assert!(matches!(
        verify(&with_token(&b, &t), &ring, &VerifyOptions::default()),
        Err(VerifyError::RevisionMismatch { .. })
    ));
}

#[test]
fn scope_must_match_exactly() {
    let k = key();
    let ring = keyring("k1", &k);
    let b = signed(
        &k,
        "k1",
        &SignClaims {
            scope: Some("write".into()),
            ..Default::default()
        },
    );
    let err = verify(
        &b,
        &ring,
        &VerifyOptions {
            scope: Some("read".into()),
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError::WrongScope {
            expected: Some("read".into()),
            found: Some("write".into())
        }
    );
    // OPA: a verifier without a scope refuses a token that has one.
    assert!(matches!(
        verify(&b, &ring, &VerifyOptions::default()),
        Err(VerifyError::WrongScope { .. })
    ));
}

#[test]
fn rollback_is_refused_by_signed_iat() {
    let k = key();
    let ring = keyring("k1", &k);
    let at = |iat| {
        verify(
            &signed(
                &k,
                "k1",
                &SignClaims {
                    iat: Some(iat),
                    ..Default::default()
                },
            ),
            &ring,
            &VerifyOptions::default(),
        )
        .unwrap()
    };
    let (old, new) = (at(100), at(200));
    assert!(check_not_rollback(&old, &new).is_ok());
    assert!(check_not_rollback(&new, &new).is_ok());
    let err = check_not_rollback(&new, &old).unwrap_err();
    assert_eq!((err.active_iat, err.candidate_iat), (Some(200), Some(100)));
    let mut no_iat = old.clone();
    no_iat.iat = None;
    assert!(check_not_rollback(&new, &no_iat).is_err());
}

#[test]
fn openssl_generated_keys_work() {
    let dir = tempfile::tempdir().unwrap();
    let priv_path = dir.path().join("k.pem");
    let pub_path = dir.path().join("k.pub.pem");
    let run = |args: &[&str]| std::process::Command::new("openssl").args(args).status();
    match run(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        priv_path.to_str().unwrap(),
    ]) {
        Ok(s) if s.success() => {}
        _ => {
            eprintln!("openssl not available: skipping interop with openssl-generated keys");
            return;
        }
    }
    assert!(run(&[
        "pkey",
        "-in",
        priv_path.to_str().unwrap(),
        "-pubout",
        "-out",
        pub_path.to_str().unwrap()
    ])
    .unwrap()
    .success());
    let k = regent_bundle::signing::read_signing_key(&priv_path).unwrap();
    let mut ring = Keyring::new();
    ring.insert_file("ossl", &pub_path).unwrap();
    let b = signed(&k, "ossl", &SignClaims::default());
    assert_eq!(
        verify(&b, &ring, &VerifyOptions::default()).unwrap().kid,
        "ossl"
    );
    // A public key where a private key is expected is a clear error.
    let err = regent_bundle::signing::read_signing_key(&pub_path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PKCS#8 private"), "{err}");
}

#[test]
fn large_signed_data_verifies_as_small_data_does() {
    // Past 1 MiB of data a signed bundle's data is hashed while it is parsed, not when verified:
    // the outcome must be the same. Unsorted keys and spaces make the canonical form matter.
    let mut data = String::from("{ \"z\": 0, \"users\": {");
    for i in 0..40_000 {
        let sep = if i == 0 { "" } else { ", " };
        data.push_str(&format!(
            "{sep}\"u{i:06}\": {{\"role\": \"r{}\", \"active\": true}}",
            i % 5
        ));
    }
    data.push_str("} }");
    assert!(data.len() > 1 << 20);
    let mut files = example_files();
    files.insert("authz/data.json".into(), data.clone().into_bytes());
    let k = key();
    let ring = keyring("k1", &k);
    let opts = VerifyOptions::default();
    let mut b = Bundle::from_files(files).unwrap();
    sign(&mut b, &k, "k1", &SignClaims::default()).unwrap();
    let listed = payload_of(&b)["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "authz/data.json")
        .map(|f| f["hash"].as_str().unwrap().to_string());
    let digest = file_digest("authz/data.json", data.as_bytes(), "SHA-256").unwrap();
    assert_eq!(listed, digest);

    let read = Bundle::from_tar_gz(&b.to_tar_gz().unwrap(), &UnpackLimits::default()).unwrap();
    assert!(verify(&read, &ring, &opts).is_ok());
    // The same data laid out differently has the same canonical form, so a signature without
    // lengths (as OPA's tools write it) still vouches for it; Regent's pins the length too.
    let compact = serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(&data).unwrap());
    let relaid = with_file(&b, "authz/data.json", Some(&compact.unwrap()));
    assert!(matches!(
        verify(&relaid, &ring, &opts),
        Err(VerifyError::SizeMismatch { file, .. }) if file == "authz/data.json"
    ));
    let mut opa_payload = payload_of(&b);
    for f in opa_payload["files"].as_array_mut().unwrap() {
        f.as_object_mut().unwrap().remove("size");
    }
    let opa_token = forge(
        &k,
        serde_json::json!({"alg": "EdDSA", "kid": "k1"}),
        opa_payload,
    );
    assert!(verify(&with_token(&relaid, &opa_token), &ring, &opts).is_ok());
    // The next revision, read after this one with the data unchanged, takes the parsed data and
    // its digest over; the digest is still checked against what the new signature lists.
    let archive = b.to_tar_gz().unwrap();
    let next = Bundle::from_tar_gz_after(&archive, &UnpackLimits::default(), Some(&read)).unwrap();
    assert!(verify(&next, &ring, &opts).is_ok());
    let mut payload = payload_of(&b);
    for f in payload["files"].as_array_mut().unwrap() {
        if f["name"] == "authz/data.json" {
            f["hash"] = "00".repeat(32).into();
        }
    }
    let forged = forge(
        &k,
        serde_json::json!({"alg": "EdDSA", "kid": "k1"}),
        payload,
    );
    let forged = with_token(&b, &forged).to_tar_gz().unwrap();
    let next = Bundle::from_tar_gz_after(&forged, &UnpackLimits::default(), Some(&read)).unwrap();
    assert!(matches!(
        verify(&next, &ring, &opts),
        Err(VerifyError::DigestMismatch { file, .. }) if file == "authz/data.json"
    ));
    // One role changed, same size: refused.
    let tampered = data.replacen("\"r3\"", "\"r4\"", 1);
    assert_eq!(tampered.len(), data.len());
    assert!(matches!(
        verify(&with_file(&b, "authz/data.json", Some(tampered.as_bytes())), &ring, &opts),
        Err(VerifyError::DigestMismatch { file, .. }) if file == "authz/data.json"
    ));
}
