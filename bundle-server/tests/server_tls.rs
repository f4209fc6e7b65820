//! HTTPS: the server serves bundles, status reports and the fleet view over TLS (test-only PEM
//! fixtures of the sidecar's TLS tests: a private CA and a certificate for 127.0.0.1), and
//! `regent rollout status --ca-file` talks to it.

mod server_support;

use reqwest::StatusCode;
use server_support::*;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sidecar/tests/sync_support/tls")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "tls: {{cert_file: {}, key_file: {}}}",
        fixture("server.pem").display(),
        fixture("server.key").display()
    );
    let srv = start(config(&repo.origin, data.path(), &keys.private, &extra)).await;
    wait_published(&srv, "authz", &first).await;

    let ca = reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let base = format!("https://{}", srv.addr);
    let resp = https
        .get(format!("{base}/bundles/authz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (bundle, _) = verify(&resp.bytes().await.unwrap(), &keys.keyring("k1"));
    assert_eq!(bundle.revision(), first);

    // Plain HTTP to the TLS port gets no HTTP answer.
    assert!(client()
        .get(format!("http://{}/health", srv.addr))
        .send()
        .await
        .is_err());
    // A client that does not trust the CA is refused.
    assert!(reqwest::Client::builder()
        .use_rustls_tls()
        .build()
        .unwrap()
        .get(format!("{base}/health"))
        .send()
        .await
        .is_err());

    let report = serde_json::json!({
        "labels": {"id": "tls-sidecar"},
        "bundles": {"authz": {"name": "authz", "active_revision": first}}
    });
    let resp = https
        .post(format!("{base}/v1/status/report"))
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_regent"))
        .args(["rollout", "status", "--server", &base, "--bundle", "authz"])
        .arg("--ca-file")
        .arg(fixture("ca.pem"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("authz: 1/1"), "{text}");
    srv.shutdown().await;
}
