//! Envoy: bootstrap rendered from `e2e/envoy/envoy.yaml.tmpl`, validated with
//! `envoy --mode validate`, started, and waited for until its admin endpoint says LIVE.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::harness::Harness;
use crate::ports::free_port;
use crate::process::Proc;
use crate::wait;

/// The bootstrap template, embedded so `make run` and the tests use the same file.
pub const TEMPLATE: &str = include_str!("../envoy/envoy.yaml.tmpl");

/// Ports and failure mode of one Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Ingress listener port.
    pub listener_port: u16,
    /// Admin port.
    pub admin_port: u16,
    /// The sidecar's gRPC port.
    pub authz_port: u16,
    /// The echo upstream's port.
    pub echo_port: u16,
    /// The Orders upstream's port.
    pub orders_port: u16,
    /// ext_authz `failure_mode_allow` (and `failure_mode_allow_header_add`).
    pub failure_mode_allow: bool,
    /// An OTLP/gRPC collector on 127.0.0.1 at this port: Envoy's OpenTelemetry tracer on, every
    /// request sampled.
    pub otlp_port: Option<u16>,
}

impl EnvoyOptions {
    /// Options with free listener and admin ports.
    pub fn free(authz_port: u16, echo_port: u16, orders_port: u16) -> Result<Self> {
        Ok(EnvoyOptions {
            listener_port: free_port()?,
            admin_port: free_port()?,
            authz_port,
            echo_port,
            orders_port,
            failure_mode_allow: false,
            otlp_port: None,
        })
    }
}

/// Fills `{{name}}` placeholders; fails when a placeholder has no value or a value is unused.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut used = std::collections::BTreeSet::new();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .context("unterminated {{ placeholder in the Envoy template")?;
        let key = after[..end].trim();
        let v = values
            .get(key)
            .with_context(|| format!("no value for placeholder {{{{{key}}}}}"))?;
        used.insert(key);
        out.push_str(v);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    for k in values.keys() {
        if !used.contains(k) {
            anyhow::bail!("value {k} is not used by the template");
        }
    }
    Ok(out)
}

/// The bootstrap for `opts`.
pub fn bootstrap(opts: &EnvoyOptions) -> Result<String> {
    let values = BTreeMap::from([
        ("admin_port", opts.admin_port.to_string()),
        ("listener_port", opts.listener_port.to_string()),
        ("authz_port", opts.authz_port.to_string()),
        ("echo_port", opts.echo_port.to_string()),
        ("orders_port", opts.orders_port.to_string()),
        ("failure_mode_allow", opts.failure_mode_allow.to_string()),
        // Generous for a debug-build sidecar on a loaded 2-core machine; a dead sidecar fails
        // at connect time anyway.
        ("authz_timeout", "2s".to_string()),
    ]);
    let text = render(TEMPLATE, &values)?;
    match opts.otlp_port {
        None => Ok(text),
        Some(port) => with_tracing(&text, port),
    }
}

/// `bootstrap` with Envoy's OpenTelemetry tracer on the ingress listener, exporting to an
/// OTLP/gRPC collector on 127.0.0.1:`port` (cluster `otel`), every request sampled. Kept out of
/// the shared template, which `make run` also renders.
fn with_tracing(bootstrap: &str, port: u16) -> Result<String> {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(bootstrap).context("parsing the bootstrap")?;
    let tracing: serde_yaml::Value = serde_yaml::from_str(
        r#"
provider:
  name: envoy.tracers.opentelemetry
  typed_config:
    "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
    grpc_service: {envoy_grpc: {cluster_name: otel}, timeout: 1s}
    service_name: envoy
random_sampling: {value: 100}
"#,
    )?;
    let hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]
        .as_mapping_mut()
        .context("the ingress listener's http_connection_manager")?;
    hcm.insert("tracing".into(), tracing);
    let cluster: serde_yaml::Value = serde_yaml::from_str(&format!(
        r#"
name: otel
type: STATIC
connect_timeout: 0.25s
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {{http2_protocol_options: {{}}}}
load_assignment:
  cluster_name: otel
  endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
"#
    ))?;
    doc["static_resources"]["clusters"]
        .as_sequence_mut()
        .context("the bootstrap's clusters")?
        .push(cluster);
    Ok(serde_yaml::to_string(&doc)?)
}

/// Runs `envoy --mode validate -c <file>`; the error carries Envoy's message.
pub fn validate(envoy: &std::path::Path, config: &std::path::Path) -> Result<()> {
    let out = Command::new(envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .output()
        .with_context(|| format!("running {} --mode validate", envoy.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "envoy rejected {}: {}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A running Envoy.
pub struct Envoy {
    /// Its options.
    pub opts: EnvoyOptions,
    /// The rendered bootstrap.
    pub config: PathBuf,
    proc: Proc,
}

impl Envoy {
    /// Renders, validates and starts Envoy `name`, and waits until it is LIVE.
    pub async fn start(h: &Harness, name: &str, opts: EnvoyOptions) -> Result<Envoy> {
        let config = h.write(&format!("{name}.yaml"), bootstrap(&opts)?)?;
        validate(&h.bins.envoy, &config)?;
        let mut cmd = Command::new(&h.bins.envoy);
        cmd.arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy");
        let proc = Proc::spawn(name, cmd, &h.logs)?;
        let mut envoy = Envoy { opts, config, proc };
        envoy.wait_live().await?;
        Ok(envoy)
    }

    async fn wait_live(&mut self) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/ready", self.opts.admin_port);
        let client = crate::http::client()?;
        let start = std::time::Instant::now();
        loop {
            self.proc.ensure_running()?;
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("envoy was not LIVE on {url} within 30s");
            }
            tokio::time::sleep(wait::POLL).await;
        }
    }

    /// `http://127.0.0.1:<listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.opts.listener_port)
    }

    /// A counter or gauge from `/stats`, by its full name (0 when absent).
    pub async fn stat(&self, name: &str) -> Result<u64> {
        let url = format!(
            "http://127.0.0.1:{}/stats?filter=^{}$",
            self.opts.admin_port,
            name.replace('.', "\\.")
        );
        let text = crate::http::client()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .text()
            .await?;
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(": ") {
                if k == name {
                    return v
                        .trim()
                        .parse()
                        .with_context(|| format!("stat {name} is not a number: {v}"));
                }
            }
        }
        Ok(0)
    }

    /// The process (to check it is still running).
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_and_refuses_missing_or_unused() {
        let v = BTreeMap::from([("a", "1".to_string())]);
        assert_eq!(render("x {{a}} y {{ a }}", &v).unwrap(), "x 1 y 1");
        assert!(render("{{b}}", &v).unwrap_err().to_string().contains("b"));
        assert!(render("none", &v)
            .unwrap_err()
            .to_string()
            .contains("not used"));
        assert!(render("{{a", &v).is_err());
    }

    #[test]
    fn bootstrap_has_no_placeholder_left() {
        let opts = EnvoyOptions {
            listener_port: 1,
            admin_port: 2,
            authz_port: 3,
            echo_port: 4,
            orders_port: 5,
            failure_mode_allow: true,
            otlp_port: None,
        };
        let b = bootstrap(&opts).unwrap();
        assert!(!b.contains("{{"));
        assert!(b.contains("failure_mode_allow: true"));
        let traced = bootstrap(&EnvoyOptions {
            otlp_port: Some(6),
            ..opts
        })
        .unwrap();
        assert!(traced.contains("envoy.tracers.opentelemetry") && traced.contains("port_value: 6"));
    }
}
