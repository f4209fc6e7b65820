//! `regent-sidecar`: configuration written by the harness, process started, waited for.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::harness::Harness;
use crate::ports::free_port;
use crate::process::Proc;
use crate::upstreams::wait_listening;
use crate::wait;

/// Bundle name used by the harness everywhere (server side and sidecar side).
pub const BUNDLE: &str = "envoy";

/// What the sidecar is configured with.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// ext_authz gRPC port.
    pub grpc_port: u16,
    /// Side HTTP port (/health, /ready, /metrics).
    pub http_port: u16,
    /// Bundle URL to sync from (none: no sync configured).
    pub bundle_url: Option<String>,
    /// A local bundle directory or archive (`policy.bundle`) instead of sync.
    pub local_bundle: Option<PathBuf>,
    /// Keyring: `(kid, public key PEM file)`.
    pub keys: Vec<(String, PathBuf)>,
    /// Where activated bundles persist.
    pub persist_dir: Option<PathBuf>,
    /// `policy.dry_run`.
    pub dry_run: bool,
    /// Decision log file (`decision_logs.output: file`).
    pub decision_log: Option<PathBuf>,
    /// Descriptor set for gRPC bodies.
    pub proto_descriptor: Option<PathBuf>,
    /// Poll spacing when the server does not long-poll (seconds, min = max).
    pub poll_seconds: u64,
    /// Long-poll wait asked of the server (seconds).
    pub long_poll_seconds: u64,
    /// Where status reports go (`sync.status.url`), every second and on every change.
    pub status_url: Option<String>,
    /// An OTLP/gRPC collector URL: Checks traced (`tracing.exporter: otlp_grpc`).
    pub otlp_endpoint: Option<String>,
}

impl SidecarOptions {
    /// Free ports, no sync, fast polling, and the committed Orders descriptor set.
    pub fn new() -> Result<SidecarOptions> {
        Ok(SidecarOptions {
            grpc_port: free_port()?,
            http_port: free_port()?,
            bundle_url: None,
            local_bundle: None,
            keys: Vec::new(),
            persist_dir: None,
            dry_run: false,
            decision_log: None,
            proto_descriptor: Some(crate::bins::repo_root().join("proto/orders.pb")),
            poll_seconds: 1,
            long_poll_seconds: 10,
            status_url: None,
            otlp_endpoint: None,
        })
    }

    /// The YAML configuration (written as JSON, which YAML parsers read).
    pub fn config(&self) -> serde_json::Value {
        let mut policy = serde_json::json!({"path": "envoy/authz/allow", "dry_run": self.dry_run});
        if let Some(b) = &self.local_bundle {
            policy["bundle"] = b.display().to_string().into();
        }
        if let Some(d) = &self.proto_descriptor {
            policy["proto_descriptor"] = d.display().to_string().into();
        }
        let decision_logs = match &self.decision_log {
            Some(f) => serde_json::json!({"output": "file", "file": f.display().to_string()}),
            None => serde_json::json!({"output": "none"}),
        };
        let mut sync = serde_json::json!({
            "polling": {
                "min_delay_seconds": self.poll_seconds,
                "max_delay_seconds": self.poll_seconds,
                "long_poll_timeout_seconds": self.long_poll_seconds,
            },
            "http": {"connect_timeout_seconds": 1, "read_timeout_seconds": 5},
        });
        if let Some(url) = &self.bundle_url {
            sync["bundles"] = serde_json::json!([{"name": BUNDLE, "url": url}]);
        }
        if !self.keys.is_empty() {
            sync["keys"] = self
                .keys
                .iter()
                .map(|(kid, f)| serde_json::json!({"kid": kid, "public_key_file": f.display().to_string()}))
                .collect();
        }
        if let Some(p) = &self.persist_dir {
            sync["persist_dir"] = p.display().to_string().into();
        }
        if let Some(url) = &self.status_url {
            sync["status"] = serde_json::json!({
                "url": url,
                "interval_seconds": 1,
                "labels": {"cluster": "e2e"},
            });
        }
        let mut config = serde_json::json!({
            "grpc": {"addr": format!("127.0.0.1:{}", self.grpc_port)},
            "http": {"addr": format!("127.0.0.1:{}", self.http_port)},
            "policy": policy,
            "decision_logs": decision_logs,
            "fail_mode": {"mode": "closed", "status": 503},
            "log": {"level": "info", "format": "text"},
            "sync": sync,
        });
        if let Some(endpoint) = &self.otlp_endpoint {
            config["tracing"] = serde_json::json!({
                "exporter": "otlp_grpc",
                "endpoint": endpoint,
                "export_timeout_seconds": 2,
            });
        }
        config
    }
}

/// A running sidecar (restartable with the same configuration).
pub struct Sidecar {
    /// Its options.
    pub opts: SidecarOptions,
    /// The configuration file.
    pub config: PathBuf,
    name: String,
    bin: PathBuf,
    logs: PathBuf,
    proc: Proc,
}

