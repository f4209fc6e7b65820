//! Metrics of remote calls: `http.send` and introspection outcomes, call durations, and the
//! Checks that waited for them.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Every `result` of `regent_http_send_total`, exported at 0 from start.
pub const HTTP_SEND_RESULTS: &[&str] = &[
    "ok",
    "cache_hit",
    "not_allowed",
    "bad_request",
    "transport",
    "timeout",
    "too_large",
];

/// Every `result` of `regent_introspection_total`, exported at 0 for each endpoint from start.
pub const INTROSPECTION_RESULTS: &[&str] = &[
    "active",
    "inactive",
    "cache_hit",
    "bad_argument",
    "http_status",
    "transport",
    "timeout",
    "too_large",
    "invalid",
];

/// The remote call metrics of one sidecar.
#[derive(Clone)]
pub struct RemoteMetrics {
    http_send: IntCounterVec,
    introspection: IntCounterVec,
    duration: HistogramVec,
    waits: IntCounter,
    over_budget: IntCounter,
}

impl RemoteMetrics {
    /// Creates and registers the metrics, with a series per introspection endpoint.
    pub fn register(registry: &Registry, endpoints: &[String]) -> prometheus::Result<Self> {
        let http_send = IntCounterVec::new(
            Opts::new(
                "regent_http_send_total",
                "http.send calls by result (ok, cache_hit, not_allowed, bad_request, transport, \
                 timeout, too_large).",
            ),
            &["result"],
        )?;
        for r in HTTP_SEND_RESULTS {
            http_send.with_label_values(&[r]);
        }
        let introspection = IntCounterVec::new(
            Opts::new(
                "regent_introspection_total",
                "Token introspection answers by endpoint and result (active, inactive, cache_hit, \
                 and failures: bad_argument, http_status, transport, timeout, too_large, invalid).",
            ),
            &["endpoint", "result"],
        )?;
        for e in endpoints {
            for r in INTROSPECTION_RESULTS {
                introspection.with_label_values(&[e.as_str(), r]);
            }
        }
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "regent_remote_call_duration_seconds",
                "Time of one remote call made for a policy (the network part), by builtin.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["builtin"],
        )?;
        let waits = IntCounter::new(
            "regent_check_remote_waits_total",
            "Checks that waited for remote calls (http.send, introspection) before deciding.",
        )?;
        let over_budget = IntCounter::new(
            "regent_check_remote_calls_over_budget_total",
            "Checks that asked for more remote calls or rounds than remote_calls allows; the \
             calls over budget were undefined.",
        )?;
        registry.register(Box::new(http_send.clone()))?;
        registry.register(Box::new(introspection.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(waits.clone()))?;
        registry.register(Box::new(over_budget.clone()))?;
        Ok(RemoteMetrics {
            http_send,
            introspection,
            duration,
            waits,
            over_budget,
        })
    }

    /// Counts one `http.send` outcome.
    pub fn http_send(&self, result: &str) {
        self.http_send.with_label_values(&[result]).inc();
    }

    /// Counts one introspection outcome.
    pub fn introspection(&self, endpoint: &str, result: &str) {
        self.introspection
            .with_label_values(&[endpoint, result])
            .inc();
    }

    /// Records the time of one call.
    pub fn remote_duration(&self, builtin: &str, d: Duration) {
        self.duration
            .with_label_values(&[builtin])
            .observe(d.as_secs_f64());
    }

    /// Counts a Check that waited for remote calls.
    pub fn waited(&self) {
        self.waits.inc();
    }

    /// Counts a Check that went over `max_rounds` or `max_calls_per_check`.
    pub fn over_budget(&self) {
        self.over_budget.inc();
    }
}
