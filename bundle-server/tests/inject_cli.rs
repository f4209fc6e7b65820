//! `regent inject-webhook` as a process: config validation, serving, and a clean stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn regent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_regent"))
}

#[test]
fn check_config_accepts_a_good_template_and_names_the_problem_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "nativeSidecar: true\ncontainer: {name: regent-sidecar, image: x}\nvolumes: [{name: v, emptyDir: {}}]\n",
    )
    .unwrap();
    let out = regent()
        .args(["inject-webhook", "--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok") && stdout.contains("native sidecar: true"),
        "{stdout}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "container: {name: regent-sidecar}\nvolume: []\n").unwrap();
    let out = regent()
        .args(["inject-webhook", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("unknown field `volume`"),
        "{stderr}"
    );

    // Serving needs the certificate.
    let out = regent()
        .args(["inject-webhook", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

#[test]
fn serves_until_sigterm_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    std::fs::write(dir.path().join("tls.crt"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), ck.key_pair.serialize_pem()).unwrap();
    std::fs::write(
        dir.path().join("inject.yaml"),
        "container: {name: regent-sidecar}\n",
    )
    .unwrap();
    // A free port: bound, read and released (the child binds it right after).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = regent()
        .args(["inject-webhook", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--config")
        .arg(dir.path().join("inject.yaml"))
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = rt.block_on(async {
        loop {
            if let Ok(r) = client.get(&url).send().await {
                return r.status() == 200;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("regent inject-webhook did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(healthy, "the webhook never answered /health: {logs}");
    assert!(status.success(), "{status:?}: {logs}");
    assert!(
        logs.contains(r#""message":"sidecar injector serving""#),
        "{logs}"
    );
    assert!(logs.contains("shutdown signal received"), "{logs}");
}
