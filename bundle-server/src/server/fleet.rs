//! The fleet view: OPA-compatible status reports from sidecars, kept per sidecar id until they
//! stop reporting for `fleet.ttl_seconds`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::metrics::Metrics;

/// Most bundles accepted in one report.
const MAX_BUNDLES_PER_REPORT: usize = 256;
/// Longest label key, label value, bundle name or revision accepted.
const MAX_FIELD_CHARS: usize = 512;

/// One bundle in a status report (OPA field names; fields the server does not use are dropped).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ReportedBundle {
    /// Bundle name.
    #[serde(default)]
    pub name: String,
    /// Revision in force on the sidecar.
    #[serde(default)]
    pub active_revision: String,
    /// Last successful activation time (as reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_activation: Option<String>,
    /// Last successful request time (as reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_request: Option<String>,
    /// `bundle_error` while failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Failure description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// HTTP status of the last failed download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_code: Option<u16>,
    /// Detailed errors (strings from regent-sidecar, objects from OPA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<serde_json::Value>,
}

/// The part of an OPA status report the fleet view reads. Other fields (`discovery`, `plugins`,
/// `metrics`, `decision_logs`) are accepted and ignored, as an OPA-compatible receiver must.
#[derive(Debug, Deserialize)]
pub struct StatusReport {
    /// Labels; `id` identifies the sidecar.
    pub labels: BTreeMap<String, String>,
    /// Per-bundle status.
    #[serde(default)]
    pub bundles: BTreeMap<String, ReportedBundle>,
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReportError {
    /// Not the expected shape.
    #[error("invalid status report: {0}")]
    Invalid(String),
    /// `fleet.max_sidecars` reached.
    #[error("fleet is full ({0} sidecars tracked); report refused")]
    Full(usize),
}

impl StatusReport {
    /// Parses and validates a report body.
    pub fn parse(body: &[u8]) -> Result<StatusReport, ReportError> {
        let r: StatusReport =
            serde_json::from_slice(body).map_err(|e| ReportError::Invalid(e.to_string()))?;
        let id = r.labels.get("id").map(String::as_str).unwrap_or("");
        if id.trim().is_empty() {
            return Err(ReportError::Invalid(
                "labels.id is required (the sidecar's identity)".into(),
            ));
        }
        if r.bundles.len() > MAX_BUNDLES_PER_REPORT {
            return Err(ReportError::Invalid(format!(
                "{} bundles in one report (at most {MAX_BUNDLES_PER_REPORT})",
                r.bundles.len()
            )));
        }
        let too_long = |s: &str| s.chars().count() > MAX_FIELD_CHARS;
        for (k, v) in &r.labels {
            if too_long(k) || too_long(v) {
                return Err(ReportError::Invalid(format!(
                    "label {:?} is longer than {MAX_FIELD_CHARS} characters",
                    k.chars().take(40).collect::<String>()
                )));
            }
        }
        for (k, b) in &r.bundles {
            if too_long(k) || too_long(&b.active_revision) {
                return Err(ReportError::Invalid(format!(
                    "bundle {:?}: name or active_revision longer than {MAX_FIELD_CHARS} characters",
                    k.chars().take(40).collect::<String>()
                )));
            }
        }
        Ok(r)
    }
}

struct Sidecar {
    labels: BTreeMap<String, String>,
    bundles: BTreeMap<String, ReportedBundle>,
    received: Instant,
    received_at: SystemTime,
}

/// One sidecar in the fleet view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SidecarView {
    /// `labels.id`.
    pub id: String,
    /// Every label it reported.
    pub labels: BTreeMap<String, String>,
    /// When its last report arrived (RFC 3339).
    pub last_report: String,
    /// Seconds since then.
    pub age_seconds: u64,
    /// Its bundles.
    pub bundles: BTreeMap<String, ReportedBundle>,
}

/// Per-bundle summary of the fleet view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct BundleRollout {
    /// Revision currently published by this server (absent if none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_revision: Option<String>,
    /// Sidecars reporting this bundle.
    pub sidecars: usize,
    /// Of those, how many run the published revision.
    pub on_published: usize,
    /// Of those, how many report an error for it.
    pub with_errors: usize,
    /// Sidecars per active revision.
    pub revisions: BTreeMap<String, usize>,
}

/// `GET /v1/fleet`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetView {
    /// Sidecars silent for longer than this are dropped.
    pub ttl_seconds: u64,
    /// Every live sidecar, by id.
    pub sidecars: Vec<SidecarView>,
    /// Summary per bundle name.
    pub bundles: BTreeMap<String, BundleRollout>,
}

#[derive(Default)]
struct Inner {
    sidecars: HashMap<String, Sidecar>,
    /// Live sidecars per (bundle, revision), kept in step with `sidecars` so a report costs
    /// O(bundles in it), not O(fleet).
    counts: HashMap<(String, String), i64>,
}

/// Every sidecar that reported within the TTL.
pub struct Fleet {
    ttl: Duration,
    max_sidecars: usize,
    inner: Mutex<Inner>,
    metrics: Metrics,
}

