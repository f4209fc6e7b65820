//! The policy repository, through the `git` CLI: a bare mirror in the data dir, fetched on demand,
//! and commits exported into temporary directories for building.
//!
//! The mirror belongs to the server, which runs one git command at a time in it. A git killed
//! while it held a lock (the server killed during a fetch, or a command killed on timeout)
//! leaves `*.lock` files that make every later fetch fail (`cannot lock ref ... File exists`);
//! [`GitSource::remove_stale_locks`] removes them when no live git holds them: at start, before
//! the server runs any git, and after one of its own commands was killed or failed on a lock.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;

/// Local ref the tracked branch is fetched into.
const TRACKED_REF: &str = "refs/heads/regent-tracked";
/// Largest output read from one git command (the exported tree of a commit): a repository
/// that grew out of bounds fails the build instead of exhausting memory.
const MAX_GIT_OUTPUT_BYTES: u64 = 512 * 1024 * 1024;
/// Most of git's standard error kept for the error message.
const MAX_GIT_STDERR_BYTES: u64 = 64 * 1024;
/// Lock files git may leave at the top of a (bare) repository, besides `refs/**/*.lock`.
const TOP_LEVEL_LOCKS: &[&str] = &[
    "HEAD.lock",
    "index.lock",
    "packed-refs.lock",
    "config.lock",
    "shallow.lock",
];
/// Name of the counter of removed stale lock files.
pub const STALE_LOCKS_METRIC: &str = "regent_git_stale_locks_removed_total";

/// A new (unregistered) `regent_git_stale_locks_removed_total` counter.
pub fn stale_lock_counter() -> IntCounter {
    IntCounter::new(
        STALE_LOCKS_METRIC,
        "Lock files left in the server's git mirror by a killed git, removed (at start, or after a git command of the server was killed or failed on a lock).",
    )
    .expect("a valid metric name and help")
}

/// A git command that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The command could not be started (is `git` installed?).
    #[error("running git {args}: {source}")]
    Spawn {
        /// Arguments.
        args: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The command exceeded `git.timeout_seconds`.
    #[error("git {args} timed out after {seconds} s")]
    Timeout {
        /// Arguments.
        args: String,
        /// Limit.
        seconds: u64,
    },
    /// Non-zero exit.
    #[error("git {args} failed: {stderr}")]
    Failed {
        /// Arguments.
        args: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// Unpacking the exported tree failed.
    #[error("exporting commit {commit}: {message}")]
    Export {
        /// Commit.
        commit: String,
        /// Cause.
        message: String,
    },
}

/// The tracked repository and branch, mirrored under the data dir.
#[derive(Debug, Clone)]
pub struct GitSource {
    repo: String,
    branch: String,
    mirror: PathBuf,
    timeout: Duration,
    stale_locks_removed: IntCounter,
}

/// Author and subject of a commit, for status pages.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CommitInfo {
    /// Author name and email.
    pub author: String,
    /// First line of the message.
    pub subject: String,
}

impl GitSource {
    /// `repo` is a URL or a path; a relative path is made absolute now, since git runs with
    /// `--git-dir` pointing elsewhere.
    pub fn new(repo: &str, branch: &str, mirror: PathBuf, timeout: Duration) -> GitSource {
        let path = Path::new(repo);
        let repo = if !repo.contains("://") && !looks_like_scp(repo) && path.is_relative() {
            std::env::current_dir()
                .map(|d| d.join(path).to_string_lossy().into_owned())
                .unwrap_or_else(|_| repo.to_string())
        } else {
            repo.to_string()
        };
        GitSource {
            repo,
            branch: branch.to_string(),
            mirror,
            timeout,
            stale_locks_removed: stale_lock_counter(),
        }
    }

    /// Counts removed stale locks in `counter` (shared with the server's state) instead of a
    /// counter of its own.
    pub fn with_stale_lock_counter(mut self, counter: IntCounter) -> GitSource {
        self.stale_locks_removed = counter;
        self
    }

    /// Lock files removed so far.
    pub fn stale_locks_removed(&self) -> u64 {
        self.stale_locks_removed.get()
    }

    /// Runs git in the mirror. A command that failed because a lock file exists, when no live
    /// git holds it (the server runs one git at a time, so it is a leftover of a killed one),
    /// has the stale locks removed and runs once more.
    async fn git(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        match self.git_once(args).await {
            Err(GitError::Failed {
                args: shown,
                stderr,
            }) if mentions_lock(&stderr) => {
                if self.remove_stale_locks("lock_error") == 0 {
                    return Err(GitError::Failed {
                        args: shown,
                        stderr,
                    });
                }
                self.git_once(args).await
            }
            other => other,
        }
    }

