//! Hostile archives through [`Bundle::from_verified_tar_gz`]: the signature is checked before any
//! content is parsed, files it does not list are refused before they are read, and every parse is
//! within its budget, in signed and unsigned reads alike. Each case is refused quickly, with the
//! error naming the file and the reason.

use std::time::{Duration, Instant};

use regent_bundle::signing::{self, Keyring, SignClaims, SigningKey, VerifyError, VerifyOptions};
use regent_bundle::{
    write_tar_gz, Bundle, BundleError, ReadError, UnpackLimits, MANIFEST_FILE, SIGNATURES_FILE,
};

const MANIFEST: &str = r#"{"revision":"r1","roots":["authz"]}"#;
const POLICY: &str = "package authz\n\ndefault allow := false\n";

/// Far more than any refusal here takes (milliseconds), little enough to catch quadratic work.
const QUICK: Duration = Duration::from_secs(2);

fn key() -> (SigningKey, Keyring) {
    let (private, _) = signing::generate_key_pem();
    let key = signing::signing_key_from_pem(&private, "test").unwrap();
    let mut ring = Keyring::new();
    ring.insert("k1", key.verifying_key());
    (key, ring)
}

/// The files of a bundle of `extra` plus a manifest and a policy, signed with `key`, in path
/// order (so `.signatures.json` comes second, as every archive we and OPA write has it).
fn signed_files(key: &SigningKey, extra: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    let mut files = std::collections::BTreeMap::new();
    files.insert(MANIFEST_FILE.to_string(), MANIFEST.as_bytes().to_vec());
    files.insert("authz/policy.rego".to_string(), POLICY.as_bytes().to_vec());
    for (p, d) in extra {
        files.insert(p.to_string(), d.to_vec());
    }
    let mut b = Bundle::from_files(files).unwrap();
    let claims = SignClaims {
        iat: Some(100),
        ..SignClaims::default()
    };
    signing::sign(&mut b, key, "k1", &claims).unwrap();
    b.files()
        .map(|(p, d)| (p.to_string(), d.to_vec()))
        .collect()
}

fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    write_tar_gz(files.iter().map(|(p, d)| (p.as_str(), d.as_slice()))).unwrap()
}

fn unsigned(extra: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (MANIFEST_FILE.to_string(), MANIFEST.as_bytes().to_vec()),
        ("authz/policy.rego".to_string(), POLICY.as_bytes().to_vec()),
    ];
    files.extend(extra.iter().map(|(p, d)| (p.to_string(), d.to_vec())));
    files
}

fn verified(bytes: &[u8], ring: &Keyring) -> Result<Bundle, ReadError> {
    let t = Instant::now();
    let r = Bundle::from_verified_tar_gz(
        bytes,
        &UnpackLimits::default(),
        ring,
        &VerifyOptions::default(),
        None,
    );
    assert!(t.elapsed() < QUICK, "took {:?}: {:?}", t.elapsed(), r.err());
    r.map(|(b, _)| b)
}

fn plain(bytes: &[u8]) -> Result<Bundle, BundleError> {
    let t = Instant::now();
    let r = Bundle::from_tar_gz(bytes, &UnpackLimits::default());
    assert!(t.elapsed() < QUICK, "took {:?}: {:?}", t.elapsed(), r.err());
    r
}

