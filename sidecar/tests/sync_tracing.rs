//! Spans of bundle sync against a real OTLP receiver: a real sidecar syncs signed bundles from a
//! real bundle server on 127.0.0.1 and exports a `bundle.sync` trace per round, with download,
//! verify and activate children; a refused signature is an error span; a tiny export queue in
//! front of a collector that never answers drops spans, counted on `/metrics`.

mod server_support;
mod sync_support;

use std::time::Duration;

use regent_sidecar::config::SidecarConfig;
use regent_sidecar::sync::trace::{attr, ACTIVATE_SPAN, DOWNLOAD_SPAN, SYNC_SPAN, VERIFY_SPAN};
use regent_sidecar::sync::{BundleSource, KeyConfig, PollingConfig};
use regent_sidecar::telemetry::Exporter;
use regent_telemetry::testkit::{
    children, grpc_receiver, int_attr, is_error, silent_receiver, string_attr, Span,
};
use server_support::{base_config, eventually, metric, Sidecar};
use sync_support::{key_pair, signed};

const WAIT: Duration = Duration::from_secs(20);

/// A sidecar syncing bundle `authz` from `url` with the public key `public` as `k1`, tracing to
/// the OTLP/gRPC receiver at `endpoint`, polling every second; `tweak` edits the rest.
async fn sidecar(
    url: String,
    public: &str,
    endpoint: String,
    tweak: impl FnOnce(&mut SidecarConfig),
) -> Sidecar {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("k1.pem");
    std::fs::write(&key_file, public).expect("write key");
    let mut cfg = base_config();
    cfg.sync.bundles = vec![BundleSource {
        name: "authz".into(),
        url,
        roots: None,
        long_poll_timeout_seconds: None,
    }];
    cfg.sync.keys = vec![KeyConfig {
        kid: "k1".into(),
        public_key_file: Some(key_file),
        ..KeyConfig::default()
    }];
    cfg.sync.polling = PollingConfig {
        min_delay_seconds: 1,
        max_delay_seconds: 1,
        long_poll_timeout_seconds: 0,
    };
    cfg.tracing.exporter = Exporter::OtlpGrpc;
    cfg.tracing.endpoint = Some(endpoint);
    cfg.tracing.export_timeout_seconds = 2;
    tweak(&mut cfg);
    Sidecar::start_with(cfg, dir).await
}

/// The one child of `round` named `name`.
fn child<'s>(spans: &'s [Span], round: &Span, name: &str) -> &'s Span {
    let found: Vec<&Span> = children(spans, round)
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {name} under {round:#?}: {spans:#?}");
    found[0]
}

