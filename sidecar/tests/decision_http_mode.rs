//! HTTP-service mode answers derived from the same CheckResponses as gRPC mode.

use regent_policy::decision::{
    parse_error_response, to_check_response, to_http_response, DECISION_ID_HEADER,
    HEADERS_TO_REMOVE_HEADER,
};
use regent_policy::input::RequestParseError;
use regorus::Value;

fn answer(decision: &str) -> http::Response<String> {
    let v = Value::from_json_str(decision).expect("json");
    let resp = to_check_response(&v, "dec-7").expect("maps");
    to_http_response(&resp).expect("http")
}

fn values(r: &http::Response<String>, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_string())
        .collect()
}

#[test]
fn allow_is_200_with_headers_and_removals() {
    let r = answer(
        r#"{"allowed": true, "headers": {"x-user": "alice", "x-multi": ["1", "2"]},
            "response_headers_to_add": {"set-cookie": "a=1"},
            "request_headers_to_remove": ["authorization", "cookie"]}"#,
    );
    assert_eq!(r.status(), 200);
    assert_eq!(values(&r, "x-user"), ["alice"]);
    assert_eq!(values(&r, "x-multi"), ["1", "2"]);
    assert_eq!(values(&r, "set-cookie"), ["a=1"]);
    assert_eq!(
        values(&r, HEADERS_TO_REMOVE_HEADER),
        ["authorization,cookie"]
    );
    assert_eq!(values(&r, DECISION_ID_HEADER), ["dec-7"]);
    assert_eq!(answer("true").status(), 200);
}

#[test]
fn deny_carries_status_headers_and_body() {
    let r = answer(
        r#"{"allowed": false, "http_status": 401, "body": "log in",
            "headers": {"www-authenticate": "Bearer"}}"#,
    );
    assert_eq!(r.status(), 401);
    assert_eq!(r.body(), "log in");
    assert_eq!(values(&r, "www-authenticate"), ["Bearer"]);
    assert_eq!(values(&r, DECISION_ID_HEADER), ["dec-7"]);
    assert_eq!(answer("false").status(), 403);
    assert_eq!(answer(r#"{"allowed": false}"#).status(), 403);
}

#[test]
fn parse_errors_are_400() {
    let err = RequestParseError::Path("invalid URL escape".into());
    let r = to_http_response(&parse_error_response(&err, "d")).expect("http");
    assert_eq!(r.status(), 400);
    assert!(
        r.body().starts_with("request_parse_error: "),
        "{}",
        r.body()
    );
}

#[test]
fn headers_http_cannot_carry_are_invalid_fields() {
    let v =
        Value::from_json_str(r#"{"allowed": true, "headers": {"bad name": "x"}}"#).expect("json");
    let resp = to_check_response(&v, "d").expect("maps");
    let err = to_http_response(&resp).expect_err("bad header name");
    assert_eq!(err.reason(), "invalid_field");
    let v = Value::from_json_str(r#"{"allowed": false, "headers": {"x": "a\nb"}}"#).expect("json");
    let resp = to_check_response(&v, "d").expect("maps");
    assert_eq!(
        to_http_response(&resp).expect_err("bad value").reason(),
        "invalid_field"
    );
}
