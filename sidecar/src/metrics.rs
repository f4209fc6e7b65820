//! The sidecar's Prometheus metrics: one registry, served on `/metrics`. Label children used on the hot
//! path are resolved once here, so a Check only touches atomics.
//!
//! The JWT builtins' cache counters live in regent-policy (relaxed atomics the builtins bump
//! without touching the registry); [`JwtCacheCollector`] reads them at scrape time.

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use regent_policy::builtins::JwtCacheStats;

/// Histogram buckets for Check and evaluation latency: 5 µs to 1 s.
const LATENCY_BUCKETS: &[f64] = &[
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.25, 1.0,
];

/// Every `what` of `regent_reload_total`, exported at 0 from start (with `ok` and `error`).
pub const RELOAD_WHATS: &[&str] = &["keyring"];

/// Every `reason` of `regent_check_errors_total`: each is exported at 0 from start, so `increase()`
/// sees the first error. The Check path must use only these (a unit test reads its source).
pub const CHECK_ERROR_REASONS: &[&str] = &[
    "no_policy",
    "missing_decision",
    "request_parse_error",
    "eval_error",
    "undefined_decision",
    "illegal_result",
    "missing_allowed",
    "invalid_field",
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
    /// `regent_decision_logs_dropped_total{reason}` and the upload metrics.
    pub decision_logs: crate::decision_log::DecisionLogMetrics,
    /// `regent_policy_activations_total`.
    pub activations: IntCounter,
    /// `regent_reload_total{what,result}`: changed key or certificate files re-read.
    pub reloads: IntCounterVec,
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
        let decision_logs = crate::decision_log::DecisionLogMetrics::new()?;
        let activations =
            IntCounter::new("regent_policy_activations_total", "Policies activated.")?;
        for reason in CHECK_ERROR_REASONS {
            errors.with_label_values(&[reason]);
        }
        let reloads = IntCounterVec::new(
            Opts::new(
                "regent_reload_total",
                "Changed key or certificate files re-read, by what (keyring) and result (ok, error).",
            ),
            &["what", "result"],
        )?;
        for what in RELOAD_WHATS {
            for result in ["ok", "error"] {
                reloads.with_label_values(&[what, result]);
            }
        }
        registry.register(Box::new(checks.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(check_duration.clone()))?;
        registry.register(Box::new(eval_duration.clone()))?;
        decision_logs.register(&registry)?;
        registry.register(Box::new(activations.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(JwtCacheCollector::new(
            regent_policy::builtins::jwt_cache_stats,
        )?))?;
        Ok(Metrics {
            allow: checks.with_label_values(&["allow"]),
            deny: checks.with_label_values(&["deny"]),
            error: checks.with_label_values(&["error"]),
            eval_vm: eval_duration.with_label_values(&["vm"]),
            eval_interpreter: eval_duration.with_label_values(&["interpreter"]),
            registry,
            errors,
            check_duration,
            decision_logs,
            activations,
            reloads,
        })
    }

    /// Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

/// `regent_jwt_cache_hits_total{cache}` and `regent_jwt_cache_misses_total{cache}`, with `cache`
/// `token` (signature outcomes) or `keyset` (parsed key sets), read from `source` at each scrape.
pub struct JwtCacheCollector {
    hits: Desc,
    misses: Desc,
    source: fn() -> JwtCacheStats,
}

impl JwtCacheCollector {
    /// A collector reporting `source()` (regent-policy's `jwt_cache_stats` in the sidecar).
    pub fn new(source: fn() -> JwtCacheStats) -> prometheus::Result<JwtCacheCollector> {
        let desc = |name: &str, help: &str| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                vec!["cache".to_string()],
                HashMap::new(),
            )
        };
        Ok(JwtCacheCollector {
            hits: desc(
                "regent_jwt_cache_hits_total",
                "JWT builtin calls answered from a per-thread cache, by cache (token: signature \
                 outcomes, keyset: parsed key sets).",
            )?,
            misses: desc(
                "regent_jwt_cache_misses_total",
                "JWT builtin calls that missed a per-thread cache (a signature check or a key \
                 parse), by cache.",
            )?,
            source,
        })
    }
}

/// A counter family of `desc` with one sample per `(value of label, count)`.
pub(crate) fn counter_family(desc: &Desc, label: &str, samples: &[(&str, u64)]) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(MetricType::COUNTER);
    family.set_metric(
        samples
            .iter()
            .map(|&(label_value, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(label.to_string());
                pair.set_value(label_value.to_string());
                let mut counter = Counter::default();
                counter.set_value(value as f64);
                let mut metric = Metric::from_label(vec![pair]);
                metric.set_counter(counter);
                metric
            })
            .collect(),
    );
    family
}

