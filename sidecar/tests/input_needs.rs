//! The pruned input document (only what the policy can read) is exactly the whole document cut down
//! to those paths, for generated requests and generated sets of paths; and a policy decides the same
//! on both.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HeaderMap, HeaderValue, Metadata, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Timestamp, Value as PbValue};
use proptest::prelude::*;
use regent_policy::input::{build_input, build_input_for, InputNeeds, InputOptions};
use regorus::Value;

const HEADER_NAMES: &[&str] = &["x-user", "authorization", "content-type", "x-Mixed"];

fn pb_str(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

#[allow(clippy::too_many_arguments)]
fn request(
    path: String,
    headers: Vec<(usize, String)>,
    raw_headers: Vec<(usize, String)>,
    principal: String,
    labels: Vec<(usize, String)>,
    sub: Option<String>,
    port: u32,
    body: String,
) -> CheckRequest {
    let peer = |principal: &str| Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "10.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        principal: principal.to_string(),
        labels: labels
            .iter()
            .map(|(i, v)| (HEADER_NAMES[*i].to_string(), v.clone()))
            .collect(),
        ..Default::default()
    };
    let mut filter_metadata = HashMap::new();
    if let Some(sub) = sub {
        let jwt = Struct {
            fields: [
                ("sub".to_string(), pb_str(&sub)),
                ("iss".into(), pb_str("i")),
            ]
            .into(),
        };
        filter_metadata.insert(
            "envoy.filters.http.jwt_authn".to_string(),
            Struct {
                fields: [(
                    "verified_jwt".to_string(),
                    PbValue {
                        kind: Some(Kind::StructValue(jwt)),
                    },
                )]
                .into(),
            },
        );
        filter_metadata.insert("other".to_string(), Struct::default());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(&principal)),
            destination: Some(peer("dest")),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                http: Some(HttpRequest {
                    id: "req-1".into(),
                    method: "POST".into(),
                    headers: headers
                        .iter()
                        .map(|(i, v)| (HEADER_NAMES[*i].to_ascii_lowercase(), v.clone()))
                        .collect(),
                    header_map: (!raw_headers.is_empty()).then(|| HeaderMap {
                        headers: raw_headers
                            .iter()
                            .map(|(i, v)| HeaderValue {
                                key: HEADER_NAMES[*i].to_string(),
                                raw_value: v.as_bytes().to_vec(),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                    path,
                    host: "example.com".into(),
                    body,
                    ..Default::default()
                }),
            }),
            context_extensions: [("k".to_string(), "v".to_string())].into(),
            metadata_context: Some(Metadata {
                filter_metadata,
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The member names a policy might name: real ones at every level, plus names that do not exist.
const NAMES: &[&str] = &[
    "attributes",
    "request",
    "http",
    "headers",
    "x-user",
    "authorization",
    "x-mixed",
    "method",
    "path",
    "source",
    "destination",
    "address",
    "socketAddress",
    "portValue",
    "principal",
    "labels",
    "metadataContext",
    "filterMetadata",
    "envoy.filters.http.jwt_authn",
    "verified_jwt",
    "sub",
    "headerMap",
    "time",
    "contextExtensions",
    "parsed_path",
    "parsed_query",
    "parsed_body",
    "truncated_body",
    "source_principal",
    "version",
    "missing",
];

/// The whole document cut down to `needs`, written independently of the builder: a member stays
/// when it is named; a value that is not an object is kept whole once reached.
fn project(v: &Value, needs: &InputNeeds) -> Value {
    match (needs, v) {
        (InputNeeds::All, _) => v.clone(),
        (InputNeeds::Fields(_), Value::Object(members)) => {
            let mut out = regorus::value::Object::new();
            for (k, child) in members.iter() {
                if let Some(n) = k.as_string().ok().and_then(|k| needs.field(k)) {
                    out.insert(k.clone(), project(child, n));
                }
            }
            Value::from(out)
        }
        _ => v.clone(),
    }
}

fn needs_from(paths: &[Vec<usize>]) -> InputNeeds {
    let mut needs = InputNeeds::nothing();
    for p in paths {
        let p: Vec<String> = p.iter().map(|i| NAMES[*i].to_string()).collect();
        needs.add(&p);
    }
    needs
}

fn header() -> impl Strategy<Value = (usize, String)> {
    (0..HEADER_NAMES.len(), "[a-z0-9]{0,4}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn pruned_input_is_the_projection_of_the_whole(
        path in "/[a-z]{0,3}(/[a-z%0-9]{0,3}){0,3}(\\?[a-z]=[a-z]{0,2})?",
        headers in proptest::collection::vec(header(), 0..4),
        raw_headers in proptest::collection::vec(header(), 0..3),
        principal in "[a-z]{0,3}",
        labels in proptest::collection::vec(header(), 0..2),
        sub in proptest::option::of("[a-z]{1,3}"),
        port in 0u32..3,
        body in "(\\{\"a\":1\\})?",
        paths in proptest::collection::vec(
            proptest::collection::vec(0..NAMES.len(), 0..6), 0..5),
    ) {
        let req = request(path, headers, raw_headers, principal, labels, sub, port, body);
        let opts = InputOptions::default();
        let needs = needs_from(&paths);
        let whole = build_input(&req, &opts);
        let pruned = build_input_for(&req, &opts, &needs);
        match (whole, pruned) {
            (Ok(whole), Ok(pruned)) => prop_assert_eq!(
                serde_json::to_string(&pruned).unwrap(),
                serde_json::to_string(&project(&whole, &needs)).unwrap(),
                "needs {:?}", needs
            ),
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "whole {:?} vs pruned {:?}", a.is_ok(), b.is_ok()),
        }
    }
}

/// The decision of a policy on the pruned input equals its decision on the whole input, with the
/// paths the policy names found by scanning its source.
#[test]
fn a_policy_decides_the_same_on_the_pruned_input() {
    let src = r#"package t
import rego.v1
import input.attributes.request.http as http
user := input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].verified_jwt.sub
result := {
    "user": user,
    "method": http.method,
    "seg": input.parsed_path[0],
    "hdr": input.attributes.request.http.headers["x-user"],
    "n_headers": count(input.attributes.request.http.headers),
    "principal": object.get(input.attributes.source, "principal", "none"),
    "has_version": "version" in object.keys(input),
}
"#;
    let needs = InputNeeds::of_modules([("t.rego", src)]);
    // `object.keys(input)` names the whole document, so this policy needs everything...
    assert!(needs.is_all());
    // ...and without that line it needs only what it names.
    let narrow = src.replace(
        "    \"has_version\": \"version\" in object.keys(input),\n",
        "",
    );
    let narrow_needs = InputNeeds::of_modules([("t.rego", narrow.as_str())]);
    assert!(!narrow_needs.wants("version") && !narrow_needs.wants("parsed_query"));
    assert!(narrow_needs.wants("parsed_path"));

    for (policy_src, needs) in [(src.to_string(), needs), (narrow, narrow_needs)] {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("t.rego".into(), policy_src)
            .expect("policy parses");
        for (i, sub) in ["alice", "bob"].into_iter().enumerate() {
            let req = request(
                format!("/api/{i}"),
                vec![(0, "u".into()), (2, "json".into())],
                vec![(3, "m".into())],
                "spiffe://x".into(),
                vec![],
                Some(sub.to_string()),
                8080,
                String::new(),
            );
            let opts = InputOptions::default();
            let mut decide = |input: Value| {
                engine.set_input(input);
                engine.eval_rule("data.t.result".into()).expect("evaluates")
            };
            let whole = decide(build_input(&req, &opts).expect("input"));
            let pruned = decide(build_input_for(&req, &opts, &needs).expect("input"));
            assert_ne!(whole, Value::Undefined);
            assert_eq!(whole, pruned);
        }
    }
}