fn rounds<'s>(spans: &'s [Span], result: &str) -> Vec<&'s Span> {
    spans
        .iter()
        .filter(|s| s.name == SYNC_SPAN && string_attr(s, attr::RESULT).as_deref() == Some(result))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_round_is_a_trace_with_download_verify_and_activate_children() {
    let (key, public) = key_pair();
    let (other_key, _) = key_pair();
    let (server, base) = sync_support::start().await;
    server.publish(signed("r1", &key, 100), "\"e1\"");
    let (addr, received) = grpc_receiver().await;
    // Credentials in the URL must not reach the spans.
    let url = base.replacen("http://", "http://user:secret@", 1) + "/bundles/authz?token=t0ken";
    let s = sidecar(url, &public, format!("http://{addr}"), |_| {}).await;
    assert!(
        eventually(WAIT, || s.revision("authz") == "r1").await,
        "r1 never activated"
    );
    // A poll finds nothing new: asked with r1's ETag, answered 304.
    let revalidated = || {
        server
            .seen()
            .iter()
            .any(|r| r.if_none_match.as_deref() == Some("\"e1\""))
    };
    assert!(eventually(WAIT, revalidated).await, "r1 never revalidated");
    // Signed by a key the sidecar does not have: refused at verify.
    server.publish(signed("r2", &other_key, 200), "\"e2\"");
    assert!(
        eventually(WAIT, || s.sync_failing("authz")).await,
        "r2 never refused"
    );
    s.stop().await;

    let spans: Vec<Span> = received.spans().into_iter().map(|(_, s)| s).collect();
    let activated = rounds(&spans, "activated");
    assert_eq!(activated.len(), 1, "{spans:#?}");
    let round = activated[0];
    assert!(round.parent_span_id.is_empty(), "a root span: {round:#?}");
    assert_eq!(string_attr(round, attr::BUNDLE).as_deref(), Some("authz"));
    assert_eq!(
        string_attr(round, attr::SOURCE).as_deref(),
        Some("download")
    );
    assert_eq!(string_attr(round, attr::REVISION).as_deref(), Some("r1"));
    assert!(!is_error(round));

    let download = child(&spans, round, DOWNLOAD_SPAN);
    let url = string_attr(download, attr::URL).expect("url");
    assert!(url.ends_with("/bundles/authz"), "{url}");
    assert!(
        !url.contains("secret") && !url.contains("user") && !url.contains("t0ken"),
        "{url}"
    );
    assert_eq!(int_attr(download, attr::HTTP_STATUS), Some(200));
    assert_eq!(
        int_attr(download, attr::BYTES),
        Some(signed("r1", &key, 100).len() as i64)
    );
    assert_eq!(string_attr(download, attr::ETAG).as_deref(), Some("\"e1\""));

    let verify = child(&spans, round, VERIFY_SPAN);
    assert_eq!(string_attr(verify, attr::RESULT).as_deref(), Some("ok"));
    assert_eq!(
        string_attr(verify, attr::SIGNING_KID).as_deref(),
        Some("k1")
    );

    let activate = child(&spans, round, ACTIVATE_SPAN);
    assert_eq!(string_attr(activate, attr::RESULT).as_deref(), Some("ok"));
    assert_eq!(string_attr(activate, attr::REVISION).as_deref(), Some("r1"));
    let evaluator = string_attr(activate, attr::EVALUATOR);
    assert!(
        matches!(evaluator.as_deref(), Some("vm" | "interpreter")),
        "{evaluator:?}"
    );
    // In order: the download ends before the verify starts, the verify before the activate.
    assert!(download.end_time_unix_nano <= verify.start_time_unix_nano);
    assert!(verify.end_time_unix_nano <= activate.start_time_unix_nano);
    assert!(activate.end_time_unix_nano <= round.end_time_unix_nano);

    // Polls between the two publications found nothing new.
    let unchanged = rounds(&spans, "not_modified");
    assert!(!unchanged.is_empty(), "{spans:#?}");
    let d = child(&spans, unchanged[0], DOWNLOAD_SPAN);
    assert_eq!(int_attr(d, attr::HTTP_STATUS), Some(304));

    let refused = rounds(&spans, "refused");
    assert!(!refused.is_empty(), "{spans:#?}");
    let round = refused[0];
    assert!(is_error(round), "{round:#?}");
    let verify = child(&spans, round, VERIFY_SPAN);
    assert!(is_error(verify), "{verify:#?}");
    assert_eq!(
        string_attr(verify, attr::RESULT).as_deref(),
        Some("refused")
    );
    assert_eq!(
        string_attr(verify, attr::REASON).as_deref(),
        Some("signature")
    );
    let message = &verify.status.as_ref().expect("status").message;
    assert!(message.contains("signature"), "{message}");
    // Nothing is activated after a refused verify.
    assert!(children(&spans, round)
        .iter()
        .all(|s| s.name != ACTIVATE_SPAN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_download_is_an_error_span() {
    let (_, public) = key_pair();
    let (server, base) = sync_support::start().await;
    server.set(|s| s.fail_with = Some(503));
    let (addr, received) = grpc_receiver().await;
    let s = sidecar(
        format!("{base}/bundles/authz"),
        &public,
        format!("http://{addr}"),
        |_| {},
    )
    .await;
    assert!(
        eventually(WAIT, || s.sync_failing("authz")).await,
        "the download never failed"
    );
    s.stop().await;
    let spans: Vec<Span> = received.spans().into_iter().map(|(_, s)| s).collect();
    let failed = rounds(&spans, "error");
    assert!(!failed.is_empty(), "{spans:#?}");
    assert!(is_error(failed[0]));
    let download = child(&spans, failed[0], DOWNLOAD_SPAN);
    assert!(is_error(download));
    assert_eq!(int_attr(download, attr::HTTP_STATUS), Some(503));
    assert_eq!(
        string_attr(download, attr::RESULT).as_deref(),
        Some("error")
    );
}

/// One span of queue and a collector that never answers: a round's spans overflow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_export_queue_drops_spans_and_counts_them_on_metrics() {
    let (key, public) = key_pair();
    let (server, base) = sync_support::start().await;
    server.publish(signed("r1", &key, 100), "\"e1\"");
    let (addr, held) = silent_receiver().await;
    let s = sidecar(
        format!("{base}/bundles/authz"),
        &public,
        format!("http://{addr}"),
        |cfg| {
            cfg.tracing.max_queue_size = 1;
            cfg.tracing.max_export_batch_size = 1;
        },
    )
    .await;
    let dropped = || {
        metric(
            &s.running.metrics.render(),
            "regent_tracing_spans_dropped_total",
        )
        .unwrap_or(0.0)
    };
    assert!(
        eventually(WAIT, || dropped() >= 1.0).await,
        "{}",
        s.running.metrics.render()
    );
    assert!(s.revision("authz") == "r1", "sync goes on regardless");
    tokio::time::timeout(Duration::from_secs(20), s.stop())
        .await
        .expect("shutdown is bounded");
    held.abort();
}

#[tokio::test]
async fn the_tracing_metrics_are_at_zero_with_tracing_off() {
    let s = Sidecar::start("package envoy.authz\nallow := true\n", None, |_, _| {}).await;
    let text = s.running.metrics.render();
    assert_eq!(
        metric(&text, "regent_tracing_spans_dropped_total"),
        Some(0.0),
        "{text}"
    );
    for result in regent_telemetry::EXPORT_RESULTS {
        let sample = format!(r#"regent_tracing_exports_total{{result="{result}"}}"#);
        assert_eq!(metric(&text, &sample), Some(0.0), "{sample}: {text}");
    }
    s.stop().await;
}
