//! parsed_body / truncated_body for every body format.

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use regent_policy::input::{build_input, InputOptions, RequestParseError};
use serde_json::{json, Value as Json};

fn req(headers: &[(&str, &str)], body: &str, raw_body: &[u8]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/submit".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    body: body.into(),
                    raw_body: raw_body.to_vec(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// (parsed_body, truncated_body) for a request.
fn parsed(headers: &[(&str, &str)], body: &str) -> Result<(Json, Json), RequestParseError> {
    parsed_raw(headers, body, b"")
}

fn parsed_raw(
    headers: &[(&str, &str)],
    body: &str,
    raw: &[u8],
) -> Result<(Json, Json), RequestParseError> {
    let v = build_input(&req(headers, body, raw), &InputOptions::default())?;
    let j = serde_json::to_value(&v).expect("serializes");
    Ok((j["parsed_body"].clone(), j["truncated_body"].clone()))
}

const JSON_CT: (&str, &str) = ("content-type", "application/json");

#[test]
fn json_bodies_of_any_type() {
    assert_eq!(
        parsed(&[JSON_CT], r#"{"a":[1,"x",null],"b":{"c":true}}"#).expect("ok"),
        (json!({"a": [1, "x", null], "b": {"c": true}}), json!(false))
    );
    assert_eq!(parsed(&[JSON_CT], "[1,2]").expect("ok").0, json!([1, 2]));
    assert_eq!(parsed(&[JSON_CT], "\"s\"").expect("ok").0, json!("s"));
    assert_eq!(
        parsed(
            &[("content-type", "Application/JSON; charset=utf-8")],
            r#"{"é":"ü"}"#
        )
        .expect("ok")
        .0,
        json!({"é": "ü"})
    );
    // Empty body: nothing to parse.
    assert_eq!(
        parsed(&[JSON_CT], "").expect("ok"),
        (json!(null), json!(false))
    );
}

#[test]
fn raw_body_is_used_when_body_is_empty() {
    assert_eq!(
        parsed_raw(&[JSON_CT], "", br#"{"packed":true}"#)
            .expect("ok")
            .0,
        json!({"packed": true})
    );
    assert_eq!(
        parsed_raw(
            &[("content-type", "application/x-www-form-urlencoded")],
            "",
            b"a=1&a=2"
        )
        .expect("ok")
        .0,
        json!({"a": ["1", "2"]})
    );
}

#[test]
fn invalid_json_is_a_parse_error() {
    for bad in ["{", "{\"a\":}", "nul", "{} x"] {
        let err = parsed(&[JSON_CT], bad).expect_err(bad);
        assert!(matches!(err, RequestParseError::Body(_)), "{bad}: {err:?}");
        assert!(err.to_string().contains("invalid JSON body"), "{err}");
    }
}

#[test]
fn form_bodies() {
    let ct = ("content-type", "application/x-www-form-urlencoded");
    assert_eq!(
        parsed(&[ct], "user=alice&role=a&role=b+c&x=%2F").expect("ok"),
        (
            json!({"user": ["alice"], "role": ["a", "b c"], "x": ["/"]}),
            json!(false)
        )
    );
    let err = parsed(&[ct], "a=%zz").expect_err("bad escape");
    assert!(matches!(err, RequestParseError::Body(_)), "{err:?}");
    let err = parsed(&[ct], "a=1;b=2").expect_err("semicolon");
    assert!(err.to_string().contains("semicolon"), "{err}");
}

#[test]
fn multipart_bodies() {
    let ct = ("content-type", "multipart/form-data; boundary=XyZ");
    let body = "preamble\r\n--XyZ\r\n\
        Content-Disposition: form-data; name=\"meta\"\r\n\
        Content-Type: application/json\r\n\r\n\
        {\"k\":[1,2]}\r\n\
        --XyZ\r\n\
        Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
        Content-Type: text/plain\r\n\r\n\
        line1\r\nline2 --XyZ not a boundary\r\n\
        --XyZ\r\n\
        Content-Disposition: form-data; name=\"file\"\r\n\r\n\
        second\r\n\
        --XyZ\r\n\
        Content-Disposition: attachment\r\n\r\n\
        unnamed, skipped\r\n\
        --XyZ\r\n\
        Content-Disposition: form-data; name=\"empty\"\r\n\r\n\
        \r\n\
        --XyZ--\r\nepilogue";
    assert_eq!(
        parsed(&[ct], body).expect("ok"),
        (
            json!({
                "meta": [{"k": [1, 2]}],
                "file": ["line1\r\nline2 --XyZ not a boundary", "second"],
                "empty": [""]
            }),
            json!(false)
        )
    );
}

#[test]
fn multipart_without_boundary_is_null_and_broken_multipart_is_an_error() {
    assert_eq!(
        parsed(&[("content-type", "multipart/form-data")], "whatever").expect("ok"),
        (json!(null), json!(false))
    );
    let ct = ("content-type", "multipart/form-data; boundary=b");
    for bad in [
        "no boundary at all",
        "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue without end",
        "--b\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{bad\r\n--b--",
    ] {
        let err = parsed(&[ct], bad).expect_err(bad);
        assert!(err.to_string().contains("invalid multipart body"), "{err}");
    }
}

#[test]
fn partial_body_header_wins_over_everything() {
    assert_eq!(
        parsed(
            &[JSON_CT, ("x-envoy-auth-partial-body", "true")],
            r#"{"a":1}"#
        )
        .expect("ok"),
        (json!(null), json!(true))
    );
    // Even an unparseable body is not an error when Envoy says it is partial.
    assert_eq!(
        parsed(&[JSON_CT, ("x-envoy-auth-partial-body", "true")], "{").expect("ok"),
        (json!(null), json!(true))
    );
    assert_eq!(
        parsed(
            &[JSON_CT, ("x-envoy-auth-partial-body", "false")],
            r#"{"a":1}"#
        )
        .expect("ok"),
        (json!({"a": 1}), json!(false))
    );
}

#[test]
fn content_length_larger_than_body_is_truncated() {
    assert_eq!(
        parsed(&[JSON_CT, ("content-length", "100")], r#"{"a":"#).expect("ok"),
        (json!(null), json!(true))
    );
    assert_eq!(
        parsed(&[JSON_CT, ("content-length", "7")], r#"{"a":1}"#).expect("ok"),
        (json!({"a": 1}), json!(false))
    );
    assert_eq!(
        parsed(
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", "50")
            ],
            "a=1"
        )
        .expect("ok"),
        (json!(null), json!(true))
    );
    let err = parsed(&[JSON_CT, ("content-length", "ten")], "{}").expect_err("bad length");
    assert!(
        matches!(err, RequestParseError::ContentLength(_)),
        "{err:?}"
    );
}

#[test]
fn other_or_missing_content_type_is_null() {
    assert_eq!(
        parsed(&[], r#"{"a":1}"#).expect("ok"),
        (json!(null), json!(false))
    );
    assert_eq!(
        parsed(&[("content-type", "text/plain")], "{").expect("ok"),
        (json!(null), json!(false))
    );
}

#[test]
fn skip_request_body_parse_drops_both_keys() {
    let opts = InputOptions {
        skip_request_body_parse: true,
        ..InputOptions::default()
    };
    let v = build_input(&req(&[JSON_CT], "{ not json", b""), &opts).expect("no parsing, no error");
    let j = serde_json::to_value(&v).expect("serializes");
    assert!(j.get("parsed_body").is_none());
    assert!(j.get("truncated_body").is_none());
    assert_eq!(j["parsed_path"], json!(["submit"]));
}
