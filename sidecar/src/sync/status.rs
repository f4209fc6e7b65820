//! What the sync loop reports: Prometheus metrics and an OPA status-API-compatible report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio::sync::{watch, Notify};

use super::config::StatusConfig;

/// Current time in OPA's status format (RFC 3339 with nanoseconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Every `reason` of `regent_bundle_activation_failures_total`: a [`super::runner::Refusal`]'s reason,
/// or `persisted` (a persisted bundle that cannot be read). Each configured bundle is exported at 0
/// for each of them from start; a unit test checks that the sync code uses no other.
pub const ACTIVATION_FAILURE_REASONS: &[&str] = &[
    "unpack",
    "signature",
    "roots",
    "roots_overlap",
    "rollback",
    "compile",
    "internal",
    "persisted",
    "timeout",
];

/// Every `result` of `regent_bundle_downloads_total`, exported at 0 for each configured bundle.
pub const DOWNLOAD_RESULTS: &[&str] = &["ok", "not_modified", "error"];

/// The sync metrics, registered in the sidecar's registry.
#[derive(Clone)]
pub struct SyncMetrics {
    info: IntGaugeVec,
    last_activation: prometheus::GaugeVec,
    downloads: IntCounterVec,
    failures: IntCounterVec,
    duration: Histogram,
}

impl SyncMetrics {
    /// Create and register the metrics; the counters of each of `bundles` start at 0 for every
    /// [`DOWNLOAD_RESULTS`] and [`ACTIVATION_FAILURE_REASONS`] value.
    pub fn register<'a>(
        registry: &Registry,
        bundles: impl IntoIterator<Item = &'a str>,
    ) -> prometheus::Result<Self> {
        let info = IntGaugeVec::new(
            Opts::new(
                "regent_bundle_info",
                "Revision of each active bundle (value always 1).",
            ),
            &["bundle", "revision"],
        )?;
        let last_activation = prometheus::GaugeVec::new(
            Opts::new(
                "regent_bundle_last_activation_timestamp_seconds",
                "Unix time of the last successful activation of each bundle.",
            ),
            &["bundle"],
        )?;
        let downloads = IntCounterVec::new(
            Opts::new(
                "regent_bundle_downloads_total",
                "Bundle download requests by result (ok, not_modified, error).",
            ),
            &["bundle", "result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "regent_bundle_activation_failures_total",
                "Bundles refused or failed to activate, by reason.",
            ),
            &["bundle", "reason"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "regent_bundle_activation_duration_seconds",
                "Time to unpack, verify, compile and swap in a bundle.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        for bundle in bundles {
            for result in DOWNLOAD_RESULTS {
                downloads.with_label_values(&[bundle, result]);
            }
            for reason in ACTIVATION_FAILURE_REASONS {
                failures.with_label_values(&[bundle, reason]);
            }
        }
        registry.register(Box::new(info.clone()))?;
        registry.register(Box::new(last_activation.clone()))?;
        registry.register(Box::new(downloads.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(SyncMetrics {
            info,
            last_activation,
            downloads,
            failures,
            duration,
        })
    }

    /// Record a download outcome: `ok`, `not_modified` or `error`.
    pub fn download(&self, bundle: &str, result: &str) {
        self.downloads.with_label_values(&[bundle, result]).inc();
    }

    /// Record a refused bundle.
    pub fn activation_failure(&self, bundle: &str, reason: &str) {
        self.failures.with_label_values(&[bundle, reason]).inc();
    }

    /// Record a successful activation of `bundle` at `revision` (replacing `previous`).
    pub fn activated(&self, bundle: &str, previous: Option<&str>, revision: &str, took: Duration) {
        if let Some(prev) = previous {
            if prev != revision {
                // A stale revision label would make the bundle look active at two revisions.
                let _ = self.info.remove_label_values(&[bundle, prev]);
            }
        }
        self.info.with_label_values(&[bundle, revision]).set(1);
        self.last_activation
            .with_label_values(&[bundle])
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        self.duration.observe(took.as_secs_f64());
    }
}

/// One bundle's entry in the status report (OPA field names; empty fields omitted like OPA).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BundleStatus {
    /// Bundle name.
    pub name: String,
    /// Revision in force.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub active_revision: String,
    /// Time of the last request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
    /// Time of the last 200 or 304.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_request: Option<String>,
    /// Time of the last 200 with a body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_download: Option<String>,
    /// Time of the last activation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_activation: Option<String>,
    /// `bundle_error` while the last attempt failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub code: String,
    /// Description of the last failure.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// HTTP status of the last failed response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_code: Option<u16>,
    /// Detailed errors of the last failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl BundleStatus {
    /// Record a failure (the active revision stays).
    pub fn fail(&mut self, message: String, http_code: Option<u16>, errors: Vec<String>) {
        self.code = "bundle_error".to_string();
        self.message = message;
        self.http_code = http_code;
        self.errors = errors;
    }

    /// Clear the failure fields after a success.
    pub fn clear_error(&mut self) {
        self.code.clear();
        self.message.clear();
        self.http_code = None;
        self.errors.clear();
    }
}

/// The JSON body POSTed to the status URL.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// `id`, `version` and configured labels.
    pub labels: BTreeMap<String, String>,
    /// Per-bundle status.
    pub bundles: BTreeMap<String, BundleStatus>,
    /// Regent's addition: the age and state of each remote key set (`identity.jwks`), so the
    /// fleet view can show stale keys. Omitted when none is configured.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub jwks: BTreeMap<String, crate::identity::KeySetReport>,
}

