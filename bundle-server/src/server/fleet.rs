//! The fleet view: OPA-compatible status reports from sidecars, kept per sidecar id until they
//! stop reporting for `fleet.ttl_seconds`.
//!
//! A report is a claim, not a fact: only revisions this server published (the last
//! [`PUBLISHED_HISTORY`] of each configured bundle) are shown and counted as themselves; any
//! other revision, and every revision of a bundle this server does not serve, is
//! [`UNKNOWN_REVISION`]. So `regent_fleet_sidecars` has at most `PUBLISHED_HISTORY + 1` series
//! per configured bundle whatever the reports say.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::metrics::Metrics;

/// Most bundles accepted in one report.
const MAX_BUNDLES_PER_REPORT: usize = 256;
/// Most remote key sets (`jwks`) accepted in one report.
const MAX_KEY_SETS_PER_REPORT: usize = 64;
/// Longest label key, label value, bundle name or revision accepted.
const MAX_FIELD_CHARS: usize = 512;
/// Revisions of each bundle the fleet view recognises: the last ones this server published.
pub const PUBLISHED_HISTORY: usize = 32;
/// What the fleet view and `regent_fleet_sidecars` show for a revision this server did not
/// publish (or published longer than [`PUBLISHED_HISTORY`] revisions ago).
pub const UNKNOWN_REVISION: &str = "unknown";

/// One bundle in a status report (OPA field names; fields the server does not use are dropped).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ReportedBundle {
    /// Bundle name.
    #[serde(default)]
    pub name: String,
    /// Revision in force on the sidecar. In the fleet view: [`UNKNOWN_REVISION`] when this
    /// server did not publish it (what the sidecar said is then in `reported_revision`).
    #[serde(default)]
    pub active_revision: String,
    /// Fleet view only: the revision the sidecar reported, when it is not one this server
    /// published. Dropped from reports ([`StatusReport::parse`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_revision: Option<String>,
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

/// One remote key set in a regent-sidecar status report (`identity.jwks`): how old its keys
/// are, so stale keys show in the fleet view before tokens are refused.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ReportedKeySet {
    /// Seconds since the keys were fetched or last confirmed (absent while there are none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
    /// When the keys were fetched or last confirmed (as reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
    /// Usable keys in force.
    #[serde(default)]
    pub keys: usize,
    /// True while the sidecar refuses this issuer's tokens (no keys, or too stale).
    #[serde(default)]
    pub unavailable: bool,
    /// The last refresh failure, while refreshes fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
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
    /// Regent's addition: remote key sets by issuer (OPA sends none).
    #[serde(default)]
    pub jwks: BTreeMap<String, ReportedKeySet>,
    /// Size of the report body: what keeping the report is charged against
    /// `fleet.max_total_report_bytes`.
    #[serde(skip)]
    pub size: usize,
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
    /// `fleet.max_total_report_bytes` reached.
    #[error("stored status reports would exceed {0} bytes (fleet.max_total_report_bytes); report refused")]
    TooMuchData(usize),
}

impl StatusReport {
    /// Parses and validates a report body.
    pub fn parse(body: &[u8]) -> Result<StatusReport, ReportError> {
        let mut r: StatusReport =
            serde_json::from_slice(body).map_err(|e| ReportError::Invalid(e.to_string()))?;
        r.size = body.len();
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
        for (k, b) in &mut r.bundles {
            // The server's own annotation in the fleet view; a report does not get to set it.
            b.reported_revision = None;
            if too_long(k) || too_long(&b.active_revision) {
                return Err(ReportError::Invalid(format!(
                    "bundle {:?}: name or active_revision longer than {MAX_FIELD_CHARS} characters",
                    k.chars().take(40).collect::<String>()
                )));
            }
        }
        if r.jwks.len() > MAX_KEY_SETS_PER_REPORT {
            return Err(ReportError::Invalid(format!(
                "{} key sets in jwks (at most {MAX_KEY_SETS_PER_REPORT})",
                r.jwks.len()
            )));
        }
        if let Some(issuer) = r.jwks.keys().find(|k| too_long(k)) {
            return Err(ReportError::Invalid(format!(
                "jwks issuer {:?} is longer than {MAX_FIELD_CHARS} characters",
                issuer.chars().take(40).collect::<String>()
            )));
        }
        Ok(r)
    }
}

struct Sidecar {
    size: usize,
    labels: BTreeMap<String, String>,
    bundles: BTreeMap<String, ReportedBundle>,
    jwks: BTreeMap<String, ReportedKeySet>,
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
    /// Its remote key sets by issuer, as reported (absent when it has none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jwks: BTreeMap<String, ReportedKeySet>,
}

