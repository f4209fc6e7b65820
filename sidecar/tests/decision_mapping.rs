//! Decision values mapped onto CheckResponses, and every decision error reason.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::google::protobuf::value::Kind;
use regent_policy::decision::{parse_error_response, to_check_response, DecisionError};
use regent_policy::input::{build_input, InputOptions};
use regorus::Value;

fn decide(json: &str) -> Result<CheckResponse, DecisionError> {
    let v = Value::from_json_str(json).expect("test JSON parses");
    to_check_response(&v, "dec-1")
}

fn decision_id(resp: &CheckResponse) -> Option<String> {
    match resp
        .dynamic_metadata
        .as_ref()?
        .fields
        .get("decision_id")?
        .kind
        .as_ref()?
    {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// (key, value, append_action) triples of header options.
fn headers(
    opts: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption],
) -> Vec<(String, String, HeaderAppendAction)> {
    opts.iter()
        .map(|o| {
            let h = o.header.clone().unwrap_or_default();
            (
                h.key,
                h.value,
                HeaderAppendAction::try_from(o.append_action).expect("valid action"),
            )
        })
        .collect()
}

#[test]
fn boolean_true_is_ok_without_http_response() {
    let r = to_check_response(&Value::Bool(true), "dec-1").expect("maps");
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
    assert!(r.http_response.is_none());
    assert_eq!(decision_id(&r).as_deref(), Some("dec-1"));
}

#[test]
fn boolean_false_is_permission_denied_with_envoy_default_response() {
    let r = to_check_response(&Value::Bool(false), "dec-2").expect("maps");
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(7));
    assert!(r.http_response.is_none());
    assert_eq!(decision_id(&r).as_deref(), Some("dec-2"));
}

#[test]
fn object_allow_maps_every_allow_field() {
    let r = decide(
        r#"{"allowed": true,
            "headers": {"x-user": "alice", "x-multi": ["1", "2"]},
            "response_headers_to_add": [{"set-cookie": ["a=1", "b=2"]}, {"x-r": "v"}],
            "request_headers_to_remove": ["authorization", "cookie"],
            "query_parameters_to_set": {"z": "last", "a": ["1", "2"], "m": "mid"},
            "query_parameters_to_remove": ["token"],
            "body": 42, "http_status": "ignored on allow",
            "dynamic_metadata": {"decision_id": "policy-set", "n": 1, "nested": {"l": [true, null]}},
            "unknown_key": "ignored"}"#,
    )
    .expect("maps");
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("expected OkResponse, got {:?}", r.http_response);
    };
    use HeaderAppendAction::*;
    assert_eq!(
        headers(&ok.headers),
        vec![
            ("x-multi".into(), "1".into(), OverwriteIfExistsOrAdd),
            ("x-multi".into(), "2".into(), AppendIfExistsOrAdd),
            ("x-user".into(), "alice".into(), OverwriteIfExistsOrAdd),
        ]
    );
    assert_eq!(
        headers(&ok.response_headers_to_add),
        vec![
            ("set-cookie".into(), "a=1".into(), AppendIfExistsOrAdd),
            ("set-cookie".into(), "b=2".into(), AppendIfExistsOrAdd),
            ("x-r".into(), "v".into(), AppendIfExistsOrAdd),
        ]
    );
    assert_eq!(ok.headers_to_remove, vec!["authorization", "cookie"]);
    let q: Vec<(&str, &str)> = ok
        .query_parameters_to_set
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(q, vec![("a", "1"), ("a", "2"), ("m", "mid"), ("z", "last")]);
    assert_eq!(ok.query_parameters_to_remove, vec!["token"]);
    // decision_id overwrites the policy's key; other metadata is kept.
    assert_eq!(decision_id(&r).as_deref(), Some("dec-1"));
    let md = r.dynamic_metadata.as_ref().expect("metadata");
    assert_eq!(md.fields["n"].kind, Some(Kind::NumberValue(1.0)));
    let Some(Kind::StructValue(nested)) = &md.fields["nested"].kind else {
        panic!("nested is a struct");
    };
    let Some(Kind::ListValue(l)) = &nested.fields["l"].kind else {
        panic!("l is a list");
    };
    assert_eq!(l.values[0].kind, Some(Kind::BoolValue(true)));
    assert_eq!(l.values[1].kind, Some(Kind::NullValue(0)));
}

#[test]
fn headers_repeated_across_array_objects_overwrite_then_append() {
    let r = decide(r#"{"allowed": true, "headers": [{"x-a": "1"}, {"x-a": "2"}, {"X-A": "3"}]}"#)
        .expect("maps");
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("expected OkResponse");
    };
    let actions: Vec<HeaderAppendAction> = headers(&ok.headers).into_iter().map(|h| h.2).collect();
    assert_eq!(
        actions,
        vec![
            HeaderAppendAction::OverwriteIfExistsOrAdd,
            HeaderAppendAction::AppendIfExistsOrAdd,
            HeaderAppendAction::AppendIfExistsOrAdd
        ]
    );
}

