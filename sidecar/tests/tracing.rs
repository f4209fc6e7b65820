//! Tracing of Checks against a real OTLP receiver: opentelemetry-proto's generated TraceService
//! (and, for `otlp_http`, an HTTP endpoint decoding the same protobuf messages), served on
//! 127.0.0.1 while a real sidecar answers real gRPC and HTTP-service Checks.
//!
//! Spans are read after the sidecar has stopped: shutdown flushes the batch queue, so what the
//! receiver holds then is everything the sidecar exported.

mod server_support;

use std::time::Duration;

use regent_sidecar::config::{LogOutput, SidecarConfig};
use regent_sidecar::telemetry::{attr, Exporter, CHECK_SPAN};
use regent_telemetry::testkit::{
    attribute, child_of, grpc_logs_receiver, grpc_receiver, hex, http_receiver, int_attr,
    silent_receiver, string, string_attr, Any, LogRecord, SpanKind,
};
use server_support::*;

/// Names one header; an unknown x-user leaves the decision undefined (an error).
const POLICY: &str = r#"
package envoy.authz

import rego.v1

user := input.attributes.request.http.headers["x-user"]

allow := true if user == "alice"

allow := false if user == "bob"
"#;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, parent: &str, sampled: bool) -> String {
    format!("00-{trace}-{parent}-{}", if sampled { "01" } else { "00" })
}

/// A sidecar tracing to `endpoint` (with `exporter`), its policy active; `tweak` edits the rest.
async fn sidecar(
    exporter: Exporter,
    endpoint: String,
    tweak: impl FnOnce(&mut SidecarConfig, &std::path::Path),
) -> Sidecar {
    let s = Sidecar::start(POLICY, None, |cfg, dir| {
        std::fs::write(
            dir.join("policy").join(".manifest"),
            r#"{"revision": "r42"}"#,
        )
        .expect("manifest");
        cfg.tracing.exporter = exporter;
        cfg.tracing.endpoint = Some(endpoint);
        cfg.tracing.service_name = "authz-under-test".into();
        cfg.tracing.export_timeout_seconds = 5;
        tweak(cfg, dir);
    })
    .await;
    let ready = eventually(Duration::from_secs(10), || s.running.store.is_ready()).await;
    assert!(ready, "the policy is activated");
    s
}

#[tokio::test]
async fn checks_with_a_traceparent_are_children_of_the_caller_with_the_decision() {
    let (addr, received) = grpc_receiver().await;
    let s = sidecar(Exporter::OtlpGrpc, format!("http://{addr}"), |_, _| {}).await;
    let parents = ["1111111111111111", "2222222222222222", "3333333333333333"];
    let mut ids = Vec::new();
    for (user, parent) in [
        ("alice", parents[0]),
        ("bob", parents[1]),
        ("eve", parents[2]),
    ] {
        let req = get("/orders")
            .header("x-user", user)
            .header("traceparent", &traceparent(TRACE, parent, true))
            .header("tracestate", "vendor=value")
            .build();
        match s.check(req).await {
            Ok(r) => ids.push(metadata(&r, "decision_id").expect("decision id")),
            // The undefined decision: no answer, Envoy's failure mode applies.
            Err(status) => assert!(
                status.message().contains("undefined_decision"),
                "{status:?}"
            ),
        }
    }
    s.stop().await;

    let spans = received.spans();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    for (service, span) in &spans {
        assert_eq!(service.as_deref(), Some("authz-under-test"));
        assert_eq!(span.name, CHECK_SPAN);
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(hex(&span.trace_id), TRACE, "the caller's trace");
        assert_eq!(span.trace_state, "vendor=value");
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        let evaluator = string_attr(span, attr::EVALUATOR);
        assert!(
            matches!(evaluator.as_deref(), Some("vm" | "interpreter")),
            "{evaluator:?}"
        );
        match attribute(span, attr::BUNDLE_REVISIONS) {
            Some(Any::ArrayValue(a)) => {
                let revs: Vec<Option<String>> = a
                    .values
                    .iter()
                    .map(|v| v.value.as_ref().and_then(string))
                    .collect();
                assert_eq!(revs, [Some("local=r42".to_string())]);
            }
            other => panic!("bundle revisions: {other:?}"),
        }
        assert!(int_attr(span, attr::INPUT_NS).is_some_and(|ns| ns >= 0));
    }

    let allowed = child_of(&spans, parents[0]);
    assert_eq!(
        string_attr(allowed, attr::DECISION).as_deref(),
        Some("allow")
    );
    assert_eq!(string_attr(allowed, attr::REASON), None);
    assert_eq!(
        string_attr(allowed, attr::DECISION_ID),
        Some(ids[0].clone())
    );
    assert!(int_attr(allowed, attr::EVAL_NS).is_some_and(|ns| ns > 0));

    let denied = child_of(&spans, parents[1]);
    assert_eq!(string_attr(denied, attr::DECISION).as_deref(), Some("deny"));
    assert_eq!(string_attr(denied, attr::DECISION_ID), Some(ids[1].clone()));

    let failed = child_of(&spans, parents[2]);
    assert_eq!(
        string_attr(failed, attr::DECISION).as_deref(),
        Some("error")
    );
    assert_eq!(
        string_attr(failed, attr::REASON).as_deref(),
        Some("undefined_decision")
    );
    let status = failed.status.as_ref().expect("status");
    assert_eq!(status.code, 2, "STATUS_CODE_ERROR: {status:?}");
}