impl Fleet {
    /// An empty fleet.
    pub fn new(ttl: Duration, max_sidecars: usize, metrics: Metrics) -> Fleet {
        Fleet {
            ttl,
            max_sidecars,
            inner: Mutex::new(Inner::default()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Records a report (replacing the sidecar's previous one).
    pub fn record(&self, report: StatusReport) -> Result<(), ReportError> {
        let id = report.labels.get("id").cloned().unwrap_or_default();
        let mut inner = self.lock();
        if !inner.sidecars.contains_key(&id) && inner.sidecars.len() >= self.max_sidecars {
            self.prune_locked(&mut inner);
            if inner.sidecars.len() >= self.max_sidecars {
                return Err(ReportError::Full(inner.sidecars.len()));
            }
        }
        let new = Sidecar {
            labels: report.labels,
            bundles: report.bundles,
            received: Instant::now(),
            received_at: SystemTime::now(),
        };
        self.count(&mut inner, &new, 1);
        if let Some(old) = inner.sidecars.insert(id, new) {
            self.count(&mut inner, &old, -1);
        }
        Ok(())
    }

    /// Adds `delta` to the counts of every (bundle, revision) of `s`, and updates the gauge.
    fn count(&self, inner: &mut Inner, s: &Sidecar, delta: i64) {
        for (bundle, b) in &s.bundles {
            let key = (bundle.clone(), b.active_revision.clone());
            let n = {
                let n = inner.counts.entry(key.clone()).or_default();
                *n += delta;
                *n
            };
            let labels = [key.0.as_str(), key.1.as_str()];
            if n <= 0 {
                inner.counts.remove(&key);
                let _ = self.metrics.fleet_sidecars.remove_label_values(&labels);
            } else {
                self.metrics
                    .fleet_sidecars
                    .with_label_values(&labels)
                    .set(n);
            }
        }
    }

    /// Drops sidecars silent for longer than the TTL.
    pub fn prune(&self) {
        let mut inner = self.lock();
        self.prune_locked(&mut inner);
    }

    fn prune_locked(&self, inner: &mut Inner) {
        let ttl = self.ttl;
        let expired: Vec<String> = inner
            .sidecars
            .iter()
            .filter(|(_, s)| s.received.elapsed() > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            if let Some(s) = inner.sidecars.remove(id) {
                self.count(inner, &s, -1);
            }
        }
        if !expired.is_empty() {
            tracing::info!(
                removed = expired.len(),
                remaining = inner.sidecars.len(),
                "sidecars aged out of the fleet view"
            );
        }
    }

    /// The fleet view; `published` gives the revision served for each bundle.
    pub fn view(&self, published: &BTreeMap<String, String>) -> FleetView {
        let mut inner = self.lock();
        self.prune_locked(&mut inner);
        let mut sidecars: Vec<SidecarView> = inner
            .sidecars
            .iter()
            .map(|(id, s)| SidecarView {
                id: id.clone(),
                labels: s.labels.clone(),
                last_report: chrono::DateTime::<chrono::Utc>::from(s.received_at)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                age_seconds: s.received.elapsed().as_secs(),
                bundles: s.bundles.clone(),
            })
            .collect();
        drop(inner);
        sidecars.sort_by(|a, b| a.id.cmp(&b.id));
        let mut bundles: BTreeMap<String, BundleRollout> = published
            .iter()
            .map(|(n, r)| {
                (
                    n.clone(),
                    BundleRollout {
                        published_revision: Some(r.clone()),
                        ..Default::default()
                    },
                )
            })
            .collect();
        for s in &sidecars {
            for (name, b) in &s.bundles {
                let e = bundles.entry(name.clone()).or_default();
                e.sidecars += 1;
                *e.revisions.entry(b.active_revision.clone()).or_default() += 1;
                if e.published_revision.as_deref() == Some(b.active_revision.as_str()) {
                    e.on_published += 1;
                }
                if b.code.is_some() || !b.errors.is_empty() {
                    e.with_errors += 1;
                }
            }
        }
        FleetView {
            ttl_seconds: self.ttl.as_secs(),
            sidecars,
            bundles,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, rev: &str) -> StatusReport {
        StatusReport::parse(
            format!(
                r#"{{"labels":{{"id":"{id}","version":"1"}},"bundles":{{"authz":{{"name":"authz","active_revision":"{rev}"}}}},"plugins":{{"bundle":{{"state":"OK"}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn reports_are_validated() {
        assert!(matches!(
            StatusReport::parse(b"{\"labels\":{}}"),
            Err(ReportError::Invalid(m)) if m.contains("labels.id")
        ));
        assert!(StatusReport::parse(b"[1]").is_err());
        assert!(StatusReport::parse(b"{\"labels\":{\"id\":5}}").is_err());
    }

    #[test]
    fn fleet_counts_revisions_and_ages_out() {
        let m = Metrics::new().unwrap();
        let f = Fleet::new(Duration::from_secs(2), 2, m.clone());
        f.record(report("a", "r1")).unwrap();
        f.record(report("b", "r2")).unwrap();
        assert_eq!(f.record(report("c", "r2")), Err(ReportError::Full(2)));
        f.record(report("a", "r2")).unwrap();
        let v = f.view(&BTreeMap::from([("authz".to_string(), "r2".to_string())]));
        assert_eq!(v.sidecars.len(), 2);
        assert_eq!(v.bundles["authz"].on_published, 2);
        assert!(m
            .render()
            .contains("regent_fleet_sidecars{bundle=\"authz\",revision=\"r2\"} 2"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !f.view(&BTreeMap::new()).sidecars.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(f.view(&BTreeMap::new()).sidecars.is_empty());
        assert!(!m.render().contains("regent_fleet_sidecars{"));
    }
}
