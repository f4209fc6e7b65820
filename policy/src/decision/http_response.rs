//! The answer for Envoy's HTTP-service ext_authz mode, derived from the same `CheckResponse` the
//! gRPC mode sends, so both modes decide identically.
//!
//! Envoy reads a 200 as "allowed" and copies the headers its `authorization_response` matchers
//! select (`allowed_upstream_headers`, `allowed_client_headers_on_success`, ...). Any other status
//! is a denial, and status, body and the headers matched by `allowed_client_headers` go to the
//! client.
//!
//! - allow: 200 with `headers` and `response_headers_to_add`, and `request_headers_to_remove` as
//!   Envoy's `x-envoy-auth-headers-to-remove` header. Query parameter mutations have no
//!   HTTP-service equivalent and are dropped.
//! - deny: the decision's status (403 by default, 400 for parse errors), headers and body.
//! - the decision id travels as `x-regent-decision-id` (map it with Envoy's
//!   `dynamic_metadata_from_headers`).

use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::google::protobuf::value::Kind;
use http::header::{HeaderName, HeaderValue};

use super::DecisionError;

/// Header carrying the decision id in HTTP-service mode.
pub const DECISION_ID_HEADER: &str = "x-regent-decision-id";
/// Envoy's header naming upstream request headers to remove (HTTP-service mode).
pub const HEADERS_TO_REMOVE_HEADER: &str = "x-envoy-auth-headers-to-remove";

/// Converts a `CheckResponse` (from [`super::to_check_response`] or
/// [`super::parse_error_response`]) into the HTTP answer for Envoy's HTTP-service mode.
///
/// Fails with `invalid_field` when the policy produced a header name or value HTTP cannot carry.
pub fn to_http_response(resp: &CheckResponse) -> Result<http::Response<String>, DecisionError> {
    let allowed = resp.status.as_ref().is_none_or(|s| s.code == 0);
    let mut builder = http::Response::builder();
    let mut body = String::new();
    let mut out_headers = http::HeaderMap::new();
    let status = if allowed {
        if let Some(HttpResponse::OkResponse(ok)) = &resp.http_response {
            add_headers(&mut out_headers, &ok.headers, "headers")?;
            add_headers(
                &mut out_headers,
                &ok.response_headers_to_add,
                "response_headers_to_add",
            )?;
            if !ok.headers_to_remove.is_empty() {
                out_headers.insert(
                    HeaderName::from_static(HEADERS_TO_REMOVE_HEADER),
                    header_value(&ok.headers_to_remove.join(","), "request_headers_to_remove")?,
                );
            }
        }
        http::StatusCode::OK
    } else {
        match &resp.http_response {
            Some(HttpResponse::DeniedResponse(d)) | Some(HttpResponse::ErrorResponse(d)) => {
                add_headers(&mut out_headers, &d.headers, "headers")?;
                body = d.body.clone();
                let code = d.status.as_ref().map_or(403, |s| s.code);
                u16::try_from(code)
                    .ok()
                    .and_then(|c| http::StatusCode::from_u16(c).ok())
                    .ok_or_else(|| DecisionError::InvalidField {
                        field: "http_status",
                        problem: format!("{code} is not an HTTP status"),
                    })?
            }
            _ => http::StatusCode::FORBIDDEN,
        }
    };
    if let Some(Kind::StringValue(id)) = resp
        .dynamic_metadata
        .as_ref()
        .and_then(|m| m.fields.get("decision_id"))
        .and_then(|v| v.kind.as_ref())
    {
        if let Ok(v) = HeaderValue::from_str(id) {
            out_headers.insert(HeaderName::from_static(DECISION_ID_HEADER), v);
        }
    }
    builder = builder.status(status);
    if let Some(h) = builder.headers_mut() {
        *h = out_headers;
    }
    builder.body(body).map_err(|e| DecisionError::InvalidField {
        field: "headers",
        problem: e.to_string(),
    })
}

fn header_value(v: &str, field: &'static str) -> Result<HeaderValue, DecisionError> {
    HeaderValue::from_str(v).map_err(|_| DecisionError::InvalidField {
        field,
        problem: format!("{v:?} is not a valid HTTP header value"),
    })
}

fn add_headers(
    out: &mut http::HeaderMap,
    opts: &[HeaderValueOption],
    field: &'static str,
) -> Result<(), DecisionError> {
    for o in opts {
        let Some(h) = &o.header else { continue };
        let name =
            HeaderName::from_bytes(h.key.as_bytes()).map_err(|_| DecisionError::InvalidField {
                field,
                problem: format!("{:?} is not a valid HTTP header name", h.key),
            })?;
        out.append(name, header_value(&h.value, field)?);
    }
    Ok(())
}