#[tokio::test]
async fn a_check_without_a_parent_starts_a_trace_and_unsampled_parents_are_followed() {
    let (addr, received) = grpc_receiver().await;
    let s = sidecar(Exporter::OtlpGrpc, format!("http://{addr}"), |_, _| {}).await;
    s.check(get("/").header("x-user", "alice").build())
        .await
        .expect("answers");
    // A caller that did not sample: its decision is kept, nothing is exported for it.
    let unsampled = get("/")
        .header("x-user", "alice")
        .header("traceparent", &traceparent(TRACE, PARENT, false))
        .build();
    s.check(unsampled).await.expect("answers");
    s.stop().await;

    let spans = received.spans();
    assert_eq!(spans.len(), 1, "only the root: {spans:#?}");
    let root = &spans[0].1;
    assert!(root.parent_span_id.is_empty(), "{root:?}");
    assert_eq!(root.trace_id.len(), 16);
    assert_ne!(hex(&root.trace_id), TRACE);
    assert!(root.trace_id.iter().any(|b| *b != 0));
    assert_eq!(string_attr(root, attr::DECISION).as_deref(), Some("allow"));
}

#[tokio::test]
async fn sample_ratio_zero_exports_no_new_trace_but_follows_sampled_callers() {
    let (addr, received) = grpc_receiver().await;
    let s = sidecar(Exporter::OtlpGrpc, format!("http://{addr}"), |cfg, _| {
        cfg.tracing.sample_ratio = 0.0;
    })
    .await;
    for _ in 0..20 {
        s.check(get("/").header("x-user", "alice").build())
            .await
            .expect("answers");
    }
    let sampled = get("/")
        .header("x-user", "alice")
        .header("traceparent", &traceparent(TRACE, PARENT, true))
        .build();
    s.check(sampled).await.expect("answers");
    s.stop().await;

    let spans = received.spans();
    assert_eq!(spans.len(), 1, "only the sampled caller's: {spans:#?}");
    assert_eq!(hex(&spans[0].1.trace_id), TRACE);
    assert_eq!(hex(&spans[0].1.parent_span_id), PARENT);
}

#[tokio::test]
async fn b3_parents_are_followed() {
    let (addr, received) = grpc_receiver().await;
    let s = sidecar(Exporter::OtlpGrpc, format!("http://{addr}"), |cfg, _| {
        // Only a caller's decision (or a deferred one decided here at ratio 0) makes a span.
        cfg.tracing.sample_ratio = 0.0;
    })
    .await;
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let requests = [
        // The single header.
        get("/").header("x-user", "alice").header(
            "b3",
            &format!("{b3_trace}-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"),
        ),
        // The multiple headers, with a 64-bit trace id.
        get("/")
            .header("x-user", "alice")
            .header("x-b3-traceid", "a3ce929d0e0e4736")
            .header("x-b3-spanid", "00000000000004d2")
            .header("x-b3-sampled", "1"),
        // Not sampled by the caller; deferred and decided here (ratio 0): neither is exported.
        get("/")
            .header("x-user", "alice")
            .header("b3", &format!("{b3_trace}-0000000000000001-0")),
        get("/")
            .header("x-user", "alice")
            .header("x-b3-traceid", b3_trace)
            .header("x-b3-spanid", "0000000000000002"),
    ];
    for r in requests {
        s.check(r.build()).await.expect("answers");
    }
    s.stop().await;

    let spans = received.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let single = child_of(&spans, "e457b5a2e4d86bd1");
    assert_eq!(hex(&single.trace_id), b3_trace);
    let multi = child_of(&spans, "00000000000004d2");
    assert_eq!(hex(&multi.trace_id), "0000000000000000a3ce929d0e0e4736");
}

