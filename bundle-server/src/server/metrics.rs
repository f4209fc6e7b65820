//! The server's Prometheus metrics (one registry per server instance).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every `result` of `regent_builds_total` (a [`super::state::BuildResult`]).
pub const BUILD_RESULTS: &[&str] = &["published", "rejected", "error"];

/// Every `reason` of `regent_publish_failures_total` (a [`super::gate::Failure`]'s reason).
pub const PUBLISH_FAILURE_REASONS: &[&str] =
    &["build", "compile", "test", "entrypoint", "sign", "internal"];

/// Every `code` of `regent_bundle_requests_total`.
pub const BUNDLE_REQUEST_CODES: &[&str] = &["200", "304", "401", "404", "503"];

/// Every `result` of `regent_webhook_requests_total`.
pub const WEBHOOK_RESULTS: &[&str] = &[
    "accepted",
    "ignored",
    "unauthorized",
    "bad_request",
    "disabled",
];

/// Every `result` of `regent_status_reports_total`.
pub const STATUS_REPORT_RESULTS: &[&str] = &["ok", "invalid", "refused"];

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
    /// Creates and registers every metric in a fresh registry, with no configured bundle.
    pub fn new() -> prometheus::Result<Metrics> {
        Metrics::with_bundles([])
    }

    /// Creates and registers every metric in a fresh registry. Each counter whose labels are
    /// known up front starts at 0 for every value: the fixed sets above and, for
    /// `regent_publish_failures_total`, each of `bundles` × [`PUBLISH_FAILURE_REASONS`].
    pub fn with_bundles<'a>(
        bundles: impl IntoIterator<Item = &'a str>,
    ) -> prometheus::Result<Metrics> {
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
        for (vec, values) in [
            (&builds, BUILD_RESULTS),
            (&bundle_requests, BUNDLE_REQUEST_CODES),
            (&webhooks, WEBHOOK_RESULTS),
            (&status_reports, STATUS_REPORT_RESULTS),
        ] {
            for v in values {
                vec.with_label_values(&[v]);
            }
        }
        for bundle in bundles {
            for reason in PUBLISH_FAILURE_REASONS {
                publish_failures.with_label_values(&[bundle, reason]);
            }
        }
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

    /// Adds a metric that another part of the server owns (the git mirror's stale-lock counter).
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// The registry `/metrics` serves, for metrics other parts of the server define.
    pub fn registry(&self) -> &Registry {
        &self.registry
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `src` with the whitespace before each `.` removed, so a method chain split over lines
    /// (`.builds\n    .with_label_values(..)`) reads as one.
    fn joined(src: &str) -> String {
        let mut out = String::new();
        let mut pending = String::new();
        for c in src.chars() {
            if c.is_whitespace() {
                pending.push(c);
                continue;
            }
            if c != '.' {
                out.push_str(&pending);
            }
            pending.clear();
            out.push(c);
        }
        out
    }

    /// The part of `src` before its unit tests.
    fn code(src: &str) -> &str {
        src.split("#[cfg(test)]").next().unwrap_or_default()
    }

    /// The top-level arguments of the call whose `(` ends just before `src`.
    fn split_args(src: &str) -> Vec<String> {
        let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
        let mut args = vec![String::new()];
        for c in src.chars() {
            if in_str {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_str = false,
                    _ => {}
                }
            } else {
                match c {
                    '"' => in_str = true,
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' if depth == 0 => break,
                    ')' | ']' | '}' => depth -= 1,
                    ',' if depth == 0 => {
                        args.push(String::new());
                        continue;
                    }
                    _ => {}
                }
            }
            args.last_mut().expect("one argument").push(c);
        }
        args.into_iter().map(|a| a.trim().to_string()).collect()
    }

    /// Each call starting with `call` (e.g. `"Failure::new("`): its byte offset and argument `index`.
    fn call_args(src: &str, call: &str, index: usize) -> Vec<(usize, String)> {
        src.match_indices(call)
            .filter_map(|(at, _)| {
                let args = split_args(&src[at + call.len()..]);
                Some((at, args.get(index)?.clone()))
            })
            .collect()
    }

    /// `"x"` or `&["x"]` as `x`; `None` for any other expression.
    fn literal(expr: &str) -> Option<&str> {
        let e = expr.trim();
        let e = e
            .strip_prefix("&[")
            .and_then(|e| e.strip_suffix(']'))
            .map_or(e, str::trim);
        let inner = e.strip_prefix('"')?.strip_suffix('"')?;
        (!inner.contains('"')).then_some(inner)
    }

    /// The top-level function of `src` around byte `at`.
    fn enclosing_fn(src: &str, at: usize) -> &str {
        let start = ["\nasync fn ", "\nfn ", "\npub fn ", "\npub async fn "]
            .iter()
            .filter_map(|p| src[..at].rfind(p))
            .max()
            .unwrap_or(0);
        let end = src[at..].find("\n}\n").map_or(src.len(), |e| at + e);
        &src[start..end]
    }

    /// Every label value `.{field}.with_label_values(..)` is given in `src`: literals, and for a
    /// closure `let count = |r: &str| ...with_label_values(&[r])...`, each `count("..")` of the
    /// function that defines it.
    fn label_values(src: &str, field: &str) -> Vec<String> {
        let src = joined(code(src));
        let mut out = Vec::new();
        for (at, arg) in call_args(&src, &format!(".{field}.with_label_values("), 0) {
            match literal(&arg) {
                Some(l) => out.push(l.to_string()),
                None => {
                    assert_eq!(arg, "&[r]", "{field}: label {arg} is not a literal");
                    let body = enclosing_fn(&src, at);
                    assert!(body.contains("let count = |r: &str|"), "{field}: {body}");
                    for (_, a) in call_args(body, "count(", 0) {
                        let l = literal(&a).unwrap_or_else(|| panic!("{field}: count({a})"));
                        out.push(l.to_string());
                    }
                }
            }
        }
        out
    }

    fn assert_same(what: &str, used: &[String], listed: &[&str]) {
        assert!(!used.is_empty(), "{what}: the scan finds nothing");
        for u in used {
            assert!(
                listed.contains(&u.as_str()),
                "{what}: {u:?} is counted but missing from the constant {listed:?}"
            );
        }
        for l in listed {
            assert!(
                used.iter().any(|u| u == l),
                "{what}: {l:?} is listed but never counted"
            );
        }
    }

    const API: &str = include_str!("api.rs");
    const BUILDER: &str = include_str!("builder.rs");
    const FLEET: &str = include_str!("fleet.rs");
    const GATE: &str = include_str!("gate.rs");
    const MOD: &str = include_str!("mod.rs");

    #[test]
    fn build_results_are_the_build_result_enum() {
        use super::super::state::BuildResult;
        let all = [
            BuildResult::Published,
            BuildResult::Rejected,
            BuildResult::Error,
        ];
        // Exhaustive: a new variant does not compile until it is listed above.
        let names: Vec<String> = all
            .iter()
            .map(|r| match r {
                BuildResult::Published | BuildResult::Rejected | BuildResult::Error => {
                    serde_json::to_value(r)
                        .expect("serializes")
                        .as_str()
                        .expect("a string")
                        .to_string()
                }
            })
            .collect();
        assert_same("BuildResult", &names, BUILD_RESULTS);
        let mut used = Vec::new();
        for src in [API, BUILDER, FLEET, MOD] {
            used.extend(label_values(src, "builds"));
        }
        assert_same("regent_builds_total", &used, BUILD_RESULTS);
    }

    #[test]
    fn publish_failure_reasons_are_the_gate_s() {
        let gate = code(GATE);
        let mut used: Vec<String> = call_args(gate, "Failure::new(", 1)
            .into_iter()
            .map(|(_, a)| {
                literal(&a)
                    .unwrap_or_else(|| panic!("Failure::new(_, {a}, _): not a literal"))
                    .to_string()
            })
            .collect();
        let mut rest = gate;
        while let Some(at) = rest.find("reason:") {
            rest = rest[at + "reason:".len()..].trim_start();
            if let Some(l) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                used.push(l.to_string());
            }
        }
        assert_same("Failure reasons", &used, PUBLISH_FAILURE_REASONS);
    }

    #[test]
    fn request_webhook_and_status_labels_are_listed() {
        for (field, listed) in [
            ("bundle_requests", BUNDLE_REQUEST_CODES),
            ("webhooks", WEBHOOK_RESULTS),
            ("status_reports", STATUS_REPORT_RESULTS),
        ] {
            let mut used = Vec::new();
            for src in [API, BUILDER, FLEET, MOD] {
                used.extend(label_values(src, field));
            }
            assert_same(field, &used, listed);
        }
    }

    #[test]
    fn known_series_are_exported_at_zero_from_start() {
        let text = Metrics::with_bundles(["authz", "platform"])
            .expect("metrics")
            .render();
        let value = |series: String| {
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{series} in {text}"))
                .to_string()
        };
        for r in BUILD_RESULTS {
            assert_eq!(
                value(format!(r#"regent_builds_total{{result="{r}"}}"#)),
                "0"
            );
        }
        for c in BUNDLE_REQUEST_CODES {
            assert_eq!(
                value(format!(r#"regent_bundle_requests_total{{code="{c}"}}"#)),
                "0"
            );
        }
        for r in WEBHOOK_RESULTS {
            assert_eq!(
                value(format!(r#"regent_webhook_requests_total{{result="{r}"}}"#)),
                "0"
            );
        }
        for r in STATUS_REPORT_RESULTS {
            assert_eq!(
                value(format!(r#"regent_status_reports_total{{result="{r}"}}"#)),
                "0"
            );
        }
        for b in ["authz", "platform"] {
            for r in PUBLISH_FAILURE_REASONS {
                assert_eq!(
                    value(format!(
                        r#"regent_publish_failures_total{{bundle="{b}",reason="{r}"}}"#
                    )),
                    "0"
                );
            }
        }
    }

    #[test]
    fn the_source_scan_reads_split_chains_and_count_closures() {
        let src = "fn a() {\n    s.metrics\n        .builds\n        .with_label_values(&[\"x\"])\n        .inc();\n}\n\
                   async fn b() {\n    let count = |r: &str| s.metrics.webhooks.with_label_values(&[r]).inc();\n    count(\"y\");\n    f(count(\"z\"));\n}\n\
                   fn c() {\n    count(\"not this one\");\n}\n";
        assert_eq!(label_values(src, "builds"), ["x"]);
        assert_eq!(label_values(src, "webhooks"), ["y", "z"]);
    }
}