impl Sidecar {
    /// Writes `<name>.yaml`, starts the sidecar and waits until both its ports listen.
    pub async fn start(h: &Harness, name: &str, opts: SidecarOptions) -> Result<Sidecar> {
        let text = serde_json::to_string_pretty(&opts.config())?;
        let config = h.write(&format!("{name}.yaml"), text)?;
        let proc = spawn(&h.bins.sidecar, &config, name, &h.logs, &opts).await?;
        Ok(Sidecar {
            opts,
            config,
            name: name.to_string(),
            bin: h.bins.sidecar.clone(),
            logs: h.logs.clone(),
            proc,
        })
    }

    /// Stops (SIGTERM) and starts it again with the same configuration.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.stop();
        self.proc = spawn(&self.bin, &self.config, &self.name, &self.logs, &self.opts).await?;
        Ok(())
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// `GET /ready`: status and JSON body.
    pub async fn ready(&self) -> Result<(u16, serde_json::Value)> {
        let url = format!("http://127.0.0.1:{}/ready", self.opts.http_port);
        let resp = crate::http::client()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let body = resp.json().await.with_context(|| format!("{url} body"))?;
        Ok((status, body))
    }

    /// The active revision of [`BUNDLE`], if any.
    pub async fn revision(&self) -> Result<Option<String>> {
        let (_, body) = self.ready().await?;
        Ok(body
            .get("revisions")
            .and_then(|r| r.get(BUNDLE))
            .and_then(|r| r.as_str())
            .map(str::to_string))
    }

    /// Waits until [`BUNDLE`] is active at `revision`.
    pub async fn wait_revision(&mut self, revision: &str, timeout: Duration) -> Result<()> {
        self.proc.ensure_running()?;
        let this = &*self;
        wait::until(
            &format!("sidecar {} to activate revision {revision}", this.name),
            timeout,
            || async move { Ok((this.revision().await?.as_deref() == Some(revision)).then_some(())) },
        )
        .await
    }

    /// Waits until `/ready` answers 200 (listening, and a policy is active).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.proc.ensure_running()?;
        let this = &*self;
        wait::until(
            &format!("sidecar {} to be ready", this.name),
            timeout,
            || async move { Ok((this.ready().await?.0 == 200).then_some(())) },
        )
        .await
    }

    /// The Prometheus text from `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.opts.http_port);
        Ok(crate::http::client()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .text()
            .await?)
    }

    /// Sum of every sample of metric `name` whose labels contain all of `labels`
    /// (`key="value"` fragments).
    pub async fn metric_sum(&self, name: &str, labels: &[&str]) -> Result<f64> {
        Ok(sum_metric(&self.metrics().await?, name, labels))
    }

    /// The process.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

async fn spawn(
    bin: &Path,
    config: &Path,
    name: &str,
    logs: &Path,
    o: &SidecarOptions,
) -> Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config);
    let mut proc = Proc::spawn(name, cmd, logs)?;
    wait_listening(&mut proc, o.http_port, Duration::from_secs(30)).await?;
    wait_listening(&mut proc, o.grpc_port, Duration::from_secs(30)).await?;
    Ok(proc)
}

/// Sums the samples of `name` (with or without labels) whose label set contains every fragment.
pub fn sum_metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            if metric != name || !labels.iter().all(|f| label_text.contains(f)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_match_labels() {
        let text = "# HELP x y\nregent_a_total{bundle=\"envoy\",reason=\"signature\"} 2\nregent_a_total{bundle=\"envoy\",reason=\"compile\"} 1\nregent_b 5\n";
        assert_eq!(sum_metric(text, "regent_a_total", &[]), 3.0);
        assert_eq!(
            sum_metric(text, "regent_a_total", &["reason=\"signature\""]),
            2.0
        );
        assert_eq!(sum_metric(text, "regent_b", &[]), 5.0);
        assert_eq!(sum_metric(text, "regent_c", &[]), 0.0);
    }

    #[test]
    fn config_names_only_known_sections() {
        let mut o = SidecarOptions::new().unwrap();
        o.bundle_url = Some("http://127.0.0.1:1/bundles/envoy".into());
        o.keys = vec![("k1".into(), PathBuf::from("/tmp/k.pem"))];
        let c = o.config();
        assert_eq!(c["sync"]["bundles"][0]["name"], BUNDLE);
        assert_eq!(c["sync"]["keys"][0]["kid"], "k1");
        assert_eq!(c["sync"]["polling"]["min_delay_seconds"], 1);
    }

    #[test]
    fn config_is_accepted_by_the_sidecar() {
        let mut o = SidecarOptions::new().unwrap();
        o.bundle_url = Some("http://127.0.0.1:1/bundles/envoy".into());
        o.keys = vec![("k1".into(), PathBuf::from("/tmp/k.pem"))];
        o.persist_dir = Some(PathBuf::from("/tmp/persist"));
        o.status_url = Some("http://127.0.0.1:1/v1/status/report".into());
        o.decision_log = Some(PathBuf::from("/tmp/decisions.log"));
        o.dry_run = true;
        let text = serde_json::to_string_pretty(&o.config()).unwrap();
        let parsed = regent_sidecar::config::SidecarConfig::from_yaml(&text).unwrap();
        assert!(parsed.policy.dry_run);
        assert_eq!(parsed.sync.bundles.len(), 1);
        assert_eq!(parsed.grpc.addr.port(), o.grpc_port);
        assert!(parsed.sync.status.is_some());
    }
}
