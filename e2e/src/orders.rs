//! The example gRPC service `regent.example.v1.Orders` (proto/regent/example/v1/orders.proto).
//!
//! The messages are written out with `prost` derives instead of being generated in a build
//! script: that keeps protoc/prost-build out of the build, and the test
//! `messages_match_committed_descriptor` checks every field name, number and type against the
//! committed descriptor set `proto/orders.pb`, so the two cannot drift apart silently.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Fully qualified service name (the first path segment of every call).
pub const SERVICE: &str = "regent.example.v1.Orders";
/// `GetOrder` call path.
pub const GET_ORDER_PATH: &str = "/regent.example.v1.Orders/GetOrder";
/// `CreateRefund` call path.
pub const CREATE_REFUND_PATH: &str = "/regent.example.v1.Orders/CreateRefund";

/// `regent.example.v1.OrderStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum OrderStatus {
    /// ORDER_STATUS_UNSPECIFIED
    Unspecified = 0,
    /// ORDER_STATUS_OPEN
    Open = 1,
    /// ORDER_STATUS_SHIPPED
    Shipped = 2,
    /// ORDER_STATUS_REFUNDED
    Refunded = 3,
}

/// `regent.example.v1.GetOrderRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOrderRequest {
    /// order_id = 1
    #[prost(string, tag = "1")]
    pub order_id: String,
    /// tenant_id = 2
    #[prost(string, tag = "2")]
    pub tenant_id: String,
    /// amount_cents = 3
    #[prost(int64, tag = "3")]
    pub amount_cents: i64,
    /// include_items = 4
    #[prost(bool, tag = "4")]
    pub include_items: bool,
}

/// `regent.example.v1.Order`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Order {
    /// order_id = 1
    #[prost(string, tag = "1")]
    pub order_id: String,
    /// tenant_id = 2
    #[prost(string, tag = "2")]
    pub tenant_id: String,
    /// amount_cents = 3
    #[prost(int64, tag = "3")]
    pub amount_cents: i64,
    /// status = 4
    #[prost(enumeration = "OrderStatus", tag = "4")]
    pub status: i32,
    /// items = 5
    #[prost(string, repeated, tag = "5")]
    pub items: Vec<String>,
    /// created_at = 6
    #[prost(message, optional, tag = "6")]
    pub created_at: Option<prost_types::Timestamp>,
}

/// `regent.example.v1.CreateRefundRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateRefundRequest {
    /// order_id = 1
    #[prost(string, tag = "1")]
    pub order_id: String,
    /// tenant_id = 2
    #[prost(string, tag = "2")]
    pub tenant_id: String,
    /// amount_cents = 3
    #[prost(int64, tag = "3")]
    pub amount_cents: i64,
    /// reason = 4
    #[prost(string, tag = "4")]
    pub reason: String,
    /// expected_status = 5
    #[prost(enumeration = "OrderStatus", tag = "5")]
    pub expected_status: i32,
}

/// `regent.example.v1.Refund`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Refund {
    /// refund_id = 1
    #[prost(string, tag = "1")]
    pub refund_id: String,
    /// order_id = 2
    #[prost(string, tag = "2")]
    pub order_id: String,
    /// amount_cents = 3
    #[prost(int64, tag = "3")]
    pub amount_cents: i64,
}

/// `regent.example.v1.UploadOrdersResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UploadOrdersResponse {
    /// accepted = 1
    #[prost(int32, tag = "1")]
    pub accepted: i32,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The Orders service: answers every call with data derived from the request, so a client can
/// tell its call really reached the upstream.
#[derive(Clone, Default)]
pub struct OrdersServer {
    refunds: Arc<AtomicU64>,
}

impl OrdersServer {
    /// A new server with no refunds made.
    pub fn new() -> Self {
        Self::default()
    }
}

impl tonic::server::NamedService for OrdersServer {
    const NAME: &'static str = SERVICE;
}

struct GetOrderCall;

impl tonic::server::UnaryService<GetOrderRequest> for GetOrderCall {
    type Response = Order;
    type Future = BoxFuture<tonic::Response<Order>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<GetOrderRequest>) -> Self::Future {
        let req = request.into_inner();
        Box::pin(async move {
            if req.order_id.is_empty() {
                return Err(tonic::Status::invalid_argument("order_id is required"));
            }
            let items = if req.include_items {
                vec!["book".to_string(), "pen".to_string()]
            } else {
                Vec::new()
            };
            Ok(tonic::Response::new(Order {
                order_id: req.order_id,
                tenant_id: req.tenant_id,
                amount_cents: req.amount_cents,
                status: OrderStatus::Open as i32,
                items,
                created_at: None,
            }))
        })
    }
}

struct CreateRefundCall(Arc<AtomicU64>);

impl tonic::server::UnaryService<CreateRefundRequest> for CreateRefundCall {
    type Response = Refund;
    type Future = BoxFuture<tonic::Response<Refund>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<CreateRefundRequest>) -> Self::Future {
        let req = request.into_inner();
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        Box::pin(async move {
            Ok(tonic::Response::new(Refund {
                refund_id: format!("refund-{n}"),
                order_id: req.order_id,
                amount_cents: req.amount_cents,
            }))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for OrdersServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            GET_ORDER_PATH => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(GetOrderCall, req).await)
            }),
            CREATE_REFUND_PATH => {
                let refunds = self.refunds.clone();
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                    Ok(grpc.unary(CreateRefundCall(refunds), req).await)
                })
            }
            _ => Box::pin(async move {
                Ok(
                    tonic::Status::unimplemented("method not implemented by the e2e upstream")
                        .into_http(),
                )
            }),
        }
    }
}

