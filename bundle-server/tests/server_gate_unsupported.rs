//! The publish gate refuses a commit whose policy calls `http.send`, with the file and line, the
//! same way the sidecar would refuse to activate it.

use regent_bundle::signing;
use regent_bundle_server::server::config::BundleConfig;
use regent_bundle_server::server::gate::{gate_commit, Signer};

fn signer() -> Signer {
    let (private, _) = signing::generate_key_pem();
    Signer {
        kid: "k".into(),
        key: signing::signing_key_from_pem(&private, "test key").unwrap(),
        scope: None,
        issuer: "regent".into(),
    }
}

#[test]
fn a_commit_calling_http_send_is_refused_at_compile() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies/remote");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.rego"),
        "package remote\n\nimport rego.v1\n\ndefault allow := false\n\nallow if http.send({\"method\": \"GET\", \"url\": input.url}).status_code == 200\n",
    )
    .unwrap();
    let cfg = BundleConfig {
        name: "remote".into(),
        dir: "policies/remote".into(),
        roots: None,
        entrypoints: vec!["remote/allow".into()],
    };

    let failures = gate_commit(root.path(), "c1", 1, std::slice::from_ref(&cfg), &signer())
        .expect_err("published a policy calling http.send");
    let f = &failures[0];
    assert_eq!(f.bundle, "remote", "{failures:?}");
    assert_eq!(f.reason, "compile", "{failures:?}");
    assert_eq!(
        f.file.as_deref(),
        Some("policies/remote/policy.rego"),
        "{failures:?}"
    );
    assert_eq!(f.line, Some(7), "{failures:?}");
    assert!(
        f.message
            .contains("http.send is not supported by Regent yet (it would always be undefined)"),
        "{failures:?}"
    );

    // Without the call the same commit is published.
    std::fs::write(
        dir.join("policy.rego"),
        "package remote\n\nimport rego.v1\n\ndefault allow := false\n",
    )
    .unwrap();
    gate_commit(root.path(), "c2", 2, &[cfg], &signer()).unwrap();
}
