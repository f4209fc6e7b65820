//! A fresh `regent-sidecar` process exports every labelled counter whose label values are known up
//! front at 0, so `increase()` and `rate()` see the first event (issue 23): each configured bundle
//! × every activation failure reason and download result, every Check error reason and decision.

mod common;

use std::time::Duration;

use common::Proc;

/// Activation failure reasons (`sync::status::ACTIVATION_FAILURE_REASONS`), written out: the
/// exported series are an interface dashboards and alerts rely on.
const ACTIVATION_FAILURE_REASONS: &[&str] = &[
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
const DOWNLOAD_RESULTS: &[&str] = &["ok", "not_modified", "error"];
const CHECK_ERROR_REASONS: &[&str] = &[
    "no_policy",
    "missing_decision",
    "request_parse_error",
    "eval_error",
    "undefined_decision",
    "illegal_result",
    "missing_allowed",
    "invalid_field",
];

/// The value of `series` (name and labels exactly as exported) on a `/metrics` page.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_fresh_sidecar_exports_every_known_counter_at_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, public) = regent_bundle::signing::generate_key_pem();
    let key = dir.path().join("k1.pub.pem");
    std::fs::write(&key, public).expect("write key");
    // A bundle server that accepts connections and never answers: no download completes while the
    // test reads /metrics, so every counter is still at its initial value.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", silent.local_addr().expect("addr"));
    let cfg = dir.path().join("sidecar.yaml");
    std::fs::write(
        &cfg,
        format!(
            "grpc: {{addr: '127.0.0.1:0'}}\n\
             http: {{addr: '127.0.0.1:0'}}\n\
             sync:\n  \
               bundles:\n    \
                 - {{name: authz, url: '{base}/bundles/authz'}}\n    \
                 - {{name: extra, url: '{base}/bundles/extra'}}\n  \
               keys: [{{kid: k1, public_key_file: '{key}'}}]\n  \
               http: {{connect_timeout_seconds: 60, read_timeout_seconds: 120}}\n",
            key = key.display()
        ),
    )
    .expect("write config");
    let proc = Proc::spawn(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--log-format",
        "json",
    ]);
    let listening = proc.event("regent-sidecar listening", Duration::from_secs(30));
    let http = listening["http"].as_str().expect("http address");
    let page = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");

    let mut expected = Vec::new();
    for bundle in ["authz", "extra"] {
        for reason in ACTIVATION_FAILURE_REASONS {
            expected.push(format!(
                r#"regent_bundle_activation_failures_total{{bundle="{bundle}",reason="{reason}"}}"#
            ));
        }
        for result in DOWNLOAD_RESULTS {
            expected.push(format!(
                r#"regent_bundle_downloads_total{{bundle="{bundle}",result="{result}"}}"#
            ));
        }
    }
    for reason in CHECK_ERROR_REASONS {
        expected.push(format!(r#"regent_check_errors_total{{reason="{reason}"}}"#));
    }
    for decision in ["allow", "deny", "error"] {
        expected.push(format!(r#"regent_checks_total{{decision="{decision}"}}"#));
    }
    for cache in ["token", "keyset"] {
        expected.push(format!(r#"regent_jwt_cache_hits_total{{cache="{cache}"}}"#));
        expected.push(format!(
            r#"regent_jwt_cache_misses_total{{cache="{cache}"}}"#
        ));
    }
    for reason in regent_sidecar::decision_log::DROP_REASONS {
        expected.push(format!(
            r#"regent_decision_logs_dropped_total{{reason="{reason}"}}"#
        ));
    }
    expected.push("regent_decision_logs_policy_dropped_total".into());
    expected.push("regent_policy_activations_total".into());
    let missing: Vec<&String> = expected
        .iter()
        .filter(|s| value(&page, s) != Some(0.0))
        .collect();
    assert!(missing.is_empty(), "not at 0: {missing:#?}\n{page}");
    // Nothing else under these names: the label values are exactly the known ones.
    for name in [
        "regent_bundle_activation_failures_total{",
        "regent_bundle_downloads_total{",
        "regent_check_errors_total{",
    ] {
        let exported = page.lines().filter(|l| l.starts_with(name)).count();
        let known = expected.iter().filter(|s| s.starts_with(name)).count();
        assert_eq!(exported, known, "{name}\n{page}");
    }
    drop(silent);
}