impl Collector for JwtCacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.hits, &self.misses]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = (self.source)();
        vec![
            counter_family(
                &self.hits,
                "cache",
                &[("keyset", s.keyset_hits), ("token", s.token_hits)],
            ),
            counter_family(
                &self.misses,
                "cache",
                &[("keyset", s.keyset_misses), ("token", s.token_misses)],
            ),
        ]
    }
}

/// Reads label values out of Rust source, so unit tests can check that the code incrementing a
/// labelled counter uses only the values the counter is initialised with.
#[cfg(test)]
pub(crate) mod source_scan {
    /// Argument `index` (trimmed, as written) of every call that starts with `call` (e.g.
    /// `"Refusal::new("`), in the order they appear.
    pub(crate) fn call_args(src: &str, call: &str, index: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(at) = rest.find(call) {
            rest = &rest[at + call.len()..];
            let args = split_args(rest);
            if let Some(a) = args.get(index) {
                out.push(a.trim().to_string());
            }
        }
        out
    }

    /// The top-level arguments of a call whose `(` was just consumed.
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
        args
    }

    /// The string literal `"x"` (or `&["x"]`, a one-label slice) as `x`; `None` for any other
    /// expression.
    pub(crate) fn literal(expr: &str) -> Option<&str> {
        let e = expr.trim();
        let e = e
            .strip_prefix("&[")
            .and_then(|e| e.strip_suffix(']'))
            .map_or(e, str::trim);
        let inner = e.strip_prefix('"')?.strip_suffix('"')?;
        (!inner.contains('"')).then_some(inner)
    }

    /// Every string literal written right after `field` (e.g. `"reason:"`).
    pub(crate) fn field_literals<'a>(src: &'a str, field: &str) -> Vec<&'a str> {
        src.match_indices(field)
            .filter_map(|(at, _)| {
                let after = src[at + field.len()..].trim_start();
                let inner = after.strip_prefix('"')?;
                inner.find('"').map(|end| &inner[..end])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::source_scan::{call_args, field_literals, literal};
    use super::*;

    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn jwt_cache_collector_reports_its_source() {
        let registry = Registry::new();
        registry
            .register(Box::new(
                JwtCacheCollector::new(|| JwtCacheStats {
                    token_hits: 7,
                    token_misses: 3,
                    keyset_hits: 9,
                    keyset_misses: 1,
                })
                .expect("collector"),
            ))
            .expect("registers");
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .expect("encodes");
        assert!(
            text.contains("# TYPE regent_jwt_cache_hits_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE regent_jwt_cache_misses_total counter"),
            "{text}"
        );
        let get = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} in {text}"));
        assert_eq!(get(r#"regent_jwt_cache_hits_total{cache="token"}"#), 7.0);
        assert_eq!(get(r#"regent_jwt_cache_misses_total{cache="token"}"#), 3.0);
        assert_eq!(get(r#"regent_jwt_cache_hits_total{cache="keyset"}"#), 9.0);
        assert_eq!(get(r#"regent_jwt_cache_misses_total{cache="keyset"}"#), 1.0);
    }

    #[test]
    fn the_sidecar_registry_reads_the_policy_counters() {
        use regorus::Value;
        let metrics = Metrics::new().expect("metrics");
        // Two identical calls on this thread: at least one miss and one hit.
        for _ in 0..2 {
            let v = regent_policy::builtins::call(
                "io.jwt.verify_hs256",
                &[
                    Value::from("e30.e30.FiOJyNFr8SYUFqrXiZiHKj8XuXXYvmf6Yt-xeyJn9tE"),
                    Value::from("metrics-unit-test"),
                ],
            );
            assert!(matches!(v, Value::Bool(_)), "{v:?}");
        }
        let before = regent_policy::builtins::jwt_cache_stats();
        let text = metrics.render();
        let after = regent_policy::builtins::jwt_cache_stats();
        let get = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} in {text}"));
        // Other tests may run JWT builtins meanwhile: the scrape lies between two reads.
        for (name, lo, hi) in [
            (
                r#"regent_jwt_cache_hits_total{cache="token"}"#,
                before.token_hits,
                after.token_hits,
            ),
            (
                r#"regent_jwt_cache_misses_total{cache="token"}"#,
                before.token_misses,
                after.token_misses,
            ),
            (
                r#"regent_jwt_cache_hits_total{cache="keyset"}"#,
                before.keyset_hits,
                after.keyset_hits,
            ),
            (
                r#"regent_jwt_cache_misses_total{cache="keyset"}"#,
                before.keyset_misses,
                after.keyset_misses,
            ),
        ] {
            let v = get(name);
            assert!(lo >= 1, "{name}: {lo}");
            assert!(
                (lo as f64..=hi as f64).contains(&v),
                "{name}: {v} not in {lo}..={hi}"
            );
        }
    }
    #[test]
    fn every_check_error_reason_is_exported_at_zero_from_start() {
        let text = Metrics::new().expect("metrics").render();
        for reason in CHECK_ERROR_REASONS {
            let series = format!(r#"regent_check_errors_total{{reason="{reason}"}}"#);
            assert_eq!(sample(&text, &series), Some(0.0), "{series} in {text}");
        }
        for decision in ["allow", "deny", "error"] {
            let series = format!(r#"regent_checks_total{{decision="{decision}"}}"#);
            assert_eq!(sample(&text, &series), Some(0.0), "{series} in {text}");
        }
    }

    /// The reason of every [`regent_policy::decision::DecisionError`]; the match is exhaustive, so
    /// a new variant does not compile until it is listed here.
    fn decision_error_reasons() -> Vec<&'static str> {
        use regent_policy::decision::DecisionError;
        let all = [
            DecisionError::UndefinedDecision,
            DecisionError::IllegalResult("number"),
            DecisionError::MissingAllowed,
            DecisionError::InvalidField {
                field: "http_status",
                problem: String::new(),
            },
        ];
        all.iter()
            .map(|e| match e {
                DecisionError::UndefinedDecision
                | DecisionError::IllegalResult(_)
                | DecisionError::MissingAllowed
                | DecisionError::InvalidField { .. } => e.reason(),
            })
            .collect()
    }

    #[test]
    fn check_error_reasons_used_by_the_check_path_are_all_listed() {
        let mut used: Vec<String> = decision_error_reasons()
            .into_iter()
            .map(String::from)
            .collect();
        for (file, src) in [
            ("authorizer.rs", include_str!("authorizer.rs")),
            ("grpc_check.rs", include_str!("grpc_check.rs")),
            ("http_mode.rs", include_str!("http_mode.rs")),
        ] {
            let src = src.split("#[cfg(test)]").next().unwrap_or_default();
            // `errors.with_label_values(&["..."])`, `CheckFailure { reason: "...", .. }` and
            // `self.no_decision(id, "<reason>", why)`.
            for arg in call_args(src, "with_label_values(", 0) {
                match literal(&arg) {
                    Some(l) => used.push(l.to_string()),
                    // A CheckFailure's reason or no_decision's: their literals are read here.
                    None => assert!(
                        ["&[f.reason]", "&[reason]"].contains(&arg.as_str()),
                        "{file}: label {arg} is neither a literal nor a reason read by this test"
                    ),
                }
            }
            used.extend(field_literals(src, "reason:").into_iter().map(String::from));
            for arg in call_args(src, "no_decision(", 1) {
                if let Some(l) = literal(&arg) {
                    used.push(l.to_string());
                }
            }
        }
        assert!(
            used.iter().any(|r| r == "no_policy"),
            "the scan finds {used:?}"
        );
        for reason in &used {
            assert!(
                CHECK_ERROR_REASONS.contains(&reason.as_str()),
                "check error reason {reason:?} is missing from CHECK_ERROR_REASONS"
            );
        }
        for reason in CHECK_ERROR_REASONS {
            assert!(
                used.iter().any(|u| u == reason),
                "CHECK_ERROR_REASONS lists {reason:?}, which nothing counts"
            );
        }
    }

    #[test]
    fn the_source_scan_reads_literal_arguments() {
        let src = r#"x(Refusal::new(
                "roots",
                format!("a, {b:?} (c)"),
            )); Refusal::new(reason, "m"); m.f(&a, "persisted"); S { reason: "test", n }"#;
        let first = call_args(src, "Refusal::new(", 0);
        assert_eq!(first, ["\"roots\"", "reason"]);
        assert_eq!(literal(&first[0]), Some("roots"));
        assert_eq!(literal(&first[1]), None);
        assert_eq!(
            call_args(src, "Refusal::new(", 1)[0],
            r#"format!("a, {b:?} (c)")"#
        );
        assert_eq!(call_args(src, ".f(", 1), ["\"persisted\""]);
        assert_eq!(literal(r#"&["200"]"#), Some("200"));
        assert_eq!(field_literals(src, "reason:"), ["test"]);
    }
}
