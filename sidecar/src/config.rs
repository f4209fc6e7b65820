//! `regent-sidecar` configuration: one YAML file, every key optional with an embedded default.
//! Unknown keys are errors that name the key and where it was found.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::identity::IdentityConfig;
use crate::opa_config;
use crate::runtime::RuntimeConfig;
use crate::sync::SyncConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// The ext_authz gRPC listener.
    pub grpc: GrpcConfig,
    /// The side HTTP port (health, readiness, metrics) and Envoy's HTTP-service ext_authz mode.
    pub http: HttpConfig,
    /// Which decision to evaluate and how.
    pub policy: PolicyConfig,
    /// Decision logs.
    pub decision_logs: DecisionLogConfig,
    /// What Check answers while no policy is active.
    pub fail_mode: FailModeConfig,
    /// Logging.
    pub log: LogConfig,
    /// Bundle download, verification, activation and persistence.
    pub sync: SyncConfig,
    /// Threads and scheduler.
    pub runtime: RuntimeConfig,
    /// Remote key sets of identity providers (see docs/identity.md).
    pub identity: IdentityConfig,
    /// Re-reading key and certificate files when they change.
    pub reload: ReloadConfig,
    /// `http.send` and token introspection (see docs/remote-calls.md).
    pub remote_calls: crate::remote::RemoteCallsConfig,
    /// OpenTelemetry tracing of Checks (off by default).
    pub tracing: crate::telemetry::TracingConfig,
    /// Set when the file was OPA's configuration format, mapped onto these settings.
    #[serde(skip)]
    pub opa_origin: Option<crate::opa_config::OpaOrigin>,
}

/// `grpc:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// TCP address of the Authorization service.
    pub addr: SocketAddr,
    /// Also serve on this Unix socket path (a stale socket file is removed first).
    pub unix_socket: Option<PathBuf>,
    /// TLS on the gRPC listeners; with `client_ca_file`, mutual TLS.
    pub tls: Option<TlsConfig>,
    /// Serve gRPC server reflection (for grpcurl).
    pub reflection: bool,
    /// Largest accepted request message (Envoy sends bodies inside it).
    pub max_recv_message_bytes: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 9191)),
            unix_socket: None,
            tls: None,
            reflection: false,
            max_recv_message_bytes: 4 << 20,
        }
    }
}

/// `grpc.tls:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM).
    pub key_file: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to; setting it requires client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// `http:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/health`, `/ready` and `/metrics`.
    pub addr: SocketAddr,
    /// When set, also answer Envoy's HTTP-service ext_authz mode on this address.
    pub ext_authz_addr: Option<SocketAddr>,
    /// Path prefix Envoy's `http_service.path_prefix` adds, stripped before building the input.
    pub ext_authz_path_prefix: String,
    /// Largest request body accepted in HTTP-service mode.
    pub ext_authz_max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8181)),
            ext_authz_addr: None,
            ext_authz_path_prefix: String::new(),
            ext_authz_max_body_bytes: 1 << 20,
        }
    }
}

pub use regent_policy::{EngineChoice, VmRecheck};

/// `policy:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Decision path in OPA's syntax.
    pub path: String,
    /// Allow every request (errors included) and log the real decision.
    pub dry_run: bool,
    /// A local `.tar.gz` bundle or policy directory, reloaded when it changes (instead of `sync`).
    pub bundle: Option<PathBuf>,
    /// Evaluator choice.
    pub engine: EngineChoice,
    /// Leave out `parsed_body` and `truncated_body`.
    pub skip_request_body_parse: bool,
    /// Binary FileDescriptorSet for decoding gRPC request bodies.
    pub proto_descriptor: Option<PathBuf>,
    /// Longest one evaluation may run before it is stopped (an error, so Envoy's failure mode applies).
    pub eval_timeout_ms: u64,
    /// Build only the parts of the input document the policy's modules can read.
    pub prune_input: bool,
    /// Most bytecode-VM instructions one evaluation may execute (`eval_timeout_ms` is the guard
    /// that matters; this stops a runaway loop early).
    pub max_instructions: usize,
    /// When a VM decision is checked again on the interpreter, to report OPA's conflict errors.
    pub vm_recheck: VmRecheck,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            path: "envoy/authz/allow".into(),
            dry_run: false,
            bundle: None,
            engine: EngineChoice::Auto,
            skip_request_body_parse: false,
            proto_descriptor: None,
            eval_timeout_ms: 100,
            prune_input: true,
            max_instructions: regent_policy::settings::DEFAULT_MAX_INSTRUCTIONS,
            vm_recheck: VmRecheck::Undefined,
        }
    }
}

/// Where decision logs go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogOutput {
    /// Not written.
    #[default]
    None,
    /// Standard output, one JSON line each.
    Stdout,
    /// Appended to `decision_logs.file`.
    File,
}

