//! Policy repositories: a bare repository (what `regent serve` watches) and a working clone the
//! test edits and pushes from, exactly as a policy author would. Uses the `git` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// A bare repository and a clone of it.
pub struct PolicyRepo {
    /// The bare repository.
    pub bare: PathBuf,
    /// The author's working clone.
    pub work: PathBuf,
    /// The branch the server follows.
    pub branch: String,
}

/// Runs git in `dir` with a fixed identity and no user or system configuration, returning stdout.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Regent E2E")
        .env("GIT_AUTHOR_EMAIL", "e2e@regent.invalid")
        .env("GIT_COMMITTER_NAME", "Regent E2E")
        .env("GIT_COMMITTER_EMAIL", "e2e@regent.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .with_context(|| format!("running git {args:?} in {}", dir.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "git {args:?} in {} failed ({}): {}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Copies the regular files of `src` into `dst` recursively; `.git` is left out (hidden files such
/// as a bundle's `.manifest` are copied).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let ty = entry.file_type()?;
        let to = dst.join(&name);
        if ty.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &to)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

impl PolicyRepo {
    /// Creates `<dir>/policies.git` (bare) and `<dir>/author` (clone), commits the files of
    /// `seed` on `branch` and pushes them.
    pub fn create(dir: &Path, seed: &Path, branch: &str) -> Result<PolicyRepo> {
        let bare = dir.join("policies.git");
        let work = dir.join("author");
        std::fs::create_dir_all(&bare)?;
        git(&bare, &["init", "--quiet", "--bare", "-b", branch])?;
        git(
            dir,
            &["clone", "--quiet", path_str(&bare)?, path_str(&work)?],
        )?;
        git(&work, &["checkout", "--quiet", "-B", branch])?;
        copy_tree(seed, &work)?;
        let repo = PolicyRepo {
            bare,
            work,
            branch: branch.to_string(),
        };
        repo.commit_and_push("seed policies")?;
        Ok(repo)
    }

    /// Writes a file in the working clone.
    pub fn write(&self, rel: &str, contents: &str) -> Result<()> {
        let p = self.work.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))
    }

    /// Reads a file of the working clone.
    pub fn read(&self, rel: &str) -> Result<String> {
        let p = self.work.join(rel);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// Commits everything and pushes; returns the new commit id. Push output (hook output
    /// included) is returned by [`PolicyRepo::push`] for callers that want it.
    pub fn commit_and_push(&self, message: &str) -> Result<String> {
        git(&self.work, &["add", "-A"])?;
        git(
            &self.work,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        )?;
        self.push()?;
        self.head()
    }

    /// `git push origin <branch>`; returns git's stderr-included output.
    pub fn push(&self) -> Result<String> {
        git(
            &self.work,
            &[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:refs/heads/{}", self.branch),
            ],
        )
    }

    /// The working clone's HEAD commit id.
    pub fn head(&self) -> Result<String> {
        Ok(git(&self.work, &["rev-parse", "HEAD"])?.trim().to_string())
    }

    /// Installs `script` as the bare repository's `post-receive` hook.
    pub fn install_post_receive(&self, script: &str) -> Result<()> {
        self.install_git_hook("post-receive", script)
    }

    /// Installs `script` as the bare repository's `pre-receive` hook.
    pub fn install_pre_receive(&self, script: &str) -> Result<()> {
        self.install_git_hook("pre-receive", script)
    }

    fn install_git_hook(&self, name: &str, script: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let hook = self.bare.join("hooks").join(name);
        std::fs::write(&hook, script).with_context(|| format!("writing {}", hook.display()))?;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", hook.display()))
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_edit_push_roundtrip() {
        let dir = std::env::temp_dir().join(format!("regent-e2e-git-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let seed = dir.join("seed");
        std::fs::create_dir_all(seed.join("sub")).unwrap();
        std::fs::write(seed.join("sub/a.rego"), "package a\n").unwrap();
        std::fs::write(seed.join(".manifest"), "{}").unwrap();
        std::fs::create_dir_all(seed.join(".git")).unwrap();
        std::fs::write(seed.join(".git/HEAD"), "x").unwrap();
        let repo = PolicyRepo::create(&dir, &seed, "main").unwrap();
        let first = repo.head().unwrap();
        let bare_head = git(&repo.bare, &["rev-parse", "refs/heads/main"]).unwrap();
        assert_eq!(bare_head.trim(), first);
        let files = git(&repo.bare, &["ls-tree", "-r", "--name-only", "main"]).unwrap();
        assert_eq!(files.trim(), ".manifest\nsub/a.rego");
        repo.write("sub/a.rego", "package a\nx := 1\n").unwrap();
        let second = repo.commit_and_push("edit").unwrap();
        assert_ne!(first, second);
        let bare_head = git(&repo.bare, &["rev-parse", "refs/heads/main"]).unwrap();
        assert_eq!(bare_head.trim(), second);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
