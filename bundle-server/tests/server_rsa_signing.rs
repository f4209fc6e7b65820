//! `regent serve` signing with an RSA key from `regent keygen --alg`, with `signing.algorithm`
//! set: the served bundle verifies with `regent verify` and the public key, and its token
//! carries the configured algorithm.

mod server_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use server_support::*;

fn regent(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regent"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("running regent")
}

/// Kills the server when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_regent"))
            .current_dir(cwd)
            .args(["serve", "--config", "serve.yaml"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // The listening address is in the start-up log line.
    let addr = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.ok()?;
            if let Some(i) = line.find("addr=") {
                let rest = &line[i + 5..];
                let end = rest.find(' ').unwrap_or(rest.len());
                return Some(rest[..end].to_string());
            }
        }
        None
    });
    let addr = tokio::time::timeout(Duration::from_secs(60), addr)
        .await
        .expect("server logs its address in time")
        .unwrap()
        .expect("address in the log");
    let c = client();
    let bundle_url = format!("http://{addr}/bundles/authz");
    let bytes = eventually(Duration::from_secs(60), || async {
        let r = c.get(&bundle_url).send().await.ok()?;
        (r.status() == 200).then_some(())?;
        r.bytes().await.ok()
    })
    .await
    .expect("the bundle is published");
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
    let sigs: serde_json::Value =
        serde_json::from_slice(bundle.file(".signatures.json").expect("signed")).unwrap();
    let token = sigs["signatures"][0].as_str().expect("one token");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header["alg"], "PS256", "{header}");
    assert_eq!(header["kid"], "k1", "{header}");
}
