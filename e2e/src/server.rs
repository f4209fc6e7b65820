//! `regent serve`: configuration written by the harness, process started and stopped, status read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::harness::Harness;
use crate::ports::free_port;
use crate::process::Proc;
use crate::sidecar::BUNDLE;
use crate::upstreams::wait_listening;
use crate::wait;

/// Key id the harness signs bundles under.
pub const KID: &str = "e2e";

/// What the bundle server is configured with.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// HTTP port.
    pub port: u16,
    /// The bare policy repository.
    pub repo: PathBuf,
    /// Branch to follow.
    pub branch: String,
    /// Ed25519 private key (PKCS#8 PEM).
    pub signing_key: PathBuf,
    /// Webhook HMAC secret file.
    pub webhook_secret: PathBuf,
    /// Server state directory.
    pub data_dir: PathBuf,
    /// Directory of the bundle inside the repository (`.` = all of it).
    pub bundle_dir: String,
    /// `git.poll_interval_seconds` (0: only at start and on the webhook).
    pub poll_interval_seconds: u64,
}

impl ServerOptions {
    /// The YAML configuration (written as JSON).
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "listen": format!("127.0.0.1:{}", self.port),
            "data_dir": self.data_dir.display().to_string(),
            "git": {
                "repo": self.repo.display().to_string(),
                "branch": self.branch,
                "poll_interval_seconds": self.poll_interval_seconds,
            },
            "webhook": {"secret_file": self.webhook_secret.display().to_string()},
            "bundles": [{
                "name": BUNDLE,
                "dir": self.bundle_dir,
                "entrypoints": ["envoy/authz/allow"],
            }],
            "signing": {
                "keys": [{"kid": KID, "private_key_file": self.signing_key.display().to_string()}],
                "active_kid": KID,
            },
            "log": {"level": "info", "format": "text"},
        })
    }
}

