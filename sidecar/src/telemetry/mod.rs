//! OpenTelemetry tracing of Checks: one span per Check (gRPC and HTTP-service mode alike), parented
//! on the caller's trace context, exported over OTLP in batches from a task on the runtime.
//!
//! Off by default (`tracing.exporter: none`): the authorizer then has no [`Tracing`] and a Check
//! does no tracing work at all. On, a Check starts its span from the request headers and ends it
//! with the decision's attributes; ending a span hands it to a bounded queue (`try_send`, never
//! waiting), which a full queue drops. The export itself, its retries and timeouts, run on the
//! batch task, never on a Check.
//!
//! The pipeline itself (configuration, exporter, sampler, the export queue and its metrics) is
//! regent-telemetry's, shared with the bundle server; the same tracer provider makes the bundle
//! sync spans ([`crate::sync::trace`]).

/// The `tracing:` section, shared with the bundle server (crate regent-telemetry).
pub mod config {
    pub use regent_telemetry::config::*;
}
pub mod propagation;

use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use opentelemetry::trace::{
    SamplingDecision, Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, ShouldSample};
use regent_telemetry::Pipeline;

pub use regent_telemetry::{Exporter, TracingConfig, TracingMetrics};

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

/// The tracer of Checks and of bundle sync, and their export pipeline.
pub struct Tracing {
    pipeline: Pipeline,
    tracer: SdkTracer,
    sync: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Tracing {
    /// Starts the export pipeline on the current runtime; `None` when tracing is off. Export
    /// outcomes and dropped spans are counted in `metrics`.
    pub fn start(
        cfg: &TracingConfig,
        metrics: &TracingMetrics,
    ) -> anyhow::Result<Option<Arc<Tracing>>> {
        let Some(pipeline) = Pipeline::start(cfg, metrics)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Tracing {
            tracer: pipeline.tracer("regent-sidecar"),
            sync: pipeline.tracer("regent-sidecar.sync"),
            pipeline,
            propagator: TraceContextPropagator::new(),
        })))
    }

    /// The tracer of bundle sync spans.
    pub fn sync_tracer(&self) -> &SdkTracer {
        &self.sync
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
                let r = self.pipeline.root_sampler().should_sample(
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
        self.pipeline.shutdown().await;
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
