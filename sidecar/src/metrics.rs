//! The sidecar's Prometheus metrics: one registry, served on `/metrics`. Label children used on the hot
//! path are resolved once here, so a Check only touches atomics.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// Histogram buckets for Check and evaluation latency: 5 µs to 1 s.
const LATENCY_BUCKETS: &[f64] = &[
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.25, 1.0,
];

/// Every metric the Check path and the policy store update.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves; sync registers its own metrics here too.
    pub registry: Registry,
    /// `regent_checks_total{decision="allow"}`.
    pub allow: IntCounter,
    /// `regent_checks_total{decision="deny"}`.
    pub deny: IntCounter,
    /// `regent_checks_total{decision="error"}`.
    pub error: IntCounter,
    /// `regent_check_errors_total{reason}`.
    pub errors: IntCounterVec,
    /// `regent_check_duration_seconds`.
    pub check_duration: Histogram,
    /// `regent_policy_eval_duration_seconds{evaluator="vm"}`.
    pub eval_vm: Histogram,
    /// `regent_policy_eval_duration_seconds{evaluator="interpreter"}`.
    pub eval_interpreter: Histogram,
    /// `regent_decision_logs_dropped_total`.
    pub logs_dropped: IntCounter,
    /// `regent_policy_activations_total`.
    pub activations: IntCounter,
}

impl Metrics {
    /// Creates and registers the metrics in a fresh registry.
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let checks = IntCounterVec::new(
            Opts::new(
                "regent_checks_total",
                "Check calls answered, by decision (allow, deny, error).",
            ),
            &["decision"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "regent_check_errors_total",
                "Check calls that failed, by reason.",
            ),
            &["reason"],
        )?;
        let check_duration = Histogram::with_opts(
            HistogramOpts::new(
                "regent_check_duration_seconds",
                "Time to answer a Check: input, evaluation, response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let eval_duration = HistogramVec::new(
            HistogramOpts::new(
                "regent_policy_eval_duration_seconds",
                "Time spent evaluating the policy for one Check.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["evaluator"],
        )?;
        let logs_dropped = IntCounter::new(
            "regent_decision_logs_dropped_total",
            "Decision log events dropped because the queue was full.",
        )?;
        let activations =
            IntCounter::new("regent_policy_activations_total", "Policies activated.")?;
        registry.register(Box::new(checks.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(check_duration.clone()))?;
        registry.register(Box::new(eval_duration.clone()))?;
        registry.register(Box::new(logs_dropped.clone()))?;
        registry.register(Box::new(activations.clone()))?;
        Ok(Metrics {
            allow: checks.with_label_values(&["allow"]),
            deny: checks.with_label_values(&["deny"]),
            error: checks.with_label_values(&["error"]),
            eval_vm: eval_duration.with_label_values(&["vm"]),
            eval_interpreter: eval_duration.with_label_values(&["interpreter"]),
            registry,
            errors,
            check_duration,
            logs_dropped,
            activations,
        })
    }

    /// Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}
