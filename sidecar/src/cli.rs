//! Command-line flags of `regent-sidecar`. Flags override the configuration file; with neither, the
//! embedded defaults apply. Kept in the library so the override rules are testable without a process.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{ConfigError, LogFormat, SidecarConfig};

/// `regent-sidecar`: answers Envoy ext_authz Check calls with Rego policies evaluated in-process.
// Flags whose help is computed (to show the default) have no doc comment: clap would print both.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "regent-sidecar", version, about)]
pub struct Cli {
    /// YAML configuration file (every key optional; see docs/sidecar.md for keys and defaults).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A local `.tar.gz` bundle or policy directory, reloaded when it changes (`policy.bundle`).
    #[arg(long, value_name = "PATH")]
    pub bundle: Option<PathBuf>,
    #[arg(long, value_name = "ADDR", help = format!(
        "gRPC ext_authz listener address (`grpc.addr`) [default: {}]",
        SidecarConfig::default().grpc.addr
    ))]
    pub grpc_addr: Option<SocketAddr>,
    #[arg(long, value_name = "ADDR", help = format!(
        "Side HTTP address for /health, /ready and /metrics (`http.addr`) [default: {}]",
        SidecarConfig::default().http.addr
    ))]
    pub http_addr: Option<SocketAddr>,
    #[arg(long, value_name = "PATH", help = format!(
        "Decision path in OPA's syntax (`policy.path`) [default: {}]",
        SidecarConfig::default().policy.path
    ))]
    pub path: Option<String>,
    /// Allow every request and log the real decision (`policy.dry_run`).
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, value_name = "FORMAT", help = format!(
        "Log format (`log.format`) [default: {}]",
        default_log_format()
    ))]
    pub log_format: Option<LogFormat>,
}

/// The name `--log-format` takes for the configuration's default format.
fn default_log_format() -> String {
    use clap::ValueEnum;
    SidecarConfig::default()
        .log
        .format
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

impl Cli {
    /// Reads the configuration file (or takes the defaults), applies the flags and validates the result.
    pub fn load_config(&self) -> Result<SidecarConfig, ConfigError> {
        let cfg = match &self.config {
            Some(path) => SidecarConfig::from_file(path)?,
            None => SidecarConfig::default(),
        };
        let cfg = self.apply(cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies the flags that were given on top of `cfg`.
    pub fn apply(&self, mut cfg: SidecarConfig) -> SidecarConfig {
        if let Some(b) = &self.bundle {
            cfg.policy.bundle = Some(b.clone());
        }
        if let Some(a) = self.grpc_addr {
            cfg.grpc.addr = a;
        }
        if let Some(a) = self.http_addr {
            cfg.http.addr = a;
        }
        if let Some(p) = &self.path {
            cfg.policy.path = p.clone();
        }
        if self.dry_run {
            cfg.policy.dry_run = true;
        }
        if let Some(f) = self.log_format {
            cfg.log.format = f;
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_shows_the_config_defaults() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        let d = SidecarConfig::default();
        for want in [
            format!("[default: {}]", d.grpc.addr),
            format!("[default: {}]", d.http.addr),
            format!("[default: {}]", d.policy.path),
            format!("[default: {}]", default_log_format()),
        ] {
            assert!(help.contains(&want), "{want} not in:\n{help}");
        }
        assert!(!default_log_format().is_empty());
    }

    #[test]
    fn flags_override_the_file() {
        let cfg = SidecarConfig::from_yaml(
            "grpc: {addr: '127.0.0.1:1000'}\npolicy: {path: a/b}\nlog: {format: text}\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "regent-sidecar",
            "--grpc-addr",
            "127.0.0.1:2000",
            "--path",
            "x/y/allow",
            "--dry-run",
            "--log-format",
            "json",
            "--bundle",
            "/tmp/b.tar.gz",
        ]);
        let cfg = cli.apply(cfg);
        assert_eq!(cfg.grpc.addr.to_string(), "127.0.0.1:2000");
        assert_eq!(cfg.http.addr.to_string(), "127.0.0.1:8181");
        assert_eq!(cfg.policy.path, "x/y/allow");
        assert!(cfg.policy.dry_run);
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(
            cfg.policy.bundle.as_deref(),
            Some(std::path::Path::new("/tmp/b.tar.gz"))
        );
    }

    #[test]
    fn no_flags_keep_the_file() {
        let cfg = SidecarConfig::from_yaml("policy: {path: a/b, dry_run: true}\n").unwrap();
        let cfg = Cli::parse_from(["regent-sidecar"]).apply(cfg);
        assert_eq!(cfg.policy.path, "a/b");
        assert!(cfg.policy.dry_run);
    }

    #[test]
    fn no_config_at_all_runs_on_the_embedded_defaults() {
        let cfg = Cli::parse_from(["regent-sidecar"]).load_config().unwrap();
        assert_eq!(cfg.grpc.addr.to_string(), "127.0.0.1:9191");
        assert_eq!(cfg.http.addr.to_string(), "127.0.0.1:8181");
        assert_eq!(cfg.policy.path, "envoy/authz/allow");
        assert!(cfg.policy.bundle.is_none() && cfg.sync.bundles.is_empty());
    }

    #[test]
    fn a_flag_conflicting_with_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.yaml");
        std::fs::write(
            &file,
            "sync:\n  insecure_skip_verification: true\n  bundles: [{name: a, url: 'http://127.0.0.1:1/a'}]\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "regent-sidecar",
            "--config",
            file.to_str().unwrap(),
            "--bundle",
            "/tmp/x",
        ]);
        let err = cli.load_config().unwrap_err().to_string();
        assert!(err.contains("policy.bundle"), "{err}");
    }

    #[test]
    fn a_bad_flag_value_is_checked_like_the_file() {
        let cli = Cli::parse_from(["regent-sidecar", "--path", "a//b"]);
        let err = cli.load_config().unwrap_err().to_string();
        assert!(err.contains("policy.path"), "{err}");
    }
}
