//! Spans of builds against a real OTLP receiver on 127.0.0.1: `regent serve` on a real git
//! repository exports a `bundle.build` trace per build, with `git.fetch`, per-bundle
//! `bundle.compile`, `bundle.gate` and `bundle.sign`, and `bundle.publish`; a commit the gate
//! refuses is an error trace; a tiny export queue in front of a collector that never answers
//! drops spans, counted on `/metrics`.

mod server_support;

use std::time::Duration;

use regent_bundle_server::server::trace::{
    attr, BUILD_SPAN, COMPILE_SPAN, FETCH_SPAN, GATE_SPAN, PUBLISH_SPAN, SIGN_SPAN,
};
use regent_telemetry::testkit::{
    children, grpc_receiver, is_error, silent_receiver, string_attr, Span,
};
use server_support::*;

const BUILD: Duration = Duration::from_secs(60);

fn tracing(endpoint: String, extra: &str) -> String {
    format!(
        "tracing: {{exporter: otlp_grpc, endpoint: '{endpoint}', export_timeout_seconds: 2{extra}}}"
    )
}

/// The builds of `commit` with `result`.
fn builds<'s>(spans: &'s [Span], commit: &str, result: &str) -> Vec<&'s Span> {
    spans
        .iter()
        .filter(|s| {
            s.name == BUILD_SPAN
                && string_attr(s, attr::COMMIT).as_deref() == Some(commit)
                && string_attr(s, attr::RESULT).as_deref() == Some(result)
        })
        .collect()
}

