//! The `regent-sidecar` binary: configuration errors, flags, JSON logs, graceful shutdown on SIGTERM;
//! and the shipped example configuration.

mod common;
mod server_support;

use std::process::Command;
use std::time::Duration;

use common::{listening_addr, run_to_end, Proc, BIN};
use regent_sidecar::config::{EngineChoice, LogOutput, SidecarConfig};
use server_support::*;

#[test]
fn example_config_parses_and_documents_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sidecar.example.yaml");
    let cfg = SidecarConfig::from_file(&path).expect("example config is valid");
    let defaults = SidecarConfig::default();
    assert_eq!(cfg.grpc.addr, defaults.grpc.addr);
    assert_eq!(cfg.http.addr, defaults.http.addr);
    assert_eq!(cfg.policy.path, defaults.policy.path);
    assert_eq!(cfg.policy.engine, EngineChoice::Auto);
    assert_eq!(cfg.policy.eval_timeout_ms, defaults.policy.eval_timeout_ms);
    assert_eq!(cfg.decision_logs.mask, defaults.decision_logs.mask);
    assert_eq!(cfg.decision_logs.output, LogOutput::None);
    assert_eq!(
        cfg.decision_logs.queue_size,
        defaults.decision_logs.queue_size
    );
    assert_eq!(cfg.fail_mode.status, defaults.fail_mode.status);
    assert_eq!(
        cfg.grpc.max_recv_message_bytes,
        defaults.grpc.max_recv_message_bytes
    );
    assert_eq!(
        cfg.sync.http.max_bundle_bytes,
        defaults.sync.http.max_bundle_bytes
    );
    assert_eq!(
        cfg.sync.polling.max_delay_seconds,
        defaults.sync.polling.max_delay_seconds
    );
    assert_eq!(cfg.runtime.worker_threads, defaults.runtime.worker_threads);
}

