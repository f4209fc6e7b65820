//! Hostile bundles through the real activator (regent-bundle's verified read and engine loader):
//! a YAML alias bomb, big unsigned JSON, deep YAML, a signed bundle that fails half way through
//! parsing. Each is refused quickly with its reason (`signature` when the keyring does not vouch
//! for it: nothing in it was parsed), and the previous policy keeps answering.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use regent_bundle::signing::{self, SignClaims};
use regent_bundle::{write_tar_gz, Bundle};
use regent_sidecar::sync::activate::{PolicySink, SetActivator};
use regent_sidecar::sync::regent_format::{regent_activator, RegentFormat};
use regent_sidecar::sync::{Activator, BundleSource, KeyConfig, Refusal, SyncConfig};

/// Far more than any refusal here takes, little enough to catch quadratic or unbounded work.
const QUICK: Duration = Duration::from_secs(3);

#[derive(Default, Clone)]
struct EngineSink(Arc<ArcSwapOption<regorus::Engine>>);

impl PolicySink<Bundle> for EngineSink {
    fn activate(&self, bundles: Vec<(String, Arc<Bundle>)>) -> Result<(), Refusal> {
        let refs: Vec<(&str, &Bundle)> = bundles.iter().map(|(n, b)| (n.as_str(), &**b)).collect();
        let engine = regent_policy::load::load_bundles(&refs)
            .map_err(|e| Refusal::new("compile", e.to_string()))?;
        self.0.store(Some(Arc::new(engine)));
        Ok(())
    }
}

impl EngineSink {
    fn rev(&self) -> Option<String> {
        let engine = self.0.load_full()?;
        let mut e = (*engine).clone();
        e.eval_rule("data.authz.rev".to_string())
            .ok()
            .map(|v| v.to_string())
    }
}

struct Keys {
    key: signing::SigningKey,
    dir: tempfile::TempDir,
}

fn keys() -> Keys {
    let (private, public) = signing::generate_key_pem();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k1.pem"), public).unwrap();
    Keys {
        key: signing::signing_key_from_pem(&private, "test key").unwrap(),
        dir,
    }
}

fn config(keys_dir: &Path, insecure: bool) -> SyncConfig {
    SyncConfig {
        bundles: vec![BundleSource {
            name: "authz".into(),
            url: "http://127.0.0.1:1/b".into(),
            roots: None,
            long_poll_timeout_seconds: None,
        }],
        keys: vec![KeyConfig {
            kid: "k1".into(),
            public_key_file: Some(keys_dir.join("k1.pem")),
            ..KeyConfig::default()
        }],
        insecure_skip_verification: insecure,
        ..SyncConfig::default()
    }
}

fn activator(k: &Keys, insecure: bool) -> (SetActivator<RegentFormat, EngineSink>, EngineSink) {
    let sink = EngineSink::default();
    let act = regent_activator(&config(k.dir.path(), insecure), sink.clone()).unwrap();
    (act, sink)
}