/// Calls `GetOrder` over `channel`, with extra request metadata (e.g. `x-user`).
pub async fn get_order(
    channel: tonic::transport::Channel,
    metadata: &[(&'static str, &str)],
    req: GetOrderRequest,
) -> Result<Order, tonic::Status> {
    unary(channel, GET_ORDER_PATH, metadata, req).await
}

/// Calls `CreateRefund` over `channel`, with extra request metadata.
pub async fn create_refund(
    channel: tonic::transport::Channel,
    metadata: &[(&'static str, &str)],
    req: CreateRefundRequest,
) -> Result<Refund, tonic::Status> {
    unary(channel, CREATE_REFUND_PATH, metadata, req).await
}

async fn unary<Req, Resp>(
    channel: tonic::transport::Channel,
    path: &'static str,
    metadata: &[(&'static str, &str)],
    req: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
    let mut request = tonic::Request::new(req);
    for (k, v) in metadata {
        let value = v
            .parse()
            .map_err(|_| tonic::Status::invalid_argument(format!("bad metadata value for {k}")))?;
        request.metadata_mut().insert(*k, value);
    }
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(request, http::uri::PathAndQuery::from_static(path), codec)
        .await
        .map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

    fn pool() -> DescriptorPool {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/orders.pb");
        let bytes = std::fs::read(path).unwrap();
        DescriptorPool::decode(bytes.as_slice()).unwrap()
    }

    /// (name, number, kind name, repeated) of each field, sorted by number.
    fn fields(m: &MessageDescriptor) -> Vec<(String, u32, String, bool)> {
        let mut v: Vec<_> = m
            .fields()
            .map(|f| {
                let kind = match f.kind() {
                    Kind::Message(m) => m.full_name().to_string(),
                    Kind::Enum(e) => e.full_name().to_string(),
                    other => format!("{other:?}"),
                };
                (f.name().to_string(), f.number(), kind, f.is_list())
            })
            .collect();
        v.sort_by_key(|f| f.1);
        v
    }

    fn s(name: &str, n: u32, kind: &str, rep: bool) -> (String, u32, String, bool) {
        (name.to_string(), n, kind.to_string(), rep)
    }

    #[test]
    fn messages_match_committed_descriptor() {
        let pool = pool();
        let get = |n: &str| pool.get_message_by_name(n).unwrap();
        assert_eq!(
            fields(&get("regent.example.v1.GetOrderRequest")),
            vec![
                s("order_id", 1, "string", false),
                s("tenant_id", 2, "string", false),
                s("amount_cents", 3, "int64", false),
                s("include_items", 4, "bool", false),
            ]
        );
        assert_eq!(
            fields(&get("regent.example.v1.Order")),
            vec![
                s("order_id", 1, "string", false),
                s("tenant_id", 2, "string", false),
                s("amount_cents", 3, "int64", false),
                s("status", 4, "regent.example.v1.OrderStatus", false),
                s("items", 5, "string", true),
                s("created_at", 6, "google.protobuf.Timestamp", false),
            ]
        );
        assert_eq!(
            fields(&get("regent.example.v1.CreateRefundRequest")),
            vec![
                s("order_id", 1, "string", false),
                s("tenant_id", 2, "string", false),
                s("amount_cents", 3, "int64", false),
                s("reason", 4, "string", false),
                s("expected_status", 5, "regent.example.v1.OrderStatus", false),
            ]
        );
        assert_eq!(
            fields(&get("regent.example.v1.Refund")),
            vec![
                s("refund_id", 1, "string", false),
                s("order_id", 2, "string", false),
                s("amount_cents", 3, "int64", false),
            ]
        );
        let status = pool
            .get_enum_by_name("regent.example.v1.OrderStatus")
            .unwrap();
        let values: Vec<(String, i32)> = status
            .values()
            .map(|v| (v.name().to_string(), v.number()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("ORDER_STATUS_UNSPECIFIED".to_string(), 0),
                ("ORDER_STATUS_OPEN".to_string(), 1),
                ("ORDER_STATUS_SHIPPED".to_string(), 2),
                ("ORDER_STATUS_REFUNDED".to_string(), 3),
            ]
        );
        let service = pool.get_service_by_name(SERVICE).unwrap();
        let methods: Vec<String> = service.methods().map(|m| m.name().to_string()).collect();
        assert_eq!(methods, vec!["GetOrder", "CreateRefund", "UploadOrders"]);
    }

    #[test]
    fn encoded_request_decodes_with_descriptor() {
        use prost::Message as _;
        let req = CreateRefundRequest {
            order_id: "o-1".into(),
            tenant_id: "t-9".into(),
            amount_cents: 12_345,
            reason: "damaged".into(),
            expected_status: OrderStatus::Shipped as i32,
        };
        let bytes = req.encode_to_vec();
        let desc = pool()
            .get_message_by_name("regent.example.v1.CreateRefundRequest")
            .unwrap();
        let dynamic = prost_reflect::DynamicMessage::decode(desc, bytes.as_slice()).unwrap();
        let json = serde_json::to_value(&dynamic).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "orderId": "o-1", "tenantId": "t-9", "amountCents": "12345",
                "reason": "damaged", "expectedStatus": "ORDER_STATUS_SHIPPED"
            })
        );
    }
}