/// Per-issuer summary of the sidecars' remote key sets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct KeySetSummary {
    /// Sidecars reporting a key set for this issuer.
    pub sidecars: usize,
    /// Of those, how many refuse its tokens now (no keys, or past their maximum staleness).
    pub unavailable: usize,
    /// Of those, how many report a failing refresh.
    pub failing: usize,
    /// The oldest key set reported, in seconds (absent when none has keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
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
    /// Sidecars per active revision; revisions this server did not publish are counted under
    /// `unknown`.
    pub revisions: BTreeMap<String, usize>,
}

/// `GET /v1/fleet`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetView {
    /// Sidecars silent for longer than this are dropped.
    pub ttl_seconds: u64,
    /// Every live sidecar, by id.
    pub sidecars: Vec<SidecarView>,
    /// Summary per bundle this server serves (other bundles show in `sidecars` only).
    pub bundles: BTreeMap<String, BundleRollout>,
    /// Summary per issuer of the sidecars' remote key sets (absent when none reports any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jwks: BTreeMap<String, KeySetSummary>,
}

#[derive(Default)]
struct Inner {
    sidecars: HashMap<String, Sidecar>,
    /// Live sidecars per (bundle, revision label), kept in step with `sidecars` and `history`
    /// so a report costs O(bundles in it), not O(fleet).
    counts: HashMap<(String, String), i64>,
    /// Sum of the stored reports' sizes.
    bytes: usize,
    /// Revisions published per configured bundle, oldest first, at most [`PUBLISHED_HISTORY`].
    history: HashMap<String, VecDeque<String>>,
}

impl Inner {
    /// The revision label of `revision` of `bundle`: itself if this server published it (or
    /// the sidecar has none active yet: `""`), else [`UNKNOWN_REVISION`]. `None` for a bundle
    /// that is not counted at all.
    fn label<'a>(&self, bundle: &str, revision: &'a str) -> Option<&'a str> {
        let history = self.history.get(bundle)?;
        if revision.is_empty() || history.iter().any(|r| r == revision) {
            Some(revision)
        } else {
            Some(UNKNOWN_REVISION)
        }
    }
}

/// Every sidecar that reported within the TTL.
pub struct Fleet {
    ttl: Duration,
    max_sidecars: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
    metrics: Metrics,
}

impl Fleet {
    /// An empty fleet holding at most `max_sidecars` sidecars and `max_bytes` of reports (so an
    /// open status endpoint cannot be used to fill the server's memory).
    /// Only the bundles in `metric_bundles` (the ones this server serves) are summarised and
    /// counted in `regent_fleet_sidecars`, whose `revision="unknown"` series of each is there
    /// from the start, at 0. Their revisions are recognised once [`Fleet::published`] says so.
    pub fn new(
        metric_bundles: BTreeSet<String>,
        ttl: Duration,
        max_sidecars: usize,
        max_bytes: usize,
        metrics: Metrics,
    ) -> Fleet {
        for b in &metric_bundles {
            metrics
                .fleet_sidecars
                .with_label_values(&[b.as_str(), UNKNOWN_REVISION])
                .set(0);
        }
        let inner = Inner {
            history: metric_bundles
                .into_iter()
                .map(|b| (b, VecDeque::new()))
                .collect(),
            ..Inner::default()
        };
        Fleet {
            ttl,
            max_sidecars,
            max_bytes,
            inner: Mutex::new(inner),
            metrics,
        }
    }

    /// Records that this server publishes `revision` of `bundle`, so sidecars reporting it are
    /// counted under it. The oldest of more than [`PUBLISHED_HISTORY`] revisions is forgotten
    /// (its sidecars move to `unknown`). A bundle the server does not serve is ignored.
    pub fn published(&self, bundle: &str, revision: &str) {
        let mut inner = self.lock();
        let Some(history) = inner.history.get_mut(bundle) else {
            return;
        };
        if revision.is_empty() || revision == UNKNOWN_REVISION {
            return;
        }
        if history.back().map(String::as_str) == Some(revision) {
            return;
        }
        // Already known (an older revision published again): move it to the newest end.
        history.retain(|r| r != revision);
        history.push_back(revision.to_string());
        while history.len() > PUBLISHED_HISTORY {
            history.pop_front();
        }
        self.recount_locked(&mut inner, bundle);
    }

    /// [`Fleet::published`] for every (bundle, revision) of `published`.
    pub fn published_all(&self, published: &BTreeMap<String, String>) {
        for (bundle, revision) in published {
            self.published(bundle, revision);
        }
    }