/// The files of bundle `rev` (manifest, policy, `extra`), in path order, signed when `key` is.
fn files(
    rev: &str,
    extra: &[(&str, &[u8])],
    key: Option<&signing::SigningKey>,
) -> Vec<(String, Vec<u8>)> {
    let mut files = BTreeMap::new();
    files.insert(
        ".manifest".to_string(),
        format!(r#"{{"revision":"{rev}","roots":["authz"]}}"#).into_bytes(),
    );
    files.insert(
        "authz/policy.rego".to_string(),
        format!("package authz\n\nrev := \"{rev}\"\n").into_bytes(),
    );
    let mut b = Bundle::from_files(files).unwrap();
    if let Some(key) = key {
        let claims = SignClaims {
            iat: Some(100),
            ..SignClaims::default()
        };
        signing::sign(&mut b, key, "k1", &claims).unwrap();
    }
    let mut out: Vec<(String, Vec<u8>)> = b
        .files()
        .map(|(p, d)| (p.to_string(), d.to_vec()))
        .collect();
    out.extend(extra.iter().map(|(p, d)| (p.to_string(), d.to_vec())));
    out
}

/// Lists `raw` (already appended to `files`) in the signed payload, over their raw digests.
fn sign_raw(files: &mut [(String, Vec<u8>)], raw: &[&str], key: &signing::SigningKey) {
    let sig: serde_json::Value = serde_json::from_slice(&files[1].1).unwrap();
    let token = sig["signatures"][0].as_str().unwrap().to_string();
    let mut parts = token.split('.');
    let (h, p) = (parts.next().unwrap(), parts.next().unwrap());
    let mut payload: serde_json::Value = serde_json::from_slice(&B64.decode(p).unwrap()).unwrap();
    for name in raw {
        let bytes = &files.iter().find(|(p, _)| p == name).unwrap().1;
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
    files[1].1 = serde_json::to_vec(&serde_json::json!({ "signatures": [token] })).unwrap();
}

fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    write_tar_gz(files.iter().map(|(p, d)| (p.as_str(), d.as_slice()))).unwrap()
}

fn alias_bomb() -> Vec<u8> {
    let mut s = String::from("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for i in 1..12 {
        let p = i - 1;
        let refs = vec![format!("*a{p}"); 9].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s.into_bytes()
}

fn refused(act: &SetActivator<RegentFormat, EngineSink>, what: &str, bytes: &[u8]) -> Refusal {
    let t = Instant::now();
    let r = act.activate("authz", bytes);
    assert!(t.elapsed() < QUICK, "{what}: took {:?}", t.elapsed());
    r.err()
        .unwrap_or_else(|| panic!("{what}: activated, expected a refusal"))
}

#[test]
fn hostile_bundles_are_refused_before_parsing_and_the_old_policy_keeps_answering() {
    let k = keys();
    let (act, sink) = activator(&k, false);
    act.activate("authz", &archive(&files("r1", &[], Some(&k.key))))
        .unwrap();
    assert_eq!(sink.rev().as_deref(), Some("\"r1\""));

    let bomb = alias_bomb();
    let mut zeros = Vec::with_capacity(50 << 20);
    zeros.push(b'[');
    while zeros.len() < (50 << 20) - 2 {
        zeros.extend_from_slice(b"0,");
    }
    zeros.extend_from_slice(b"0]");
    let deep = format!("a: {}{}\n", "[".repeat(70_000), "]".repeat(70_000));
    let mut yml = String::new();
    for i in 0..20_000 {
        yml.push_str(&format!("k{i}: [a, b, {{c: {i}}}]\n"));
    }
    yml.push_str(std::str::from_utf8(&bomb).unwrap());
    let mut half_bad = files("r2", &[("authz/data.yml", yml.as_bytes())], Some(&k.key));
    sign_raw(&mut half_bad, &["authz/data.yml"], &k.key);

    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "unsigned alias bomb",
            archive(&files("r2", &[("authz/data.yaml", &bomb)], None)),
            "signature",
            "no .signatures.json",
        ),
        (
            "signed, alias bomb not listed",
            archive(&files("r2", &[("authz/data.yaml", &bomb)], Some(&k.key))),
            "signature",
            "authz/data.yaml: file is not included in the bundle signature",
        ),
        (
            "50 MiB unsigned JSON",
            archive(&files("r2", &[("authz/data.json", &zeros)], None)),
            "signature",
            "no .signatures.json",
        ),
        (
            "50 MiB JSON not listed",
            archive(&files("r2", &[("authz/data.json", &zeros)], Some(&k.key))),
            "signature",
            "authz/data.json: file is not included",
        ),
        (
            "deep YAML, unsigned",
            archive(&files("r2", &[("authz/data.yaml", deep.as_bytes())], None)),
            "signature",
            "no .signatures.json",
        ),
        (
            "signed, fails half way through parsing",
            archive(&half_bad),
            "unpack",
            "authz/data.yml: invalid data: over the parse budget",
        ),
    ];
    for (what, bytes, reason, message) in cases {
        assert!(bytes.len() < 1 << 20, "{what}: {} bytes", bytes.len());
        let e = refused(&act, what, &bytes);
        assert_eq!(e.reason, reason, "{what}: {e}");
        assert!(e.message.contains(message), "{what}: {e}");
        assert_eq!(sink.rev().as_deref(), Some("\"r1\""), "{what}");
    }
    act.activate("authz", &archive(&files("r3", &[], Some(&k.key))))
        .unwrap();
    assert_eq!(sink.rev().as_deref(), Some("\"r3\""));
}

#[test]
fn unverified_mode_keeps_the_parse_budgets() {
    let k = keys();
    let (act, sink) = activator(&k, true);
    act.activate("authz", &archive(&files("r1", &[], None)))
        .unwrap();
    let deep = format!("a: {}{}\n", "[".repeat(70_000), "]".repeat(70_000));
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "alias bomb",
            archive(&files("r2", &[("authz/data.yaml", &alias_bomb())], None)),
            "aliases expanded",
        ),
        (
            "deep YAML",
            archive(&files("r2", &[("authz/data.yaml", deep.as_bytes())], None)),
            "nesting deeper than 128 levels",
        ),
        (
            "deep JSON",
            archive(&files(
                "r2",
                &[("authz/data.json", deep_json.as_bytes())],
                None,
            )),
            "nesting deeper than 128 levels",
        ),
    ];
    for (what, bytes, message) in cases {
        let e = refused(&act, what, &bytes);
        assert_eq!(e.reason, "unpack", "{what}: {e}");
        assert!(
            e.message.contains("over the parse budget") && e.message.contains(message),
            "{what}: {e}"
        );
        assert_eq!(sink.rev().as_deref(), Some("\"r1\""), "{what}");
    }
}