#[tokio::test]
async fn decision_log_events_carry_the_trace_and_span_ids() {
    let (addr, received) = grpc_receiver().await;
    let s = sidecar(Exporter::OtlpGrpc, format!("http://{addr}"), |cfg, dir| {
        cfg.decision_logs.output = LogOutput::File;
        cfg.decision_logs.file = Some(dir.join("decisions.log"));
    })
    .await;
    let log = s.dir.path().join("decisions.log");
    let sampled = get("/")
        .header("x-user", "alice")
        .header("traceparent", &traceparent(TRACE, PARENT, true))
        .build();
    s.check(sampled).await.expect("answers");
    let other = "0af7651916cd43dd8448eb211c80319c";
    let unsampled = get("/")
        .header("x-user", "bob")
        .header("traceparent", &traceparent(other, PARENT, false))
        .build();
    s.check(unsampled).await.expect("answers");
    let logged = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2)
    })
    .await;
    assert!(logged, "two events in {}", log.display());
    // Stopped with the log's directory kept.
    let Sidecar { running, dir, .. } = s;
    running.shutdown().await;

    let text = std::fs::read_to_string(&log).expect("log");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    drop(dir);
    let spans = received.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0].1;
    let first = &events[0];
    assert_eq!(first["trace_id"], TRACE, "{first}");
    assert_eq!(first["span_id"], hex(&span.span_id), "{first}");
    assert_eq!(
        first["decision_id"].as_str(),
        string_attr(span, attr::DECISION_ID).as_deref()
    );
    // Not sampled: the event still names the caller's trace, and a span id of its own.
    let second = &events[1];
    assert_eq!(second["trace_id"], other, "{second}");
    let span_id = second["span_id"].as_str().expect("span id");
    assert_eq!(span_id.len(), 16);
    assert_ne!(span_id, PARENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_log_events_are_exported_as_otlp_log_records_of_their_span() {
    let (addr, received) = grpc_receiver().await;
    let (logs_addr, logs) = grpc_logs_receiver().await;
    let s = sidecar(Exporter::OtlpGrpc, format!("http://{addr}"), |cfg, _| {
        cfg.decision_logs.otlp = Some(
            serde_yaml::from_str(&format!(
                "{{exporter: otlp_grpc, endpoint: 'http://{logs_addr}'}}"
            ))
            .expect("otlp section"),
        );
    })
    .await;
    let traced = get("/")
        .header("x-user", "alice")
        .header("authorization", "Bearer user-secret")
        .header("traceparent", &traceparent(TRACE, PARENT, true))
        .build();
    s.check(traced).await.expect("answers");
    s.check(get("/").header("x-user", "bob").build())
        .await
        .expect("answers");
    // Shutdown flushes what is queued.
    s.stop().await;

    let records = logs.records();
    assert_eq!(records.len(), 2, "{records:#?}");
    let spans = received.spans();
    let span = &spans
        .iter()
        .find(|(_, s)| hex(&s.trace_id) == TRACE)
        .expect("the traced Check's span")
        .1;
    let record = records
        .iter()
        .find(|r| hex(&r.trace_id) == TRACE)
        .expect("the traced Check's record");
    assert_eq!(hex(&record.span_id), hex(&span.span_id));
    assert_eq!(record.event_name, "regent.decision");
    let attr = |r: &LogRecord, name: &str| {
        r.attributes
            .iter()
            .find(|kv| kv.key == name)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .and_then(string)
    };
    assert_eq!(
        attr(record, "regent.decision_id"),
        string_attr(span, attr::DECISION_ID)
    );
    assert_eq!(attr(record, "regent.decision").as_deref(), Some("allow"));
    let denied = records
        .iter()
        .find(|r| hex(&r.trace_id) != TRACE)
        .expect("the other Check's record");
    assert_eq!(attr(denied, "regent.decision").as_deref(), Some("deny"));
    let body = record
        .body
        .as_ref()
        .and_then(|b| b.value.as_ref())
        .and_then(string)
        .expect("a string body");
    let event: serde_json::Value = serde_json::from_str(&body).expect("the event as JSON");
    assert_eq!(event["trace_id"], TRACE, "{event}");
    assert_eq!(
        event["erased"][0], "/input/attributes/request/http/headers/authorization",
        "masked as in the other outputs: {event}"
    );
    assert!(!body.contains("user-secret"), "{body}");
}

#[tokio::test]
async fn http_service_mode_checks_are_traced_and_exported_over_otlp_http() {
    let (addr, received) = http_receiver().await;
    let s = sidecar(Exporter::OtlpHttp, format!("http://{addr}"), |cfg, _| {
        cfg.http.ext_authz_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let ext_authz = s.running.ext_authz_addr.expect("ext_authz listener");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let resp = client
        .get(format!("http://{ext_authz}/orders"))
        .header("x-user", "alice")
        .header("traceparent", traceparent(TRACE, PARENT, true))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    s.stop().await;

    let spans = received.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = child_of(&spans, PARENT);
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(string_attr(span, attr::DECISION).as_deref(), Some("allow"));
}

#[tokio::test]
async fn tracing_off_makes_no_span_and_no_ids() {
    let (addr, received) = grpc_receiver().await;
    // The endpoint is ignored while the exporter is `none`.
    let s = sidecar(Exporter::None, format!("http://{addr}"), |cfg, dir| {
        cfg.decision_logs.output = LogOutput::File;
        cfg.decision_logs.file = Some(dir.join("decisions.log"));
    })
    .await;
    let log = s.dir.path().join("decisions.log");
    let req = get("/")
        .header("x-user", "alice")
        .header("traceparent", &traceparent(TRACE, PARENT, true))
        .build();
    s.check(req).await.expect("answers");
    let logged = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1)
    })
    .await;
    assert!(logged);
    let Sidecar { running, dir, .. } = s;
    running.shutdown().await;
    let event: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).expect("log").trim()).expect("json");
    drop(dir);
    assert!(
        event.get("trace_id").is_none() && event.get("span_id").is_none(),
        "{event}"
    );
    assert!(received.spans().is_empty());
}

