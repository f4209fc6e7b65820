//! The policy repository, through the `git` CLI: a bare mirror in the data dir, fetched on demand,
//! and commits exported into temporary directories for building.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Local ref the tracked branch is fetched into.
const TRACKED_REF: &str = "refs/heads/regent-tracked";

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
        }
    }

    async fn git(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let shown = args.join(" ");
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
        let child = cmd.spawn().map_err(|source| GitError::Spawn {
            args: shown.clone(),
            source,
        })?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| GitError::Timeout {
                args: shown.clone(),
                seconds: self.timeout.as_secs(),
            })?
            .map_err(|source| GitError::Spawn {
                args: shown.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(GitError::Failed {
                args: shown,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
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
            let out = cmd.output().await.map_err(|source| GitError::Spawn {
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
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// Author and subject of `commit`.
    pub async fn commit_info(&self, commit: &str) -> Result<CommitInfo, GitError> {
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
    fn scp_syntax_is_not_a_path() {
        assert!(looks_like_scp("git@github.com:o/r.git"));
        assert!(!looks_like_scp("./policies"));
        assert!(!looks_like_scp("/srv/a:b"));
    }
}
