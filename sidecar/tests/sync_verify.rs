//! Real bundles, built and signed with regent-bundle, through the sync activation rules and
//! compiled with regent-bundle's engine loader: every kind of bad bundle is refused and the
//! previous policy keeps answering.

mod sync_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use regent_bundle::signing::{self, SignClaims};
use regent_bundle::Bundle;
use regent_sidecar::sync::activate::{PolicySink, SetActivator};
use regent_sidecar::sync::regent_format::{regent_activator, RegentFormat};
use regent_sidecar::sync::{
    start_with, Activator, BundleSource, KeyConfig, PollingConfig, Refusal, SyncConfig,
};

/// Compiles the whole set with regent-bundle's loader and swaps the engine in atomically.
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
    fn eval(&self, rule: &str) -> Option<String> {
        let engine = self.0.load_full()?;
        let mut e = (*engine).clone();
        e.eval_rule(rule.to_string()).ok().map(|v| v.to_string())
    }
}

struct Keys {
    key: signing::SigningKey,
    other: signing::SigningKey,
    dir: tempfile::TempDir,
}

fn keys() -> Keys {
    let (private, public) = signing::generate_key_pem();
    let (other, _) = signing::generate_key_pem();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k1.pem"), public).unwrap();
    Keys {
        key: signing::signing_key_from_pem(&private, "test key").unwrap(),
        other: signing::signing_key_from_pem(&other, "other key").unwrap(),
        dir,
    }
}

fn bundle(rev: &str, root: &str) -> Bundle {
    let mut files = BTreeMap::new();
    files.insert(
        ".manifest".to_string(),
        format!(r#"{{"revision":"{rev}","roots":["{root}"]}}"#).into_bytes(),
    );
    files.insert(
        format!("{root}/policy.rego"),
        format!("package {root}\n\nrev := \"{rev}\"\n").into_bytes(),
    );
    Bundle::from_files(files).unwrap()
}

fn signed(rev: &str, root: &str, key: &signing::SigningKey, kid: &str, iat: i64) -> Vec<u8> {
    let mut b = bundle(rev, root);
    let claims = SignClaims {
        iat: Some(iat),
        ..SignClaims::default()
    };
    signing::sign(&mut b, key, kid, &claims).unwrap();
    b.to_tar_gz().unwrap()
}

fn config(keys_dir: &Path, names: &[&str], url: &str) -> SyncConfig {
    SyncConfig {
        bundles: names
            .iter()
            .map(|n| BundleSource {
                name: n.to_string(),
                url: url.to_string(),
                roots: None,
                long_poll_timeout_seconds: None,
            })
            .collect(),
        keys: vec![KeyConfig {
            kid: "k1".into(),
            public_key_file: Some(keys_dir.join("k1.pem")),
            ..KeyConfig::default()
        }],
        polling: PollingConfig {
            min_delay_seconds: 1,
            max_delay_seconds: 1,
            long_poll_timeout_seconds: 0,
        },
        ..SyncConfig::default()
    }
}

fn activator(k: &Keys, names: &[&str]) -> (SetActivator<RegentFormat, EngineSink>, EngineSink) {
    let sink = EngineSink::default();
    let cfg = config(k.dir.path(), names, "http://127.0.0.1:1/b");
    (regent_activator(&cfg, sink.clone()).unwrap(), sink)
}

#[test]
fn bad_bundles_are_refused_and_old_policy_keeps_answering() {
    let k = keys();
    let (act, sink) = activator(&k, &["authz"]);
    assert_eq!(
        act.activate("authz", &signed("r1", "authz", &k.key, "k1", 100))
            .unwrap(),
        "r1"
    );
    assert_eq!(sink.eval("data.authz.rev").as_deref(), Some("\"r1\""));

    // Tampered: a file changed after signing.
    let mut files: BTreeMap<String, Vec<u8>> = {
        let mut b = bundle("r2", "authz");
        signing::sign(
            &mut b,
            &k.key,
            "k1",
            &SignClaims {
                iat: Some(200),
                ..SignClaims::default()
            },
        )
        .unwrap();
        b.files()
            .map(|(p, d)| (p.to_string(), d.to_vec()))
            .collect()
    };
    files.insert(
        "authz/policy.rego".into(),
        b"package authz\n\nrev := \"evil\"\n".to_vec(),
    );
    let tampered = Bundle::from_files(files).unwrap().to_tar_gz().unwrap();

    let good = signed("r2", "authz", &k.key, "k1", 200);
    let truncated = good[..good.len() / 2].to_vec();
    let unsigned = bundle("r2", "authz").to_tar_gz().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tampered", tampered, "signature"),
        ("truncated", truncated, "unpack"),
        (
            "wrong key",
            signed("r2", "authz", &k.other, "k1", 200),
            "signature",
        ),
        (
            "unknown kid",
            signed("r2", "authz", &k.key, "nope", 200),
            "signature",
        ),
        ("unsigned", unsigned, "signature"),
        ("older", signed("r0", "authz", &k.key, "k1", 50), "rollback"),
        ("not gzip", b"hello".to_vec(), "unpack"),
    ];
    for (what, bytes, reason) in cases {
        let e = act.activate("authz", &bytes).unwrap_err();
        assert_eq!(e.reason, reason, "{what}: {e}");
        assert_eq!(
            sink.eval("data.authz.rev").as_deref(),
            Some("\"r1\""),
            "{what}"
        );
    }
    assert_eq!(act.activate("authz", &good).unwrap(), "r2");
    assert_eq!(sink.eval("data.authz.rev").as_deref(), Some("\"r2\""));
}

