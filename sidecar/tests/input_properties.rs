//! Properties of the input parsers over generated requests: no panics on any input, and path
//! segments survive percent-encoding unchanged (so an encoded `/` can never split a segment).

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;
use regent_policy::input::{build_input, parse_path, InputOptions};

fn req(path: String, content_type: &str, body: Vec<u8>, raw_headers: bool) -> CheckRequest {
    let mut http = HttpRequest {
        path,
        raw_body: body,
        ..Default::default()
    };
    if raw_headers {
        http.header_map = Some(HeaderMap {
            headers: vec![HeaderValue {
                key: "content-type".into(),
                raw_value: content_type.as_bytes().to_vec(),
                ..Default::default()
            }],
        });
    } else {
        http.headers
            .insert("content-type".into(), content_type.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(http),
            }),
            ..Default::default()
        }),
    }
}

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "multipart/form-data; boundary=\"x y\"",
    "multipart/form-data",
    "application/grpc",
    "text/plain",
];

fn descriptors() -> InputOptions {
    let pb = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/orders.pb");
    InputOptions {
        descriptors: Some(std::sync::Arc::new(
            regent_policy::input::load_descriptor_set(&pb).expect("orders.pb loads"),
        )),
        ..InputOptions::default()
    }
}

proptest! {
    #[test]
    fn build_input_never_panics(
        path in "(/[a-zA-Z0-9%;=&?+./-]{0,12}){0,5}",
        ct in 0..CONTENT_TYPES.len(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        structured in proptest::bool::ANY,
        raw_headers in proptest::bool::ANY,
    ) {
        let body = if structured {
            // Bytes shaped like the formats, to get past the first checks more often.
            let mut b = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n".to_vec();
            b.extend_from_slice(&body);
            b.extend_from_slice(b"\r\n--b--");
            b
        } else {
            body
        };
        let r = req(path, CONTENT_TYPES[ct], body, raw_headers);
        let _ = build_input(&r, &descriptors());
    }

    #[test]
    fn grpc_paths_and_frames_never_panic(
        method in "(GetOrder|CreateRefund|UploadOrders|Nope)",
        frame in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let r = req(format!("/regent.example.v1.Orders/{method}"), "application/grpc", frame, false);
        let _ = build_input(&r, &descriptors());
    }

    #[test]
    fn encoded_segments_round_trip(segments in proptest::collection::vec("\\PC{0,8}", 1..6)) {
        // A first empty segment would be eaten by the leading-slash trim, as in OPA-Envoy.
        prop_assume!(!segments[0].is_empty());
        let path: String = segments
            .iter()
            .map(|s| format!("/{}", utf8_percent_encode(s, NON_ALPHANUMERIC)))
            .collect();
        prop_assert_eq!(parse_path(&path).expect("well-formed path"), segments);
    }
}
