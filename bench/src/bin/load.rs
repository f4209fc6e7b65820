//! Closed-loop gRPC load generator for ext_authz Check.
//!
//! `load --addr http://127.0.0.1:9191 --concurrency 64 --connections 4 --secs 10 --warmup 2
//!       [--server-pid PID] [--expect rbac|allow] --label NAME`
//!
//! N tasks each keep one request in flight, spread over M HTTP/2 connections, cycling through the
//! request mix. Latencies completed inside the measurement window (after warm-up) go into an HDR
//! histogram. With `--server-pid`, the server's CPU time (utime+stime from /proc) over the window is
//! divided by the requests answered, and its peak RSS (VmHWM) is reported. Prints one Markdown table
//! row on stdout; details on stderr. Any gRPC error or unexpected decision makes the run fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use regent_bench::{process_cpu_seconds, process_status_kib, rbac_mix, RBAC_EXPECTED};
use tonic::transport::Channel;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Expect {
    /// Decisions must match the RBAC policy's expected answers.
    Rbac,
    /// Every request must be allowed (NOP server).
    Allow,
}

#[derive(Parser)]
struct Args {
    /// Server URI.
    #[arg(long, default_value = "http://127.0.0.1:9191")]
    addr: String,
    /// Requests in flight (closed loop: one per task).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// HTTP/2 connections the tasks share (default: min(concurrency, 4)).
    #[arg(long)]
    connections: Option<usize>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Client runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Server process to measure CPU and RSS of.
    #[arg(long)]
    server_pid: Option<u32>,
    /// What the answers must be.
    #[arg(long, value_enum, default_value = "rbac")]
    expect: Expect,
    /// Row label.
    #[arg(long, default_value = "run")]
    label: String,
}

struct Shared {
    measure_from: Instant,
    measure_to: Instant,
    completed: AtomicU64,
    allowed: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let connections = args.connections.unwrap_or(args.concurrency.min(4)).max(1);
    let mut channels = Vec::new();
    for _ in 0..connections {
        let ch = Channel::from_shared(args.addr.clone())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.addr))?;
        channels.push(ch);
    }
    let mix = Arc::new(rbac_mix());
    let start = Instant::now();
    let shared = Arc::new(Shared {
        measure_from: start + Duration::from_secs(args.warmup),
        measure_to: start + Duration::from_secs(args.warmup + args.secs),
        completed: AtomicU64::new(0),
        allowed: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for i in 0..args.concurrency.max(1) {
        let mut client = AuthorizationClient::new(channels[i % connections].clone());
        let (mix, shared, expect) = (mix.clone(), shared.clone(), args.expect);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut k = i;
            loop {
                let idx = k % mix.len();
                k += 1;
                let sent = Instant::now();
                if sent >= shared.measure_to {
                    break;
                }
                let resp = client
                    .check(mix[idx].clone())
                    .await
                    .map_err(|s| anyhow::anyhow!("Check failed: {s}"))?
                    .into_inner();
                let done = Instant::now();
                let allowed = resp.status.as_ref().map_or(0, |s| s.code) == 0;
                let want = match expect {
                    Expect::Allow => true,
                    Expect::Rbac => RBAC_EXPECTED[idx],
                };
                anyhow::ensure!(
                    allowed == want,
                    "request {idx}: allowed={allowed}, expected {want}"
                );
                if sent >= shared.measure_from && done <= shared.measure_to {
                    hist.saturating_record(done.duration_since(sent).as_micros() as u64);
                    shared.completed.fetch_add(1, Ordering::Relaxed);
                    if allowed {
                        shared.allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }

    // Server CPU over exactly the measurement window.
    tokio::time::sleep_until(shared.measure_from.into()).await;
    let cpu_before = args.server_pid.and_then(process_cpu_seconds);
    tokio::time::sleep_until(shared.measure_to.into()).await;
    let cpu_after = args.server_pid.and_then(process_cpu_seconds);

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let n = shared.completed.load(Ordering::Relaxed);
    anyhow::ensure!(n > 0, "no request completed in the measurement window");
    let rps = n as f64 / args.secs as f64;
    let cpu_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) * 1e6 / n as f64),
        _ => "-".into(),
    };
    let hwm = args
        .server_pid
        .and_then(|p| process_status_kib(p, "VmHWM"))
        .map_or("-".into(), |kib| format!("{:.1}", kib as f64 / 1024.0));
    eprintln!(
        "{}: {n} requests in {} s over {connections} connection(s), {} allowed, mean {:.0} µs, max {} µs",
        args.label,
        args.secs,
        shared.allowed.load(Ordering::Relaxed),
        hist.mean(),
        hist.max()
    );
    println!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} |",
        args.label,
        args.concurrency,
        rps,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        cpu_us,
        hwm
    );
    Ok(())
}
