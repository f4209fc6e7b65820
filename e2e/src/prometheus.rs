//! A real Prometheus server (Debian's `prometheus` package, installed by `tools/debian-deps.sh`
//! from `e2e/e2e.sh`) scraping the scenario's processes on 127.0.0.1, and its HTTP query API.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::harness::Harness;
use crate::ports::free_port;
use crate::process::Proc;
use crate::wait;

/// One scrape target: job name, `host:port`, metrics path and the labels it gets.
pub struct Target {
    /// `job` label.
    pub job: String,
    /// `127.0.0.1:port`.
    pub address: String,
    /// e.g. `/metrics`, `/stats/prometheus`.
    pub path: String,
    /// Extra target labels (what a ServiceMonitor or PodMonitor would add, e.g. `namespace`).
    pub labels: Vec<(String, String)>,
}

/// A running Prometheus.
pub struct Prometheus {
    port: u16,
    proc: Proc,
}

/// The Prometheus binary: `$PROMETHEUS`, else `prometheus` on `PATH`.
fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
        .context("no prometheus binary on PATH (e2e/e2e.sh installs Debian's prometheus package)")
}

/// The scrape configuration of `targets`, every second.
fn config(targets: &[Target]) -> serde_json::Value {
    let jobs: Vec<serde_json::Value> = targets
        .iter()
        .map(|t| {
            let labels: serde_json::Map<String, serde_json::Value> = t
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            serde_json::json!({
                "job_name": t.job,
                "metrics_path": t.path,
                "static_configs": [{"targets": [t.address], "labels": labels}],
            })
        })
        .collect();
    serde_json::json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "scrape_configs": jobs,
    })
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` and waits until it is ready.
    pub async fn start(h: &Harness, targets: &[Target]) -> Result<Prometheus> {
        let bin = binary()?;
        // JSON is YAML: no YAML writer needed.
        let config = h.write("prometheus.yml", config(targets).to_string())?;
        let data = h.path("prometheus-data")?;
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy");
        let proc = Proc::spawn("prometheus", cmd, &h.logs)?;
        let mut p = Prometheus { port, proc };
        let url = format!("http://127.0.0.1:{port}/-/ready");
        let client = crate::http::client()?;
        let proc = &mut p.proc;
        wait::until("Prometheus to be ready", Duration::from_secs(60), || {
            let (client, url) = (client.clone(), url.clone());
            let running = proc.ensure_running();
            async move {
                running?;
                let ok = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                Ok(ok.then_some(()))
            }
        })
        .await?;
        Ok(p)
    }

    /// Evaluates `expr` now: the result vector (or the error Prometheus gives, e.g. a parse
    /// error naming the position).
    pub async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let resp = crate::http::client()?
            .get(&url)
            .query(&[("query", expr)])
            .send()
            .await
            .with_context(|| format!("querying {expr}"))?;
        let body: serde_json::Value = resp
            .json()
            .await
            .with_context(|| format!("the answer to {expr}"))?;
        if body["status"] != "success" {
            anyhow::bail!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("no message")
            );
        }
        let result = &body["data"]["result"];
        Ok(match result {
            serde_json::Value::Array(a) => a.clone(),
            // A scalar or string expression (e.g. `time()`): one value.
            other => vec![other.clone()],
        })
    }

    /// Waits until every scrape target is up.
    pub async fn wait_targets_up(&self, n: usize) -> Result<()> {
        wait::until(
            "every Prometheus target to be up",
            Duration::from_secs(60),
            || async {
                let up = self.query("up == 1").await?;
                Ok((up.len() >= n).then_some(()))
            },
        )
        .await
    }
}
