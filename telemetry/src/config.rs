//! `tracing:` section, the same in the sidecar's and the bundle server's configuration: whether
//! and where spans are exported.

use serde::{Deserialize, Serialize};

/// Where spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Exporter {
    /// Tracing is off: no span is made, nothing is exported.
    #[default]
    None,
    /// OTLP over gRPC (a collector's port 4317).
    OtlpGrpc,
    /// OTLP over HTTP with protobuf bodies (a collector's port 4318, path `/v1/traces`).
    OtlpHttp,
}

/// `tracing:` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// `none`, `otlp_grpc` or `otlp_http`.
    pub exporter: Exporter,
    /// The collector's URL; required unless `exporter` is `none`.
    pub endpoint: Option<String>,
    /// Fraction of traces started here that are sampled, 0.0 to 1.0. A caller's sampling
    /// decision is always followed.
    pub sample_ratio: f64,
    /// `service.name` of the spans (the program's name by default, see
    /// [`TracingConfig::for_service`]).
    pub service_name: String,
    /// Finished spans waiting for export; beyond it new ones are dropped.
    pub max_queue_size: usize,
    /// Most spans in one export request.
    pub max_export_batch_size: usize,
    /// Longest one export may take (and the final flush at shutdown).
    pub export_timeout_seconds: u64,
}

/// `service.name` of the sidecar's spans, the default of [`TracingConfig`].
pub const SIDECAR_SERVICE_NAME: &str = "regent-sidecar";

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig::for_service(SIDECAR_SERVICE_NAME)
    }
}

/// Path OTLP/HTTP receivers take traces on, used when `endpoint` has no path of its own.
pub const OTLP_HTTP_TRACES_PATH: &str = "/v1/traces";

impl TracingConfig {
    /// The defaults, with `service_name` defaulting to `service`.
    pub fn for_service(service: &str) -> Self {
        TracingConfig {
            exporter: Exporter::None,
            endpoint: None,
            sample_ratio: 1.0,
            service_name: service.into(),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            export_timeout_seconds: 10,
        }
    }

    /// Whether spans are made and exported.
    pub fn enabled(&self) -> bool {
        self.exporter != Exporter::None
    }

