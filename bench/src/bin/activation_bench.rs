//! Bundle activation cost: `cargo run --release -p regent-bench --bin activation_bench -- <MB>
//! [--same-data]`
//!
//! Builds two signed bundles holding about `<MB>` MiB of JSON data each (with `--same-data`, the very
//! same data file in both, only the policy changing), then times what the sync loop
//! does with downloaded bytes (unpack with limits, verify the signature, compile the set into the
//! sidecar's PolicyStore, swap atomically) while a thread keeps evaluating against the active
//! policy and counts failed or mixed answers. Prints one Markdown table row. Run one size per
//! process. The bundles are built by a child process (this example re-run with `--make`), so the
//! peak RSS (VmHWM) printed is the activating process's own: two policies alive at once during
//! the swap, not the cost of generating test data. Columns: data size, bundle size, activation
//! wall time, activation CPU time (the activating thread's own), peak RSS, evaluations during the
//! run, failed or mixed answers, slowest evaluation during the swap.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use regent_bundle::signing::{self, SignClaims};
use regent_bundle::Bundle;
use regent_sidecar::config::EngineChoice;
use regent_sidecar::policy::{PolicySettings, PolicyStore};
use regent_sidecar::sync::regent_format::regent_activator;
use regent_sidecar::sync::{Activator, BundleSource, HttpConfig, KeyConfig, SyncConfig};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU time this thread has run so far (Linux schedstat): unlike wall time, it does not grow
/// when other processes compete for the cores.
fn thread_cpu() -> std::time::Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    std::time::Duration::from_nanos(ns)
}