#[test]
fn overlapping_roots_across_bundles_are_refused_for_the_newcomer() {
    let k = keys();
    let (act, sink) = activator(&k, &["authz", "extra"]);
    act.activate("authz", &signed("r1", "authz", &k.key, "k1", 100))
        .unwrap();
    let e = act
        .activate("extra", &signed("x1", "authz", &k.key, "k1", 100))
        .unwrap_err();
    assert_eq!(e.reason, "roots_overlap");
    assert!(e.message.contains("\"extra\""), "{e}");
    // A disjoint second bundle is compiled together with the first.
    act.activate("extra", &signed("x1", "limits", &k.key, "k1", 100))
        .unwrap();
    assert_eq!(sink.eval("data.authz.rev").as_deref(), Some("\"r1\""));
    assert_eq!(sink.eval("data.limits.rev").as_deref(), Some("\"x1\""));
}

#[test]
fn expected_roots_and_missing_key_file() {
    let k = keys();
    let mut cfg = config(k.dir.path(), &["authz"], "http://127.0.0.1:1/b");
    cfg.bundles[0].roots = Some(vec!["authz".into()]);
    let act = regent_activator(&cfg, EngineSink::default()).unwrap();
    let e = act
        .activate("authz", &signed("r1", "other", &k.key, "k1", 1))
        .unwrap_err();
    assert_eq!(e.reason, "roots");
    cfg.keys[0].public_key_file = Some(k.dir.path().join("missing.pem"));
    let e = regent_activator(&cfg, EngineSink::default()).err().unwrap();
    assert!(format!("{e:#}").contains("sync.keys[0]"), "{e:#}");
}

#[tokio::test]
async fn served_bad_bundle_is_refused_end_to_end() {
    let k = keys();
    let (srv, base) = sync_support::start().await;
    srv.publish(signed("r1", "authz", &k.key, "k1", 100), "\"e1\"");
    let cfg = config(k.dir.path(), &["authz"], &format!("{base}/bundles/authz"));
    let sink = EngineSink::default();
    let act = Arc::new(regent_activator(&cfg, sink.clone()).unwrap());
    let h = start_with(&cfg, act, &prometheus::Registry::new())
        .await
        .unwrap();
    let wait = Duration::from_secs(15);
    assert!(
        h.wait_for(wait, |s| s["authz"].active_revision == "r1")
            .await
    );
    srv.publish(signed("r2", "authz", &k.other, "k1", 200), "\"e2\"");
    assert!(
        h.wait_for(wait, |s| s["authz"].code == "bundle_error")
            .await
    );
    assert!(
        h.status()["authz"].message.contains("signature"),
        "{:?}",
        h.status()
    );
    assert_eq!(sink.eval("data.authz.rev").as_deref(), Some("\"r1\""));
    srv.publish(signed("r3", "authz", &k.key, "k1", 300), "\"e3\"");
    assert!(
        h.wait_for(wait, |s| s["authz"].active_revision == "r3")
            .await
    );
    assert_eq!(sink.eval("data.authz.rev").as_deref(), Some("\"r3\""));
    h.shutdown().await;
}

fn signed_files(files: &[(&str, &str)], key: &signing::SigningKey) -> Vec<u8> {
    let files: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect();
    let mut b = Bundle::from_files(files).unwrap();
    let claims = SignClaims {
        iat: Some(100),
        ..SignClaims::default()
    };
    signing::sign(&mut b, key, "k1", &claims).unwrap();
    b.to_tar_gz().unwrap()
}

