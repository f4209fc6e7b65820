//! OTLP logs: records exported in batches to an OpenTelemetry collector (gRPC or HTTP), for the
//! sidecar's decision log events (`decision_logs.otlp`), so a Loki, an Elastic or a SIEM behind a
//! collector receives every decision next to the traces it links to.
//!
//! Emitting a record hands it to the SDK's bounded queue without waiting; a full queue drops it
//! (the SDK counts and logs it). The export runs on a task of the tokio runtime.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::logs::log_processor_with_async_runtime::BatchLogProcessor;
use opentelemetry_sdk::logs::{BatchConfigBuilder, SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::Resource;
use serde::Deserialize;

use crate::config::{Exporter, TracingConfig};

/// Path OTLP/HTTP receivers take logs on, used when `endpoint` has no path of its own.
pub const OTLP_HTTP_LOGS_PATH: &str = "/v1/logs";

/// An OTLP logs section (the sidecar's `decision_logs.otlp`): the keys of `tracing:` but
/// `sample_ratio`, with the same defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// `otlp_grpc` or `otlp_http`.
    pub exporter: Exporter,
    /// The collector's URL (`/v1/logs` is added for `otlp_http` when it has no path).
    pub endpoint: String,
    /// `service.name` of the records.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Records waiting for export; beyond it new ones are dropped.
    #[serde(default = "default_queue")]
    pub max_queue_size: usize,
    /// Most records in one export request.
    #[serde(default = "default_batch")]
    pub max_export_batch_size: usize,
    /// Longest one export may take (and the final flush at shutdown).
    #[serde(default = "default_timeout")]
    pub export_timeout_seconds: u64,
}

fn default_service_name() -> String {
    crate::config::SIDECAR_SERVICE_NAME.into()
}
fn default_queue() -> usize {
    TracingConfig::default().max_queue_size
}
fn default_batch() -> usize {
    TracingConfig::default().max_export_batch_size
}
fn default_timeout() -> u64 {
    TracingConfig::default().export_timeout_seconds
}

impl LogsConfig {
    /// The same settings as a `tracing:` section, whose checks of the endpoint and the sizes
    /// these share.
    fn as_tracing(&self) -> TracingConfig {
        TracingConfig {
            exporter: self.exporter,
            endpoint: Some(self.endpoint.clone()),
            sample_ratio: 1.0,
            service_name: self.service_name.clone(),
            max_queue_size: self.max_queue_size,
            max_export_batch_size: self.max_export_batch_size,
            export_timeout_seconds: self.export_timeout_seconds,
        }
    }

    /// Checks values serde cannot; the message names the key below `section` (the section's own
    /// name, e.g. `decision_logs.otlp`).
    pub fn validate(&self, section: &str) -> Result<(), String> {
        if self.exporter == Exporter::None {
            return Err(format!("{section}.exporter must be otlp_grpc or otlp_http"));
        }
        self.as_tracing()
            .validate()
            .map_err(|m| m.replace("tracing.", &format!("{section}.")))
    }
}

/// A running logs pipeline.
pub struct Logs {
    provider: SdkLoggerProvider,
    logger: SdkLogger,
    flush_timeout: Duration,
}

/// One record to export.
pub struct Record<'a> {
    /// The event's name (`regent.decision`).
    pub event_name: &'static str,
    /// When it happened.
    pub timestamp: SystemTime,
    /// The body: the event, as JSON text.
    pub body: String,
    /// The trace and span it belongs to, as 32 and 16 hex digits.
    pub trace: Option<(&'a str, &'a str)>,
    /// String attributes.
    pub attributes: Vec<(&'static str, String)>,
}