    /// Removes the lock files in the mirror (`refs/**/*.lock`, and `TOP_LEVEL_LOCKS`) that no
    /// live git holds; each is logged and counted. `trigger` says why it runs (`start`,
    /// `timeout`, `lock_error`). Only call it while none of the server's own git commands runs
    /// in the mirror: at start before the first one, or after one ended. Returns how many were
    /// removed.
    pub fn remove_stale_locks(&self, trigger: &'static str) -> usize {
        let locks = find_locks(&self.mirror);
        if locks.is_empty() {
            return 0;
        }
        if let Some(pid) = live_git_in(&self.mirror) {
            for lock in &locks {
                tracing::warn!(path = %lock.display(), pid, trigger, "git lock file kept: a live git process uses the mirror");
            }
            return 0;
        }
        let now = SystemTime::now();
        let mut removed = 0;
        for lock in locks {
            let age_seconds = std::fs::symlink_metadata(&lock)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            match std::fs::remove_file(&lock) {
                Ok(()) => {
                    removed += 1;
                    self.stale_locks_removed.inc();
                    tracing::warn!(
                        path = %lock.display(),
                        age_seconds,
                        trigger,
                        "removed a stale git lock file left by a killed git"
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(path = %lock.display(), trigger, error = %e, "cannot remove a stale git lock file");
                }
            }
        }
        removed
    }

    async fn git_once(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        use tokio::io::AsyncReadExt;
        // Errors end up in logs and `GET /v1/status`: a token in the repository URL must not.
        let redacted = self.display_repo();
        let hide = |text: &str| text.replace(self.repo.as_str(), &redacted);
        let shown = hide(&args.join(" "));
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("--git-dir")
            .arg(&self.mirror)
            .args(args)
            // A repository that needs credentials must fail, not wait for a password prompt.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawn_err = |source| GitError::Spawn {
            args: shown.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(spawn_err(std::io::Error::other("no pipes to git")));
        };
        let run = async {
            // Both pipes are drained together so git never blocks on a full one; output past
            // the limit ends the command (the child is killed when dropped).
            let out = async {
                let mut buf = Vec::new();
                stdout
                    .take(MAX_GIT_OUTPUT_BYTES + 1)
                    .read_to_end(&mut buf)
                    .await?;
                if buf.len() as u64 > MAX_GIT_OUTPUT_BYTES {
                    return Err(std::io::Error::other(format!(
                        "output larger than {MAX_GIT_OUTPUT_BYTES} bytes"
                    )));
                }
                Ok(buf)
            };
            let err = async {
                let mut buf = Vec::new();
                let mut stderr = stderr;
                (&mut stderr)
                    .take(MAX_GIT_STDERR_BYTES)
                    .read_to_end(&mut buf)
                    .await?;
                tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await?;
                Ok(buf)
            };
            let (out, err) = tokio::try_join!(out, err)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let outcome = tokio::time::timeout(self.timeout, run).await;
        let (status, stdout, stderr) = match outcome {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                // Killed and reaped before returning: the next command never meets a git that
                // is still dying.
                let _ = child.kill().await;
                return Err(spawn_err(e));
            }
            Err(_) => {
                let _ = child.kill().await;
                // A git killed in the middle of a ref update leaves its lock behind.
                self.remove_stale_locks("timeout");
                return Err(GitError::Timeout {
                    args: shown,
                    seconds: self.timeout.as_secs(),
                });
            }
        };
        if !status.success() {
            return Err(GitError::Failed {
                args: shown,
                stderr: hide(String::from_utf8_lossy(&stderr).trim()),
            });
        }
        Ok(stdout)
    }

