//! The input document built from CheckRequests, compared as whole JSON documents.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HeaderMap, HeaderValue, Metadata, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct, Timestamp, Value as PbValue};
use regent_policy::input::{build_input, InputOptions, RequestParseError};
use serde_json::{json, Value as Json};

fn to_json(v: &regorus::Value) -> Json {
    serde_json::to_value(v).expect("regorus values serialize")
}

fn http_request(path: &str, headers: &[(&str, &str)]) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn request(http: HttpRequest) -> CheckRequest {
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

fn input(req: &CheckRequest) -> Json {
    to_json(&build_input(req, &InputOptions::default()).expect("input builds"))
}

fn socket(addr: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

#[test]
fn full_request_matches_opa_envoy_document() {
    let mut jwt_claims = Struct::default();
    jwt_claims.fields.insert(
        "sub".into(),
        PbValue {
            kind: Some(Kind::StringValue("alice".into())),
        },
    );
    jwt_claims.fields.insert(
        "exp".into(),
        PbValue {
            kind: Some(Kind::NumberValue(1700003600.0)),
        },
    );
    let mut verified = Struct::default();
    verified.fields.insert(
        "verified_jwt".into(),
        PbValue {
            kind: Some(Kind::StructValue(jwt_claims)),
        },
    );
    let mut typed = HashMap::new();
    typed.insert(
        "typed.filter".to_string(),
        Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![1, 2, 3],
        },
    );
    let body = r#"{"item":"book","qty":2}"#;
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(socket("10.0.0.5", 51234)),
                principal: "spiffe://cluster.local/ns/default/sa/frontend".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: Some(socket("10.0.0.9", 8080)),
                service: "orders".into(),
                ..Default::default()
            }),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: 1700000000,
                    nanos: 123000000,
                }),
                http: Some(HttpRequest {
                    id: "13359530607844510314".into(),
                    method: "POST".into(),
                    headers: [
                        (":authority", "api.example.com"),
                        (":path", "/v1/orders?dry=1&tag=a&tag=b"),
                        ("content-type", "application/json"),
                        ("content-length", "23"),
                        ("x-envoy-auth-partial-body", "false"),
                    ]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                    path: "/v1/orders?dry=1&tag=a&tag=b".into(),
                    host: "api.example.com".into(),
                    scheme: "https".into(),
                    size: 23,
                    protocol: "HTTP/2".into(),
                    body: body.into(),
                    ..Default::default()
                }),
            }),
            context_extensions: [("service".to_string(), "orders".to_string())].into(),
            metadata_context: Some(Metadata {
                filter_metadata: [("envoy.filters.http.jwt_authn".to_string(), verified)].into(),
                typed_filter_metadata: typed,
            }),
            route_metadata_context: None,
            tls_session: Some(TlsSession {
                sni: "api.example.com".into(),
            }),
        }),
    };
    assert_eq!(
        input(&req),
        json!({
          "attributes": {
            "source": {"address": {"socketAddress": {"address": "10.0.0.5", "portValue": 51234}},
                       "labels": {"app": "web"},
                       "principal": "spiffe://cluster.local/ns/default/sa/frontend"},
            "destination": {"address": {"socketAddress": {"address": "10.0.0.9", "portValue": 8080}},
                            "service": "orders"},
            "request": {
              "time": {"seconds": 1700000000, "nanos": 123000000},
              "http": {
                "id": "13359530607844510314", "method": "POST",
                "headers": {":authority": "api.example.com", ":path": "/v1/orders?dry=1&tag=a&tag=b",
                            "content-type": "application/json", "content-length": "23",
                            "x-envoy-auth-partial-body": "false"},
                "path": "/v1/orders?dry=1&tag=a&tag=b", "host": "api.example.com", "scheme": "https",
                "size": 23, "protocol": "HTTP/2", "body": body
              }
            },
            "contextExtensions": {"service": "orders"},
            "metadataContext": {
              "filterMetadata": {"envoy.filters.http.jwt_authn": {"verified_jwt": {"sub": "alice", "exp": 1700003600}}},
              "typedFilterMetadata": {"typed.filter": {"typeUrl": "type.googleapis.com/x.Y", "value": "AQID"}}
            },
            "tlsSession": {"sni": "api.example.com"}
          },
          "parsed_path": ["v1", "orders"],
          "parsed_query": {"dry": ["1"], "tag": ["a", "b"]},
          "parsed_body": {"item": "book", "qty": 2},
          "truncated_body": false,
          "source_principal": "spiffe://cluster.local/ns/default/sa/frontend",
          "version": {"encoding": "protojson", "ext_authz": "v3"}
        })
    );
}

