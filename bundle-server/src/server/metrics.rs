//! The server's Prometheus metrics (one registry per server instance).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the server exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `regent_builds_total{result}`: published, rejected, error.
    pub builds: IntCounterVec,
    /// `regent_build_duration_seconds`.
    pub build_duration: Histogram,
    /// `regent_publish_failures_total{bundle,reason}`.
    pub publish_failures: IntCounterVec,
    /// `regent_published_revision_info{bundle,revision}` (always 1).
    pub published_info: IntGaugeVec,
    /// `regent_fleet_sidecars{bundle,revision}`.
    pub fleet_sidecars: IntGaugeVec,
    /// `regent_bundle_requests_total{code}`.
    pub bundle_requests: IntCounterVec,
    /// `regent_long_polls_waiting`.
    pub long_polls_waiting: IntGauge,
    /// `regent_webhook_requests_total{result}`.
    pub webhooks: IntCounterVec,
    /// `regent_status_reports_total{result}`.
    pub status_reports: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let builds = IntCounterVec::new(
            Opts::new(
                "regent_builds_total",
                "Commits gated, by result (published, rejected, error).",
            ),
            &["result"],
        )?;
        let build_duration = Histogram::with_opts(
            HistogramOpts::new(
                "regent_build_duration_seconds",
                "Time to fetch, build, compile, test and sign one commit.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]),
        )?;
        let publish_failures = IntCounterVec::new(
            Opts::new(
                "regent_publish_failures_total",
                "Bundles refused by the publish gate, by reason (build, compile, test, entrypoint, sign, internal).",
            ),
            &["bundle", "reason"],
        )?;
        let published_info = IntGaugeVec::new(
            Opts::new(
                "regent_published_revision_info",
                "Revision served for each bundle (value always 1).",
            ),
            &["bundle", "revision"],
        )?;
        let fleet_sidecars = IntGaugeVec::new(
            Opts::new(
                "regent_fleet_sidecars",
                "Sidecars reporting each active revision of each bundle.",
            ),
            &["bundle", "revision"],
        )?;
        let bundle_requests = IntCounterVec::new(
            Opts::new(
                "regent_bundle_requests_total",
                "Bundle download requests by HTTP status.",
            ),
            &["code"],
        )?;
        let long_polls_waiting = IntGauge::new(
            "regent_long_polls_waiting",
            "Long-poll requests currently waiting for a new revision.",
        )?;
        let webhooks = IntCounterVec::new(
            Opts::new(
                "regent_webhook_requests_total",
                "Webhook calls by result (accepted, ignored, unauthorized, bad_request, disabled).",
            ),
            &["result"],
        )?;
        let status_reports = IntCounterVec::new(
            Opts::new(
                "regent_status_reports_total",
                "Status reports received, by result (ok, invalid, refused).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(builds.clone()))?;
        registry.register(Box::new(build_duration.clone()))?;
        registry.register(Box::new(publish_failures.clone()))?;
        registry.register(Box::new(published_info.clone()))?;
        registry.register(Box::new(fleet_sidecars.clone()))?;
        registry.register(Box::new(bundle_requests.clone()))?;
        registry.register(Box::new(long_polls_waiting.clone()))?;
        registry.register(Box::new(webhooks.clone()))?;
        registry.register(Box::new(status_reports.clone()))?;
        Ok(Metrics {
            registry,
            builds,
            build_duration,
            publish_failures,
            published_info,
            fleet_sidecars,
            bundle_requests,
            long_polls_waiting,
            webhooks,
            status_reports,
        })
    }

    /// Records that `bundle` is now served at `revision` (replacing `previous`).
    pub fn published(&self, bundle: &str, previous: Option<&str>, revision: &str) {
        if let Some(prev) = previous {
            if prev != revision {
                let _ = self.published_info.remove_label_values(&[bundle, prev]);
            }
        }
        self.published_info
            .with_label_values(&[bundle, revision])
            .set(1);
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
