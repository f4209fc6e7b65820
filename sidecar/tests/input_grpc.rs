//! gRPC request bodies decoded with proto/orders.pb, and the descriptor set kept in sync with proto/.
//!
//! Regenerate proto/orders.pb after editing proto/ with:
//!   REGENT_REGENERATE_PROTO=1 cargo test -p regent-sidecar --test input_grpc committed_descriptor_set_matches_proto_sources

use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value as PValue};
use regent_policy::input::{
    build_input, load_descriptor_set, DescriptorSetError, InputOptions, RequestParseError,
};
use serde_json::{json, Value as Json};

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto")
}

fn committed_pb() -> PathBuf {
    proto_dir().join("orders.pb")
}

fn compile_proto() -> protox::Compiler {
    let mut c = protox::Compiler::new([proto_dir()]).expect("proto dir exists");
    c.include_imports(true).include_source_info(false);
    c.open_file("regent/example/v1/orders.proto")
        .expect("orders.proto compiles");
    c
}

#[test]
fn committed_descriptor_set_matches_proto_sources() {
    let fresh = compile_proto();
    if std::env::var_os("REGENT_REGENERATE_PROTO").is_some() {
        std::fs::write(committed_pb(), fresh.encode_file_descriptor_set())
            .expect("write proto/orders.pb");
    }
    let committed = std::fs::read(committed_pb()).expect("proto/orders.pb is committed");
    let decoded = prost_types::FileDescriptorSet::decode(committed.as_slice())
        .expect("orders.pb is a FileDescriptorSet");
    assert_eq!(
        decoded,
        fresh.file_descriptor_set(),
        "proto/orders.pb is stale: regenerate it (see this file's header)"
    );
    let pool = load_descriptor_set(&committed_pb()).expect("loads");
    let svc = pool
        .get_service_by_name("regent.example.v1.Orders")
        .expect("service present");
    let methods: Vec<String> = svc.methods().map(|m| m.name().to_string()).collect();
    assert_eq!(methods, ["GetOrder", "CreateRefund", "UploadOrders"]);
    // --include_imports: the well-known Timestamp travels with the set.
    assert!(pool
        .get_message_by_name("google.protobuf.Timestamp")
        .is_some());
}

