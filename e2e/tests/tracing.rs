//! Tracing end to end: Envoy's OpenTelemetry tracer and the sidecar export to one OTLP/gRPC
//! receiver in the test (opentelemetry-proto's generated service). A request through Envoy gives
//! the sidecar's `ext_authz.check` span Envoy's trace id, with an Envoy span as its parent, and
//! the decision log event carries that trace id.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use regent_e2e::envoy::{Envoy, EnvoyOptions};
use regent_e2e::http::send;
use regent_e2e::jwt::Issuer;
use regent_e2e::sidecar::{Sidecar, SidecarOptions};
use regent_e2e::wait;

/// Every span received, with its resource's `service.name`.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().expect("lock").clone()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.0.lock().expect("lock");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn receiver() -> Result<(u16, Received)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let received = Received::default();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    Ok((port, received))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecars_check_span_is_a_child_of_envoys_ext_authz_span() -> Result<()> {
    let mut h = common::harness("tracing")?;
    let issuer = Issuer::generate()?;
    let (otlp_port, received) = receiver().await?;
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
            let Some((_, check)) = spans
                .iter()
                .find(|(svc, s)| svc == "regent-sidecar" && s.name == "ext_authz.check")
            else {
                return Ok(None);
            };
            let parent = spans
                .iter()
                .find(|(svc, s)| svc == "envoy" && s.span_id == check.parent_span_id)
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