#[test]
fn a_bad_config_file_is_a_clear_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("policy:\n  pth: envoy/authz/allow\n", "pth"),
        ("grpc:\n  addr: nowhere\n", "grpc"),
        ("decision_logs:\n  output: file\n", "decision_logs.file"),
        ("fail_mode: {mode: ajar}\n", "ajar"),
        (
            "sync:\n  bundles: [{name: a, url: 'http://127.0.0.1:1/a'}]\n",
            "sync.keys",
        ),
    ];
    for (i, (yaml, needle)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&file, yaml).expect("write");
        let (code, stderr) = run_to_end(&["--config", file.to_str().expect("utf8")]);
        assert_eq!(code, Some(2), "{yaml}: {stderr}");
        assert!(stderr.contains(needle), "{yaml}: {stderr}");
        assert!(stderr.contains("configuration error"), "{stderr}");
    }
    let (code, stderr) = run_to_end(&["--config", "/nonexistent/regent.yaml"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/regent.yaml"), "{stderr}");
    let (code, _) = run_to_end(&["--log-format", "xml"]);
    assert_eq!(code, Some(2), "clap rejects a bad flag value");
}

/// The gRPC address in a `regent-sidecar listening` event.
fn grpc_addr(listening: &serde_json::Value) -> std::net::SocketAddr {
    listening_addr(listening, "grpc")
}

// Multi-threaded: this test blocks its thread while waiting for the process, and the client's
// connection must keep being served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_json_logs_and_graceful_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy");
    write_policy_dir(
        &policy,
        "package custom.authz\n\nimport rego.v1\n\ndecision := false\n",
        None,
    );
    // The file sets other ports and path; the flags win.
    let cfg = dir.path().join("sidecar.yaml");
    std::fs::write(
        &cfg,
        "grpc: {addr: '127.0.0.1:1'}\nhttp: {addr: '127.0.0.1:1'}\npolicy: {path: envoy/authz/allow}\n",
    )
    .expect("write");
    let mut proc = Proc::spawn(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--bundle",
        policy.to_str().expect("utf8"),
        "--path",
        "custom/authz/decision",
        "--dry-run",
        "--log-format",
        "json",
    ]);
    let listening = proc.event("regent-sidecar listening", Duration::from_secs(30));
    let grpc = grpc_addr(&listening);
    let http = listening["http"]
        .as_str()
        .expect("http address")
        .to_string();

    let mut client = connect(grpc).await;
    // The policy denies; --dry-run turns that into an allow.
    let r = client
        .check(get("/x").build())
        .await
        .expect("answer")
        .into_inner();
    assert!(allowed(&r), "{r:?}");
    let ready = reqwest::get(format!("http://{http}/ready"))
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        metric(&metrics, "regent_checks_total{decision=\"deny\"}"),
        Some(1.0),
        "the real decision is counted: {metrics}"
    );

    let pid = proc.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    proc.event("shutting down", Duration::from_secs(10));
    let status = proc
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    // The client's connection is still open: the gRPC listener must drain it (GOAWAY) rather than
    // wait for the grace period to run out.
    let mut rest = Vec::new();
    while let Ok(line) = proc.lines.recv_timeout(Duration::from_secs(10)) {
        rest.push(line); // ends when the reader thread reaches EOF
    }
    assert!(
        rest.iter().any(|l| l.contains(r#""message":"stopped""#)),
        "{rest:#?}"
    );
    assert!(
        !rest.iter().any(|l| l.contains("did not drain")),
        "{rest:#?}"
    );
    drop(client);
}

/// Starts the binary with `runtime.worker_threads` set (if given) and, if `pin`, on CPU 0 only
/// (`taskset`, from util-linux); checks the scheduler it reports, answers a Check, reloads the policy
/// directory (activation runs on the blocking pool) and answers on the new policy.
async fn answers_and_reloads(workers: Option<usize>, pin: bool, scheduler: &str, threads: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy");
    let rego = |allow: bool| format!("package envoy.authz\n\nimport rego.v1\n\nallow := {allow}\n");
    write_policy_dir(&policy, &rego(false), None);
    let cfg = dir.path().join("sidecar.yaml");
    let yaml = match workers {
        Some(n) => format!("runtime: {{worker_threads: {n}}}\n"),
        None => String::new(),
    };
    std::fs::write(&cfg, yaml).expect("write");
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    cmd.args([
        "--config",
        cfg.to_str().expect("utf8"),
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--bundle",
        policy.to_str().expect("utf8"),
        "--log-format",
        "json",
    ]);
    let proc = Proc::spawn_command(cmd);
    let rt = proc.event("async runtime", Duration::from_secs(30));
    assert_eq!(rt["scheduler"], scheduler, "{rt}");
    assert_eq!(rt["worker_threads"], threads, "{rt}");
    let listening = proc.event("regent-sidecar listening", Duration::from_secs(30));
    let grpc = grpc_addr(&listening);
    let mut client = connect(grpc).await;
    let r = client
        .check(get("/x").build())
        .await
        .expect("answer")
        .into_inner();
    assert!(!allowed(&r), "the first policy denies: {r:?}");

    write_policy_dir(&policy, &rego(true), None);
    let mut now_allowed = false;
    for _ in 0..100 {
        let r = client
            .check(get("/x").build())
            .await
            .expect("answer")
            .into_inner();
        if allowed(&r) {
            now_allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(now_allowed, "the reloaded policy allows");
}

#[tokio::test]
async fn one_worker_thread_runs_the_single_threaded_scheduler() {
    answers_and_reloads(Some(1), false, "current_thread", 1).await;
}

#[tokio::test]
async fn several_worker_threads_run_the_multi_thread_scheduler() {
    answers_and_reloads(Some(3), false, "multi_thread", 3).await;
}

#[tokio::test]
async fn by_default_a_process_pinned_to_one_cpu_runs_the_single_threaded_scheduler() {
    answers_and_reloads(None, true, "current_thread", 1).await;
}

#[tokio::test]
async fn by_default_there_is_a_worker_per_cpu_the_process_may_use() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let scheduler = if cpus == 1 {
        "current_thread"
    } else {
        "multi_thread"
    };
    answers_and_reloads(None, false, scheduler, cpus).await;
}