/// `data.json` of about `mib` MiB: `{"rev": .., "users": {"user-000000000": {..}, ..}}`, compact.
fn make_data(rev: &str, mib: usize) -> Vec<u8> {
    let mut s = String::with_capacity(mib * 1024 * 1024 + 4096);
    let _ = write!(s, r#"{{"rev":"{rev}","users":{{"#);
    let mut i = 0u64;
    while s.len() < mib * 1024 * 1024 {
        if i > 0 {
            s.push(',');
        }
        let role = if i.is_multiple_of(7) {
            "admin"
        } else {
            "reader"
        };
        let _ = write!(
            s,
            r#""user-{i:09}":{{"active":{},"role":"{role}","teams":["team-{}","team-{}"]}}"#,
            !i.is_multiple_of(3),
            i % 97,
            i % 89
        );
        i += 1;
    }
    s.push_str("}}");
    s.into_bytes()
}

/// Child mode: writes one signed bundle `.tar.gz` to `out`: revision `rev`, data made for
/// `data_rev`, and a policy whose `answer` is `[data.authz.rev, "<rev>"]`.
fn make_bundle(
    mib: usize,
    rev: &str,
    data_rev: &str,
    iat: i64,
    key_file: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let key = signing::read_signing_key(key_file)?;
    let mut files = BTreeMap::new();
    files.insert(
        ".manifest".to_string(),
        format!(r#"{{"revision":"{rev}","roots":["authz"]}}"#).into_bytes(),
    );
    files.insert("authz/data.json".to_string(), make_data(data_rev, mib));
    files.insert(
        "authz/policy.rego".to_string(),
        format!("package authz\n\nanswer := [data.authz.rev, \"{rev}\"]\n\nallow if data.authz.users[input.user].role == \"admin\"\n").into_bytes(),
    );
    let mut b = Bundle::from_files(files)?;
    signing::sign(
        &mut b,
        &key,
        "bench",
        &SignClaims {
            iat: Some(iat),
            ..SignClaims::default()
        },
    )?;
    std::fs::write(out, b.to_tar_gz()?)?;
    Ok(())
}

fn build_in_child(
    mib: usize,
    rev: &str,
    data_rev: &str,
    iat: i64,
    dir: &Path,
) -> anyhow::Result<Vec<u8>> {
    let out = dir.join(format!("{rev}.tar.gz"));
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--make")
        .args([
            mib.to_string(),
            rev.into(),
            data_rev.into(),
            iat.to_string(),
        ])
        .arg(dir.join("k.key"))
        .arg(&out)
        .status()
        .context("running the bundle builder")?;
    anyhow::ensure!(status.success(), "bundle builder failed: {status}");
    Ok(std::fs::read(&out)?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--make") {
        let [_, mib, rev, data_rev, iat, key, out] = args.as_slice() else {
            anyhow::bail!("usage: --make <MiB> <rev> <data rev> <iat> <key file> <out>");
        };
        let (mib, iat) = (mib.parse()?, iat.parse()?);
        return make_bundle(mib, rev, data_rev, iat, key.as_ref(), out.as_ref());
    }
    let mib: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let same_data = match args.get(1).map(String::as_str) {
        None => false,
        Some("--same-data") => true,
        Some(other) => anyhow::bail!("unknown argument {other:?} (usage: <MiB> [--same-data])"),
    };
    let second_data = if same_data { "r1" } else { "r2" };
    // The answers a consistent policy gives, before and after the swap.
    let expected = [
        r#"["r1","r1"]"#.to_string(),
        format!(r#"["{second_data}","r2"]"#),
    ];
    let (private, public) = signing::generate_key_pem();
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("k.pem"), public)?;
    std::fs::write(dir.path().join("k.key"), private)?;
    let cfg = SyncConfig {
        bundles: vec![BundleSource {
            name: "authz".into(),
            url: "http://127.0.0.1/b".into(),
            roots: None,
            long_poll_timeout_seconds: None,
        }],
        keys: vec![KeyConfig {
            kid: "bench".into(),
            public_key_file: Some(dir.path().join("k.pem")),
            ..KeyConfig::default()
        }],
        http: HttpConfig {
            max_bundle_bytes: 1 << 30,
            ..HttpConfig::default()
        },
        ..SyncConfig::default()
    };
    let first = build_in_child(mib, "r1", "r1", 1, dir.path())?;
    let second = build_in_child(mib, "r2", second_data, 2, dir.path())?;
    // The sidecar's own policy store: compiles (VM when possible) and swaps exactly as in production.
    let store = Arc::new(PolicyStore::new(
        PolicySettings {
            rule: "data.authz.answer".into(),
            engine: EngineChoice::Auto,
            eval_timeout: std::time::Duration::from_secs(1),
            ..PolicySettings::default()
        },
        prometheus::IntCounter::new("bench_activations_total", "activations")?,
    ));
    let act = regent_activator(&cfg, store.clone())?;
    act.activate("authz", &first)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Readers keep evaluating through the swap; any error or mixed answer is counted, and the
    // slowest evaluation shows whether the swap stalls a request (e.g. freeing the old data).
    let stop = Arc::new(AtomicBool::new(false));
    let (evals, bad, slowest_us) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let reader = {
        let (store, stop, evals, bad, slowest_us, expected) = (
            store.clone(),
            stop.clone(),
            evals.clone(),
            bad.clone(),
            slowest_us.clone(),
            expected.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = store
                    .current()
                    .and_then(|p| p.evaluate(regorus::Value::new_object()).ok());
                slowest_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                let consistent = ok.as_ref().is_some_and(|v| {
                    let s = serde_json::to_string(v).unwrap_or_default();
                    expected.contains(&s)
                });
                if !consistent {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                evals.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Let the reader build its evaluator for the first policy before the swap starts.
    while evals.load(Ordering::Relaxed) < 100 {
        std::thread::yield_now();
    }
    slowest_us.store(0, Ordering::Relaxed);
    let (started, cpu) = (Instant::now(), thread_cpu());
    act.activate("authz", &second)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (took, cpu) = (started.elapsed(), thread_cpu().saturating_sub(cpu));
    // Keep reading a little after the swap: the first evaluations on the new policy count too.
    let after = evals.load(Ordering::Relaxed);
    let wait = Instant::now();
    while evals.load(Ordering::Relaxed) < after + 1000 && wait.elapsed().as_secs() < 10 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    // The swap must have happened: the new policy answers now.
    let now = store
        .current()
        .and_then(|p| p.evaluate(regorus::Value::new_object()).ok())
        .map(|v| serde_json::to_string(&v).unwrap_or_default());
    anyhow::ensure!(
        now.as_deref() == Some(expected[1].as_str()),
        "after the swap the policy answers {now:?}"
    );
    let label = if same_data { ", unchanged" } else { "" };
    println!(
        "| {mib} MiB data{label} | {:.1} MiB | {:.0} ms | {:.0} ms | {:.0} MiB | {} | {} | {:.1} ms |",
        second.len() as f64 / (1024.0 * 1024.0),
        took.as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0,
        peak_rss_mib(),
        evals.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        slowest_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    Ok(())
}
