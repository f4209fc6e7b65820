//! Bundle activation cost: `cargo run --release -p regent-sidecar --example activation_bench -- <MB>`
//!
//! Builds a signed bundle holding about <MB> MiB of JSON data, then times what the sync loop
//! does with downloaded bytes (unpack with limits, verify the signature, compile the set into the
//! sidecar's PolicyStore, swap atomically) while a thread keeps evaluating against the active
//! policy and counts failed or mixed answers. Prints one Markdown table row. Run one size per
//! process so the peak RSS (VmHWM) belongs to that size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

fn make_bundle(
    rev: &str,
    mib: usize,
    key: &ed25519_dalek::SigningKey,
    iat: i64,
) -> anyhow::Result<Vec<u8>> {
    let mut users = serde_json::Map::new();
    let mut size = 0usize;
    let mut i = 0u64;
    while size < mib * 1024 * 1024 {
        let id = format!("user-{i:09}");
        let v = serde_json::json!({"role": if i.is_multiple_of(7) { "admin" } else { "reader" },
            "teams": [format!("team-{}", i % 97), format!("team-{}", i % 89)], "active": !i.is_multiple_of(3)});
        size += id.len() + v.to_string().len() + 4;
        users.insert(id, v);
        i += 1;
    }
    let data = serde_json::to_vec(&serde_json::json!({ "users": users, "rev": rev }))?;
    let mut files = BTreeMap::new();
    files.insert(
        ".manifest".to_string(),
        format!(r#"{{"revision":"{rev}","roots":["authz"]}}"#).into_bytes(),
    );
    files.insert("authz/data.json".to_string(), data);
    files.insert(
        "authz/policy.rego".to_string(),
        b"package authz\n\nanswer := [data.authz.rev, r] if { r := data.authz.rev }\n\nallow if data.authz.users[input.user].role == \"admin\"\n".to_vec(),
    );
    let mut b = Bundle::from_files(files)?;
    signing::sign(
        &mut b,
        key,
        "bench",
        &SignClaims {
            iat: Some(iat),
            ..SignClaims::default()
        },
    )?;
    Ok(b.to_tar_gz()?)
}

fn main() -> anyhow::Result<()> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1);
    let (private, public) = signing::generate_key_pem();
    let key = signing::signing_key_from_pem(&private, "bench key")?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("k.pem"), public)?;
    let cfg = SyncConfig {
        bundles: vec![BundleSource {
            name: "authz".into(),
            url: "http://127.0.0.1/b".into(),
            roots: None,
            long_poll_timeout_seconds: None,
        }],
        keys: vec![KeyConfig {
            kid: "bench".into(),
            public_key_file: dir.path().join("k.pem"),
        }],
        http: HttpConfig {
            max_bundle_bytes: 1 << 30,
            ..HttpConfig::default()
        },
        ..SyncConfig::default()
    };
    let first = make_bundle("r1", mib, &key, 1)?;
    let second = make_bundle("r2", mib, &key, 2)?;
    // The sidecar's own policy store: compiles (VM when possible) and swaps exactly as in production.
    let store = Arc::new(PolicyStore::new(
        PolicySettings {
            rule: "data.authz.answer".into(),
            engine: EngineChoice::Auto,
            eval_timeout: std::time::Duration::from_secs(1),
        },
        prometheus::IntCounter::new("bench_activations_total", "activations")?,
    ));
    let act = regent_activator(&cfg, store.clone())?;
    act.activate("authz", &first)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Readers keep evaluating through the swap; any error or mixed answer is counted.
    let stop = Arc::new(AtomicBool::new(false));
    let (evals, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (store, stop, evals, bad) = (store.clone(), stop.clone(), evals.clone(), bad.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = store
                    .current()
                    .and_then(|p| p.evaluate(regorus::Value::new_object()).ok());
                let consistent = ok.as_ref().is_some_and(|v| {
                    let s = serde_json::to_string(v).unwrap_or_default();
                    s == r#"["r1","r1"]"# || s == r#"["r2","r2"]"#
                });
                if !consistent {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                evals.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    act.activate("authz", &second)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    println!(
        "| {mib} MiB data | {:.1} MiB | {:.0} ms | {:.0} MiB | {} | {} |",
        second.len() as f64 / (1024.0 * 1024.0),
        took.as_secs_f64() * 1000.0,
        peak_rss_mib(),
        evals.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed)
    );
    Ok(())
}
