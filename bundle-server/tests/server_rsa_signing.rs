//! `regent serve` signing with an RSA key from `regent keygen --alg`, with `signing.algorithm`
//! set: the served bundle verifies with `regent verify` and the public key, and its token
//! carries the configured algorithm.

mod cli_support;
mod server_support;

use std::process::Command;

use cli_support::{regent, token_header};
use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_signs_with_an_rsa_key_and_the_bundle_verifies() {
    let repo = PolicyRepo::new();
    let head = git(&repo.work, &["rev-parse", "HEAD"]);
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let o = regent(
        cwd,
        &[
            "keygen",
            "--out-dir",
            "keys",
            "--name",
            "rsa1",
            "--alg",
            "PS256",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let yaml = config_yaml(
        &repo.origin,
        &cwd.join("data"),
        &cwd.join("keys/rsa1.key"),
        "  algorithm: PS256\n",
    );
    std::fs::write(cwd.join("serve.yaml"), yaml).unwrap();

    let mut serve = Command::new(env!("CARGO_BIN_EXE_regent"));
    serve
        .current_dir(cwd)
        .args(["serve", "--config", "serve.yaml"]);
    let child = ServeProcess::spawn(serve).await;
    let bytes = child.published("authz").await;
    drop(child);

    std::fs::write(cwd.join("served.tar.gz"), &bytes).unwrap();
    let o = regent(
        cwd,
        &["verify", "served.tar.gz", "--key", "keys/rsa1.pub:k1"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains(&format!("revision: {head}")), "{out}");
    assert!(out.contains("signed by: kid \"k1\""), "{out}");

    // The token header names the configured algorithm, not the RSA key's default RS256.
    let bundle =
        regent_bundle::Bundle::from_tar_gz(&bytes, &regent_bundle::UnpackLimits::default())
            .unwrap();
    let header = token_header(&bundle);
    assert_eq!(header["alg"], "PS256", "{header}");
    assert_eq!(header["kid"], "k1", "{header}");
}