#[test]
fn empty_request_still_has_every_top_level_key() {
    let doc = input(&CheckRequest::default());
    assert_eq!(
        doc,
        json!({
            "attributes": {},
            "parsed_path": [""],
            "parsed_query": {},
            "parsed_body": null,
            "truncated_body": false,
            "version": {"encoding": "protojson", "ext_authz": "v3"}
        })
    );
}

#[test]
fn time_without_nanos_and_raw_body_as_base64() {
    let mut req = request(HttpRequest {
        raw_body: b"\x00\xffhi".to_vec(),
        size: -1,
        ..Default::default()
    });
    if let Some(r) = req.attributes.as_mut().and_then(|a| a.request.as_mut()) {
        r.time = Some(Timestamp {
            seconds: 5,
            nanos: 0,
        });
    }
    let doc = input(&req);
    assert_eq!(doc["attributes"]["request"]["time"], json!({"seconds": 5}));
    assert_eq!(
        doc["attributes"]["request"]["http"]["rawBody"],
        json!("AP9oaQ==")
    );
    assert_eq!(doc["attributes"]["request"]["http"]["size"], json!(-1));
}

#[test]
fn header_map_values_are_merged_into_headers_and_joined() {
    let mut http = http_request("/x", &[]);
    http.header_map = Some(HeaderMap {
        headers: vec![
            HeaderValue {
                key: "x-tag".into(),
                raw_value: b"a".to_vec(),
                ..Default::default()
            },
            HeaderValue {
                key: "X-Tag".into(),
                raw_value: b"b".to_vec(),
                ..Default::default()
            },
            HeaderValue {
                key: "content-type".into(),
                raw_value: b"application/json".to_vec(),
                ..Default::default()
            },
        ],
    });
    http.body = r#"{"a":1}"#.into();
    let doc = input(&request(http));
    assert_eq!(
        doc["attributes"]["request"]["http"]["headers"],
        json!({"x-tag": "a,b", "content-type": "application/json"})
    );
    assert_eq!(
        doc["attributes"]["request"]["http"]["headerMap"],
        json!({"headers": [
            {"key": "x-tag", "rawValue": "YQ=="},
            {"key": "X-Tag", "rawValue": "Yg=="},
            {"key": "content-type", "rawValue": "YXBwbGljYXRpb24vanNvbg=="}
        ]})
    );
    // Body parsing sees the content-type that only header_map carries.
    assert_eq!(doc["parsed_body"], json!({"a": 1}));
}

fn parsed_path(path: &str) -> Json {
    input(&request(http_request(path, &[])))["parsed_path"].clone()
}

#[test]
fn path_is_split_before_percent_decoding() {
    assert_eq!(parsed_path("/a%2Fb/c"), json!(["a/b", "c"]));
    assert_eq!(
        parsed_path("/%2Fmy%2Ftest%2Fpath"),
        json!(["/my/test/path"])
    );
    assert_eq!(parsed_path("/caf%C3%A9/a+b"), json!(["café", "a+b"]));
}

#[test]
fn path_edge_cases() {
    assert_eq!(parsed_path("//admin/x"), json!(["admin", "x"]));
    assert_eq!(parsed_path("/"), json!([""]));
    assert_eq!(parsed_path(""), json!([""]));
    assert_eq!(parsed_path("/a/"), json!(["a", ""]));
    assert_eq!(parsed_path("/a//b?x=1"), json!(["a", "", "b"]));
}

