//! `policy.bundle` / `--bundle PATH`: a local `.tar.gz` bundle or policy directory, activated at start
//! and again whenever it changes. Local bundles are the operator's own files, so they are not
//! signature-checked; bundles from the network go through `sync`, which always is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::policy::PolicyStore;

pub use regent_policy::load::{read_local as load, LOCAL_BUNDLE_NAME};

/// Cheap change detection: paths, sizes and modification times of everything under `path`.
fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                for e in entries.flatten() {
                    if !e.file_name().to_string_lossy().starts_with('.')
                        || e.file_name() == ".manifest"
                    {
                        stack.push(e.path());
                    }
                }
            }
        } else {
            out.push((p, meta.len(), meta.modified().ok()));
        }
    }
    out.sort();
    out
}

fn activate(store: &PolicyStore, path: &Path) -> anyhow::Result<()> {
    let bundle = load(path)?;
    store.activate(&[(LOCAL_BUNDLE_NAME.to_string(), Arc::new(bundle))])?;
    Ok(())
}

/// Activates the local bundle now (a failure is logged; the sidecar then stays not ready), then
/// re-activates it whenever its files change. A broken change keeps the policy in force.
pub fn watch(
    store: Arc<PolicyStore>,
    path: PathBuf,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut last = fingerprint(&path);
    if let Err(e) = activate(&store, &path) {
        tracing::error!(bundle = %path.display(), error = %format!("{e:#}"), "local bundle not activated");
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (store2, path2) = (store.clone(), path.clone());
            let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&path2)).await else {
                continue;
            };
            if now == last {
                continue;
            }
            last = now;
            let p = path.clone();
            let result = tokio::task::spawn_blocking(move || activate(&store2, &p)).await;
            match result {
                Ok(Ok(())) => {
                    tracing::info!(bundle = %path.display(), "local bundle changed: reloaded")
                }
                Ok(Err(e)) => tracing::error!(
                    bundle = %path.display(),
                    error = %format!("{e:#}"),
                    "local bundle changed but was refused; the previous policy stays in force"
                ),
                Err(e) => tracing::error!(error = %e, "local bundle reload task failed"),
            }
        }
    })
}
