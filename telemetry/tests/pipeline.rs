//! The export pipeline against real OTLP receivers on 127.0.0.1: spans arrive, and the export
//! metrics count what the batch processor alone would only log.

use std::time::Duration;

use opentelemetry::trace::{Span as _, Tracer as _};
use regent_telemetry::testkit::{grpc_receiver, silent_receiver};
use regent_telemetry::{Exporter, Pipeline, TracingConfig, TracingMetrics};

fn config(endpoint: String) -> TracingConfig {
    TracingConfig {
        exporter: Exporter::OtlpGrpc,
        endpoint: Some(endpoint),
        export_timeout_seconds: 1,
        ..TracingConfig::for_service("pipeline-under-test")
    }
}

#[tokio::test]
async fn off_starts_nothing() {
    let metrics = TracingMetrics::register(&prometheus::Registry::new()).expect("metrics");
    let pipeline = Pipeline::start(&TracingConfig::default(), &metrics).expect("starts");
    assert!(pipeline.is_none());
}

#[tokio::test]
async fn spans_are_exported_and_counted() {
    let (addr, received) = grpc_receiver().await;
    let registry = prometheus::Registry::new();
    let metrics = TracingMetrics::register(&registry).expect("metrics");
    let pipeline = Pipeline::start(&config(format!("http://{addr}")), &metrics)
        .expect("starts")
        .expect("on");
    let tracer = pipeline.tracer("test");
    for _ in 0..3 {
        tracer.start("unit").end();
    }
    pipeline.shutdown().await;
    let spans = received.spans();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(spans
        .iter()
        .all(|(service, _)| service.as_deref() == Some("pipeline-under-test")));
    assert_eq!(metrics.spans_dropped.get(), 0);
    assert!(metrics.exports.with_label_values(&["ok"]).get() >= 1);
    assert_eq!(metrics.exports.with_label_values(&["error"]).get(), 0);
}

/// A queue of one span and a collector that never answers: the first span waits in the export,
/// the next fills the queue, the rest are dropped, and counted.
#[tokio::test]
async fn a_full_queue_drops_spans_and_counts_them() {
    let (addr, held) = silent_receiver().await;
    let registry = prometheus::Registry::new();
    let metrics = TracingMetrics::register(&registry).expect("metrics");
    let mut cfg = config(format!("http://{addr}"));
    cfg.max_queue_size = 1;
    cfg.max_export_batch_size = 1;
    let pipeline = Pipeline::start(&cfg, &metrics)
        .expect("starts")
        .expect("on");
    let tracer = pipeline.tracer("test");
    for _ in 0..50 {
        tracer.start("unit").end();
        tokio::task::yield_now().await;
    }
    let dropped = metrics.spans_dropped.get();
    // At most one span in the export and one queued behind it.
    assert!(dropped >= 48, "dropped {dropped}");
    let text = {
        let mut buf = String::new();
        for family in registry.gather() {
            for m in family.get_metric() {
                buf.push_str(&format!(
                    "{} {}\n",
                    family.name(),
                    m.get_counter().get_value()
                ));
            }
        }
        buf
    };
    assert!(
        text.contains(&format!("regent_tracing_spans_dropped_total {dropped}")),
        "{text}"
    );
    // The export in flight is abandoned at export_timeout_seconds, and counted so.
    let failed = || {
        metrics.exports.with_label_values(&["timeout"]).get()
            + metrics.exports.with_label_values(&["error"]).get()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while failed() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed() >= 1, "no failed export counted");
    assert_eq!(metrics.exports.with_label_values(&["ok"]).get(), 0);
    tokio::time::timeout(Duration::from_secs(10), pipeline.shutdown())
        .await
        .expect("shutdown is bounded");
    held.abort();
}