/// "Billion laughs": about 1 KB of nested anchors expanding to 6·9^11 (~10^11) strings.
fn alias_bomb() -> Vec<u8> {
    let mut s = String::from("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for i in 1..12 {
        let p = i - 1;
        let refs = vec![format!("*a{p}"); 9].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s.into_bytes()
}

/// 140 KB of flow nesting: 15 s of libyaml's time before its depth limit applied.
fn deep_yaml() -> Vec<u8> {
    format!("a: {}{}\n", "[".repeat(70_000), "]".repeat(70_000)).into_bytes()
}

fn assert_budget(e: &BundleError, file: &str, what: &str) {
    match e {
        BundleError::Data { file: f, message } => {
            assert_eq!(f, file, "{e}");
            assert!(
                message.contains("over the parse budget") && message.contains(what),
                "{e}"
            );
        }
        other => panic!("expected a budget error for {file}, got {other}"),
    }
}

#[test]
fn verified_read_equals_read_then_verify_in_any_entry_order() {
    let (key, ring) = key();
    let files = signed_files(
        &key,
        &[
            ("authz/data.json", br#"{"roles": {"admin": ["read"]}}"#),
            ("authz/x/data.yaml", b"base: &b [read]\nops: *b\n"),
            ("authz/y/data.yml", b"n: 1\n"),
        ],
    );
    let plain_read = Bundle::from_tar_gz(&archive(&files), &UnpackLimits::default()).unwrap();
    let want = signing::verify(&plain_read, &ring, &VerifyOptions::default()).unwrap();
    // `.signatures.json` first (early refusals), last, and in the middle.
    let mut orders = vec![files.clone()];
    let mut last = files.clone();
    let sig = last.remove(1);
    assert_eq!(sig.0, SIGNATURES_FILE);
    orders.push([&last[..], std::slice::from_ref(&sig)].concat());
    let mut middle = last.clone();
    middle.insert(2, sig);
    orders.push(middle);
    for order in orders {
        let (b, got) = Bundle::from_verified_tar_gz(
            &archive(&order),
            &UnpackLimits::default(),
            &ring,
            &VerifyOptions::default(),
            None,
        )
        .unwrap();
        assert_eq!(got, want);
        assert_eq!(b.data().unwrap(), plain_read.data().unwrap());
        // The digests computed on the way serve later checks.
        assert_eq!(
            signing::verify(&b, &ring, &VerifyOptions::default()).unwrap(),
            want
        );
        // The next revision, same data, read on top of this one.
        let (again, _) = Bundle::from_verified_tar_gz(
            &archive(&order),
            &UnpackLimits::default(),
            &ring,
            &VerifyOptions::default(),
            Some(&b),
        )
        .unwrap();
        assert_eq!(again.data().unwrap(), b.data().unwrap());
    }
}

#[test]
fn tampering_is_refused_as_before() {
    let (key, ring) = key();
    let (other, _) = self::key();
    let files = signed_files(&key, &[("authz/data.json", br#"{"a": 1}"#)]);
    let refuse = |files: &[(String, Vec<u8>)]| match verified(&archive(files), &ring) {
        Err(ReadError::Signature(e)) => e,
        other => panic!("expected a signature refusal, got {:?}", other.map(|_| ())),
    };
    // Same length, other bytes: the digest refuses it.
    let mut changed = files.clone();
    changed[3].1 = b"package authz\n\ndefault allow := trve\n\n".to_vec();
    assert_eq!(changed[3].0, "authz/policy.rego");
    assert_eq!(changed[3].1.len(), POLICY.len());
    assert!(
        matches!(refuse(&changed), VerifyError::DigestMismatch { file, .. } if file == "authz/policy.rego")
    );
    // Another length: refused at the tar header, before the file is read.
    let mut longer = files.clone();
    longer[3].1 = b"package authz\n\ndefault allow := true\n".to_vec();
    assert!(matches!(
        refuse(&longer),
        VerifyError::SizeMismatch { file, signed, found }
            if file == "authz/policy.rego" && signed == POLICY.len() as u64 && found == 37
    ));
    let mut extra = files.clone();
    extra.push(("authz/extra.rego".into(), b"package authz\n".to_vec()));
    assert!(matches!(refuse(&extra), VerifyError::FileNotSigned(f) if f == "authz/extra.rego"));
    let mut missing = files.clone();
    missing.remove(2);
    assert!(
        matches!(refuse(&missing), VerifyError::SignedFilesMissing(f) if f == ["authz/data.json"])
    );
    let mut no_sig = files.clone();
    no_sig.remove(1);
    assert_eq!(refuse(&no_sig), VerifyError::MissingSignatures);
    let forged = signed_files(&other, &[("authz/data.json", br#"{"a": 1}"#)]);
    assert!(matches!(refuse(&forged), VerifyError::BadSignature(_)));
    // A bad archive is still an unpack error.
    match verified(b"not gzip", &ring) {
        Err(ReadError::Bundle(BundleError::Unpack(_))) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn yaml_alias_bomb_is_refused_signed_or_not() {
    let (key, ring) = key();
    let bomb = alias_bomb();
    assert!(bomb.len() < 2048);
    let bomb_file = ("authz/data.yaml", bomb.as_slice());
    // Unsigned: refused for the missing signature, before the YAML is parsed.
    let err = verified(&archive(&unsigned(&[bomb_file])), &ring)
        .err()
        .unwrap();
    assert!(
        matches!(err, ReadError::Signature(VerifyError::MissingSignatures)),
        "{err}"
    );
    // Signed, but the bomb is not listed: refused by name, wherever it sits in the archive.
    let files = signed_files(&key, &[]);
    let mut after = files.clone();
    after.push((bomb_file.0.into(), bomb.clone()));
    let mut before = files.clone();
    before.insert(0, (bomb_file.0.into(), bomb.clone()));
    for order in [after, before] {
        match verified(&archive(&order), &ring) {
            Err(ReadError::Signature(VerifyError::FileNotSigned(f))) => {
                assert_eq!(f, "authz/data.yaml")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
    // Listed, but the bytes replaced by the bomb: Regent's signer records the length, so the
    // header refuses it; OPA's does not, and then hashing it is budgeted too.
    let mut resized = signed_files(&key, &[("authz/data.yaml", b"a: 1\n")]);
    let i = resized
        .iter()
        .position(|(p, _)| p == "authz/data.yaml")
        .unwrap();
    resized[i].1 = bomb.clone();
    match verified(&archive(&resized), &ring) {
        Err(ReadError::Signature(VerifyError::SizeMismatch { file, .. })) => {
            assert_eq!(file, "authz/data.yaml")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut replaced = signed_files_raw(&key, &[("authz/data.yaml", b"a: 1\n")]);
    let i = replaced
        .iter()
        .position(|(p, _)| p == "authz/data.yaml")
        .unwrap();
    replaced[i].1 = bomb.clone();
    match verified(&archive(&replaced), &ring) {
        Err(ReadError::Signature(VerifyError::Unhashable { file, message })) => {
            assert_eq!(file, "authz/data.yaml");
            assert!(message.contains("over the parse budget"), "{message}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Unverified reads (sync.insecure_skip_verification, `regent` tools) keep the budget.
    let e = plain(&archive(&unsigned(&[bomb_file]))).unwrap_err();
    assert_budget(&e, "authz/data.yaml", "aliases expanded");
    // And a bundle cannot even be built or signed with it.
    let e = Bundle::from_files(
        unsigned(&[bomb_file])
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap_err();
    assert_budget(&e, "authz/data.yaml", "aliases expanded");
}

#[test]
fn big_unsigned_json_is_refused_without_being_parsed() {
    let (key, ring) = key();
    // 50 MiB of `[0,0,...]` (25 M values, several GiB as values): about 50 KB compressed.
    let mut big = Vec::with_capacity(50 << 20);
    big.push(b'[');
    while big.len() < (50 << 20) - 2 {
        big.extend_from_slice(b"0,");
    }
    big.extend_from_slice(b"0]");
    let file = ("authz/data.json", big.as_slice());
    let bytes = archive(&unsigned(&[file]));
    assert!(bytes.len() < 1 << 20, "{}", bytes.len());
    let err = verified(&bytes, &ring).err().unwrap();
    assert!(
        matches!(err, ReadError::Signature(VerifyError::MissingSignatures)),
        "{err}"
    );
    let mut files = signed_files(&key, &[]);
    files.push((file.0.into(), big.clone()));
    match verified(&archive(&files), &ring) {
        Err(ReadError::Signature(VerifyError::FileNotSigned(f))) => assert_eq!(f, file.0),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_listed_file_replaced_by_a_big_one_is_refused_at_its_header() {
    let (key, ring) = key();
    let mut files = signed_files(&key, &[("authz/data.json", br#"{"a": 1}"#)]);
    let at = files
        .iter()
        .position(|(p, _)| p == "authz/data.json")
        .unwrap();
    // 64 MiB of zeros, listed under the signed name: its length alone refuses it, so neither
    // the canonicaliser nor the parser ever sees it.
    files[at].1 = vec![b'0'; 64 << 20];
    match verified(&archive(&files), &ring) {
        Err(ReadError::Signature(VerifyError::SizeMismatch {
            file,
            signed,
            found,
        })) => {
            assert_eq!(file, "authz/data.json");
            assert_eq!(signed, 8);
            assert_eq!(found, 64 << 20);
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn an_unsigned_file_before_the_signatures_is_refused_by_name() {
    let (key, ring) = key();
    let mut files = signed_files(&key, &[]);
    // Archive order: `.manifest`, the unsigned file, then `.signatures.json` and the rest. The
    // first pass passes over the file without keeping it; the second refuses it at its header.
    let zeros = vec![b'0'; 8 << 20];
    files.insert(1, ("authz/extra.json".to_string(), zeros));
    match verified(&archive(&files), &ring) {
        Err(ReadError::Signature(VerifyError::FileNotSigned(f))) => {
            assert_eq!(f, "authz/extra.json")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A `.signatures.json` over its limit is refused from its header, before it is read.
    let mut files = signed_files(&key, &[]);
    let at = files
        .iter()
        .position(|(p, _)| p == SIGNATURES_FILE)
        .unwrap();
    files[at].1 = vec![b' '; signing::MAX_SIGNATURES_BYTES + 1];
    match verified(&archive(&files), &ring) {
        Err(ReadError::Signature(VerifyError::BadSignaturesFile(m))) => {
            assert!(m.contains("over the limit"), "{m}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn deep_yaml_and_json_are_refused_quickly() {
    let (key, ring) = key();
    let deep = deep_yaml();
    let deep_json = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    for (path, bytes) in [
        ("authz/data.yaml", deep.as_slice()),
        ("authz/data.json", deep_json.as_bytes()),
    ] {
        let e = plain(&archive(&unsigned(&[(path, bytes)]))).unwrap_err();
        assert_budget(&e, path, "nesting deeper than 128 levels");
        let err = verified(&archive(&unsigned(&[(path, bytes)])), &ring)
            .err()
            .unwrap();
        assert!(
            matches!(err, ReadError::Signature(VerifyError::MissingSignatures)),
            "{err}"
        );
    }
    // Unclosed flow nesting (80 s of libyaml's time before) in an unsigned read.
    let unclosed = format!("a: {}", "[".repeat(140_000));
    let e = plain(&archive(&unsigned(&[(
        "authz/data.yaml",
        unclosed.as_bytes(),
    )])))
    .unwrap_err();
    assert_budget(&e, "authz/data.yaml", "nesting deeper than 128 levels");
    // Listed under a structured name but replaced: the canonical hash of JSON is a streaming,
    // depth-limited pass, so this is a digest refusal, as quick.
    let mut replaced = signed_files(&key, &[("authz/data.json", b"{}")]);
    replaced[2].1 = deep_json.into_bytes();
    let err = verified(&archive(&replaced), &ring).err().unwrap();
    assert!(matches!(err, ReadError::Signature(_)), "{err}");
}

#[test]
fn a_signed_bundle_that_fails_in_the_middle_of_parsing_is_refused_as_content() {
    let (key, ring) = key();
    // `data.yml` is signed over its raw bytes (as OPA does), so a signer can sign anything there:
    // 20 000 good lines, then an alias bomb. The signature holds; the parse stops at the budget.
    let mut yml = String::new();
    for i in 0..20_000 {
        yml.push_str(&format!("k{i}: [a, b, {{c: {i}}}]\n"));
    }
    yml.push_str(std::str::from_utf8(&alias_bomb()).unwrap());
    let files = signed_files_raw(&key, &[("authz/data.yml", yml.as_bytes())]);
    match verified(&archive(&files), &ring) {
        Err(ReadError::Bundle(e)) => assert_budget(&e, "authz/data.yml", "aliases expanded"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Good JSON cut off half way, unsigned read: a plain data error naming the file.
    let json = format!("{{\"a\": [{}", "1,".repeat(100_000));
    match plain(&archive(&unsigned(&[("authz/data.json", json.as_bytes())]))) {
        Err(BundleError::Data { file, message }) => {
            assert_eq!(file, "authz/data.json");
            assert!(!message.contains("budget"), "{message}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// Signs files that a [`Bundle`] would refuse to hold: the signature is made over a bundle
/// without them, and their raw digests added to a re-signed payload by hand.
fn signed_files_raw(key: &SigningKey, raw: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let files = signed_files(key, &[]);
    let sig: serde_json::Value = serde_json::from_slice(&files[1].1).unwrap();
    let token = sig["signatures"][0].as_str().unwrap();
    let mut parts = token.split('.');
    let (h, p) = (parts.next().unwrap(), parts.next().unwrap());
    let mut payload: serde_json::Value = serde_json::from_slice(&B64.decode(p).unwrap()).unwrap();
    for (name, bytes) in raw {
        let hash = signing::file_digest(name, bytes, "SHA-256")
            .unwrap()
            .unwrap();
        payload["files"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": name, "hash": hash, "algorithm": "SHA-256"}));
    }
    let input = format!("{h}.{}", B64.encode(serde_json::to_vec(&payload).unwrap()));
    let token = format!(
        "{input}.{}",
        B64.encode(key.sign(input.as_bytes()).to_bytes())
    );
    let mut out = files;
    out[1].1 = serde_json::to_vec(&serde_json::json!({ "signatures": [token] })).unwrap();
    out.extend(raw.iter().map(|(p, d)| (p.to_string(), d.to_vec())));
    out
}
