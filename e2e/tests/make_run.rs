//! `make run`'s program (regent-e2e-run) on free ports: it starts everything, prints working
//! commands, a push from the clone it prepared flips Envoy's answer, and SIGTERM stops it cleanly.

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use regent_e2e::http::send;
use regent_e2e::ports::free_port;
use regent_e2e::process::{tail, Proc};
use regent_e2e::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_starts_everything_and_a_push_flips_the_answer() -> Result<()> {
    let mut h = common::harness("make_run")?;
    let envoy_port = free_port()?;
    let dir = h.path("run")?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent-e2e-run"));
    cmd.arg("--dir").arg(&dir);
    for (flag, port) in [
        ("--envoy-port", envoy_port),
        ("--envoy-admin-port", free_port()?),
        ("--server-port", free_port()?),
        ("--sidecar-grpc-port", free_port()?),
        ("--sidecar-http-port", free_port()?),
        ("--echo-port", free_port()?),
        ("--orders-port", free_port()?),
    ] {
        cmd.arg(flag).arg(port.to_string());
    }
    cmd.env("REGENT_E2E_ENVOY", &h.bins.envoy)
        .env("REGENT_BIN", &h.bins.regent)
        .env("REGENT_SIDECAR_BIN", &h.bins.sidecar);
    let mut run = Proc::spawn("make-run", cmd, &h.logs)?;
    let log = run.log_path().to_path_buf();
    let mut output = String::new();
    for _ in 0..1200 {
        run.ensure_running()?;
        output = std::fs::read_to_string(&log).unwrap_or_default();
        if output.contains("Press Ctrl-C") {
            break;
        }
        tokio::time::sleep(wait::POLL).await;
    }
    assert!(
        output.contains("Press Ctrl-C"),
        "make run never became ready:\n{output}"
    );

    let alice = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("ALICE='"))
        .and_then(|l| l.strip_suffix('\''))
        .context("no ALICE token printed")?
        .to_string();
    let url = |p: &str| format!("http://127.0.0.1:{envoy_port}{p}");
    let c = common::client();
    let a = send(
        c.get(url("/api/orders"))
            .header("authorization", format!("Bearer {alice}")),
    )
    .await?;
    assert_eq!(a.status, 200, "{a:?}");
    let a = send(
        c.delete(url("/api/orders/1"))
            .header("authorization", format!("Bearer {alice}")),
    )
    .await?;
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(send(c.get(url("/api/catalog"))).await?.status, 401);

    // The printed recipe: edit the prepared clone, commit, push.
    let clone = dir.join("my-policies");
    let data = clone.join("envoy/envoy/authz/data.json");
    let text = std::fs::read_to_string(&data)?;
    let edited = text.replacen(
        "\"public_routes\": [",
        "\"public_routes\": [\n    {\"methods\": [\"GET\"], \"path\": [\"api\", \"catalog\"]},",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(&data, edited)?;
    let git = |args: &[&str]| -> Result<()> {
        let st = Command::new("git")
            .current_dir(&clone)
            .args(args)
            .output()?;
        anyhow::ensure!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        Ok(())
    };
    git(&["commit", "-qam", "public catalog"])?;
    git(&["push", "-q"])?;
    wait::until(
        "GET /api/catalog to become 200",
        Duration::from_secs(60),
        || async { Ok((send(c.get(url("/api/catalog"))).await?.status == 200).then_some(())) },
    )
    .await?;

    let status = run.stop().context("make run had already been reaped")?;
    assert!(
        status.success(),
        "make run exited with {status}:\n{}",
        tail(&log, 20)
    );
    assert!(tail(&log, 3).contains("Stopped."), "{}", tail(&log, 20));
    h.pass();
    Ok(())
}
