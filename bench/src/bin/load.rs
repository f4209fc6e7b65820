//! Closed-loop gRPC load generator for ext_authz Check.
//!
//! `load --addr http://127.0.0.1:9191 --concurrency 64 --connections 4 --secs 10 --warmup 2
//!       [--server-pid PID] [--expect rbac|allow|edge_jwt|edge_jwt_remote|bindings] [--requests N] --label NAME`
//!
//! N tasks each keep one request in flight, spread over M HTTP/2 connections, cycling through the
//! request mix (`--expect`, bench/src/mix.rs). Latencies completed inside the measurement window
//! (after warm-up) go into an HDR histogram. With `--requests N`, exactly N requests are sent (no
//! warm-up, no time limit; all measured): the fixed-count mode `bench/callgrind.sh` uses. With `--server-pid`, the server's CPU time (utime+stime from /proc) over the window is
//! divided by the requests answered, and its peak RSS (VmHWM) is reported. Prints one Markdown table
//! row on stdout; details on stderr. Any gRPC error or unexpected decision makes the run fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use regent_bench::mix::Mix;
use regent_bench::{process_cpu_seconds, process_status_kib};
use tonic::transport::Channel;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Expect {
    /// The RBAC mix; decisions must match policies/rbac's expected answers.
    Rbac,
    /// The RBAC mix; every request must be allowed (NOP server).
    Allow,
    /// The edge JWT mix (bench/policies/edge_jwt): bearer tokens, 5% never seen before.
    #[value(name = "edge_jwt")]
    EdgeJwt,
    /// The edge JWT mix against bench/policies/edge_jwt_remote (keys from a remote key set): the
    /// same requests and answers.
    #[value(name = "edge_jwt_remote")]
    EdgeJwtRemote,
    /// The 5,000-bindings mix (bench/policies/bindings).
    Bindings,
}

impl Expect {
    fn mix_name(self) -> &'static str {
        match self {
            Expect::Rbac => "rbac",
            Expect::Allow => "allow",
            Expect::EdgeJwt => "edge_jwt",
            Expect::EdgeJwtRemote => "edge_jwt_remote",
            Expect::Bindings => "bindings",
        }
    }
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
    /// Send exactly this many requests (all measured; `--secs` and `--warmup` are ignored).
    #[arg(long)]
    requests: Option<u64>,
    /// Row label.
    #[arg(long, default_value = "run")]
    label: String,
}

struct Shared {
    measure_from: Instant,
    measure_to: Instant,
    completed: AtomicU64,
    allowed: AtomicU64,
    /// With `--requests`: requests started so far.
    started: AtomicU64,
    limit: Option<u64>,
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
    let built = Instant::now();
    let mix = Arc::new(Mix::named(args.expect.mix_name())?);
    eprintln!(
        "{}: {} (built in {} ms)",
        args.label,
        mix.describe(),
        built.elapsed().as_millis()
    );
    let (warmup, secs) = match args.requests {
        // Fixed count: everything measured, and no window to end the run (a day is enough).
        Some(_) => (0, 86_400),
        None => (args.warmup, args.secs),
    };
    let start = Instant::now();
    let shared = Arc::new(Shared {
        measure_from: start + Duration::from_secs(warmup),
        measure_to: start + Duration::from_secs(warmup + secs),
        completed: AtomicU64::new(0),
        allowed: AtomicU64::new(0),
        started: AtomicU64::new(0),
        limit: args.requests,
    });
    let mut tasks = Vec::new();
    for i in 0..args.concurrency.max(1) {
        let mut client = AuthorizationClient::new(channels[i % connections].clone());
        let (mix, shared) = (mix.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut k = i as u64;
            loop {
                let idx = k;
                k += 1;
                if let Some(limit) = shared.limit {
                    if shared.started.fetch_add(1, Ordering::Relaxed) >= limit {
                        break;
                    }
                }
                let (request, want) = mix.get(idx);
                let sent = Instant::now();
                if sent >= shared.measure_to {
                    break;
                }
                let resp = client
                    .check(request)
                    .await
                    .map_err(|s| anyhow::anyhow!("Check failed: {s}"))?
                    .into_inner();
                let done = Instant::now();
                let allowed = resp.status.as_ref().map_or(0, |s| s.code) == 0;
                anyhow::ensure!(
                    allowed == want,
                    "request {idx} of mix {}: allowed={allowed}, expected {want}",
                    mix.name
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

    // Server CPU over exactly the measurement window (with `--requests`: over the whole run).
    tokio::time::sleep_until(shared.measure_from.into()).await;
    let cpu_before = args.server_pid.and_then(process_cpu_seconds);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let measured_secs = if shared.limit.is_some() {
        for t in tasks.drain(..) {
            hist.add(t.await??)?;
        }
        start.elapsed().as_secs_f64()
    } else {
        tokio::time::sleep_until(shared.measure_to.into()).await;
        args.secs as f64
    };
    let cpu_after = args.server_pid.and_then(process_cpu_seconds);
    if shared.limit.is_none() {
        for t in tasks.drain(..) {
            hist.add(t.await??)?;
        }
    }
    let n = shared.completed.load(Ordering::Relaxed);
    anyhow::ensure!(n > 0, "no request completed in the measurement window");
    if let Some(limit) = shared.limit {
        anyhow::ensure!(n == limit, "{n} of {limit} requests completed");
    }
    let rps = n as f64 / measured_secs;
    let cpu_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) * 1e6 / n as f64),
        _ => "-".into(),
    };
    let hwm = args
        .server_pid
        .and_then(|p| process_status_kib(p, "VmHWM"))
        .map_or("-".into(), |kib| format!("{:.1}", kib as f64 / 1024.0));
    eprintln!(
        "{}: {n} requests in {measured_secs:.1} s over {connections} connection(s), {} allowed, mean {:.0} µs, max {} µs",
        args.label,
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
