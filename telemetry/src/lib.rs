//! The OpenTelemetry export pipeline of Regent's programs: the `tracing:` configuration section,
//! the tracer provider with its sampler and its OTLP exporter (gRPC or HTTP) behind a batch
//! processor on the tokio runtime, and the metrics of the export itself.
//!
//! Shared by the sidecar (Check and bundle sync spans) and the bundle server (build spans); what
//! each program puts in its spans stays in that program.

pub mod config;
pub mod logs;
mod queue;
pub mod spans;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

pub use config::{Exporter, TracingConfig};

/// Every `result` of `regent_tracing_exports_total`, exported at 0 from start.
pub const EXPORT_RESULTS: &[&str] = &["ok", "error", "timeout"];

/// The metrics of span export, on the program's registry.
#[derive(Clone)]
pub struct TracingMetrics {
    /// `regent_tracing_spans_dropped_total`: spans ended while the export queue was full.
    pub spans_dropped: IntCounter,
    /// `regent_tracing_exports_total{result}`: export requests, by outcome.
    pub exports: IntCounterVec,
}

impl TracingMetrics {
    /// Creates the metrics, every series at 0, and registers them in `registry`. Registered
    /// whether or not tracing is on, so the series exist for dashboards from start.
    pub fn register(registry: &Registry) -> prometheus::Result<TracingMetrics> {
        let spans_dropped = IntCounter::new(
            "regent_tracing_spans_dropped_total",
            "Finished spans dropped because the export queue (tracing.max_queue_size) was full.",
        )?;
        let exports = IntCounterVec::new(
            Opts::new(
                "regent_tracing_exports_total",
                "Span export requests to the collector, by result (ok, error, timeout).",
            ),
            &["result"],
        )?;
        for r in EXPORT_RESULTS {
            exports.with_label_values(&[r]);
        }
        registry.register(Box::new(spans_dropped.clone()))?;
        registry.register(Box::new(exports.clone()))?;
        Ok(TracingMetrics {
            spans_dropped,
            exports,
        })
    }
}

/// A running export pipeline: the tracer provider, its sampler, its batch task.
pub struct Pipeline {
    provider: SdkTracerProvider,
    /// Samples traces started here (no sampled or unsampled parent).
    root: Sampler,
    flush_timeout: Duration,
}

impl Pipeline {
    /// Starts the export pipeline on the current tokio runtime; `None` when tracing is off (no
    /// provider, no task: the callers then make no span at all).
    pub fn start(
        cfg: &TracingConfig,
        metrics: &TracingMetrics,
    ) -> anyhow::Result<Option<Pipeline>> {
        if !cfg.enabled() {
            return Ok(None);
        }
        cfg.validate().map_err(anyhow::Error::msg)?;
        let url = cfg
            .export_url()
            .context("tracing.endpoint is not set or not a URL")?;
        let timeout = Duration::from_secs(cfg.export_timeout_seconds);
        let exporter = match cfg.exporter {
            Exporter::OtlpGrpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url)
                .with_timeout(timeout)
                .build(),
            Exporter::OtlpHttp | Exporter::None => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .with_timeout(timeout)
                .build(),
        }
        .context("building the tracing.exporter")?;
        let (admission, exporter) = queue::bounded(exporter, cfg.max_queue_size, metrics.clone());
        let batch = BatchConfigBuilder::default()
            // The bound is the admission's; see `queue`.
            .with_max_queue_size(cfg.max_queue_size.saturating_add(queue::CONTROL_SLOTS))
            .with_max_export_batch_size(cfg.max_export_batch_size)
            .with_max_export_timeout(timeout)
            .build();
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(batch)
            .build();
        let root = Sampler::TraceIdRatioBased(cfg.sample_ratio);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(admission.wrap(processor))
            .with_sampler(Sampler::ParentBased(Box::new(root.clone())))
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        tracing::info!(
            exporter = ?cfg.exporter,
            endpoint = cfg.endpoint.as_deref().unwrap_or_default(),
            sample_ratio = cfg.sample_ratio,
            service_name = %cfg.service_name,
            "tracing on"
        );
        Ok(Some(Pipeline {
            provider,
            root,
            flush_timeout: timeout,
        }))
    }

    /// A tracer of the provider, named after the instrumented component.
    pub fn tracer(&self, scope: &'static str) -> SdkTracer {
        self.provider.tracer(scope)
    }

    /// The sampler of traces that start here, for a caller deciding a deferred parent's sampling.
    pub fn root_sampler(&self) -> &Sampler {
        &self.root
    }

    /// Exports the spans still queued, waiting at most `tracing.export_timeout_seconds`.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        // The processor's shutdown blocks its thread until the batch task has exported: off the
        // runtime's threads, so that task can run (on a single-threaded runtime too).
        let timeout = self.flush_timeout;
        let flush = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
        match tokio::time::timeout(self.flush_timeout, flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing spans at shutdown failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the span flush task failed"),
            Err(_) => tracing::warn!(
                timeout_seconds = self.flush_timeout.as_secs(),
                "spans not exported within tracing.export_timeout_seconds of shutdown"
            ),
        }
    }
}
