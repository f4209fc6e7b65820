//! Re-reads key and certificate files when they change, without a restart: the bundle keyring
//! (`keyring`), the gRPC listener's TLS (`grpc_tls`), the CA files of the key set fetchers
//! (`jwks_ca`), the TLS files of bundle downloads (`sync_tls`) and of remote calls
//! (`remote_tls`) and of decision log uploads (`decision_log_tls`), the introspection client secrets (`introspection_secret`) and the passport
//! keys (`passport_keys`); see [`crate::tls`].
//!
//! A [`Watcher`] polls a set of files and compares a SHA-256 of what each path resolves to *now*:
//! Kubernetes updates a mounted Secret by swapping the `..data` symlink, which an mtime check on
//! the visible path can miss. On a change it calls the reload function, which must parse and
//! validate the new material completely and swap it in only if it is valid; a failure keeps the
//! old material, is logged with the error, and counted in `regent_reload_total{what,result}`.
//! The fingerprint is updated even on failure, so a bad file is reported once and retried when it
//! changes again rather than on every poll.

use std::path::PathBuf;
use std::time::Duration;

use prometheus::IntCounterVec;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Validates and swaps in new material; `Err` must leave the old material in force.
pub type ReloadFn = Box<dyn Fn() -> anyhow::Result<()> + Send + Sync>;

/// One kind of reloadable material and the files it is read from.
pub struct Watcher {
    what: &'static str,
    paths: Vec<PathBuf>,
    reload: ReloadFn,
    last: [u8; 32],
}

/// What a poll found.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// The files are as they were.
    Unchanged,
    /// They changed and the new material is in force.
    Reloaded,
    /// They changed but the new material was refused; the old is still in force.
    Refused(String),
}

impl Watcher {
    /// Fingerprints `paths` now (blocking): the material in force was read from them at start.
    pub fn new(what: &'static str, paths: Vec<PathBuf>, reload: ReloadFn) -> Self {
        let last = fingerprint(&paths);
        Self::from_fingerprint(what, paths, reload, last)
    }

    /// A watcher of material read right after `last` was taken from `paths`: a change made
    /// while it was being read is then seen by the first poll rather than missed.
    pub fn from_fingerprint(
        what: &'static str,
        paths: Vec<PathBuf>,
        reload: ReloadFn,
        last: [u8; 32],
    ) -> Self {
        Watcher {
            what,
            paths,
            reload,
            last,
        }
    }

    /// Label for `regent_reload_total{what}`.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Reads the files (blocking) and reloads if any of them changed.
    pub fn poll(&mut self) -> Polled {
        let now = fingerprint(&self.paths);
        if now == self.last {
            return Polled::Unchanged;
        }
        self.last = now;
        match (self.reload)() {
            Ok(()) => Polled::Reloaded,
            Err(e) => Polled::Refused(format!("{e:#}")),
        }
    }
}

/// SHA-256 over every path with its content, or the read error in its place: a file that
/// disappears or becomes unreadable is a change too (its reload then fails and is reported).
pub fn fingerprint(paths: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update([0]);
        match std::fs::read(p) {
            Ok(bytes) => {
                h.update([1]);
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) => {
                h.update([2]);
                h.update(e.kind().to_string().as_bytes());
            }
        }
    }
    h.finalize().into()
}

/// Polls every watcher each `interval` on a blocking thread (file reads and key parsing stay off
/// the runtime threads), until `shutdown` turns true. Results are logged and counted in `total`.
pub fn spawn(
    watchers: Vec<Watcher>,
    interval: Duration,
    total: IntCounterVec,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    // Exported at 0 from start, so `increase()` sees the first reload of each kind in use.
    for w in &watchers {
        for result in ["ok", "error"] {
            total.with_label_values(&[w.what(), result]);
        }
    }
    tokio::spawn(async move {
        let mut watchers = watchers;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let polled = tokio::task::spawn_blocking(move || {
                let results: Vec<(&'static str, Polled)> =
                    watchers.iter_mut().map(|w| (w.what(), w.poll())).collect();
                (watchers, results)
            })
            .await;
            let results;
            (watchers, results) = match polled {
                Ok(r) => r,
                Err(e) => {
                    // The watchers were moved into the task that failed; without them there is
                    // nothing left to poll, and the material in force stays as it is.
                    tracing::error!(error = %e, "reload task failed; file reloading stopped");
                    return;
                }
            };
            for (what, p) in results {
                match p {
                    Polled::Unchanged => {}
                    Polled::Reloaded => {
                        tracing::info!(what, "reloaded changed files");
                        total.with_label_values(&[what, "ok"]).inc();
                    }
                    Polled::Refused(error) => {
                        tracing::warn!(what, error = %error, "changed files refused; keeping the material in force");
                        total.with_label_values(&[what, "error"]).inc();
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn counting(dir: &std::path::Path) -> (Watcher, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let file = dir.join("key.pem");
        let f = file.clone();
        let w = Watcher::new(
            "keyring",
            vec![file],
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
                let text = std::fs::read_to_string(&f)?;
                anyhow::ensure!(text.starts_with("good"), "{} is not good", f.display());
                Ok(())
            }),
        );
        (w, calls)
    }

    #[test]
    fn reloads_once_per_change_and_reports_refusals() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.pem"), "good 1").unwrap();
        let (mut w, calls) = counting(dir.path());
        assert_eq!(w.poll(), Polled::Unchanged);
        std::fs::write(dir.path().join("key.pem"), "good 2").unwrap();
        assert_eq!(w.poll(), Polled::Reloaded);
        assert_eq!(w.poll(), Polled::Unchanged);
        std::fs::write(dir.path().join("key.pem"), "bad").unwrap();
        assert!(matches!(w.poll(), Polled::Refused(e) if e.contains("is not good")));
        // Not retried until the file changes again.
        assert_eq!(w.poll(), Polled::Unchanged);
        std::fs::write(dir.path().join("key.pem"), "good 3").unwrap();
        assert_eq!(w.poll(), Polled::Reloaded);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_removed_file_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.pem"), "good").unwrap();
        let (mut w, _) = counting(dir.path());
        std::fs::remove_file(dir.path().join("key.pem")).unwrap();
        assert!(matches!(w.poll(), Polled::Refused(_)));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_swap_with_the_same_mtime_is_seen() {
        // Kubernetes' layout: key.pem -> ..data/key.pem, ..data -> a timestamped directory.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("v1"), dir.path().join("v2"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("key.pem"), "good a").unwrap();
        std::fs::write(b.join("key.pem"), "good b").unwrap();
        std::os::unix::fs::symlink("v1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/key.pem", dir.path().join("key.pem")).unwrap();
        let (mut w, _) = counting(dir.path());
        std::os::unix::fs::symlink("v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(w.poll(), Polled::Reloaded);
    }

    #[tokio::test]
    async fn the_task_counts_results_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.pem"), "good").unwrap();
        let (w, _) = counting(dir.path());
        let total = IntCounterVec::new(
            prometheus::Opts::new("regent_reload_total", "test"),
            &["what", "result"],
        )
        .unwrap();
        let (tx, rx) = watch::channel(false);
        let task = spawn(vec![w], Duration::from_millis(20), total.clone(), rx);
        std::fs::write(dir.path().join("key.pem"), "bad").unwrap();
        let mut seen = false;
        for _ in 0..200 {
            if total.with_label_values(&["keyring", "error"]).get() == 1 {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "the refusal was not counted");
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