/// The children of `build` named `name`, for `bundle` when given.
fn steps<'s>(spans: &'s [Span], build: &Span, name: &str, bundle: Option<&str>) -> Vec<&'s Span> {
    children(spans, build)
        .into_iter()
        .filter(|s| {
            s.name == name
                && bundle.is_none_or(|b| string_attr(s, attr::BUNDLE).as_deref() == Some(b))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_a_build_trace_and_a_refused_commit_an_error_one() {
    let (addr, received) = grpc_receiver().await;
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().expect("tempdir");
    let extra = tracing(format!("http://{addr}"), "");
    let srv = start(config(&repo.origin, data.path(), &keys.private, &extra)).await;
    wait_published(&srv, "authz", &first).await;

    // A push whose policy test fails is refused by the gate.
    repo.write(
        "authz/policy.rego",
        "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n",
    );
    let failing = repo.commit_push("break the policy");
    assert!(srv.build_now(BUILD).await);
    srv.shutdown().await;

    let all = received.spans();
    assert!(all
        .iter()
        .all(|(service, _)| service.as_deref() == Some("regent-server")));
    let spans: Vec<Span> = all.into_iter().map(|(_, s)| s).collect();

    let published = builds(&spans, &first, "published");
    assert_eq!(published.len(), 1, "{spans:#?}");
    let build = published[0];
    assert!(build.parent_span_id.is_empty(), "a root span");
    assert!(!is_error(build));
    assert_eq!(
        string_attr(build, attr::REVISION).as_deref(),
        Some(first.as_str())
    );
    assert_eq!(string_attr(build, attr::BRANCH).as_deref(), Some("main"));

    let fetch = steps(&spans, build, FETCH_SPAN, None);
    assert_eq!(fetch.len(), 1, "{spans:#?}");
    assert_eq!(
        string_attr(fetch[0], attr::COMMIT).as_deref(),
        Some(first.as_str())
    );
    for bundle in ["authz", "platform"] {
        for step in [COMPILE_SPAN, GATE_SPAN, SIGN_SPAN] {
            let s = steps(&spans, build, step, Some(bundle));
            assert_eq!(s.len(), 1, "{step} of {bundle}: {spans:#?}");
            assert_eq!(
                string_attr(s[0], attr::RESULT).as_deref(),
                Some("ok"),
                "{step}"
            );
        }
    }
    let sign = steps(&spans, build, SIGN_SPAN, Some("authz"))[0];
    assert_eq!(string_attr(sign, attr::SIGNING_KID).as_deref(), Some("k1"));
    assert_eq!(
        string_attr(sign, attr::REVISION).as_deref(),
        Some(first.as_str())
    );
    let publish = steps(&spans, build, PUBLISH_SPAN, None);
    assert_eq!(publish.len(), 1, "{spans:#?}");
    assert_eq!(
        string_attr(publish[0], attr::REVISION).as_deref(),
        Some(first.as_str())
    );
    // The steps in order: fetched, then compiled before tested, signed, then published.
    let compile = steps(&spans, build, COMPILE_SPAN, Some("authz"))[0];
    let gate = steps(&spans, build, GATE_SPAN, Some("authz"))[0];
    assert!(fetch[0].end_time_unix_nano <= compile.start_time_unix_nano);
    assert!(compile.end_time_unix_nano <= gate.start_time_unix_nano);
    assert!(gate.end_time_unix_nano <= sign.start_time_unix_nano);
    assert!(sign.end_time_unix_nano <= publish[0].start_time_unix_nano);

    let rejected = builds(&spans, &failing, "rejected");
    assert_eq!(rejected.len(), 1, "{spans:#?}");
    let build = rejected[0];
    assert!(is_error(build), "{build:#?}");
    let gate = steps(&spans, build, GATE_SPAN, Some("authz"));
    assert_eq!(gate.len(), 1, "{spans:#?}");
    assert!(is_error(gate[0]));
    assert_eq!(
        string_attr(gate[0], attr::RESULT).as_deref(),
        Some("failed")
    );
    assert_eq!(string_attr(gate[0], attr::REASON).as_deref(), Some("test"));
    // Nothing is signed or published for a refused commit.
    assert!(steps(&spans, build, SIGN_SPAN, Some("authz")).is_empty());
    assert!(steps(&spans, build, PUBLISH_SPAN, None).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_export_queue_drops_spans_and_counts_them_on_metrics() {
    let (addr, held) = silent_receiver().await;
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().expect("tempdir");
    let extra = tracing(
        format!("http://{addr}"),
        ", max_queue_size: 1, max_export_batch_size: 1",
    );
    let srv = start(config(&repo.origin, data.path(), &keys.private, &extra)).await;
    wait_published(&srv, "authz", &first).await;
    let page = eventually(Duration::from_secs(20), || async {
        let page = metrics(&srv).await;
        (metric(&page, "regent_tracing_spans_dropped_total")? >= 1.0).then_some(page)
    })
    .await;
    assert!(page.is_some(), "{}", metrics(&srv).await);
    tokio::time::timeout(Duration::from_secs(30), srv.shutdown())
        .await
        .expect("shutdown is bounded");
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_exports_the_tracing_metrics_at_zero() {
    let repo = PolicyRepo::new();
    let keys = Keys::new();
    let data = tempfile::tempdir().expect("tempdir");
    let srv = start(config(&repo.origin, data.path(), &keys.private, "")).await;
    let page = metrics(&srv).await;
    assert_eq!(
        metric(&page, "regent_tracing_spans_dropped_total"),
        Some(0.0),
        "{page}"
    );
    for result in regent_telemetry::EXPORT_RESULTS {
        let series = format!(r#"regent_tracing_exports_total{{result="{result}"}}"#);
        assert_eq!(metric(&page, &series), Some(0.0), "{series}: {page}");
    }
    srv.shutdown().await;
}

#[test]
fn the_section_is_the_sidecars_with_the_servers_service_name() {
    let cfg = |extra: &str| {
        let dir = std::path::Path::new("/nonexistent");
        regent_bundle_server::server::ServerConfig::from_yaml(&config_yaml(dir, dir, dir, extra))
    };
    let off = cfg("").expect("loads");
    assert!(!off.tracing.enabled());
    assert_eq!(off.tracing.service_name, "regent-server");
    assert_eq!(off.tracing.max_queue_size, 2048);
    let on = cfg("tracing: {exporter: otlp_http, endpoint: 'http://c:4318'}").expect("loads");
    assert_eq!(on.tracing.service_name, "regent-server");
    let named = cfg("tracing: {service_name: policy-builds}").expect("loads");
    assert_eq!(named.tracing.service_name, "policy-builds");
    let unknown = cfg("tracing: {endpiont: x}").expect_err("refused");
    assert!(
        format!("{unknown:#}").contains("unknown field `endpiont`"),
        "{unknown:#}"
    );
    let bad = cfg("tracing: {sample_ratio: 2}").expect("parses");
    let e = bad.validate().expect_err("refused");
    assert_eq!(e.key, "tracing.sample_ratio", "{e}");
}