/// `decision_logs:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLogConfig {
    /// Destination.
    pub output: LogOutput,
    /// File for `output: file`.
    pub file: Option<PathBuf>,
    /// JSON pointers erased from each event (recorded under `erased`).
    pub mask: Vec<String>,
    /// Fraction of decisions logged, 0.0 to 1.0.
    pub sample_rate: f64,
    /// Events buffered before new ones are dropped (and counted).
    pub queue_size: usize,
    /// Record the answers of remote calls (`http.send`, `regent.introspect`) in each event as
    /// OPA's `nd_builtin_cache`. Off by default, as in OPA: their arguments may hold tokens.
    pub nd_builtin_cache: bool,
    /// Upload to an OPA decision log receiver, in addition to `output`.
    pub upload: Option<crate::decision_log::upload::UploadConfig>,
    /// Export each event as an OpenTelemetry log record too.
    pub otlp: Option<regent_telemetry::logs::LogsConfig>,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            output: LogOutput::None,
            file: None,
            mask: vec![
                "/input/attributes/request/http/headers/authorization".into(),
                "/input/attributes/request/http/headers/cookie".into(),
                "/input/attributes/request/http/headers/proxy-authorization".into(),
            ],
            sample_rate: 1.0,
            queue_size: 10_000,
            nd_builtin_cache: false,
            upload: None,
            otlp: None,
        }
    }
}

/// What to answer while no policy is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Deny with `fail_mode.status`.
    #[default]
    Closed,
    /// Allow (logged).
    Open,
}

/// `fail_mode:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailModeConfig {
    /// `closed` or `open`.
    pub mode: FailMode,
    /// HTTP status Envoy returns when failing closed.
    pub status: u16,
}