impl Logs {
    /// Starts the pipeline on the current tokio runtime, for a section validated with
    /// [`LogsConfig::validate`].
    pub fn start(cfg: &LogsConfig, scope: &'static str) -> anyhow::Result<Logs> {
        let tracing = cfg.as_tracing();
        let url = tracing
            .export_url_with(OTLP_HTTP_LOGS_PATH)
            .context("the OTLP logs endpoint is not a URL")?;
        let timeout = Duration::from_secs(cfg.export_timeout_seconds);
        let exporter = match cfg.exporter {
            Exporter::OtlpGrpc => opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(url)
                .with_timeout(timeout)
                .build(),
            Exporter::OtlpHttp | Exporter::None => opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .with_timeout(timeout)
                .build(),
        }
        .context("building the OTLP logs exporter")?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue_size)
            .with_max_export_batch_size(cfg.max_export_batch_size)
            .with_max_export_timeout(timeout)
            .build();
        let processor = BatchLogProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(batch)
            .build();
        let provider = SdkLoggerProvider::builder()
            .with_log_processor(processor)
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let logger = provider.logger(scope);
        Ok(Logs {
            provider,
            logger,
            flush_timeout: timeout,
        })
    }

    /// Queues one record for export, without waiting.
    pub fn emit(&self, r: Record<'_>) {
        let mut record = self.logger.create_log_record();
        record.set_event_name(r.event_name);
        record.set_timestamp(r.timestamp);
        record.set_observed_timestamp(SystemTime::now());
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        record.set_body(AnyValue::from(r.body));
        if let Some((trace, span)) = r.trace {
            if let (Ok(t), Ok(s)) = (TraceId::from_hex(trace), SpanId::from_hex(span)) {
                record.set_trace_context(t, s, Some(TraceFlags::SAMPLED));
            }
        }
        for (k, v) in r.attributes {
            record.add_attribute(k, v);
        }
        self.logger.emit(record);
    }

    /// Exports the records still queued, waiting at most the section's `export_timeout_seconds`.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let timeout = self.flush_timeout;
        // A flush, not the provider's shutdown: the SDK's async-runtime log processor (0.31)
        // implements `shutdown` but not `shutdown_with_timeout`, which the provider calls, so a
        // shutdown exported nothing. The flush blocks its thread until the export task ran: off
        // the runtime's threads, as for spans.
        let flush = tokio::task::spawn_blocking(move || {
            let flushed = provider.force_flush();
            let _ = provider.shutdown_with_timeout(timeout);
            flushed
        });
        match tokio::time::timeout(timeout, flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing OTLP logs at shutdown failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the OTLP logs flush task failed"),
            Err(_) => tracing::warn!(
                timeout_seconds = timeout.as_secs(),
                "OTLP logs not exported within export_timeout_seconds of shutdown"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<LogsConfig, String> {
        let cfg: LogsConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        cfg.validate("decision_logs.otlp").map(|()| cfg)
    }

    #[test]
    fn the_section_has_the_tracing_defaults_and_names_its_own_keys() {
        let cfg = parse("{exporter: otlp_http, endpoint: 'http://127.0.0.1:4318'}").expect("ok");
        assert_eq!(
            (
                cfg.service_name.as_str(),
                cfg.max_queue_size,
                cfg.max_export_batch_size,
                cfg.export_timeout_seconds
            ),
            ("regent-sidecar", 2048, 512, 10)
        );
        assert_eq!(
            cfg.as_tracing()
                .export_url_with(OTLP_HTTP_LOGS_PATH)
                .as_deref(),
            Some("http://127.0.0.1:4318/v1/logs")
        );
        for (yaml, key) in [
            (
                "{exporter: none, endpoint: 'http://c'}",
                "decision_logs.otlp.exporter",
            ),
            (
                "{exporter: otlp_grpc, endpoint: 'ftp://c'}",
                "decision_logs.otlp.endpoint",
            ),
            (
                "{exporter: otlp_grpc, endpoint: 'http://c', max_queue_size: 0}",
                "decision_logs.otlp.max_queue_size",
            ),
        ] {
            let err = parse(yaml).expect_err(yaml);
            assert!(err.starts_with(key), "{yaml}: {err}");
        }
        assert!(parse("{exporter: otlp_grpc}").is_err(), "endpoint required");
    }
}
