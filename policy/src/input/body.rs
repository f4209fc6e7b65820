//! `parsed_body` and `truncated_body`, following OPA-Envoy's rules (see `docs/input-and-decisions.md`).

use std::borrow::Cow;

use prost_reflect::{DescriptorPool, DynamicMessage};
use regorus::value::Object;
use regorus::Value;

use super::headers::Headers;
use super::path::parse_query;
use super::RequestParseError;

/// The result of body parsing: `(parsed_body, truncated_body)`.
pub(crate) type ParsedBody = (Value, bool);

const NOTHING: ParsedBody = (Value::Null, false);
const TRUNCATED: ParsedBody = (Value::Null, true);

const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";
const CONTENT_TYPE: &str = "content-type";
const CONTENT_LENGTH: &str = "content-length";
/// Every header body parsing reads, whatever the policy names (the gRPC decoder keeps these).
pub(crate) const HEADERS_READ: [&str; 3] = [CONTENT_TYPE, CONTENT_LENGTH, PARTIAL_BODY];

pub(crate) fn parse_body(
    headers: &Headers<'_>,
    body: &str,
    raw_body: &[u8],
    parsed_path: &[Cow<'_, str>],
    descriptors: Option<&DescriptorPool>,
) -> Result<ParsedBody, RequestParseError> {
    // Envoy says outright that it cut the body (works for HTTP/2 and chunked bodies, where
    // content-length is absent); this is checked before anything else.
    if headers
        .get(PARTIAL_BODY)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Ok(TRUNCATED);
    }
    let Some(content_type) = headers.get(CONTENT_TYPE) else {
        return Ok(NOTHING);
    };
    let ct = content_type.to_ascii_lowercase();
    if ct.contains("application/json") {
        let Some(payload) = payload(body, raw_body) else {
            return Ok(NOTHING);
        };
        if truncated(headers, payload.len())? {
            return Ok(TRUNCATED);
        }
        let text = utf8(&payload)?;
        let v = Value::from_json_str(text)
            .map_err(|e| RequestParseError::Body(format!("invalid JSON body: {e}")))?;
        Ok((v, false))
    } else if ct.contains("application/grpc") {
        let Some(pool) = descriptors else {
            return Ok(NOTHING);
        };
        // Without Envoy's `pack_as_bytes` the gRPC body never arrives as bytes.
        if raw_body.is_empty() {
            return Ok(NOTHING);
        }
        grpc_body(raw_body, parsed_path, pool)
    } else if ct.contains("application/x-www-form-urlencoded") {
        let Some(payload) = payload(body, raw_body) else {
            return Ok(NOTHING);
        };
        if truncated(headers, payload.len())? {
            return Ok(TRUNCATED);
        }
        let v = parse_query(utf8(&payload)?)
            .map_err(|e| RequestParseError::Body(format!("invalid form body: {e}")))?;
        Ok((v, false))
    } else if ct.contains("multipart/form-data") {
        let Some(payload) = payload(body, raw_body) else {
            return Ok(NOTHING);
        };
        if truncated(headers, payload.len())? {
            return Ok(TRUNCATED);
        }
        let mime: mime::Mime = content_type.parse().map_err(|e| {
            RequestParseError::Body(format!("invalid content-type {content_type:?}: {e}"))
        })?;
        let Some(boundary) = mime.get_param(mime::BOUNDARY) else {
            return Ok(NOTHING);
        };
        let v = super::multipart::parse(&payload, boundary.as_str())
            .map_err(|e| RequestParseError::Body(format!("invalid multipart body: {e}")))?;
        Ok((v, false))
    } else {
        Ok(NOTHING)
    }
}

/// `body`, or `raw_body` when `body` is empty (Envoy's `pack_as_bytes`); `None` when both are empty.
fn payload<'a>(body: &'a str, raw_body: &'a [u8]) -> Option<Cow<'a, [u8]>> {
    if !body.is_empty() {
        Some(Cow::Borrowed(body.as_bytes()))
    } else if !raw_body.is_empty() {
        Some(Cow::Borrowed(raw_body))
    } else {
        None
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, RequestParseError> {
    std::str::from_utf8(bytes)
        .map_err(|e| RequestParseError::Body(format!("body is not valid UTF-8: {e}")))
}

/// True when `content-length` announces more bytes than Envoy sent.
fn truncated(headers: &Headers<'_>, available: usize) -> Result<bool, RequestParseError> {
    let Some(cl) = headers.get(CONTENT_LENGTH) else {
        return Ok(false);
    };
    let n: u64 = cl
        .trim()
        .parse()
        .map_err(|_| RequestParseError::ContentLength(cl.to_string()))?;
    Ok(n > available as u64)
}

/// Decodes the first message of a gRPC request body with the configured descriptors.
fn grpc_body(
    raw: &[u8],
    parsed_path: &[Cow<'_, str>],
    pool: &DescriptorPool,
) -> Result<ParsedBody, RequestParseError> {
    let [service, method] = parsed_path else {
        return Err(RequestParseError::Grpc(format!(
            "path must be /<package.Service>/<Method>, got {} segment(s)",
            parsed_path.len()
        )));
    };
    if raw.len() < 5 {
        return Err(RequestParseError::Grpc(
            "body is shorter than the 5-byte gRPC frame header".into(),
        ));
    }
    // Flag 1 means the message is compressed with the call's grpc-encoding; not decoded.
    if raw[0] != 0 {
        return Ok(NOTHING);
    }
    let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
    let Some(message) = raw.get(5..5usize.saturating_add(len)) else {
        return Ok(TRUNCATED);
    };
    let Some(svc) = pool.get_service_by_name(service) else {
        return Ok(NOTHING);
    };
    let Some(m) = svc.methods().find(|m| m.name() == method) else {
        return Ok(NOTHING);
    };
    if m.is_client_streaming() {
        return Ok(NOTHING);
    }
    let msg = DynamicMessage::decode(m.input(), message).map_err(|e| {
        RequestParseError::Grpc(format!("cannot decode {}: {e}", m.input().full_name()))
    })?;
    // DynamicMessage's default serde options are protojson's: JSON names, 64-bit integers as
    // strings, enums by name, default fields left out, well-known types in canonical form.
    let json = serde_json::to_string(&msg).map_err(|e| {
        RequestParseError::Grpc(format!("cannot render {}: {e}", m.input().full_name()))
    })?;
    let v = Value::from_json_str(&json).map_err(|e| {
        RequestParseError::Grpc(format!("cannot render {}: {e}", m.input().full_name()))
    })?;
    Ok((v, false))
}

/// Used by multipart to build `{name: [value, ...]}`.
pub(crate) fn push_value(o: &mut Object, key: &str, v: Value) {
    let key = Value::from(key);
    match o.get_mut(&key) {
        Some(Value::Array(list)) => regorus::Rc::make_mut(list).push(v),
        _ => {
            o.insert(key, Value::from(vec![v]));
        }
    }
}
