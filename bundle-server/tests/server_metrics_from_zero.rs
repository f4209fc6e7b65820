//! A fresh bundle server exports every labelled counter whose label values are known up front at 0,
//! so `increase()` and `rate()` see the first event (issue 23): every build result, each configured
//! bundle × every publish failure reason, every bundle request code, webhook and status report result.

mod server_support;

use std::time::Duration;

use server_support::*;

/// The label sets, written out: the exported series are an interface dashboards and alerts rely on.
const BUILD_RESULTS: &[&str] = &["published", "rejected", "error"];
const PUBLISH_FAILURE_REASONS: &[&str] =
    &["build", "compile", "test", "entrypoint", "sign", "internal"];
const BUNDLE_REQUEST_CODES: &[&str] = &["200", "304", "401", "404", "503"];
const WEBHOOK_RESULTS: &[&str] = &[
    "accepted",
    "ignored",
    "unauthorized",
    "bad_request",
    "disabled",
];
const STATUS_REPORT_RESULTS: &[&str] = &["ok", "invalid", "refused"];

/// Every series expected at 0 on a fresh server, except `regent_builds_total{result="published"}`
/// (the first build may already have published).
fn series_at_zero() -> Vec<String> {
    let mut s = Vec::new();
    for r in BUILD_RESULTS.iter().filter(|r| **r != "published") {
        s.push(format!(r#"regent_builds_total{{result="{r}"}}"#));
    }
    for b in ["authz", "platform"] {
        for r in PUBLISH_FAILURE_REASONS {
            s.push(format!(
                r#"regent_publish_failures_total{{bundle="{b}",reason="{r}"}}"#
            ));
        }
    }
    for c in BUNDLE_REQUEST_CODES {
        s.push(format!(r#"regent_bundle_requests_total{{code="{c}"}}"#));
    }
    for r in WEBHOOK_RESULTS {
        s.push(format!(r#"regent_webhook_requests_total{{result="{r}"}}"#));
    }
    for r in STATUS_REPORT_RESULTS {
        s.push(format!(r#"regent_status_reports_total{{result="{r}"}}"#));
    }
    s.push("regent_git_stale_locks_removed_total".to_string());
    s
}

/// The value of `series` (name and labels exactly as exported) on a `/metrics` page.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn assert_at_zero(page: &str, when: &str) {
    let wrong: Vec<(String, Option<f64>)> = series_at_zero()
        .into_iter()
        .map(|s| {
            let v = value(page, &s);
            (s, v)
        })
        .filter(|(_, v)| *v != Some(0.0))
        .collect();
    assert!(wrong.is_empty(), "{when}: not at 0: {wrong:#?}\n{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_exports_every_known_counter_at_zero() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let srv = start(config(&repo.origin, data.path(), &keys.private, "")).await;

    // At once, whether or not the first build has finished.
    let page = metrics(&srv).await;
    assert_at_zero(&page, "at start");
    let published = value(&page, r#"regent_builds_total{result="published"}"#);
    assert!(
        matches!(published, Some(v) if v == 0.0 || v == 1.0),
        "{published:?}\n{page}"
    );

    // After the first (successful) build: the rejected and failure series are there at 0, so the
    // first rejected commit is an increase of 1.
    wait_published(&srv, "authz", &first).await;
    wait_published(&srv, "platform", &first).await;
    let page = metrics(&srv).await;
    assert_at_zero(&page, "after the first build");
    assert_eq!(
        value(&page, r#"regent_builds_total{result="published"}"#),
        Some(1.0),
        "{page}"
    );
    // Nothing else under these names: the label values are exactly the known ones.
    for (name, known) in [
        ("regent_builds_total{", BUILD_RESULTS.len()),
        (
            "regent_publish_failures_total{",
            2 * PUBLISH_FAILURE_REASONS.len(),
        ),
        ("regent_bundle_requests_total{", BUNDLE_REQUEST_CODES.len()),
        ("regent_webhook_requests_total{", WEBHOOK_RESULTS.len()),
        ("regent_status_reports_total{", STATUS_REPORT_RESULTS.len()),
    ] {
        let exported = page.lines().filter(|l| l.starts_with(name)).count();
        assert_eq!(exported, known, "{name}\n{page}");
    }
    tokio::time::timeout(Duration::from_secs(30), srv.shutdown())
        .await
        .expect("shuts down");
}
