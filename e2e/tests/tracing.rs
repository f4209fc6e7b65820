//! Tracing end to end: Envoy's OpenTelemetry tracer and the sidecar export to one OTLP/gRPC
//! receiver in the test (regent-telemetry's testkit, on opentelemetry-proto's generated service). A request through Envoy gives
//! the sidecar's `ext_authz.check` span Envoy's trace id, with an Envoy span as its parent, and
//! the decision log event carries that trace id.

mod common;

use std::time::Duration;

use anyhow::Result;
use regent_e2e::envoy::{Envoy, EnvoyOptions};
use regent_e2e::http::send;
use regent_e2e::jwt::Issuer;
use regent_e2e::sidecar::{Sidecar, SidecarOptions};
use regent_e2e::wait;
use regent_telemetry::testkit::{grpc_receiver, hex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecars_check_span_is_a_child_of_envoys_ext_authz_span() -> Result<()> {
    let mut h = common::harness("tracing")?;
    let issuer = Issuer::generate()?;
    let (otlp_addr, received) = grpc_receiver().await;
    let otlp_port = otlp_addr.port();
    let chain = common::Chain::start(&h, &issuer).await?;
    let mut opts: SidecarOptions = chain.sidecar_options(&h)?;
    opts.otlp_endpoint = Some(format!("http://127.0.0.1:{otlp_port}"));
    let log = h.path("decisions.jsonl")?;
    opts.decision_log = Some(log.clone());
    let mut sidecar = Sidecar::start(&h, "sidecar", opts).await?;
    sidecar
        .wait_revision(&chain.seed_commit, Duration::from_secs(60))
        .await?;
    let mut eopts = EnvoyOptions::free(
        sidecar.opts.grpc_port,
        chain.ups.echo.port,
        chain.ups.orders.port,
    )?;
    eopts.otlp_port = Some(otlp_port);
    let envoy = Envoy::start(&h, "envoy", eopts).await?;

    let answer = send(
        common::client()
            .get(envoy.url("/api/items/1"))
            .header("x-user", "alice"),
    )
    .await?;
    assert_eq!(answer.status, 200);

    // Both export in batches (Envoy and the SDK flush every few seconds).
    let (check, parent) = wait::until(
        "the sidecar's Check span and its Envoy parent at the receiver",
        Duration::from_secs(60),
        || async {
            let spans = received.spans();
            let Some((_, check)) = spans.iter().find(|(svc, s)| {
                svc.as_deref() == Some("regent-sidecar") && s.name == "ext_authz.check"
            }) else {
                return Ok(None);
            };
            let parent = spans
                .iter()
                .find(|(svc, s)| {
                    svc.as_deref() == Some("envoy") && s.span_id == check.parent_span_id
                })
                .map(|(_, s)| s.clone());
            Ok(parent.map(|p| (check.clone(), p)))
        },
    )
    .await?;
    assert_eq!(check.trace_id, parent.trace_id, "one trace");
    assert!(
        parent.name.contains("ext_authz") || parent.name.contains("async"),
        "the parent is Envoy's ext_authz call span, got {:?}",
        parent.name
    );

    // The decision log event of that Check names the trace.
    let trace_id = hex(&check.trace_id);
    let events = wait::until(
        "the decision log event",
        Duration::from_secs(20),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let events: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            Ok((!events.is_empty()).then_some(events))
        },
    )
    .await?;
    assert!(
        events.iter().any(|e| e["trace_id"] == trace_id.as_str()),
        "no event with trace_id {trace_id}: {events:?}"
    );
    drop(envoy);
    drop(sidecar);
    h.pass();
    Ok(())
}
