//! HTTP-service mode requests give the same input document as gRPC mode.

use regent_policy::input::{build_input, check_request_from_http, HttpCheck, InputOptions};
use serde_json::json;

#[test]
fn http_request_becomes_the_same_input_document() {
    let req = http::Request::builder()
        .method("POST")
        .uri("/authz/v1/orders?tag=a&tag=b")
        .header("host", "api.example.com")
        .header("content-type", "application/json")
        .header("x-tag", "1")
        .header("x-tag", "2")
        .body(())
        .expect("request");
    let (parts, ()) = req.into_parts();
    let body = br#"{"item":"book"}"#;
    let check = check_request_from_http(&HttpCheck {
        parts: &parts,
        body,
        path_prefix: "/authz",
        peer: Some("10.0.0.5:51234".parse().expect("addr")),
        time: std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5),
    });
    let doc = serde_json::to_value(build_input(&check, &InputOptions::default()).expect("builds"))
        .expect("serializes");
    assert_eq!(
        doc,
        json!({
            "attributes": {
                "source": {"address": {"socketAddress": {"address": "10.0.0.5", "portValue": 51234}}},
                "request": {
                    "time": {"seconds": 1_700_000_000, "nanos": 5},
                    "http": {
                        "method": "POST",
                        "headers": {"host": "api.example.com", "content-type": "application/json",
                                    "x-tag": "1,2"},
                        "path": "/v1/orders?tag=a&tag=b",
                        "host": "api.example.com",
                        "size": 15,
                        "protocol": "HTTP/1.1",
                        "body": "{\"item\":\"book\"}"
                    }
                }
            },
            "parsed_path": ["v1", "orders"],
            "parsed_query": {"tag": ["a", "b"]},
            "parsed_body": {"item": "book"},
            "truncated_body": false,
            "version": {"encoding": "protojson", "ext_authz": "v3"}
        })
    );
}

#[test]
fn non_utf8_body_goes_to_raw_body_and_prefix_is_optional() {
    let (parts, ()) = http::Request::builder()
        .uri("/x")
        .body(())
        .expect("request")
        .into_parts();
    let check = check_request_from_http(&HttpCheck {
        parts: &parts,
        body: &[0xff, 0x00],
        path_prefix: "",
        peer: None,
        time: std::time::UNIX_EPOCH,
    });
    let doc = serde_json::to_value(build_input(&check, &InputOptions::default()).expect("builds"))
        .expect("serializes");
    assert_eq!(
        doc["attributes"]["request"]["http"]["rawBody"],
        json!("/wA=")
    );
    assert_eq!(doc["parsed_path"], json!(["x"]));
}