/// Runs `regent keygen`, writing `<dir>/signing.key` (PKCS#8) and `<dir>/signing.pub` (SPKI);
/// returns (private, public).
pub fn keygen(h: &Harness, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let private = dir.join("signing.key");
    let public = dir.join("signing.pub");
    let out = Command::new(&h.bins.regent)
        .arg("keygen")
        .arg("--out-dir")
        .arg(dir)
        .args(["--name", "signing"])
        .output()
        .context("running regent keygen")?;
    if !out.status.success() {
        anyhow::bail!(
            "regent keygen failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((private, public))
}

/// Fails naming the tool when `git`, `curl` or `openssl` is missing: the post-receive hook
/// (docs/post-receive.sh) silently does nothing without the last two (a push must never fail
/// because of it), which would otherwise show up only as a timeout.
pub fn check_hook_tools() -> Result<()> {
    for (tool, arg) in [
        ("git", "--version"),
        ("curl", "--version"),
        ("openssl", "version"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            anyhow::bail!(
                "{tool} is needed (git repository and its post-receive hook, docs/post-receive.sh): apt-get install {tool}"
            );
        }
    }
    Ok(())
}

/// A running (or stopped, restartable) bundle server.
pub struct BundleServer {
    /// Its options.
    pub opts: ServerOptions,
    /// The configuration file.
    pub config: PathBuf,
    name: String,
    bin: PathBuf,
    logs: PathBuf,
    proc: Option<Proc>,
}

impl BundleServer {
    /// Options with a free port and files under `<h.dir>/server`.
    pub fn options(
        h: &Harness,
        repo: &Path,
        branch: &str,
        signing_key: &Path,
    ) -> Result<ServerOptions> {
        let secret = h.write("server/webhook-secret", "e2e-webhook-secret\n")?;
        Ok(ServerOptions {
            port: free_port()?,
            repo: repo.to_path_buf(),
            branch: branch.to_string(),
            signing_key: signing_key.to_path_buf(),
            webhook_secret: secret,
            data_dir: h.path("server/data")?,
            bundle_dir: ".".to_string(),
            poll_interval_seconds: 0,
        })
    }

    /// Writes the configuration, starts `regent serve` and waits until it listens.
    pub async fn start(h: &Harness, opts: ServerOptions) -> Result<BundleServer> {
        let config = h.write("server.yaml", serde_json::to_string_pretty(&opts.config())?)?;
        let mut s = BundleServer {
            opts,
            config,
            name: "server".into(),
            bin: h.bins.regent.clone(),
            logs: h.logs.clone(),
            proc: None,
        };
        s.start_again().await?;
        Ok(s)
    }

    /// Starts it (again) with the same configuration.
    pub async fn start_again(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve").arg("--config").arg(&self.config);
        let mut proc = Proc::spawn(&self.name, cmd, &self.logs)?;
        wait_listening(&mut proc, self.opts.port, Duration::from_secs(30)).await?;
        self.proc = Some(proc);
        Ok(())
    }

    /// Fails with its log tail when it has exited on its own.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.ensure_running(),
            None => Ok(()),
        }
    }

    /// Stops it (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// Base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.opts.port)
    }

    /// The bundle URL the sidecar syncs from.
    pub fn bundle_url(&self) -> String {
        format!("{}/bundles/{BUNDLE}", self.base())
    }

    /// `GET /v1/status` as JSON.
    pub async fn status(&self) -> Result<serde_json::Value> {
        self.get_json("/v1/status").await
    }

    /// `GET /v1/fleet` as JSON.
    pub async fn fleet(&self) -> Result<serde_json::Value> {
        self.get_json("/v1/fleet").await
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.base());
        crate::http::client()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("{url} body"))
    }

    /// The URL sidecars POST status reports to.
    pub fn status_report_url(&self) -> String {
        format!("{}/v1/status/report", self.base())
    }

    /// The current bundle's bytes.
    pub async fn fetch_bundle(&self) -> Result<Vec<u8>> {
        let url = self.bundle_url();
        let r = crate::http::client()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if r.status() != 200 {
            anyhow::bail!("GET {url}: {}", r.status());
        }
        Ok(r.bytes().await?.to_vec())
    }

    /// Waits until the server has processed commit `sha` (served, or refused), per `/v1/status`.
    pub async fn wait_processed(
        &mut self,
        sha: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        if let Some(p) = self.proc.as_mut() {
            p.ensure_running()?;
        }
        let this = &*self;
        wait::until(
            &format!("the bundle server to process commit {sha}"),
            timeout,
            || async move {
                let st = this.status().await?;
                let done = st["published_commit"] == sha
                    || (st["last_build"]["commit"] == sha
                        && st["last_build"]["result"]
                            .as_str()
                            .is_some_and(|r| r != "building"));
                Ok(done.then_some(st))
            },
        )
        .await
    }

    /// Installs the project's `docs/post-receive.sh` in `repo` and points it at this server.
    pub fn install_hook(&self, repo: &crate::git::PolicyRepo) -> Result<()> {
        check_hook_tools()?;
        let script = crate::bins::repo_root().join("docs/post-receive.sh");
        let text = std::fs::read_to_string(&script)
            .with_context(|| format!("reading {}", script.display()))?;
        repo.install_post_receive(&text)?;
        let url = format!("{}/v1/hooks/git", self.base());
        crate::git::git(&repo.bare, &["config", "regent.url", &url])?;
        let secret = self
            .opts
            .webhook_secret
            .to_str()
            .context("webhook secret path is not UTF-8")?;
        crate::git::git(&repo.bare, &["config", "regent.secretfile", secret])?;
        Ok(())
    }

    /// Installs both hooks of a repository this server hosts (what `make run` sets up): the
    /// project's `docs/pre-receive.sh`, so git refuses a push the publish gate would refuse, and
    /// the post-receive hook of [`BundleServer::install_hook`].
    pub fn install_hooks(&self, repo: &crate::git::PolicyRepo) -> Result<()> {
        self.install_hook(repo)?;
        let script = crate::bins::repo_root().join("docs/pre-receive.sh");
        let text = std::fs::read_to_string(&script)
            .with_context(|| format!("reading {}", script.display()))?;
        repo.install_pre_receive(&text)?;
        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_string)
                .with_context(|| format!("{} is not UTF-8", p.display()))
        };
        crate::git::git(
            &repo.bare,
            &["config", "regent.config", &utf8(&self.config)?],
        )?;
        crate::git::git(&repo.bare, &["config", "regent.bin", &utf8(&self.bin)?])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_accepted_by_regent_serve() {
        let opts = ServerOptions {
            port: 8282,
            repo: PathBuf::from("/tmp/policies.git"),
            branch: "main".into(),
            signing_key: PathBuf::from("/tmp/signing.key"),
            webhook_secret: PathBuf::from("/tmp/secret"),
            data_dir: PathBuf::from("/tmp/data"),
            bundle_dir: "envoy".into(),
            poll_interval_seconds: 0,
        };
        let text = serde_json::to_string_pretty(&opts.config()).unwrap();
        let cfg = regent_bundle_server::server::config::ServerConfig::from_yaml(&text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.git.branch, "main");
        assert_eq!(cfg.bundles.len(), 1);
        assert_eq!(cfg.bundles[0].name, BUNDLE);
    }
}
