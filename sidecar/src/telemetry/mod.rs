//! OpenTelemetry tracing of Checks: one span per Check (gRPC and HTTP-service mode alike), parented
//! on the caller's trace context, exported over OTLP in batches from a task on the runtime.
//!
//! Off by default (`tracing.exporter: none`): the authorizer then has no [`Tracing`] and a Check
//! does no tracing work at all. On, a Check starts its span from the request headers and ends it
//! with the decision's attributes; ending a span hands it to a bounded queue (`try_send`, never
//! waiting), which a full queue drops. The export itself, its retries and timeouts, run on the
//! batch task, never on a Check.

pub mod config;
pub mod propagation;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use opentelemetry::trace::{
    SamplingDecision, Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider, ShouldSample,
};
use opentelemetry_sdk::Resource;

pub use config::{Exporter, TracingConfig};

/// Name of the span of a Check.
pub const CHECK_SPAN: &str = "ext_authz.check";

/// Attribute keys of a Check span.
pub mod attr {
    /// `allow`, `deny` or `error` (the real decision, also under dry-run).
    pub const DECISION: &str = "regent.decision";
    /// Why a Check has no decision from the policy (`eval_error`, `no_policy`, ...).
    pub const REASON: &str = "regent.reason";
    /// `vm` or `interpreter`.
    pub const EVALUATOR: &str = "regent.evaluator";
    /// `name=revision` of each bundle of the policy.
    pub const BUNDLE_REVISIONS: &str = "regent.bundle_revisions";
    /// The decision id (as in the response's dynamic metadata and the decision log).
    pub const DECISION_ID: &str = "regent.decision_id";
    /// Nanoseconds building the input document.
    pub const INPUT_NS: &str = "regent.input_build_ns";
    /// Nanoseconds evaluating the policy (all rounds).
    pub const EVAL_NS: &str = "regent.eval_ns";
    /// Dry-run replaced a deny or an error with an allow.
    pub const DRY_RUN: &str = "regent.dry_run";
}

/// The tracer of Checks and its export pipeline.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    /// Samples traces started here: also decides for a B3 parent that deferred its decision.
    root: Sampler,
    flush_timeout: Duration,
}

impl Tracing {
    /// Starts the export pipeline on the current runtime; `None` when tracing is off.
    pub fn start(cfg: &TracingConfig) -> anyhow::Result<Option<Arc<Tracing>>> {
        if !cfg.enabled() {
            return Ok(None);
        }
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
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue_size)
            .with_max_export_batch_size(cfg.max_export_batch_size)
            .with_max_export_timeout(timeout)
            .build();
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(batch)
            .build();
        let root = Sampler::TraceIdRatioBased(cfg.sample_ratio);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(root.clone())))
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("regent-sidecar");
        tracing::info!(
            exporter = ?cfg.exporter,
            endpoint = cfg.endpoint.as_deref().unwrap_or_default(),
            sample_ratio = cfg.sample_ratio,
            "tracing Checks"
        );
        Ok(Some(Arc::new(Tracing {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            root,
            flush_timeout: timeout,
        })))
    }

    /// Starts the span of a Check that arrived at `start`, parented on the trace context of
    /// the gRPC call (`call`: its metadata) or else of the request headers in `req` (W3C first,
    /// then B3, in each); a new trace without one.
    pub fn start_check(
        &self,
        req: &CheckRequest,
        call: Option<&tonic::metadata::MetadataMap>,
        start: SystemTime,
    ) -> CheckSpan {
        let http = req
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let parent = call
            .and_then(|m| self.parent(m))
            .or_else(|| http.and_then(|h| self.parent(h)))
            .unwrap_or_default();
        let span = self
            .tracer
            .span_builder(CHECK_SPAN)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(&self.tracer, &parent);
        CheckSpan { span }
    }

    fn parent(&self, headers: &dyn propagation::Carrier) -> Option<Context> {
        if let Some(cx) = propagation::w3c_parent(&self.propagator, headers) {
            return Some(cx);
        }
        let b3 = propagation::b3_parent(headers)?;
        let sampled = match b3.sampled {
            Some(s) => s,
            None => {
                let r = self.root.should_sample(
                    None,
                    b3.trace_id,
                    CHECK_SPAN,
                    &SpanKind::Server,
                    &[],
                    &[],
                );
                r.decision == SamplingDecision::RecordAndSample
            }
        };
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(b3.trace_id, b3.span_id, flags, true, TraceState::default());
        Some(Context::new().with_remote_span_context(remote))
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

/// What a Check span is ended with.
pub struct CheckSummary<'a> {
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// Why there was no decision from the policy, when so.
    pub reason: Option<&'static str>,
    /// The error message, for `error`.
    pub error: Option<&'a str>,
    /// The policy that decided, when one did.
    pub policy: Option<&'a regent_policy::ActivePolicy>,
    /// The decision id.
    pub decision_id: &'a str,
    /// Nanoseconds building the input.
    pub input_ns: u64,
    /// Nanoseconds evaluating.
    pub eval_ns: u64,
    /// Dry-run replaced the answer.
    pub dry_run: bool,
}

/// The span of one Check, from its start to its answer.
pub struct CheckSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl CheckSpan {
    /// The trace and span ids (hex), for the decision log: those of the context even when the
    /// span is not sampled.
    pub fn ids(&self) -> (String, String) {
        let cx = self.span.span_context();
        (cx.trace_id().to_string(), cx.span_id().to_string())
    }

    /// Sets the Check's attributes (only on a sampled span) and ends it, queueing it for export.
    pub fn finish(mut self, s: CheckSummary<'_>) {
        if self.span.is_recording() {
            let mut attrs = Vec::with_capacity(8);
            attrs.push(KeyValue::new(attr::DECISION, s.decision));
            attrs.push(KeyValue::new(attr::DECISION_ID, s.decision_id.to_string()));
            if let Some(reason) = s.reason {
                attrs.push(KeyValue::new(attr::REASON, reason));
            }
            if let Some(p) = s.policy {
                attrs.push(KeyValue::new(attr::EVALUATOR, p.kind().as_str()));
                let revisions: Vec<StringValue> = p
                    .revisions
                    .iter()
                    .map(|(name, rev)| StringValue::from(format!("{name}={rev}")))
                    .collect();
                attrs.push(KeyValue::new(
                    attr::BUNDLE_REVISIONS,
                    Value::Array(revisions.into()),
                ));
            }
            attrs.push(KeyValue::new(attr::INPUT_NS, clamp(s.input_ns)));
            attrs.push(KeyValue::new(attr::EVAL_NS, clamp(s.eval_ns)));
            if s.dry_run {
                attrs.push(KeyValue::new(attr::DRY_RUN, true));
            }
            self.span.set_attributes(attrs);
            if let Some(message) = s.error {
                self.span.set_status(Status::error(message.to_string()));
            }
        }
        self.span.end();
    }
}

fn clamp(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}
