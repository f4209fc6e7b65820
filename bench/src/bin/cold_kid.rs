//! The cost of a cold `kid` with a remote key set (bench/policies/edge_jwt_remote): how long after
//! an identity provider rotates a key in until the sidecar accepts tokens signed with it.
//!
//! `cold_kid [--sidecar PATH] [--bundle DIR] [--rotations 20] [--gap-ms 1500] [--refresh-wait-ms 250]`
//!
//! Starts a JWKS server in process (bench/src/jwks_server.rs, the edge JWT keys) and the release
//! sidecar on the edge_jwt_remote bundle, configured with `identity.jwks: [{issuer, jwks_url}]`
//! and `min_refresh_interval_seconds: 1` (the default is 10: the gate between the start of one
//! fetch and an on-demand one). Once a warm token is allowed, each rotation:
//! 1. waits `--gap-ms` (more than the 1 s gate since the previous fetch, so what is measured is the
//!    fetch and the swap, not the rate limit);
//! 2. adds a new ES256 key (a `kid` never seen) to the served set;
//! 3. sends Checks with a token signed by it, one at a time, back to back, until one is allowed.
//!
//! The first of those Checks meets the unknown `kid`. With `refresh_wait_ms` above 0 (the
//! sidecar's default, 250) it waits for the refresh it causes and is allowed; with 0 it is
//! refused at once and a later Check passes. Reported per rotation: the time from sending the
//! first Check to the answer of the first allowed one (refresh wake-up, HTTP fetch, parse, swap,
//! and at most one Check round trip of granularity), the Checks refused meanwhile, the key-set
//! requests the server saw, and the latency of the first (cold) Check; plus, for comparison, warm
//! Checks of the same shape with a fixed key. Medians over the rotations. Prints Markdown on
//! stdout. A measurement, not a test: nothing is asserted about the times.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use regent_bench::edge_jwt::{self, Keys, RotatedKey};
use regent_bench::jwks_server::JwksServer;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// The sidecar binary (default: regent-sidecar beside this binary).
    #[arg(long)]
    sidecar: Option<PathBuf>,
    /// The policy bundle directory.
    #[arg(long, default_value = "bench/policies/edge_jwt_remote")]
    bundle: PathBuf,
    /// Key rotations measured.
    #[arg(long, default_value_t = 20)]
    rotations: u64,
    /// Pause before each rotation, ms (above the 1 s `min_refresh_interval_seconds`).
    #[arg(long, default_value_t = 1500)]
    gap_ms: u64,
    /// The sidecar's `identity.jwks[].refresh_wait_ms` (0: the cold Check is refused at once).
    #[arg(long, default_value_t = 250)]
    refresh_wait_ms: u64,
    /// Give up on a rotation after this many seconds without an allowed Check.
    #[arg(long, default_value_t = 30)]
    give_up_secs: u64,
    /// Where the sidecar's config and log go (default: target/bench/cold_kid).
    #[arg(long)]
    work: Option<PathBuf>,
}

struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rotation {
    until_allowed: Duration,
    refused: u64,
    fetches: u64,
    cold_check: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sidecar_bin = match &args.sidecar {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("regent-sidecar"),
    };
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench/cold_kid"));
    std::fs::create_dir_all(&work)?;

    let keys = Keys::derive();
    let base = keys.jwks();
    let server = JwksServer::start("127.0.0.1:0", &base).await?;
    let config = work.join("sidecar.yaml");
    std::fs::write(
        &config,
        format!(
            "identity:\n  jwks:\n    - issuer: {issuer:?}\n      jwks_url: {url:?}\n      min_refresh_interval_seconds: 1\n      refresh_wait_ms: {wait}\n",
            issuer = edge_jwt::ISSUER,
            url = server.url(),
            wait = args.refresh_wait_ms
        ),
    )?;
    let log = work.join("sidecar.log");
    let child = Command::new(&sidecar_bin)
        .arg("--config")
        .arg(&config)
        .arg("--bundle")
        .arg(&args.bundle)
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", sidecar_bin.display()))?;
    let _sidecar = Sidecar(child);
    let grpc = grpc_addr(&log).await?;
    let channel = Channel::from_shared(format!("http://{grpc}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = AuthorizationClient::new(channel);

    // Warm: the key set fetched at start is in force once a token of a fixed key is allowed.
    let warm = edge_jwt::allowed_request(&keys);
    let started = Instant::now();
    while !check(&mut client, warm.clone()).await?.0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(args.give_up_secs),
            "the sidecar never allowed a token of the fixed keys (log: {})",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut warm_latencies = Vec::new();
    for _ in 0..200 {
        let (allowed, took) = check(&mut client, warm.clone()).await?;
        anyhow::ensure!(allowed, "a warm token was refused");
        warm_latencies.push(took);
    }

    let mut rotations = Vec::new();
    let mut served = base.clone();
    for n in 0..args.rotations {
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        let key = RotatedKey::derive(n);
        served["keys"]
            .as_array_mut()
            .context("keys")?
            .push(key.jwk());
        server.set(&served);
        let request = key.allowed_request();
        let fetches_before = server.requests();
        let t0 = Instant::now();
        let mut refused = 0;
        let mut cold_check = None;
        loop {
            let (allowed, took) = check(&mut client, request.clone()).await?;
            cold_check.get_or_insert(took);
            if allowed {
                break;
            }
            refused += 1;
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(args.give_up_secs),
                "rotation {n}: kid {} still refused after {} s",
                key.kid,
                args.give_up_secs
            );
        }
        let until_allowed = t0.elapsed();
        rotations.push(Rotation {
            until_allowed,
            refused,
            fetches: server.requests() - fetches_before,
            cold_check: cold_check.unwrap_or_default(),
        });
        eprintln!(
            "rotation {n}: {} allowed after {:.2} ms, {refused} refused, {} fetch(es)",
            key.kid,
            until_allowed.as_secs_f64() * 1e3,
            rotations.last().map_or(0, |r| r.fetches)
        );
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut until: Vec<f64> = rotations.iter().map(|r| ms(r.until_allowed)).collect();
    let mut refused: Vec<f64> = rotations.iter().map(|r| r.refused as f64).collect();
    let mut cold: Vec<f64> = rotations.iter().map(|r| ms(r.cold_check)).collect();
    let mut warm_ms: Vec<f64> = warm_latencies.iter().map(|d| ms(*d)).collect();
    let fetches: u64 = rotations.iter().map(|r| r.fetches).sum();
    println!(
        "| measure ({} rotations, gap {} ms, min_refresh_interval_seconds 1, refresh_wait_ms {}) | median | min | max |",
        rotations.len(),
        args.gap_ms,
        args.refresh_wait_ms
    );
    println!("|---|---|---|---|");
    row("rotation to first allowed Check, ms", &mut until, 2);
    row(
        "Checks refused meanwhile (the first included)",
        &mut refused,
        0,
    );
    row("latency of the first (cold kid) Check, ms", &mut cold, 3);
    row(
        "latency of a warm Check (200, fixed key), ms",
        &mut warm_ms,
        3,
    );
    println!();
    println!(
        "Key-set requests during the rotations: {fetches} for {} rotations ({} in all since the sidecar started).",
        rotations.len(),
        server.requests()
    );
    Ok(())
}

fn row(label: &str, v: &mut [f64], decimals: usize) {
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    let (min, max) = (v[0], v[v.len() - 1]);
    println!("| {label} | {median:.decimals$} | {min:.decimals$} | {max:.decimals$} |");
}

async fn check(
    client: &mut AuthorizationClient<Channel>,
    request: CheckRequest,
) -> anyhow::Result<(bool, Duration)> {
    let sent = Instant::now();
    let resp = client
        .check(request)
        .await
        .map_err(|s| anyhow::anyhow!("Check failed: {s}"))?
        .into_inner();
    Ok((
        resp.status.as_ref().map_or(0, |s| s.code) == 0,
        sent.elapsed(),
    ))
}

/// The gRPC address from the sidecar's `regent-sidecar listening` log line.
async fn grpc_addr(log: &std::path::Path) -> anyhow::Result<String> {
    for _ in 0..600 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("regent-sidecar listening"))
        {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let addr = v["fields"]["grpc"]
                .as_str()
                .or_else(|| v["grpc"].as_str())
                .with_context(|| format!("no grpc address in {line}"))?;
            return Ok(addr.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "the sidecar did not log `listening` (log: {})",
        log.display()
    )
}
