//! The `regent serve` binary: configuration errors name the key, and flags alone are enough to
//! run a server that publishes.

mod server_support;

use std::process::Command;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_alone_run_a_server() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_regent"));
    serve
        .arg("serve")
        .arg("--repo")
        .arg(&repo.origin)
        .arg("--key")
        .arg(&keys.private)
        .args(["--kid", "k1", "--bundle", "authz=authz"])
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path());
    let child = ServeProcess::spawn(serve).await;
    let addr = child.addr.clone();
    let c = client();
    let bytes = child.published("authz").await;
    let (bundle, sig) = verify(&bytes, &keys.keyring("k1"));
    assert_eq!(bundle.revision(), first);
    assert_eq!(sig.kid, "k1");
    let ready = c.get(format!("http://{addr}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    drop(child);
}