impl Default for FailModeConfig {
    fn default() -> Self {
        FailModeConfig {
            mode: FailMode::Closed,
            status: 503,
        }
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `log:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `regent_sidecar=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `reload:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// How often the key files of `sync.keys[]` are checked for changes; 0 turns reloading off.
    pub interval_seconds: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        // Kubernetes propagates a Secret update to the mount within about a minute; ten seconds
        // adds little to that, and hashing a few small files that often costs nothing.
        ReloadConfig {
            interval_seconds: 10,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// YAML syntax, an unknown key or a bad value; serde's message names the key and its position.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value out of range or an inconsistent combination.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// An OPA configuration key Regent cannot honour; names its dotted path (and line).
    #[error("{path}: {source}")]
    Opa {
        /// File.
        path: PathBuf,
        /// The key and what is wrong.
        source: crate::opa_config::OpaConfigError,
    },
}

impl SidecarConfig {
    /// Reads and validates a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            ConfigError::Invalid(message) => {
                ConfigError::Invalid(format!("{}: {message}", path.display()))
            }
            ConfigError::Opa { source, .. } => ConfigError::Opa {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates YAML text: Regent's format, or OPA's (told apart by the top-level
    /// keys, see [`crate::opa_config::detect`]).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let parse_error = |e: serde_yaml::Error| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        };
        // An empty file is an empty mapping: all defaults.
        if text.trim().is_empty() {
            let cfg = SidecarConfig::default();
            cfg.validate()?;
            return Ok(cfg);
        }
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(parse_error)?;
        if let serde_yaml::Value::Mapping(top) = &value {
            let format = opa_config::detect(top).map_err(|message| ConfigError::Parse {
                path: PathBuf::from("<config>"),
                message,
            })?;
            if format == opa_config::Format::Opa {
                let (mut cfg, origin) =
                    opa_config::map(text, top).map_err(|source| ConfigError::Opa {
                        path: PathBuf::from("<config>"),
                        source,
                    })?;
                cfg.opa_origin = Some(origin);
                cfg.validate().map_err(|e| match e {
                    ConfigError::Invalid(m) => ConfigError::Invalid(format!(
                        "{m} (in the Regent settings mapped from this OPA configuration)"
                    )),
                    other => other,
                })?;
                return Ok(cfg);
            }
        }
        let cfg: SidecarConfig = serde_yaml::from_str(text).map_err(parse_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Logs, once tracing is installed, that the settings came from an OPA configuration and what
    /// the mapping decided. Does nothing for Regent's own format.
    pub fn log_origin(&self) {
        if let Some(origin) = &self.opa_origin {
            tracing::info!(
                grpc = %self.grpc.addr,
                path = %self.policy.path,
                bundles = self.sync.bundles.len(),
                "read an OPA configuration file, mapped onto Regent's settings"
            );
            for note in &origin.notes {
                tracing::warn!("OPA configuration: {note}");
            }
        }
    }

    /// Checks values and combinations serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        crate::policy::decision_rule(&self.policy.path).map_err(ConfigError::Invalid)?;
        if !(0.0..=1.0).contains(&self.decision_logs.sample_rate) {
            return bad(format!(
                "decision_logs.sample_rate must be between 0 and 1, got {}",
                self.decision_logs.sample_rate
            ));
        }
        if self.decision_logs.output == LogOutput::File && self.decision_logs.file.is_none() {
            return bad("decision_logs.output is `file` but decision_logs.file is not set".into());
        }
        if self.decision_logs.queue_size == 0 {
            return bad("decision_logs.queue_size must be at least 1".into());
        }
        for p in &self.decision_logs.mask {
            if !p.starts_with('/') {
                return bad(format!(
                    "decision_logs.mask: {p:?} is not a JSON pointer (must start with '/')"
                ));
            }
        }
        if let Some(u) = &self.decision_logs.upload {
            u.validate()
                .or_else(|(key, m)| bad(format!("decision_logs.upload.{key}: {m}")))?;
        }
        if let Some(o) = &self.decision_logs.otlp {
            o.validate("decision_logs.otlp").or_else(bad)?;
        }
        if !(100..=599).contains(&self.fail_mode.status) {
            return bad(format!(
                "fail_mode.status must be an HTTP status (100-599), got {}",
                self.fail_mode.status
            ));
        }
        if self.policy.eval_timeout_ms == 0 {
            return bad("policy.eval_timeout_ms must be at least 1".into());
        }
        if self.policy.max_instructions < 1000 {
            return bad(format!(
                "policy.max_instructions must be at least 1000, got {}",
                self.policy.max_instructions
            ));
        }
        if self.policy.bundle.is_some() && !self.sync.bundles.is_empty() {
            return bad("policy.bundle (a local bundle) and sync.bundles (downloaded bundles) cannot both be set".into());
        }
        if self.grpc.max_recv_message_bytes < 1024 {
            return bad("grpc.max_recv_message_bytes must be at least 1024".into());
        }
        if self.http.ext_authz_max_body_bytes == 0 {
            return bad("http.ext_authz_max_body_bytes must be at least 1".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad(format!("log.level {:?}: {e}", self.log.level));
        }
        self.runtime.validate().map_err(ConfigError::Invalid)?;
        self.sync
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.identity
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.remote_calls
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.tracing.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// Where key sets are persisted: `identity.persist_dir`, else `sync.persist_dir`.
    pub fn identity_persist_dir(&self) -> Option<&Path> {
        self.identity
            .persist_dir
            .as_deref()
            .or(self.sync.persist_dir.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        let c = SidecarConfig::from_yaml("").unwrap();
        assert_eq!(c.grpc.addr.to_string(), "127.0.0.1:9191");
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:8181");
        assert_eq!(c.policy.path, "envoy/authz/allow");
        assert_eq!(c.fail_mode.mode, FailMode::Closed);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = SidecarConfig::from_yaml("policy:\n  pth: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `pth`"), "{err}");
        let err = SidecarConfig::from_yaml("grpcc: {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `grpcc`"), "{err}");
        let err = SidecarConfig::from_yaml("sync:\n  nope: 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `nope`"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        for (yaml, needle) in [
            ("decision_logs: {sample_rate: 2}", "sample_rate"),
            ("decision_logs: {output: file}", "decision_logs.file"),
            (
                "decision_logs: {upload: {url: 'https://l/logs', max_delay_seconds: 1}}",
                "decision_logs.upload.max_delay_seconds",
            ),
            ("fail_mode: {status: 42}", "fail_mode.status"),
            ("policy: {path: 'a//b'}", "policy.path"),
            ("policy: {engine: turbo}", "engine"),
            ("grpc: {addr: 'not an address'}", "addr"),
            ("log: {level: 'a=b=c'}", "log.level"),
            (
                "sync: {polling: {min_delay_seconds: 0}}",
                "sync.polling.min_delay_seconds",
            ),
            ("grpc: {tls: {cert_file: a.pem}}", "key_file"),
            (
                "runtime: {worker_threads: 100000}",
                "runtime.worker_threads",
            ),
            ("runtime: {worker_threads: -1}", "worker_threads"),
            (
                "identity: {jwks: [{issuer: a, jwks_url: 'http://idp.example/k'}]}",
                "identity.jwks[0].jwks_url",
            ),
            ("identity: {jwks: [{issuer: a}]}", "identity.jwks[0]"),
            ("identity: {jwk: []}", "unknown field `jwk`"),
            ("tracing: {sample_ratio: 2}", "tracing.sample_ratio"),
            ("tracing: {exporter: otlp_grpc}", "tracing.endpoint"),
        ] {
            let err = SidecarConfig::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }
}