/// Shared, observable status of every bundle.
#[derive(Clone)]
pub struct StatusBoard {
    inner: Arc<Mutex<BTreeMap<String, BundleStatus>>>,
    changed: Arc<Notify>,
    version: watch::Sender<u64>,
}

impl StatusBoard {
    /// A board with one empty entry per bundle name.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let map = names
            .into_iter()
            .map(|n| {
                (
                    n.to_string(),
                    BundleStatus {
                        name: n.to_string(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        StatusBoard {
            inner: Arc::new(Mutex::new(map)),
            changed: Arc::new(Notify::new()),
            version: watch::channel(0).0,
        }
    }

    /// Change one bundle's status. `significant` = worth an immediate report (activation,
    /// failure), as opposed to a routine 304.
    pub fn update(&self, bundle: &str, significant: bool, f: impl FnOnce(&mut BundleStatus)) {
        {
            let mut map = super::lock(&self.inner);
            let entry = map
                .entry(bundle.to_string())
                .or_insert_with(|| BundleStatus {
                    name: bundle.to_string(),
                    ..Default::default()
                });
            f(entry);
        }
        self.version.send_modify(|v| *v += 1);
        if significant {
            self.changed.notify_one();
        }
    }

    /// Copy of every bundle's status.
    pub fn snapshot(&self) -> BTreeMap<String, BundleStatus> {
        super::lock(&self.inner).clone()
    }

    /// Copy of one bundle's status.
    pub fn get(&self, bundle: &str) -> Option<BundleStatus> {
        self.snapshot().remove(bundle)
    }

    /// A receiver that changes whenever any status changes (for waiting in tests and tools).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Labels of the report: configured ones, plus `id` (random per process unless configured)
/// and `version`.
pub fn report_labels(cfg: &StatusConfig) -> BTreeMap<String, String> {
    let mut labels = cfg.labels.clone();
    labels
        .entry("id".to_string())
        .or_insert_with(|| uuid::Uuid::new_v4().to_string());
    labels
        .entry("version".to_string())
        .or_insert_with(|| env!("CARGO_PKG_VERSION").to_string());
    labels
}

/// How status reports are POSTed: with the credentials of bundle downloads (`sync.http`: the
/// bearer token (a file re-read for every report, so a rotation needs no restart); the client
/// certificate; the extra CA), so a server that requires them accepts the reports.
pub struct StatusSender {
    url: String,
    client: reqwest::Client,
    bearer: Option<super::credentials::Bearer>,
    /// Longest one report may take, from connecting to the answer.
    timeout: Duration,
}

impl StatusSender {
    /// A sender to `url` with the timeouts, CA, client certificate and token of `http`.
    pub fn new(url: &str, http: &super::config::HttpConfig) -> anyhow::Result<Self> {
        let timeout = Duration::from_secs(http.read_timeout_seconds);
        Ok(StatusSender {
            url: url.to_string(),
            client: super::download::build_client(http, timeout)?,
            bearer: super::credentials::Bearer::from_config(http),
            timeout,
        })
    }

    /// POSTs one report; the error says why it was not accepted.
    pub async fn send(&self, report: &StatusReport) -> Result<(), String> {
        let mut req = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .json(report);
        if let Some(bearer) = &self.bearer {
            let value = bearer.header().await.map_err(|e| e.to_string())?;
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("refused with HTTP {}", resp.status().as_u16())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// POST the status on every significant change and every `interval_seconds` until `shutdown`
/// turns true. Failures are logged and never stop the loop.
pub async fn run_reporter(
    cfg: StatusConfig,
    board: StatusBoard,
    sender: StatusSender,
    mut shutdown: watch::Receiver<bool>,
) {
    let labels = report_labels(&cfg);
    let interval = Duration::from_secs(cfg.interval_seconds);
    loop {
        let report = StatusReport {
            labels: labels.clone(),
            bundles: board.snapshot(),
            jwks: crate::identity::all_reports(),
        };
        if let Err(e) = sender.send(&report).await {
            tracing::warn!(url = %cfg.url, error = %e, "status report not delivered");
        }
        tokio::select! {
            _ = board.changed.notified() => {}
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_json_uses_opa_field_names_and_omits_empty_ones() {
        let board = StatusBoard::new(["authz"]);
        board.update("authz", true, |s| {
            s.active_revision = "abc".into();
            s.fail("download failed".into(), Some(500), vec!["HTTP 500".into()]);
        });
        let report = StatusReport {
            labels: report_labels(&StatusConfig {
                url: "http://127.0.0.1/status".into(),
                interval_seconds: 60,
                labels: BTreeMap::from([("region".into(), "eu".into())]),
            }),
            bundles: board.snapshot(),
            jwks: BTreeMap::new(),
        };
        let v = serde_json::to_value(&report).unwrap();
        assert!(v.get("jwks").is_none(), "omitted without key sets");
        assert_eq!(v["labels"]["region"], "eu");
        assert!(uuid::Uuid::parse_str(v["labels"]["id"].as_str().unwrap()).is_ok());
        assert_eq!(v["labels"]["version"], env!("CARGO_PKG_VERSION"));
        let b = &v["bundles"]["authz"];
        assert_eq!(b["name"], "authz");
        assert_eq!(b["active_revision"], "abc");
        assert_eq!(b["code"], "bundle_error");
        assert_eq!(b["http_code"], 500);
        assert_eq!(b["errors"][0], "HTTP 500");
        assert!(b.get("last_successful_activation").is_none());
        board.update("authz", true, |s| s.clear_error());
        let v = serde_json::to_value(board.get("authz").unwrap()).unwrap();
        assert!(v.get("code").is_none() && v.get("http_code").is_none());
    }

    #[test]
    fn metrics_replace_the_revision_label() {
        let reg = Registry::new();
        let m = SyncMetrics::register(&reg, ["authz"]).unwrap();
        m.activated("authz", None, "r1", Duration::from_millis(3));
        m.activated("authz", Some("r1"), "r2", Duration::from_millis(3));
        m.download("authz", "ok");
        m.activation_failure("authz", "signature");
        let text = {
            let mut buf = String::new();
            for fam in reg.gather() {
                for metric in fam.get_metric() {
                    let labels: Vec<String> = metric
                        .get_label()
                        .iter()
                        .map(|l| format!("{}={}", l.name(), l.value()))
                        .collect();
                    buf.push_str(&format!("{} {}\n", fam.name(), labels.join(",")));
                }
            }
            buf
        };
        assert!(
            text.contains("regent_bundle_info bundle=authz,revision=r2"),
            "{text}"
        );
        assert!(!text.contains("revision=r1"), "{text}");
        assert!(text.contains("regent_bundle_downloads_total bundle=authz,result=ok"));
        assert!(
            text.contains("regent_bundle_activation_failures_total bundle=authz,reason=signature")
        );
        assert!(text.contains("regent_bundle_activation_duration_seconds"));
        assert!(text.contains("regent_bundle_last_activation_timestamp_seconds bundle=authz"));
    }

    #[test]
    fn configured_bundles_start_at_zero_for_every_reason_and_result() {
        let reg = Registry::new();
        let m = SyncMetrics::register(&reg, ["authz", "extra"]).unwrap();
        m.activation_failure("extra", "compile");
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&reg.gather(), &mut text)
            .unwrap();
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{series} in {text}"))
                .to_string()
        };
        for bundle in ["authz", "extra"] {
            for reason in ACTIVATION_FAILURE_REASONS {
                let want = if (bundle, *reason) == ("extra", "compile") {
                    "1"
                } else {
                    "0"
                };
                assert_eq!(
                    value(&format!(
                        r#"regent_bundle_activation_failures_total{{bundle="{bundle}",reason="{reason}"}}"#
                    )),
                    want
                );
            }
            for result in DOWNLOAD_RESULTS {
                assert_eq!(
                    value(&format!(
                        r#"regent_bundle_downloads_total{{bundle="{bundle}",result="{result}"}}"#
                    )),
                    "0"
                );
            }
        }
    }

    #[test]
    fn every_refusal_and_download_result_of_the_sync_code_is_listed() {
        use crate::metrics::source_scan::{call_args, literal};
        let sources = [
            ("sync/activate.rs", include_str!("activate.rs")),
            ("sync/backoff.rs", include_str!("backoff.rs")),
            ("sync/config.rs", include_str!("config.rs")),
            ("sync/download.rs", include_str!("download.rs")),
            ("sync/mod.rs", include_str!("mod.rs")),
            ("sync/persist.rs", include_str!("persist.rs")),
            ("sync/regent_format.rs", include_str!("regent_format.rs")),
            ("sync/runner.rs", include_str!("runner.rs")),
            ("policy.rs", include_str!("../policy.rs")),
        ];
        let (mut reasons, mut results) = (Vec::new(), Vec::new());
        for (file, src) in sources {
            let src = src.split("#[cfg(test)]").next().unwrap_or_default();
            for arg in call_args(src, "Refusal::new(", 0) {
                let reason = literal(&arg)
                    .unwrap_or_else(|| panic!("{file}: Refusal::new({arg}, ..): not a literal"));
                reasons.push(reason.to_string());
            }
            for arg in call_args(src, ".activation_failure(", 1) {
                match literal(&arg) {
                    Some(r) => reasons.push(r.to_string()),
                    None => assert_eq!(arg, "refusal.reason", "{file}: reason {arg}"),
                }
            }
            for arg in call_args(src, ".download(", 1) {
                let result = literal(&arg)
                    .unwrap_or_else(|| panic!("{file}: download(.., {arg}): not a literal"));
                results.push(result.to_string());
            }
        }
        assert!(reasons.iter().any(|r| r == "signature"), "{reasons:?}");
        for r in &reasons {
            assert!(
                ACTIVATION_FAILURE_REASONS.contains(&r.as_str()),
                "activation failure reason {r:?} is missing from ACTIVATION_FAILURE_REASONS"
            );
        }
        for r in ACTIVATION_FAILURE_REASONS {
            assert!(reasons.iter().any(|u| u == r), "{r:?} is never used");
        }
        for r in &results {
            assert!(
                DOWNLOAD_RESULTS.contains(&r.as_str()),
                "download result {r:?} is missing from DOWNLOAD_RESULTS"
            );
        }
        for r in DOWNLOAD_RESULTS {
            assert!(results.iter().any(|u| u == r), "{r:?} is never used");
        }
    }
}
