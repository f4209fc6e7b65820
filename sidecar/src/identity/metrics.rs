//! Key set metrics: refresh outcomes (counted by the fetchers), and the age and size of each key
//! set (read from the policy registry at scrape time, so the age is exact at every scrape).

use std::collections::HashMap;
use std::time::SystemTime;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{IntCounterVec, Opts, Registry};
use regent_policy::builtins::keysets;

/// Every `result` of `regent_jwks_refresh_total`, exported at 0 for each issuer from start.
pub const REFRESH_RESULTS: &[&str] = &[
    "ok",
    "not_modified",
    "http_status",
    "transport",
    "timeout",
    "too_large",
    "invalid",
];

/// The key set metrics of one sidecar.
#[derive(Clone)]
pub struct JwksMetrics {
    refreshes: IntCounterVec,
}

impl JwksMetrics {
    /// Creates and registers the metrics for `issuers`.
    pub fn register(registry: &Registry, issuers: &[String]) -> prometheus::Result<Self> {
        let refreshes = IntCounterVec::new(
            Opts::new(
                "regent_jwks_refresh_total",
                "Key set (JWKS) refreshes by issuer and result (ok, not_modified, http_status, \
                 transport, timeout, too_large, invalid).",
            ),
            &["issuer", "result"],
        )?;
        for issuer in issuers {
            for result in REFRESH_RESULTS {
                refreshes.with_label_values(&[issuer.as_str(), result]);
            }
        }
        registry.register(Box::new(refreshes.clone()))?;
        registry.register(Box::new(KeySetCollector::new(issuers.to_vec())?))?;
        Ok(JwksMetrics { refreshes })
    }

    /// Counts one refresh outcome.
    pub fn refresh(&self, issuer: &str, result: &str) {
        self.refreshes.with_label_values(&[issuer, result]).inc();
    }
}

/// `regent_jwks_age_seconds{issuer}` and `regent_jwks_keys{issuer}` of the configured issuers.
struct KeySetCollector {
    age: Desc,
    keys: Desc,
    issuers: Vec<String>,
}

impl KeySetCollector {
    fn new(issuers: Vec<String>) -> prometheus::Result<Self> {
        let desc = |name: &str, help: &str| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                vec!["issuer".to_string()],
                HashMap::new(),
            )
        };
        Ok(KeySetCollector {
            age: desc(
                "regent_jwks_age_seconds",
                "Seconds since each issuer's key set was last fetched or confirmed; +Inf while \
                 there is none (never fetched, or dropped past max_stale_seconds).",
            )?,
            keys: desc(
                "regent_jwks_keys",
                "Usable keys in each issuer's key set in force (0 while there is none).",
            )?,
            issuers,
        })
    }
}

fn gauge_family(desc: &Desc, samples: Vec<(&str, f64)>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(MetricType::GAUGE);
    family.set_metric(
        samples
            .into_iter()
            .map(|(issuer, value)| {
                let mut label = LabelPair::default();
                label.set_name("issuer".to_string());
                label.set_value(issuer.to_string());
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                let mut metric = Metric::from_label(vec![label]);
                metric.set_gauge(gauge);
                metric
            })
            .collect(),
    );
    family
}

impl Collector for KeySetCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.age, &self.keys]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = SystemTime::now();
        let (mut ages, mut counts) = (Vec::new(), Vec::new());
        for issuer in &self.issuers {
            let state = keysets::state(issuer);
            let usable = state.as_ref().and_then(|s| s.usable(now));
            let age = match (&state, usable) {
                (Some(s), Some(_)) => s.age(now).map_or(f64::INFINITY, |a| a.as_secs_f64()),
                _ => f64::INFINITY,
            };
            ages.push((issuer.as_str(), age));
            counts.push((issuer.as_str(), usable.map_or(0.0, |k| k.len() as f64)));
        }
        vec![
            gauge_family(&self.age, ages),
            gauge_family(&self.keys, counts),
        ]
    }
}