    /// Fetches the branch into the mirror (created on first use) and returns its commit SHA.
    pub async fn fetch(&self) -> Result<String, GitError> {
        if !self.mirror.join("HEAD").exists() {
            if let Some(parent) = self.mirror.parent() {
                std::fs::create_dir_all(parent).map_err(|source| GitError::Spawn {
                    args: format!("mkdir {}", parent.display()),
                    source,
                })?;
            }
            let mut cmd = tokio::process::Command::new("git");
            cmd.arg("init")
                .arg("--bare")
                .arg("--quiet")
                .arg(&self.mirror)
                .stdin(Stdio::null())
                .kill_on_drop(true);
            let out = tokio::time::timeout(self.timeout, cmd.output())
                .await
                .map_err(|_| GitError::Timeout {
                    args: "init --bare".into(),
                    seconds: self.timeout.as_secs(),
                })?
                .map_err(|source| GitError::Spawn {
                    args: "init --bare".into(),
                    source,
                })?;
            if !out.status.success() {
                return Err(GitError::Failed {
                    args: "init --bare".into(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        let refspec = format!("+refs/heads/{}:{TRACKED_REF}", self.branch);
        self.git(&["fetch", "--quiet", "--no-tags", "--", &self.repo, &refspec])
            .await?;
        self.head().await
    }

    /// Commit SHA of the last fetched branch head.
    pub async fn head(&self) -> Result<String, GitError> {
        let spec = format!("{TRACKED_REF}^{{commit}}");
        let out = self
            .git(&["rev-parse", "--verify", "--quiet", &spec])
            .await?;
        let sha = String::from_utf8_lossy(&out).trim().to_string();
        if !is_object_id(&sha) {
            return Err(GitError::Failed {
                args: format!("rev-parse --verify {spec}"),
                stderr: format!("unexpected output {sha:?}"),
            });
        }
        Ok(sha)
    }

    /// Author and subject of `commit`.
    pub async fn commit_info(&self, commit: &str) -> Result<CommitInfo, GitError> {
        check_object_id(commit)?;
        let out = self
            .git(&["log", "-1", "--format=%an <%ae>%x00%s", commit, "--"])
            .await?;
        let text = String::from_utf8_lossy(&out);
        let (author, subject) = text.trim_end().split_once('\0').unwrap_or((&text, ""));
        Ok(CommitInfo {
            author: author.to_string(),
            subject: subject.to_string(),
        })
    }

    /// Committer time of `commit` (Unix seconds).
    pub async fn commit_time(&self, commit: &str) -> Result<i64, GitError> {
        check_object_id(commit)?;
        let out = self
            .git(&["log", "-1", "--format=%ct", commit, "--"])
            .await?;
        let text = String::from_utf8_lossy(&out);
        text.trim().parse().map_err(|_| GitError::Failed {
            args: format!("log -1 --format=%ct {commit}"),
            stderr: format!("unexpected output {:?}", text.trim()),
        })
    }

    /// Writes the tree of `commit` into `dest` (which must exist and be empty).
    pub async fn export(&self, commit: &str, dest: &Path) -> Result<(), GitError> {
        check_object_id(commit)?;
        let tar_bytes = self.git(&["archive", "--format=tar", commit]).await?;
        let dest = dest.to_path_buf();
        let commit_s = commit.to_string();
        let export_err = move |message: String| GitError::Export {
            commit: commit_s.clone(),
            message,
        };
        let res = tokio::task::spawn_blocking(move || {
            let mut archive = tar::Archive::new(std::io::Cursor::new(tar_bytes));
            // `unpack` refuses entries that would escape `dest` (absolute paths, `..`).
            archive.unpack(&dest).map_err(|e| e.to_string())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(m)) => Err(export_err(m)),
            Err(e) => Err(export_err(e.to_string())),
        }
    }

    /// The repository as shown to users: credentials in a URL are hidden.
    pub fn display_repo(&self) -> String {
        redact_url(&self.repo)
    }

    /// The tracked branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }
}

/// git's messages about a lock file that exists ("Unable to create '....lock': File exists").
fn mentions_lock(stderr: &str) -> bool {
    stderr.contains(".lock")
}

/// The lock files in `mirror`: `refs/**/*.lock` and [`TOP_LEVEL_LOCKS`], regular files only
/// (symbolic links are neither followed nor removed).
fn find_locks(mirror: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = TOP_LEVEL_LOCKS
        .iter()
        .map(|n| mirror.join(n))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    let mut dirs = vec![mirror.join("refs")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else {
                continue;
            };
            let path = e.path();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|x| x == "lock") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The pid of a live git process working in `mirror` (`--git-dir` or another argument naming
/// it, or its working directory), if any. A git orphaned by a killed server may still run and
/// hold its lock: that lock is not stale. Reads `/proc`; elsewhere nothing is found, and a lock
/// is stale because the server runs one git at a time and none of its own runs now.
fn live_git_in(mirror: &Path) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        let target = std::fs::canonicalize(mirror).ok()?;
        let me = std::process::id();
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let proc_dir = e.path();
            let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
                continue;
            };
            let mut argv = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned());
            let Some(argv0) = argv.next() else {
                continue;
            };
            let is_git = Path::new(&argv0)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "git" || n.starts_with("git-"));
            if !is_git {
                continue;
            }
            let cwd = std::fs::read_link(proc_dir.join("cwd")).ok();
            let names_mirror = |arg: &str| {
                let p = Path::new(arg.strip_prefix("--git-dir=").unwrap_or(arg));
                let p = match &cwd {
                    Some(cwd) if p.is_relative() => cwd.join(p),
                    _ => p.to_path_buf(),
                };
                std::fs::canonicalize(p).is_ok_and(|p| p == target)
            };
            if cwd.as_deref() == Some(target.as_path())
                || argv.any(|a| !a.is_empty() && names_mirror(&a))
            {
                return Some(pid);
            }
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = mirror;
        None
    }
}

/// A full hex object name (SHA-1 or SHA-256), as `rev-parse` prints it. Only such names are
/// passed to git commands as revisions, so none can be read as an option or a range.
pub fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_object_id(commit: &str) -> Result<(), GitError> {
    if is_object_id(commit) {
        Ok(())
    } else {
        Err(GitError::Failed {
            args: commit.chars().take(80).collect(),
            stderr: "not a full commit id".into(),
        })
    }
}

/// `user@host:path` (scp-like syntax) is a remote, not a relative path.
fn looks_like_scp(repo: &str) -> bool {
    match (repo.find(':'), repo.find('/')) {
        (Some(c), Some(s)) => c < s,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Removes the password (or token) of `https://user:secret@host/...`.
pub fn redact_url(repo: &str) -> String {
    match url::Url::parse(repo) {
        Ok(mut u) if u.password().is_some() || !u.username().is_empty() => {
            let _ = u.set_password(None);
            if !u.username().is_empty() {
                let _ = u.set_username("***");
            }
            u.to_string()
        }
        _ => repo.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_url("https://bot:ghp_secret@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(redact_url("/srv/policy.git"), "/srv/policy.git");
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
    }

    #[test]
    fn only_full_object_ids_reach_git() {
        assert!(is_object_id(&"a".repeat(40)));
        assert!(is_object_id(&"0f".repeat(32)));
        assert!(!is_object_id("--output=/tmp/x"));
        assert!(!is_object_id("HEAD"));
        assert!(!is_object_id(&"g".repeat(40)));
        assert!(!is_object_id(&"a".repeat(41)));
    }

    #[tokio::test]
    async fn an_option_like_revision_never_runs() {
        let d = tempfile::tempdir().unwrap();
        let g = GitSource::new(
            "/nonexistent",
            "main",
            d.path().join("m.git"),
            Duration::from_secs(5),
        );
        let e = g
            .export("--output=/tmp/x", d.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a full commit id"), "{e}");
    }

    #[tokio::test]
    async fn a_remote_that_never_answers_times_out() {
        // Accepts connections (the kernel backlog does) and never says a word.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let d = tempfile::tempdir().unwrap();
        let g = GitSource::new(
            &format!("git://127.0.0.1:{port}/policy.git"),
            "main",
            d.path().join("m.git"),
            Duration::from_secs(1),
        );
        let e = g.fetch().await.unwrap_err();
        assert!(matches!(e, GitError::Timeout { .. }), "{e}");
        drop(silent);
    }

    #[tokio::test]
    async fn fetch_errors_do_not_show_url_credentials() {
        // Port 1 on loopback refuses the connection at once.
        let d = tempfile::tempdir().unwrap();
        let g = GitSource::new(
            "https://bot:s3cr3t-token@127.0.0.1:1/policy.git",
            "main",
            d.path().join("m.git"),
            Duration::from_secs(30),
        );
        let e = g.fetch().await.unwrap_err().to_string();
        assert!(!e.contains("s3cr3t-token"), "{e}");
        assert!(e.contains("127.0.0.1:1/policy.git"), "{e}");
    }

    #[test]
    fn stale_locks_are_found_removed_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m.git");
        std::fs::create_dir_all(m.join("refs/heads/team")).unwrap();
        for f in [
            "HEAD.lock",
            "packed-refs.lock",
            "refs/heads/regent-tracked.lock",
            "refs/heads/team/x.lock",
            "refs/heads/main",
            "objects.lock",
        ] {
            std::fs::write(m.join(f), "").unwrap();
        }
        // A link is neither followed nor removed.
        #[cfg(unix)]
        std::os::unix::fs::symlink(m.join("refs/heads/main"), m.join("refs/heads/l.lock")).unwrap();
        let g = GitSource::new("/nonexistent", "main", m.clone(), Duration::from_secs(5));
        let counter = stale_lock_counter();
        let g = g.with_stale_lock_counter(counter.clone());
        assert_eq!(g.remove_stale_locks("start"), 4);
        assert_eq!(counter.get(), 4);
        assert_eq!(g.stale_locks_removed(), 4);
        assert!(m.join("refs/heads/main").exists());
        assert!(m.join("objects.lock").exists(), "only git's own lock names");
        assert!(find_locks(&m).is_empty());
        assert_eq!(g.remove_stale_locks("start"), 0);
        // No mirror yet (first start): nothing to do.
        let none = GitSource::new(
            "/x",
            "main",
            d.path().join("no.git"),
            Duration::from_secs(5),
        );
        assert_eq!(none.remove_stale_locks("start"), 0);
    }

    #[test]
    fn scp_syntax_is_not_a_path() {
        assert!(looks_like_scp("git@github.com:o/r.git"));
        assert!(!looks_like_scp("./policies"));
        assert!(!looks_like_scp("/srv/a:b"));
    }
}