    /// Checks values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "tracing.sample_ratio must be between 0 and 1, got {}",
                self.sample_ratio
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err("tracing.service_name must not be empty".into());
        }
        if self.max_queue_size == 0 {
            return Err("tracing.max_queue_size must be at least 1".into());
        }
        if self.max_export_batch_size == 0 || self.max_export_batch_size > self.max_queue_size {
            return Err(format!(
                "tracing.max_export_batch_size must be between 1 and tracing.max_queue_size ({}), got {}",
                self.max_queue_size, self.max_export_batch_size
            ));
        }
        if self.export_timeout_seconds == 0 {
            return Err("tracing.export_timeout_seconds must be at least 1".into());
        }
        match (&self.endpoint, self.exporter) {
            (None, Exporter::None) => Ok(()),
            (None, _) => Err(format!(
                "tracing.endpoint is required with tracing.exporter {}",
                self.exporter_name()
            )),
            (Some(e), _) => self.endpoint_url(e).map(|_| ()),
        }
    }

    /// The URL spans are sent to: `endpoint`, with `/v1/traces` added for `otlp_http` when it
    /// has no path.
    pub fn export_url(&self) -> Option<String> {
        self.export_url_with(OTLP_HTTP_TRACES_PATH)
    }

    /// The URL signals are sent to: `endpoint`, with `default_path` added for `otlp_http` when
    /// it has no path.
    pub fn export_url_with(&self, default_path: &str) -> Option<String> {
        let endpoint = self.endpoint.as_deref()?;
        let url = self.endpoint_url(endpoint).ok()?;
        if self.exporter == Exporter::OtlpHttp && url.path() == "/" {
            let mut url = url;
            url.set_path(default_path);
            return Some(url.to_string());
        }
        // tonic wants the bare origin for gRPC: no trailing slash.
        Some(endpoint.trim_end_matches('/').to_string())
    }

    fn endpoint_url(&self, endpoint: &str) -> Result<url::Url, String> {
        let bad = |why: String| Err(format!("tracing.endpoint {endpoint:?}: {why}"));
        let url = match url::Url::parse(endpoint) {
            Ok(u) => u,
            Err(e) => return bad(format!("not a URL ({e})")),
        };
        match url.scheme() {
            "http" => {}
            // The gRPC exporter is built without TLS: a collector on the node or in the pod is
            // reached in plain text, or over HTTPS with `otlp_http`.
            "https" if self.exporter == Exporter::OtlpGrpc => {
                return bad("otlp_grpc takes http:// only; use otlp_http for https://".into())
            }
            "https" => {}
            other => return bad(format!("the scheme must be http or https, not {other:?}")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return bad("no host".into());
        }
        if self.exporter == Exporter::OtlpGrpc && url.path() != "/" {
            return bad("an otlp_grpc endpoint has no path (the service's path is fixed)".into());
        }
        Ok(url)
    }

    fn exporter_name(&self) -> &'static str {
        match self.exporter {
            Exporter::None => "none",
            Exporter::OtlpGrpc => "otlp_grpc",
            Exporter::OtlpHttp => "otlp_http",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<TracingConfig, String> {
        let cfg: TracingConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        cfg.validate().map(|()| cfg)
    }

    #[test]
    fn defaults_are_off() {
        let cfg = parse("{}").expect("defaults");
        assert!(!cfg.enabled());
        assert_eq!(cfg.sample_ratio, 1.0);
        assert_eq!(cfg.service_name, "regent-sidecar");
        assert_eq!(
            TracingConfig::for_service("regent-server").service_name,
            "regent-server"
        );
        assert_eq!(
            (
                cfg.max_queue_size,
                cfg.max_export_batch_size,
                cfg.export_timeout_seconds
            ),
            (2048, 512, 10)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, needle) in [
            ("{sample_ratio: 1.5}", "tracing.sample_ratio"),
            ("{sample_ratio: -0.1}", "tracing.sample_ratio"),
            ("{sample_ratio: .nan}", "tracing.sample_ratio"),
            ("{exporter: otlp_grpc}", "tracing.endpoint is required"),
            ("{exporter: otlp_http}", "tracing.endpoint is required"),
            (
                "{exporter: otlp_grpc, endpoint: 'localhost:4317'}",
                "tracing.endpoint",
            ),
            (
                "{exporter: otlp_grpc, endpoint: 'not a url'}",
                "tracing.endpoint",
            ),
            (
                "{exporter: otlp_http, endpoint: 'ftp://c:4318'}",
                "tracing.endpoint",
            ),
            (
                "{exporter: otlp_grpc, endpoint: 'https://c:4317'}",
                "tracing.endpoint",
            ),
            (
                "{exporter: otlp_grpc, endpoint: 'http://c:4317/v1'}",
                "tracing.endpoint",
            ),
            ("{service_name: ' '}", "tracing.service_name"),
            ("{max_queue_size: 0}", "tracing.max_queue_size"),
            (
                "{max_queue_size: 10, max_export_batch_size: 11}",
                "tracing.max_export_batch_size",
            ),
            (
                "{max_export_batch_size: 0}",
                "tracing.max_export_batch_size",
            ),
            (
                "{export_timeout_seconds: 0}",
                "tracing.export_timeout_seconds",
            ),
            ("{exporter: zipkin}", "unknown variant `zipkin`"),
            ("{endpiont: x}", "unknown field `endpiont`"),
        ] {
            let err = parse(yaml).expect_err(yaml);
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn endpoints_become_export_urls() {
        let url = |yaml: &str| parse(yaml).expect(yaml).export_url();
        assert_eq!(
            url("{exporter: otlp_grpc, endpoint: 'http://127.0.0.1:4317/'}").as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(
            url("{exporter: otlp_http, endpoint: 'http://c:4318'}").as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            url("{exporter: otlp_http, endpoint: 'https://c/otlp/v1/traces'}").as_deref(),
            Some("https://c/otlp/v1/traces")
        );
        assert_eq!(url("{}"), None);
    }
}
