//! An OTLP receiver on 127.0.0.1 for tests: opentelemetry-proto's generated TraceService over
//! gRPC, or an HTTP endpoint decoding the same protobuf messages, keeping every request it is
//! sent; and the helpers to read the spans back. Also a logs receiver over gRPC.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
pub use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
pub use opentelemetry_proto::tonic::logs::v1::LogRecord;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// What the receiver was sent.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    fn push(&self, r: ExportTraceServiceRequest) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(r);
    }

    /// Every span received, with the resource's `service.name`.
    pub fn spans(&self) -> Vec<(Option<String>, Span)> {
        let requests = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for req in requests.iter() {
            for rs in &req.resource_spans {
                let service = rs.resource.as_ref().and_then(|r| {
                    r.attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
                });
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    /// Every span received named `name`.
    pub fn named(&self, name: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    }

    /// Waits until `pred` holds for the spans received, at most `timeout`; whether it held.
    pub async fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&[Span]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans: Vec<Span> = self.spans().into_iter().map(|(_, s)| s).collect();
            if pred(&spans) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The string in `v`, if it is one.
pub fn string(v: &Any) -> Option<String> {
    match v {
        Any::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Serves one gRPC service on `listener`, in a task of its own.
fn serve_grpc<S>(listener: tokio::net::TcpListener, service: S)
where
    S: tonic::server::NamedService
        + tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("receiver serves");
    });
}

/// An OTLP/gRPC receiver on 127.0.0.1; returns its address and what it receives.
pub async fn grpc_receiver() -> (SocketAddr, Received) {
    let (listener, addr) = bind().await;
    let received = Received::default();
    serve_grpc(listener, TraceServiceServer::new(received.clone()));
    (addr, received)
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on 127.0.0.1.
pub async fn http_receiver() -> (SocketAddr, Received) {
    let (listener, addr) = bind().await;
    let received = Received::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: bytes::Bytes| {
            let store = store.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(req) => {
                        store.push(req);
                        (
                            http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                    Err(_) => (
                        http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        b"not an ExportTraceServiceRequest".to_vec(),
                    ),
                }
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("receiver serves");
    });
    (addr, received)
}

/// A collector on 127.0.0.1 that accepts connections and never answers; the task holding them
/// is returned, to be aborted.
pub async fn silent_receiver() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (listener, addr) = bind().await;
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    (addr, held)
}

/// Lower-case hex of `bytes` (trace and span ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of attribute `key` of `span`.
pub fn attribute<'s>(span: &'s Span, key: &str) -> Option<&'s Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// The string attribute `key` of `span`.
pub fn string_attr(span: &Span, key: &str) -> Option<String> {
    attribute(span, key).and_then(string)
}

/// The integer attribute `key` of `span`.
pub fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key) {
        Some(Any::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// The one span whose parent is `parent` (hex), panicking with the spans otherwise.
pub fn child_of<'s>(spans: &'s [(Option<String>, Span)], parent: &str) -> &'s Span {
    let found: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.parent_span_id) == parent)
        .collect();
    assert_eq!(found.len(), 1, "one span with parent {parent}: {spans:#?}");
    found[0]
}

/// The spans among `spans` whose parent is `parent`, by name.
pub fn children<'s>(spans: &'s [Span], parent: &Span) -> Vec<&'s Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect()
}

/// Whether `span` has the error status.
pub fn is_error(span: &Span) -> bool {
    // STATUS_CODE_ERROR
    span.status.as_ref().is_some_and(|s| s.code == 2)
}

/// What an OTLP/gRPC logs receiver was sent: the log records, in arrival order.
#[derive(Clone, Default)]
pub struct ReceivedLogs(Arc<Mutex<Vec<LogRecord>>>);

impl ReceivedLogs {
    /// Every record received so far.
    pub fn records(&self) -> Vec<LogRecord> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[tonic::async_trait]
impl LogsService for ReceivedLogs {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let records = request
            .into_inner()
            .resource_logs
            .into_iter()
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(records);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// An OTLP/gRPC logs receiver on 127.0.0.1; returns its address and what it receives.
pub async fn grpc_logs_receiver() -> (SocketAddr, ReceivedLogs) {
    let (listener, addr) = bind().await;
    let received = ReceivedLogs::default();
    serve_grpc(listener, LogsServiceServer::new(received.clone()));
    (addr, received)
}