#[test]
fn object_deny_maps_status_headers_body_and_metadata() {
    let r = decide(
        r#"{"allowed": false, "http_status": 401, "body": "log in first",
            "headers": {"www-authenticate": "Bearer"}, "dynamic_metadata": {"why": "no token"},
            "query_parameters_to_set": 7}"#,
    )
    .expect("maps");
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(7));
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("expected DeniedResponse");
    };
    assert_eq!(d.status.as_ref().map(|s| s.code), Some(401));
    assert_eq!(d.body, "log in first");
    assert_eq!(
        headers(&d.headers),
        vec![(
            "www-authenticate".into(),
            "Bearer".into(),
            HeaderAppendAction::OverwriteIfExistsOrAdd
        )]
    );
    let md = r.dynamic_metadata.as_ref().expect("metadata");
    assert_eq!(
        md.fields["why"].kind,
        Some(Kind::StringValue("no token".into()))
    );
    assert_eq!(decision_id(&r).as_deref(), Some("dec-1"));
}

#[test]
fn object_deny_defaults_to_403() {
    let r = decide(r#"{"allowed": false}"#).expect("maps");
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("expected DeniedResponse");
    };
    assert_eq!(d.status.as_ref().map(|s| s.code), Some(403));
    assert!(d.body.is_empty() && d.headers.is_empty());
}

#[test]
fn http_status_must_be_a_known_envoy_status_code() {
    for ok in [301, 400, 404, 429, 503] {
        let r = decide(&format!(r#"{{"allowed": false, "http_status": {ok}}}"#)).expect("maps");
        let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
            panic!("expected DeniedResponse");
        };
        assert_eq!(d.status.as_ref().map(|s| s.code), Some(ok));
    }
    for bad in ["1", "0", "9999", "299", "403.5", "\"403\"", "-403"] {
        let err = decide(&format!(r#"{{"allowed": false, "http_status": {bad}}}"#)).expect_err(bad);
        assert_eq!(err.reason(), "invalid_field", "{bad}");
        assert!(err.to_string().contains("http_status"), "{err}");
    }
}

#[test]
fn undefined_decision_error() {
    let err = to_check_response(&Value::Undefined, "d").expect_err("undefined");
    assert_eq!(err, DecisionError::UndefinedDecision);
    assert_eq!(err.reason(), "undefined_decision");
}

#[test]
fn illegal_result_errors() {
    for v in ["1", "\"yes\"", "null", "[true]"] {
        let err = decide(v).expect_err(v);
        assert_eq!(err.reason(), "illegal_result", "{v}");
    }
}

#[test]
fn missing_allowed_error() {
    let err = decide(r#"{"headers": {"a": "b"}}"#).expect_err("missing");
    assert_eq!(err, DecisionError::MissingAllowed);
    assert_eq!(err.reason(), "missing_allowed");
}

#[test]
fn invalid_field_errors_name_the_field() {
    let cases = [
        (r#"{"allowed": "true"}"#, "allowed"),
        (r#"{"allowed": true, "headers": {"a": 1}}"#, "headers"),
        (
            r#"{"allowed": true, "headers": {"a": ["x", 2]}}"#,
            "headers",
        ),
        (r#"{"allowed": true, "headers": ["x"]}"#, "headers"),
        (r#"{"allowed": false, "headers": "x"}"#, "headers"),
        (
            r#"{"allowed": true, "response_headers_to_add": 3}"#,
            "response_headers_to_add",
        ),
        (
            r#"{"allowed": true, "request_headers_to_remove": "authorization"}"#,
            "request_headers_to_remove",
        ),
        (
            r#"{"allowed": true, "request_headers_to_remove": [1]}"#,
            "request_headers_to_remove",
        ),
        (
            r#"{"allowed": true, "query_parameters_to_set": ["a"]}"#,
            "query_parameters_to_set",
        ),
        (
            r#"{"allowed": true, "query_parameters_to_set": {"a": 1}}"#,
            "query_parameters_to_set",
        ),
        (
            r#"{"allowed": true, "query_parameters_to_remove": {"a": 1}}"#,
            "query_parameters_to_remove",
        ),
        (r#"{"allowed": false, "body": {"a": 1}}"#, "body"),
        (r#"{"allowed": false, "http_status": "403"}"#, "http_status"),
        (
            r#"{"allowed": true, "dynamic_metadata": "x"}"#,
            "dynamic_metadata",
        ),
        (
            r#"{"allowed": false, "dynamic_metadata": [1]}"#,
            "dynamic_metadata",
        ),
    ];
    for (json, field) in cases {
        match decide(json) {
            Err(DecisionError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{json}"),
            other => panic!("{json}: expected invalid_field for {field}, got {other:?}"),
        }
    }
}

#[test]
fn parse_error_becomes_400_with_reason() {
    let req = envoy_types::pb::envoy::service::auth::v3::CheckRequest {
        attributes: Some(envoy_types::pb::envoy::service::auth::v3::AttributeContext {
            request: Some(
                envoy_types::pb::envoy::service::auth::v3::attribute_context::Request {
                    time: None,
                    http: Some(
                        envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest {
                            path: "/a%zz".into(),
                            ..Default::default()
                        },
                    ),
                },
            ),
            ..Default::default()
        }),
    };
    let err = build_input(&req, &InputOptions::default()).expect_err("bad escape");
    let r = parse_error_response(&err, "dec-9");
    let status = r.status.as_ref().expect("status");
    assert_eq!(status.code, 7);
    assert!(
        status
            .message
            .starts_with("request_parse_error: invalid request path"),
        "{}",
        status.message
    );
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("expected DeniedResponse");
    };
    assert_eq!(d.status.as_ref().map(|s| s.code), Some(400));
    assert_eq!(d.body, status.message);
    assert_eq!(decision_id(&r).as_deref(), Some("dec-9"));
}
