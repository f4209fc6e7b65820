//! The `regent serve` binary: configuration errors name the key, and flags alone are enough to
//! run a server that publishes.

mod server_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use server_support::*;

#[test]
fn unknown_config_key_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let cfg = dir.path().join("server.yaml");
    let yaml = config_yaml(
        &dir.path().join("repo.git"),
        &dir.path().join("data"),
        &keys.private,
        "distribution: {max_long_poll_second: 5}",
    );
    std::fs::write(&cfg, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regent"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_long_poll_second"), "{err}");

    // A value that parses but cannot work names its key too.
    std::fs::write(
        &cfg,
        config_yaml(
            &dir.path().join("repo.git"),
            &dir.path().join("data"),
            &keys.private,
            "",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regent"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--kid", "missing"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("signing.active_kid"), "{err}");
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_alone_run_a_server() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_regent"))
            .arg("serve")
            .arg("--repo")
            .arg(&repo.origin)
            .arg("--key")
            .arg(&keys.private)
            .args(["--kid", "k1", "--bundle", "authz=authz"])
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path())
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
    let (bundle, sig) = verify(&bytes, &keys.keyring("k1"));
    assert_eq!(bundle.revision(), first);
    assert_eq!(sig.kid, "k1");
    let ready = c.get(format!("http://{addr}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    drop(child);
}
