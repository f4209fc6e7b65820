//! One scenario's working directory, log directory and binaries. A scenario that ends without
//! calling [`Harness::pass`] (a panic, an early `?` return) keeps the directory and prints where
//! the logs are and their last lines when the harness is dropped; after a pass the directory is
//! removed (unless `REGENT_E2E_KEEP=1`). Declare the harness first in a scenario so it is dropped
//! last, after every process guard has stopped its process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

use crate::bins::{repo_root, Bins};
use crate::process::tail;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A scenario's directories and binaries.
pub struct Harness {
    /// Scenario name (used in messages and the directory name).
    pub name: String,
    /// Working directory: configs, repos, keys, persisted bundles.
    pub dir: PathBuf,
    /// Log directory: one `<process>.log` per process started.
    pub logs: PathBuf,
    /// Binaries.
    pub bins: Bins,
    /// Remove `dir` on a successful drop.
    cleanup: bool,
    passed: bool,
}

impl Harness {
    /// A fresh directory `e2e/.work/<name>-<pid>-<n>` (git-ignored) for a test scenario.
    /// `sibling` is a binary of this crate (`env!("CARGO_BIN_EXE_regent-e2e-echo")`), used to find
    /// the others.
    pub fn new(name: &str, sibling: &Path) -> Result<Harness> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = repo_root()
            .join("e2e/.work")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let keep = std::env::var("REGENT_E2E_KEEP").is_ok_and(|v| v == "1");
        Self::at(name, dir, sibling, !keep)
    }

    /// A harness rooted at `dir` (emptied first). `cleanup` removes it after a successful drop.
    pub fn at(name: &str, dir: PathBuf, sibling: &Path, cleanup: bool) -> Result<Harness> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let bins = Bins::beside(sibling)?;
        Ok(Harness {
            name: name.to_string(),
            dir,
            logs,
            bins,
            cleanup,
            passed: false,
        })
    }

    /// A path inside the working directory (parents created).
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        Ok(p)
    }

    /// Writes a file inside the working directory and returns its path.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let p = self.path(rel)?;
        std::fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }

    /// Marks the scenario as passed: its directory is removed when the harness is dropped.
    pub fn pass(&mut self) {
        self.passed = true;
    }

    /// Last lines of every log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&self.logs)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for p in entries {
            out.push_str(&format!(
                "----- {} (last {lines} lines) -----\n{}\n",
                p.display(),
                tail(&p, lines)
            ));
        }
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if !self.passed {
            eprintln!(
                "\n===== e2e scenario {:?} did not pass; every process log is kept in {} =====\n{}",
                self.name,
                self.logs.display(),
                self.log_tails(30)
            );
        } else if self.cleanup && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