/// A collector that accepts connections and never answers: Checks are not delayed by it, and
/// shutdown gives up on the last export after `tracing.export_timeout_seconds`.
#[tokio::test]
async fn a_collector_that_never_answers_delays_neither_checks_nor_shutdown() {
    let (addr, held) = silent_receiver().await;
    let s = sidecar(Exporter::OtlpGrpc, format!("http://{addr}"), |cfg, _| {
        cfg.tracing.export_timeout_seconds = 1;
        // Room for every span: shutdown has a batch to export and must give up on it.
        cfg.tracing.max_queue_size = 400;
        cfg.tracing.max_export_batch_size = 200;
    })
    .await;
    let started = std::time::Instant::now();
    for i in 0..50 {
        let parent = format!("{:016x}", i + 1);
        let req = get("/")
            .header("x-user", "alice")
            .header("traceparent", &traceparent(TRACE, &parent, true))
            .build();
        s.check(req).await.expect("answers");
    }
    // Generous for a loaded machine; an export on the Check path would take 1 s each.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let stopping = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), s.stop())
        .await
        .expect("shutdown is bounded");
    // The listeners drain at once; the span flush waits at most export_timeout_seconds.
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );
    held.abort();
}

/// Envoy's gRPC client sends the context of its ext_authz span in the call's metadata; the
/// downstream request's own context is in the CheckRequest. The call's is the direct parent.
#[tokio::test]
async fn the_grpc_calls_own_trace_context_wins_over_the_request_headers() {
    let (addr, received) = grpc_receiver().await;
    let s = sidecar(Exporter::OtlpGrpc, format!("http://{addr}"), |_, _| {}).await;
    let downstream = "0af7651916cd43dd8448eb211c80319c";
    let check = get("/")
        .header("x-user", "alice")
        .header(
            "traceparent",
            &traceparent(downstream, "1111111111111111", true),
        )
        .build();
    let mut call = tonic::Request::new(check);
    call.metadata_mut().insert(
        "traceparent",
        traceparent(TRACE, PARENT, true).parse().expect("metadata"),
    );
    s.client.clone().check(call).await.expect("answers");
    // B3 in the metadata works the same way.
    let mut call = tonic::Request::new(get("/").header("x-user", "alice").build());
    call.metadata_mut().insert(
        "b3",
        format!("{downstream}-2222222222222222-1")
            .parse()
            .expect("metadata"),
    );
    s.client.clone().check(call).await.expect("answers");
    s.stop().await;

    let spans = received.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let from_w3c = child_of(&spans, PARENT);
    assert_eq!(hex(&from_w3c.trace_id), TRACE);
    let from_b3 = child_of(&spans, "2222222222222222");
    assert_eq!(hex(&from_b3.trace_id), downstream);
}