/// OPA activates bundles independently: a bundle without the decision rule (data, helper rules)
/// that arrives first is activated, not refused; the policy is not ready and names the missing
/// rule until the bundle holding it arrives. Both orders, no refusal.
#[test]
fn bundles_activate_independently_of_the_decision_rule() {
    let k = keys();
    let authz = signed_files(
        &[
            (".manifest", r#"{"revision":"a1","roots":["authz"]}"#),
            (
                "authz/policy.rego",
                "package authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if data.extra.enabled[input.user]\n",
            ),
        ],
        &k.key,
    );
    let extra = signed_files(
        &[
            (".manifest", r#"{"revision":"e1","roots":["extra"]}"#),
            ("extra/data.json", r#"{"enabled": {"alice": true}}"#),
            (
                "extra/helpers.rego",
                "package extra\n\nimport rego.v1\n\ncount_enabled := count(data.extra.enabled)\n",
            ),
        ],
        &k.key,
    );
    let alice = regorus::Value::from_json_str(r#"{"user": "alice"}"#).unwrap();
    for order in [["extra", "authz"], ["authz", "extra"]] {
        let settings = regent_sidecar::policy::PolicySettings {
            rule: "data.authz.allow".into(),
            allow_missing_decision: true,
            ..Default::default()
        };
        let store = Arc::new(regent_sidecar::policy::PolicyStore::new(
            settings,
            prometheus::IntCounter::new("activations", "test").unwrap(),
        ));
        let cfg = config(k.dir.path(), &["authz", "extra"], "http://127.0.0.1:1/b");
        let act = regent_activator(&cfg, store.clone()).unwrap();
        for (i, name) in order.iter().enumerate() {
            let bytes = if *name == "authz" { &authz } else { &extra };
            act.activate(name, bytes)
                .unwrap_or_else(|r| panic!("{order:?}: {name} refused: {r:?}"));
            let policy = store.current().expect("a policy is in force");
            if i == 0 && *name == "extra" {
                assert!(!store.is_ready(), "{order:?}");
                assert_eq!(policy.missing_decision(), Some("data.authz.allow"));
                let err = policy.evaluate(alice.clone()).unwrap_err();
                assert!(err.message.contains("data.authz.allow"), "{err}");
            }
        }
        assert!(store.is_ready(), "{order:?}");
        let policy = store.current().unwrap();
        assert_eq!(policy.missing_decision(), None);
        assert_eq!(
            policy.evaluate(alice.clone()).unwrap(),
            regorus::Value::from(true)
        );
    }
}

/// OPA's default bundle signing: an RS256 bundle signed with an openssl-made RSA key activates
/// against a keyring entry given inline (OPA's `keys.<kid>.key`) and pinned to RS256; the same
/// key pinned to PS256 refuses it, naming kid and algorithm.
#[test]
fn rs256_bundle_activates_with_an_inline_pinned_rsa_key() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("rsa.pem");
    let public = dir.path().join("rsa.pub.pem");
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (priv_s, pub_s) = (private.to_str().unwrap(), public.to_str().unwrap());
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        priv_s,
    ]);
    run(&["pkey", "-in", priv_s, "-pubout", "-out", pub_s]);
    let key = signing::read_signing_key(&private).unwrap();
    assert_eq!(key.alg().name(), "RS256");
    let archive = signed("r1", "authz", &key, "rsa-1", 100);

    let pem = std::fs::read_to_string(&public).unwrap();
    let mut cfg = config(dir.path(), &["authz"], "http://127.0.0.1:1/b");
    cfg.keys = vec![KeyConfig {
        kid: "rsa-1".into(),
        public_key: Some(pem),
        algorithm: Some("RS256".into()),
        ..KeyConfig::default()
    }];
    cfg.validate().unwrap();
    let sink = EngineSink::default();
    let act = regent_activator(&cfg, sink.clone()).unwrap();
    assert_eq!(act.activate("authz", &archive).unwrap(), "r1");
    assert_eq!(sink.eval("data.authz.rev").as_deref(), Some("\"r1\""));

    cfg.keys[0].algorithm = Some("PS256".into());
    let act = regent_activator(&cfg, EngineSink::default()).unwrap();
    let e = act.activate("authz", &archive).unwrap_err();
    assert_eq!(e.reason, "signature");
    let msg = format!("{e:?}");
    assert!(
        msg.contains("rsa-1") && msg.contains("RS256") && msg.contains("PS256"),
        "{msg}"
    );

    // A pin that cannot fit the key is refused when the keyring is built.
    cfg.keys[0].algorithm = Some("ES256".into());
    let e = regent_activator(&cfg, EngineSink::default()).err().unwrap();
    assert!(format!("{e:#}").contains("sync.keys[0]"), "{e:#}");
}