#[test]
fn invalid_descriptor_set_files_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.pb");
    std::fs::write(&bad, b"this is not a descriptor set").expect("write");
    let err = load_descriptor_set(&bad).expect_err("garbage");
    assert!(matches!(err, DescriptorSetError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.pb"), "{err}");
    let missing = dir.path().join("missing.pb");
    let err = load_descriptor_set(&missing).expect_err("missing");
    assert!(matches!(err, DescriptorSetError::Read { .. }), "{err:?}");
}

fn pool() -> Arc<DescriptorPool> {
    Arc::new(load_descriptor_set(&committed_pb()).expect("orders.pb loads"))
}

fn frame(flag: u8, msg: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

fn get_order_bytes(pool: &DescriptorPool) -> Vec<u8> {
    let desc = pool
        .get_message_by_name("regent.example.v1.GetOrderRequest")
        .expect("message");
    let mut m = DynamicMessage::new(desc);
    m.set_field_by_name("order_id", PValue::String("o-1".into()));
    m.set_field_by_name("tenant_id", PValue::String("acme".into()));
    m.set_field_by_name("amount_cents", PValue::I64(12345678901));
    m.encode_to_vec()
}

fn grpc_request(path: &str, raw_body: Vec<u8>) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: path.into(),
                    headers: [("content-type".to_string(), "application/grpc".to_string())].into(),
                    raw_body,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

fn body_of(
    req: &CheckRequest,
    pool: Option<Arc<DescriptorPool>>,
) -> Result<(Json, Json), RequestParseError> {
    let opts = InputOptions {
        descriptors: pool,
        ..InputOptions::default()
    };
    let v = build_input(req, &opts)?;
    let j = serde_json::to_value(&v).expect("serializes");
    Ok((j["parsed_body"].clone(), j["truncated_body"].clone()))
}

#[test]
fn unary_grpc_body_is_protojson_of_first_message() {
    let pool = pool();
    let msg = get_order_bytes(&pool);
    let mut raw = frame(0, &msg);
    // A second message in the same body is ignored: only the first is decoded.
    raw.extend(frame(0, &msg));
    let req = grpc_request("/regent.example.v1.Orders/GetOrder", raw);
    assert_eq!(
        body_of(&req, Some(pool)).expect("parses"),
        (
            json!({"orderId": "o-1", "tenantId": "acme", "amountCents": "12345678901"}),
            json!(false)
        )
    );
}

#[test]
fn grpc_enums_render_by_name() {
    let pool = pool();
    let desc = pool
        .get_message_by_name("regent.example.v1.CreateRefundRequest")
        .expect("message");
    let mut m = DynamicMessage::new(desc);
    m.set_field_by_name("order_id", PValue::String("o-2".into()));
    m.set_field_by_name("expected_status", PValue::EnumNumber(2));
    let req = grpc_request(
        "/regent.example.v1.Orders/CreateRefund",
        frame(0, &m.encode_to_vec()),
    );
    assert_eq!(
        body_of(&req, Some(pool)).expect("parses").0,
        json!({"orderId": "o-2", "expectedStatus": "ORDER_STATUS_SHIPPED"})
    );
}

#[test]
fn grpc_null_cases() {
    let pool = pool();
    let msg = get_order_bytes(&pool);
    let null = (json!(null), json!(false));
    // No descriptors configured.
    let req = grpc_request("/regent.example.v1.Orders/GetOrder", frame(0, &msg));
    assert_eq!(body_of(&req, None).expect("ok"), null);
    // Compressed frame.
    let req = grpc_request("/regent.example.v1.Orders/GetOrder", frame(1, &msg));
    assert_eq!(body_of(&req, Some(pool.clone())).expect("ok"), null);
    // Client-streaming method.
    let req = grpc_request("/regent.example.v1.Orders/UploadOrders", frame(0, &msg));
    assert_eq!(body_of(&req, Some(pool.clone())).expect("ok"), null);
    // Unknown service and unknown method.
    let req = grpc_request("/regent.example.v1.Nope/GetOrder", frame(0, &msg));
    assert_eq!(body_of(&req, Some(pool.clone())).expect("ok"), null);
    let req = grpc_request("/regent.example.v1.Orders/Nope", frame(0, &msg));
    assert_eq!(body_of(&req, Some(pool.clone())).expect("ok"), null);
    // No raw body (Envoy without pack_as_bytes).
    let req = grpc_request("/regent.example.v1.Orders/GetOrder", Vec::new());
    assert_eq!(body_of(&req, Some(pool)).expect("ok"), null);
}

#[test]
fn grpc_frame_longer_than_body_is_truncated() {
    let pool = pool();
    let msg = get_order_bytes(&pool);
    let mut raw = frame(0, &msg);
    raw.truncate(raw.len() - 3);
    let req = grpc_request("/regent.example.v1.Orders/GetOrder", raw);
    assert_eq!(
        body_of(&req, Some(pool)).expect("ok"),
        (json!(null), json!(true))
    );
}

#[test]
fn grpc_parse_errors() {
    let pool = pool();
    let msg = get_order_bytes(&pool);
    for path in ["/regent.example.v1.Orders", "/a/b/c", "/"] {
        let err = body_of(&grpc_request(path, frame(0, &msg)), Some(pool.clone())).expect_err(path);
        assert!(matches!(err, RequestParseError::Grpc(_)), "{path}: {err:?}");
    }
    let short = grpc_request("/regent.example.v1.Orders/GetOrder", vec![0, 0, 0]);
    assert!(matches!(
        body_of(&short, Some(pool.clone())),
        Err(RequestParseError::Grpc(_))
    ));
    // Field 1 declared as a string but carrying an invalid wire type.
    let garbage = grpc_request(
        "/regent.example.v1.Orders/GetOrder",
        frame(0, &[0x0f, 0xff, 0xff]),
    );
    assert!(matches!(
        body_of(&garbage, Some(pool)),
        Err(RequestParseError::Grpc(_))
    ));
}
