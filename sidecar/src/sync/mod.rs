//! Bundle synchronisation: download, verify, activate and persist signed bundles.
//!
//! [`start_with`] first activates the persisted copy of every bundle (so a restart with the
//! bundle server down is ready at once), then runs one polling task per bundle and, if
//! configured, a status reporter. Any failure keeps the last good policy.

pub mod activate;
pub mod backoff;
pub mod config;
pub mod credentials;
pub mod download;
pub mod persist;
pub mod regent_format;
pub mod runner;
pub mod status;
pub mod trace;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{
    BundleSource, ConfigError, HttpConfig, KeyConfig, PollingConfig, StatusConfig, SyncConfig,
};
pub use runner::{Activator, Refusal};
pub use status::{BundleStatus, StatusBoard};

/// Locks `m` even if a thread panicked while holding it: the sync state behind these locks stays
/// consistent between statements, and the sidecar must keep answering rather than fail on it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

use download::Downloader;
use persist::PersistDir;
use runner::{activate_and_record, BundleLoop};
use status::SyncMetrics;

/// Running sync tasks: observe their status, stop them.
pub struct SyncHandle {
    board: StatusBoard,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SyncHandle {
    /// Current status of every bundle.
    pub fn status(&self) -> BTreeMap<String, BundleStatus> {
        self.board.snapshot()
    }

    /// A receiver that changes on every status update.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.board.subscribe()
    }

    /// Wait until `pred` holds for the status or `timeout` passes; returns whether it held.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&BTreeMap<String, BundleStatus>) -> bool,
    ) -> bool {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.status()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return pred(&self.status()),
            }
        }
    }

    /// Stop every task and wait for them to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Start syncing with any [`Activator`]. Validates `cfg`, registers the metrics, activates
/// persisted bundles before returning, then polls in background tasks.
pub async fn start_with(
    cfg: &SyncConfig,
    activator: Arc<dyn Activator>,
    registry: &prometheus::Registry,
) -> anyhow::Result<SyncHandle> {
    start_traced(cfg, activator, registry, None).await
}

/// [`start_with`], with a `bundle.sync` trace of each round (see [`trace`]) when `tracing` is on.
pub async fn start_traced(
    cfg: &SyncConfig,
    activator: Arc<dyn Activator>,
    registry: &prometheus::Registry,
    tracing: Option<Arc<crate::telemetry::Tracing>>,
) -> anyhow::Result<SyncHandle> {
    let trace = tracing.map(|t| trace::SyncTrace::new(t.sync_tracer().clone()));
    cfg.validate()?;
    let metrics = SyncMetrics::register(registry, cfg.bundles.iter().map(|b| b.name.as_str()))
        .context("registering sync metrics")?;
    let board = StatusBoard::new(cfg.bundles.iter().map(|b| b.name.as_str()));
    let persist = cfg.persist_dir.as_ref().map(PersistDir::new);
    let (shutdown, shutdown_rx) = watch::channel(false);
    if cfg.insecure_skip_verification {
        tracing::warn!(
            "sync.insecure_skip_verification is true: bundle signatures are NOT checked"
        );
    }

    let mut loops = Vec::new();
    for src in &cfg.bundles {
        let mut downloader = Downloader::new(&src.url, &cfg.http, cfg.long_poll_wait(src))
            .with_context(|| format!("sync.bundles {:?}", src.name))?;
        let mut active_revision = None;
        if let Some(dir) = &persist {
            active_revision = restore(
                src,
                dir,
                &activator,
                &board,
                &metrics,
                &mut downloader,
                trace.as_ref(),
            )
            .await;
        }
        loops.push(BundleLoop {
            name: src.name.clone(),
            downloader,
            activator: Arc::clone(&activator),
            persist: persist.clone(),
            board: board.clone(),
            metrics: metrics.clone(),
            min_delay: Duration::from_secs(cfg.polling.min_delay_seconds),
            max_delay: Duration::from_secs(cfg.polling.max_delay_seconds),
            active_revision,
            trace: trace.clone(),
        });
    }

    let mut tasks = Vec::new();
    for l in loops {
        tasks.push(tokio::spawn(l.run(shutdown_rx.clone())));
    }
    if let Some(status_cfg) = &cfg.status {
        // Status reports carry the credentials of bundle requests (sync.http).
        let sender = status::StatusSender::new(&status_cfg.url, &cfg.http)
            .context("building the status report HTTP client")?;
        tasks.push(tokio::spawn(status::run_reporter(
            status_cfg.clone(),
            board.clone(),
            sender,
            shutdown_rx.clone(),
        )));
    }
    Ok(SyncHandle {
        board,
        shutdown,
        tasks,
    })
}

/// Activate the persisted copy of one bundle, if there is one. A missing, unreadable or
/// refused copy is reported and skipped; the file is left in place (it is overwritten by the
/// next successful activation, and keeping it helps diagnose why it was refused).
async fn restore(
    src: &BundleSource,
    dir: &PersistDir,
    activator: &Arc<dyn Activator>,
    board: &StatusBoard,
    metrics: &SyncMetrics,
    downloader: &mut Downloader,
    trace: Option<&trace::SyncTrace>,
) -> Option<String> {
    let (d, name) = (dir.clone(), src.name.clone());
    let loaded = match tokio::task::spawn_blocking(move || d.load(&name)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(bundle = %src.name, error = %e, "persist read task failed");
            return None;
        }
    };
    let persisted = match loaded {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => {
            if let Some(t) = trace {
                t.round(&src.name, "persisted").finish(
                    "error",
                    None,
                    Some(format!("persisted bundle: {e}")),
                );
            }
            tracing::error!(bundle = %src.name, error = %e, "cannot read persisted bundle; skipping it");
            metrics.activation_failure(&src.name, "persisted");
            let msg = format!("persisted bundle: {e}");
            board.update(&src.name, true, |s| s.fail(msg, None, Vec::new()));
            return None;
        }
    };
    let round = trace.map(|t| t.round(&src.name, "persisted"));
    match activate_and_record(
        &src.name,
        Arc::new(persisted.bytes),
        activator,
        board,
        metrics,
        None,
        round.as_ref(),
    )
    .await
    {
        Ok(rev) => {
            if let Some(r) = round {
                r.finish("activated", Some(&rev), None);
            }
            downloader.set_etag(persisted.etag);
            Some(rev)
        }
        Err(refusal) => {
            if let Some(r) = round {
                r.finish("refused", None, Some(refusal.to_string()));
            }
            tracing::error!(bundle = %src.name, "persisted bundle refused; skipped, waiting for a download");
            None
        }
    }
}