#[test]
fn bad_percent_escape_in_path_is_a_parse_error() {
    for bad in ["/a%zz", "/a%2", "/%", "/%C0%AF"] {
        let err =
            build_input(&request(http_request(bad, &[])), &InputOptions::default()).expect_err(bad);
        assert!(matches!(err, RequestParseError::Path(_)), "{bad}: {err:?}");
    }
}

#[test]
fn query_with_repeated_keys_and_escapes() {
    let doc = input(&request(http_request(
        "/p?tag=a&tag=b&x=1+2&e=%3D&&flag&=v",
        &[],
    )));
    assert_eq!(
        doc["parsed_query"],
        json!({"tag": ["a", "b"], "x": ["1 2"], "e": ["="], "flag": [""], "": ["v"]})
    );
    assert_eq!(parsed_path("/p?"), json!(["p"]));
}

#[test]
fn bad_query_is_a_parse_error() {
    for bad in ["/p?a=%zz", "/p?a=1;b=2"] {
        let err =
            build_input(&request(http_request(bad, &[])), &InputOptions::default()).expect_err(bad);
        assert!(matches!(err, RequestParseError::Query(_)), "{bad}: {err:?}");
        assert!(err.to_string().starts_with("invalid query string"));
    }
}

#[test]
fn source_principal_only_when_non_empty() {
    let mut req = request(http_request("/", &[]));
    if let Some(a) = req.attributes.as_mut() {
        a.source = Some(Peer {
            principal: String::new(),
            service: "svc".into(),
            ..Default::default()
        });
    }
    let doc = input(&req);
    assert!(doc.get("source_principal").is_none());
    assert_eq!(doc["attributes"]["source"], json!({"service": "svc"}));
}

#[test]
fn address_oneofs_and_route_metadata() {
    use envoy_types::pb::envoy::config::core::v3::{
        envoy_internal_address, EnvoyInternalAddress, Pipe,
    };
    let mut route = Struct::default();
    route.fields.insert(
        "tier".into(),
        PbValue {
            kind: Some(Kind::ListValue(
                envoy_types::pb::google::protobuf::ListValue {
                    values: vec![
                        PbValue {
                            kind: Some(Kind::BoolValue(true)),
                        },
                        PbValue { kind: None },
                    ],
                },
            )),
        },
    );
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::Pipe(Pipe {
                        path: "/run/app.sock".into(),
                        mode: 0o600,
                    })),
                }),
                certificate: "-----BEGIN CERTIFICATE-----".into(),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::EnvoyInternalAddress(
                        EnvoyInternalAddress {
                            endpoint_id: "ep".into(),
                            address_name_specifier: Some(
                                envoy_internal_address::AddressNameSpecifier::ServerListenerName(
                                    "internal".into(),
                                ),
                            ),
                        },
                    )),
                }),
                ..Default::default()
            }),
            route_metadata_context: Some(Metadata {
                filter_metadata: [("envoy.lb".to_string(), route)].into(),
                typed_filter_metadata: HashMap::new(),
            }),
            ..Default::default()
        }),
    };
    let doc = input(&req);
    assert_eq!(
        doc["attributes"],
        json!({
            "source": {"address": {"pipe": {"path": "/run/app.sock", "mode": 384}},
                       "certificate": "-----BEGIN CERTIFICATE-----"},
            "destination": {"address": {"envoyInternalAddress": {
                "serverListenerName": "internal", "endpointId": "ep"}}},
            "routeMetadataContext": {"filterMetadata": {"envoy.lb": {"tier": [true, null]}}}
        })
    );
    // A named port and a UDP socket: enum as its number, oneof under its own name.
    let mut req = request(http_request("/", &[]));
    if let Some(a) = req.attributes.as_mut() {
        a.destination = Some(Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    protocol: socket_address::Protocol::Udp as i32,
                    address: "::1".into(),
                    port_specifier: Some(socket_address::PortSpecifier::NamedPort("dns".into())),
                    ipv4_compat: true,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        });
    }
    assert_eq!(
        input(&req)["attributes"]["destination"],
        json!({"address": {"socketAddress": {"protocol": 1, "address": "::1",
                                              "namedPort": "dns", "ipv4Compat": true}}})
    );
}