    /// Recomputes the counts of `bundle` from every stored report (after its history changed),
    /// and the gauge with them. O(fleet), once per publication.
    fn recount_locked(&self, inner: &mut Inner, bundle: &str) {
        let mut fresh: HashMap<String, i64> = HashMap::new();
        for s in inner.sidecars.values() {
            if let Some(b) = s.bundles.get(bundle) {
                if let Some(label) = inner.label(bundle, &b.active_revision) {
                    *fresh.entry(label.to_string()).or_default() += 1;
                }
            }
        }
        let stale: Vec<String> = inner
            .counts
            .keys()
            .filter(|(b, r)| b == bundle && !fresh.contains_key(r))
            .map(|(_, r)| r.clone())
            .collect();
        for r in stale {
            inner.counts.remove(&(bundle.to_string(), r.clone()));
            self.set_gauge(bundle, &r, 0);
        }
        for (r, n) in fresh {
            self.set_gauge(bundle, &r, n);
            inner.counts.insert((bundle.to_string(), r), n);
        }
    }

    /// Sets `regent_fleet_sidecars{bundle,revision}`; a real revision's series goes away at 0,
    /// the `unknown` one stays.
    fn set_gauge(&self, bundle: &str, revision: &str, n: i64) {
        let labels = [bundle, revision];
        if n <= 0 && revision != UNKNOWN_REVISION {
            let _ = self.metrics.fleet_sidecars.remove_label_values(&labels);
        } else {
            self.metrics
                .fleet_sidecars
                .with_label_values(&labels)
                .set(n.max(0));
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
        let after = |inner: &Inner| {
            let replaced = inner.sidecars.get(&id).map_or(0, |s| s.size);
            inner.bytes - replaced + report.size
        };
        if after(&inner) > self.max_bytes {
            self.prune_locked(&mut inner);
            if after(&inner) > self.max_bytes {
                return Err(ReportError::TooMuchData(self.max_bytes));
            }
        }
        inner.bytes = after(&inner);
        let new = Sidecar {
            size: report.size,
            labels: report.labels,
            bundles: report.bundles,
            jwks: report.jwks,
            received: Instant::now(),
            received_at: SystemTime::now(),
        };
        self.count(&mut inner, &new, 1);
        if let Some(old) = inner.sidecars.insert(id, new) {
            self.count(&mut inner, &old, -1);
        }
        Ok(())
    }

    /// Adds `delta` to the counts of every (bundle, revision label) of `s`, and updates the
    /// gauge. Bundles this server does not serve are not counted.
    fn count(&self, inner: &mut Inner, s: &Sidecar, delta: i64) {
        for (bundle, b) in &s.bundles {
            let Some(label) = inner.label(bundle, &b.active_revision) else {
                continue;
            };
            let key = (bundle.clone(), label.to_string());
            let n = {
                let n = inner.counts.entry(key.clone()).or_default();
                *n += delta;
                *n
            };
            if n <= 0 {
                inner.counts.remove(&key);
            }
            self.set_gauge(&key.0, &key.1, n);
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
                inner.bytes -= s.size;
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

    /// The fleet view; `published` gives the revision served for each bundle (and is recorded
    /// as published, see [`Fleet::published`]). A revision this server did not publish shows
    /// as [`UNKNOWN_REVISION`], with the reported one in `reported_revision`.
    pub fn view(&self, published: &BTreeMap<String, String>) -> FleetView {
        self.published_all(published);
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
                bundles: s
                    .bundles
                    .iter()
                    .map(|(name, b)| {
                        let label = if b.active_revision.is_empty() {
                            ""
                        } else {
                            inner
                                .label(name, &b.active_revision)
                                .unwrap_or(UNKNOWN_REVISION)
                        };
                        let mut b = b.clone();
                        if label != b.active_revision {
                            b.reported_revision =
                                Some(std::mem::replace(&mut b.active_revision, label.into()));
                        }
                        (name.clone(), b)
                    })
                    .collect(),
                jwks: s.jwks.clone(),
            })
            .collect();
        let served: BTreeSet<String> = inner.history.keys().cloned().collect();
        drop(inner);
        sidecars.sort_by(|a, b| a.id.cmp(&b.id));
        let mut bundles: BTreeMap<String, BundleRollout> = published
            .iter()
            .filter(|(n, _)| served.contains(*n))
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
                if !served.contains(name) {
                    continue;
                }
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
        let jwks = key_set_summary(&sidecars);
        FleetView {
            ttl_seconds: self.ttl.as_secs(),
            sidecars,
            bundles,
            jwks,
        }
    }
}

/// Summarises the reported key sets per issuer.
fn key_set_summary(sidecars: &[SidecarView]) -> BTreeMap<String, KeySetSummary> {
    let mut out: BTreeMap<String, KeySetSummary> = BTreeMap::new();
    for (issuer, k) in sidecars.iter().flat_map(|s| &s.jwks) {
        let e = out.entry(issuer.clone()).or_default();
        e.sidecars += 1;
        e.unavailable += usize::from(k.unavailable);
        e.failing += usize::from(k.last_error.is_some());
        e.max_age_seconds = e.max_age_seconds.max(k.age_seconds);
    }
    out
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
    fn stored_reports_are_bounded_in_bytes() {
        let size = report("a", "r1").size;
        let f = Fleet::new(
            BTreeSet::new(),
            Duration::from_secs(300),
            100,
            2 * size,
            Metrics::new().unwrap(),
        );
        f.record(report("a", "r1")).unwrap();
        f.record(report("b", "r1")).unwrap();
        assert_eq!(
            f.record(report("c", "r1")),
            Err(ReportError::TooMuchData(2 * size))
        );
        // A sidecar replacing its own report does not grow the total.
        f.record(report("a", "r1")).unwrap();
        assert_eq!(f.view(&BTreeMap::new()).sidecars.len(), 2);
    }

    /// The `regent_fleet_sidecars` lines of a metrics page.
    fn series(m: &Metrics) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with("regent_fleet_sidecars{"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn fleet_counts_revisions_and_ages_out() {
        let m = Metrics::new().unwrap();
        let served = BTreeSet::from(["authz".to_string()]);
        let f = Fleet::new(served, Duration::from_secs(2), 3, usize::MAX, m.clone());
        assert_eq!(
            series(&m),
            ["regent_fleet_sidecars{bundle=\"authz\",revision=\"unknown\"} 0"]
        );
        f.published("authz", "r1");
        f.published("authz", "r2");
        f.record(report("a", "r1")).unwrap();
        f.record(report("b", "r2")).unwrap();
        // A bundle this server does not serve is in the view but adds no metric series.
        let stranger = StatusReport::parse(
            br#"{"labels":{"id":"x"},"bundles":{"made-up":{"active_revision":"r9"}}}"#,
        )
        .unwrap();
        f.record(stranger).unwrap();
        assert!(!m.render().contains("made-up"));
        assert_eq!(f.record(report("c", "r2")), Err(ReportError::Full(3)));
        f.record(report("a", "r2")).unwrap();
        let v = f.view(&BTreeMap::from([("authz".to_string(), "r2".to_string())]));
        assert_eq!(v.sidecars.len(), 3);
        // Not summarised, and its revision is not one this server published.
        assert!(!v.bundles.contains_key("made-up"));
        let x = &v.sidecars.iter().find(|s| s.id == "x").unwrap().bundles["made-up"];
        assert_eq!(x.active_revision, UNKNOWN_REVISION);
        assert_eq!(x.reported_revision.as_deref(), Some("r9"));
        assert_eq!(v.bundles["authz"].on_published, 2);
        assert!(m
            .render()
            .contains("regent_fleet_sidecars{bundle=\"authz\",revision=\"r2\"} 2"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !f.view(&BTreeMap::new()).sidecars.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(f.view(&BTreeMap::new()).sidecars.is_empty());
        assert_eq!(
            series(&m),
            ["regent_fleet_sidecars{bundle=\"authz\",revision=\"unknown\"} 0"]
        );
    }

    #[test]
    fn unpublished_revisions_are_unknown_and_add_no_series() {
        let m = Metrics::new().unwrap();
        let served = BTreeSet::from(["authz".to_string()]);
        let f = Fleet::new(
            served,
            Duration::from_secs(300),
            10_000,
            usize::MAX,
            m.clone(),
        );
        f.published("authz", "real");
        for i in 0..200 {
            f.record(report(&format!("forger-{i}"), &format!("made-up-{i}")))
                .unwrap();
        }
        f.record(report("honest", "real")).unwrap();
        let mut lines = series(&m);
        lines.sort();
        assert_eq!(
            lines,
            [
                "regent_fleet_sidecars{bundle=\"authz\",revision=\"real\"} 1",
                "regent_fleet_sidecars{bundle=\"authz\",revision=\"unknown\"} 200",
            ]
        );
        let v = f.view(&BTreeMap::from([("authz".into(), "real".into())]));
        let revs = &v.bundles["authz"].revisions;
        assert_eq!(revs.len(), 2, "{revs:?}");
        assert_eq!(revs[UNKNOWN_REVISION], 200);
        assert_eq!(revs["real"], 1);
        assert_eq!(v.bundles["authz"].on_published, 1);
        let forger = v.sidecars.iter().find(|s| s.id == "forger-7").unwrap();
        assert_eq!(forger.bundles["authz"].active_revision, UNKNOWN_REVISION);
        assert_eq!(
            forger.bundles["authz"].reported_revision.as_deref(),
            Some("made-up-7")
        );
        // A report cannot set the server's annotation.
        let sneaky = StatusReport::parse(
            br#"{"labels":{"id":"s"},"bundles":{"authz":{"active_revision":"real","reported_revision":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(sneaky.bundles["authz"].reported_revision, None);
    }

    #[test]
    fn history_changes_move_sidecars_between_unknown_and_real() {
        let m = Metrics::new().unwrap();
        let served = BTreeSet::from(["authz".to_string()]);
        let f = Fleet::new(served, Duration::from_secs(300), 100, usize::MAX, m.clone());
        // Reported before the server knew it published it: unknown, then itself.
        f.record(report("early", "r0")).unwrap();
        assert!(m
            .render()
            .contains("regent_fleet_sidecars{bundle=\"authz\",revision=\"unknown\"} 1"));
        f.published("authz", "r0");
        let mut lines = series(&m);
        lines.sort();
        assert_eq!(
            lines,
            [
                "regent_fleet_sidecars{bundle=\"authz\",revision=\"r0\"} 1",
                "regent_fleet_sidecars{bundle=\"authz\",revision=\"unknown\"} 0",
            ]
        );
        // Beyond PUBLISHED_HISTORY newer publications, r0 is forgotten: unknown again.
        for i in 1..=PUBLISHED_HISTORY {
            f.published("authz", &format!("r{i}"));
        }
        assert!(m
            .render()
            .contains("regent_fleet_sidecars{bundle=\"authz\",revision=\"unknown\"} 1"));
        assert!(!m.render().contains("revision=\"r0\""));
        // Replacing the report decrements the label it was counted under.
        f.record(report("early", "r1")).unwrap();
        let mut lines = series(&m);
        lines.sort();
        assert_eq!(
            lines,
            [
                "regent_fleet_sidecars{bundle=\"authz\",revision=\"r1\"} 1",
                "regent_fleet_sidecars{bundle=\"authz\",revision=\"unknown\"} 0",
            ]
        );
        // Publishing a bundle the server does not serve changes nothing.
        f.published("made-up", "x");
        assert!(!m.render().contains("made-up"));
    }

    #[test]
    fn key_sets_are_summarised_per_issuer() {
        let f = Fleet::new(
            BTreeSet::new(),
            Duration::from_secs(300),
            100,
            usize::MAX,
            Metrics::new().unwrap(),
        );
        let with_keys = |id: &str, jwks: &str| {
            StatusReport::parse(format!(r#"{{"labels":{{"id":"{id}"}},"jwks":{jwks}}}"#).as_bytes())
        };
        f.record(
            with_keys(
                "fresh",
                r#"{"https://idp":{"age_seconds":30,"keys":2,"unavailable":false}}"#,
            )
            .unwrap(),
        )
        .unwrap();
        f.record(with_keys("stale", r#"{"https://idp":{"age_seconds":900,"keys":2,"unavailable":false,"last_error":"timeout"}}"#).unwrap())
            .unwrap();
        f.record(
            with_keys(
                "none",
                r#"{"https://idp":{"keys":0,"unavailable":true,"last_error":"refused"}}"#,
            )
            .unwrap(),
        )
        .unwrap();
        let v = f.view(&BTreeMap::new());
        assert_eq!(
            v.jwks["https://idp"],
            KeySetSummary {
                sidecars: 3,
                unavailable: 1,
                failing: 2,
                max_age_seconds: Some(900),
            }
        );
        let stale = v.sidecars.iter().find(|s| s.id == "stale").unwrap();
        assert_eq!(
            stale.jwks["https://idp"].last_error.as_deref(),
            Some("timeout")
        );

        let many: Vec<String> = (0..=MAX_KEY_SETS_PER_REPORT)
            .map(|i| format!(r#""https://idp-{i}":{{"keys":1}}"#))
            .collect();
        assert!(matches!(
            with_keys("greedy", &format!("{{{}}}", many.join(","))),
            Err(ReportError::Invalid(m)) if m.contains("key sets")
        ));
        assert!(with_keys("typo", r#"{"https://idp":{"keys":"two"}}"#).is_err());
    }
}
