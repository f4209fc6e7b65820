//! An Envoy `CheckRequest` from its proto3 JSON form (what `grpcurl`, Envoy's docs and the
//! `envoy.service.auth.v3.CheckRequest` JSON mapping use), for `regent check`.
//!
//! prost has no JSON support, so the mapping is written out for every field of every message the
//! sidecar's input builder reads. As proto3 JSON requires: field names in lowerCamelCase or their
//! original snake_case, `null` means "not set", 64-bit integers as numbers or strings, bytes in
//! base64, `Timestamp` as an RFC 3339 string (the `{"seconds","nanos"}` object the input document
//! shows is accepted too), enums by name or number. Unlike lenient parsers, an unknown field, a
//! field given twice (in both spellings), two members of one oneof, or a value of the wrong type is
//! an error naming the JSON path, so a typo cannot silently produce a different request.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{
    address, envoy_internal_address, socket_address, Address, EnvoyInternalAddress, HeaderMap,
    HeaderValue, Metadata, Pipe, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, AttributeContext, CheckRequest,
};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Timestamp};
use serde_json::{Map, Value};

/// A JSON document that is not a valid `CheckRequest`; `path` is where in the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RequestJsonError {
    /// JSON path of the offending value, e.g. `attributes.request.http.size`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

type Result<T> = std::result::Result<T, RequestJsonError>;

fn err<T>(path: &str, message: impl Into<String>) -> Result<T> {
    Err(RequestJsonError {
        path: if path.is_empty() {
            "(top level)".to_string()
        } else {
            path.to_string()
        },
        message: message.into(),
    })
}

/// Converts a proto3-JSON `CheckRequest` document.
pub fn check_request_from_json(v: &Value) -> Result<CheckRequest> {
    let mut req = CheckRequest::default();
    fields(v, "", &["attributes"], |name, val, path| {
        match name {
            "attributes" => req.attributes = Some(attribute_context(val, path)?),
            _ => unreachable_field(path)?,
        }
        Ok(())
    })?;
    Ok(req)
}

fn attribute_context(v: &Value, path: &str) -> Result<AttributeContext> {
    let mut out = AttributeContext::default();
    fields(
        v,
        path,
        &[
            "source",
            "destination",
            "request",
            "contextExtensions",
            "metadataContext",
            "routeMetadataContext",
            "tlsSession",
        ],
        |name, val, path| {
            match name {
                "source" => out.source = Some(peer(val, path)?),
                "destination" => out.destination = Some(peer(val, path)?),
                "request" => out.request = Some(request(val, path)?),
                "contextExtensions" => out.context_extensions = string_map(val, path)?,
                "metadataContext" => out.metadata_context = Some(metadata(val, path)?),
                "routeMetadataContext" => out.route_metadata_context = Some(metadata(val, path)?),
                "tlsSession" => {
                    let mut tls = attribute_context::TlsSession::default();
                    fields(val, path, &["sni"], |_, val, path| {
                        tls.sni = string(val, path)?;
                        Ok(())
                    })?;
                    out.tls_session = Some(tls);
                }
                _ => unreachable_field(path)?,
            }
            Ok(())
        },
    )?;
    Ok(out)
}

fn peer(v: &Value, path: &str) -> Result<attribute_context::Peer> {
    let mut out = attribute_context::Peer::default();
    fields(
        v,
        path,
        &["address", "service", "labels", "principal", "certificate"],
        |name, val, path| {
            match name {
                "address" => out.address = Some(address(val, path)?),
                "service" => out.service = string(val, path)?,
                "labels" => out.labels = string_map(val, path)?,
                "principal" => out.principal = string(val, path)?,
                "certificate" => out.certificate = string(val, path)?,
                _ => unreachable_field(path)?,
            }
            Ok(())
        },
    )?;
    Ok(out)
}

fn address(v: &Value, path: &str) -> Result<Address> {
    let mut out = Address::default();
    let mut set = |a: address::Address, path: &str| -> Result<()> {
        if out.address.is_some() {
            return err(
                path,
                "only one of socketAddress, pipe and envoyInternalAddress may be set",
            );
        }
        out.address = Some(a);
        Ok(())
    };
    fields(
        v,
        path,
        &["socketAddress", "pipe", "envoyInternalAddress"],
        |name, val, path| match name {
            "socketAddress" => set(
                address::Address::SocketAddress(socket_address_msg(val, path)?),
                path,
            ),
            "pipe" => {
                let mut p = Pipe::default();
                fields(val, path, &["path", "mode"], |name, val, path| {
                    match name {
                        "path" => p.path = string(val, path)?,
                        _ => p.mode = uint32(val, path)?,
                    }
                    Ok(())
                })?;
                set(address::Address::Pipe(p), path)
            }
            "envoyInternalAddress" => {
                let mut e = EnvoyInternalAddress::default();
                fields(
                    val,
                    path,
                    &["serverListenerName", "endpointId"],
                    |name, val, path| {
                        match name {
                            "serverListenerName" => e.address_name_specifier = Some(
                                envoy_internal_address::AddressNameSpecifier::ServerListenerName(
                                    string(val, path)?,
                                ),
                            ),
                            _ => e.endpoint_id = string(val, path)?,
                        }
                        Ok(())
                    },
                )?;
                set(address::Address::EnvoyInternalAddress(e), path)
            }
            _ => unreachable_field(path),
        },
    )?;
    Ok(out)
}

fn socket_address_msg(v: &Value, path: &str) -> Result<SocketAddress> {
    let mut out = SocketAddress::default();
    fields(
        v,
        path,
        &[
            "protocol",
            "address",
            "portValue",
            "namedPort",
            "resolverName",
            "ipv4Compat",
            "networkNamespaceFilepath",
        ],
        |name, val, path| {
            let port = |p: socket_address::PortSpecifier, out: &mut SocketAddress| -> Result<()> {
                if out.port_specifier.is_some() {
                    return err(path, "only one of portValue and namedPort may be set");
                }
                out.port_specifier = Some(p);
                Ok(())
            };
            match name {
                "protocol" => out.protocol = protocol(val, path)?,
                "address" => out.address = string(val, path)?,
                "portValue" => port(
                    socket_address::PortSpecifier::PortValue(uint32(val, path)?),
                    &mut out,
                )?,
                "namedPort" => port(
                    socket_address::PortSpecifier::NamedPort(string(val, path)?),
                    &mut out,
                )?,
                "resolverName" => out.resolver_name = string(val, path)?,
                "ipv4Compat" => out.ipv4_compat = boolean(val, path)?,
                "networkNamespaceFilepath" => out.network_namespace_filepath = string(val, path)?,
                _ => unreachable_field(path)?,
            }
            Ok(())
        },
    )?;
    Ok(out)
}

fn protocol(v: &Value, path: &str) -> Result<i32> {
    use socket_address::Protocol;
    match v {
        Value::String(s) => Protocol::from_str_name(s)
            .map(|p| p as i32)
            .ok_or(())
            .or_else(|()| err(path, format!("unknown protocol {s:?} (TCP or UDP)"))),
        Value::Number(_) => {
            let n = int64(v, path)?;
            i32::try_from(n)
                .ok()
                .filter(|n| Protocol::try_from(*n).is_ok())
                .ok_or(())
                .or_else(|()| err(path, format!("unknown protocol number {n} (0 TCP, 1 UDP)")))
        }
        other => err(
            path,
            format!("expected a protocol name or number, got {}", kind(other)),
        ),
    }
}

fn request(v: &Value, path: &str) -> Result<attribute_context::Request> {
    let mut out = attribute_context::Request::default();
    fields(v, path, &["time", "http"], |name, val, path| {
        match name {
            "time" => out.time = Some(timestamp(val, path)?),
            _ => out.http = Some(http_request(val, path)?),
        }
        Ok(())
    })?;
    Ok(out)
}

fn http_request(v: &Value, path: &str) -> Result<attribute_context::HttpRequest> {
    let mut out = attribute_context::HttpRequest::default();
    fields(
        v,
        path,
        &[
            "id",
            "method",
            "headers",
            "headerMap",
            "path",
            "host",
            "scheme",
            "query",
            "fragment",
            "size",
            "protocol",
            "body",
            "rawBody",
        ],
        |name, val, path| {
            match name {
                "id" => out.id = string(val, path)?,
                "method" => out.method = string(val, path)?,
                "headers" => out.headers = string_map(val, path)?,
                "headerMap" => out.header_map = Some(header_map(val, path)?),
                "path" => out.path = string(val, path)?,
                "host" => out.host = string(val, path)?,
                "scheme" => out.scheme = string(val, path)?,
                "query" => out.query = string(val, path)?,
                "fragment" => out.fragment = string(val, path)?,
                "size" => out.size = int64(val, path)?,
                "protocol" => out.protocol = string(val, path)?,
                "body" => out.body = string(val, path)?,
                "rawBody" => out.raw_body = bytes(val, path)?,
                _ => unreachable_field(path)?,
            }
            Ok(())
        },
    )?;
    Ok(out)
}

fn header_map(v: &Value, path: &str) -> Result<HeaderMap> {
    let mut out = HeaderMap::default();
    fields(v, path, &["headers"], |_, val, path| {
        let Value::Array(items) = val else {
            return err(path, format!("expected an array, got {}", kind(val)));
        };
        for (i, item) in items.iter().enumerate() {
            let path = format!("{path}[{i}]");
            let mut hv = HeaderValue::default();
            fields(
                item,
                &path,
                &["key", "value", "rawValue"],
                |name, val, path| {
                    match name {
                        "key" => hv.key = string(val, path)?,
                        "value" => hv.value = string(val, path)?,
                        _ => hv.raw_value = bytes(val, path)?,
                    }
                    Ok(())
                },
            )?;
            out.headers.push(hv);
        }
        Ok(())
    })?;
    Ok(out)
}

fn metadata(v: &Value, path: &str) -> Result<Metadata> {
    let mut out = Metadata::default();
    fields(
        v,
        path,
        &["filterMetadata", "typedFilterMetadata"],
        |name, val, path| match name {
            "filterMetadata" => {
                for (k, s) in object(val, path)? {
                    let p = format!("{path}.{k}");
                    out.filter_metadata.insert(k.clone(), pb_struct(s, &p)?);
                }
                Ok(())
            }
            // An `Any` in proto3 JSON is decoded through its type's descriptor, which we do not have.
            _ => err(
                path,
                "typedFilterMetadata is not supported by regent check (use filterMetadata)",
            ),
        },
    )?;
    Ok(out)
}

fn timestamp(v: &Value, path: &str) -> Result<Timestamp> {
    match v {
        Value::String(s) => {
            let t = chrono::DateTime::parse_from_rfc3339(s).or_else(|e| {
                err(
                    path,
                    format!("{s:?} is not an RFC 3339 timestamp ({e}), e.g. 2026-01-02T03:04:05Z"),
                )
            })?;
            Ok(Timestamp {
                seconds: t.timestamp(),
                nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
            })
        }
        Value::Object(_) => {
            let mut t = Timestamp::default();
            fields(v, path, &["seconds", "nanos"], |name, val, path| {
                match name {
                    "seconds" => t.seconds = int64(val, path)?,
                    _ => {
                        let n = int64(val, path)?;
                        t.nanos = i32::try_from(n)
                            .ok()
                            .filter(|n| (0..1_000_000_000).contains(n))
                            .ok_or(())
                            .or_else(|()| err(path, "nanos must be within 0..999999999"))?;
                    }
                }
                Ok(())
            })?;
            Ok(t)
        }
        other => err(
            path,
            format!("expected an RFC 3339 timestamp string, got {}", kind(other)),
        ),
    }
}

fn pb_struct(v: &Value, path: &str) -> Result<Struct> {
    let mut s = Struct::default();
    for (k, val) in object(v, path)? {
        s.fields
            .insert(k.clone(), pb_value(val, &format!("{path}.{k}"))?);
    }
    Ok(s)
}

fn pb_value(v: &Value, path: &str) -> Result<envoy_types::pb::google::protobuf::Value> {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(
            n.as_f64()
                .ok_or(())
                .or_else(|()| err(path, "number does not fit a double"))?,
        ),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items
                .iter()
                .enumerate()
                .map(|(i, x)| pb_value(x, &format!("{path}[{i}]")))
                .collect::<Result<_>>()?,
        }),
        Value::Object(_) => Kind::StructValue(pb_struct(v, path)?),
    };
    Ok(envoy_types::pb::google::protobuf::Value { kind: Some(kind) })
}

/// Walks the members of a message object: checks names against `known` (lowerCamelCase; the
/// snake_case spelling is accepted too), refuses unknown and repeated fields, skips `null`s, and
/// calls `f(camelName, value, jsonPath)` for the rest.
fn fields<'a>(
    v: &'a Value,
    path: &str,
    known: &[&'static str],
    mut f: impl FnMut(&'static str, &'a Value, &str) -> Result<()>,
) -> Result<()> {
    let obj = object(v, path)?;
    let mut seen = BTreeSet::new();
    for (k, val) in obj {
        let field_path = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let camel = snake_to_camel(k);
        let Some(name) = known.iter().copied().find(|n| *n == k || *n == camel) else {
            return err(
                &field_path,
                format!("unknown field (expected one of: {})", known.join(", ")),
            );
        };
        if !seen.insert(name) {
            return err(&field_path, format!("field {name} is given twice"));
        }
        if val.is_null() {
            continue;
        }
        f(name, val, &field_path)?;
    }
    Ok(())
}

fn unreachable_field(path: &str) -> Result<()> {
    // `fields` only passes names from the list each caller matches on.
    err(path, "field not handled")
}

fn snake_to_camel(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    let mut upper = false;
    for c in k.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        other => err(path, format!("expected an object, got {}", kind(other))),
    }
}

fn string(v: &Value, path: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => err(path, format!("expected a string, got {}", kind(other))),
    }
}

fn boolean(v: &Value, path: &str) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => err(path, format!("expected true or false, got {}", kind(other))),
    }
}

fn string_map(v: &Value, path: &str) -> Result<HashMap<String, String>> {
    object(v, path)?
        .iter()
        .map(|(k, val)| Ok((k.clone(), string(val, &format!("{path}.{k}"))?)))
        .collect()
}

/// An integer given as a JSON number or a decimal string, as proto3 JSON allows for 64-bit types.
fn int64(v: &Value, path: &str) -> Result<i64> {
    let parsed = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        other => return err(path, format!("expected an integer, got {}", kind(other))),
    };
    parsed
        .ok_or(())
        .or_else(|()| err(path, format!("{v} is not a 64-bit integer")))
}

fn uint32(v: &Value, path: &str) -> Result<u32> {
    let n = int64(v, path)?;
    u32::try_from(n)
        .ok()
        .ok_or(())
        .or_else(|()| err(path, format!("{n} is not an unsigned 32-bit integer")))
}

fn bytes(v: &Value, path: &str) -> Result<Vec<u8>> {
    let Value::String(s) = v else {
        return err(path, format!("expected a base64 string, got {}", kind(v)));
    };
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
        .ok_or(())
        .or_else(|()| err(path, "not valid base64"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_request_converts_with_both_spellings() {
        let req = check_request_from_json(&json!({
            "attributes": {
                "source": {
                    "principal": "spiffe://cluster.local/ns/default/sa/web",
                    "address": {"socketAddress": {"address": "10.0.0.1", "portValue": 4000, "protocol": "TCP"}},
                    "labels": {"app": "web"}
                },
                "destination": {"address": {"pipe": {"path": "/run/s.sock", "mode": 384}}},
                "context_extensions": {"tenant": "a"},
                "metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"sub": "alice", "n": 1}}},
                "tlsSession": {"sni": "api.example.com"},
                "request": {
                    "time": "2026-01-02T03:04:05.5Z",
                    "http": {
                        "method": "POST", "path": "/api/v1?x=1", "host": "api",
                        "headers": {"content-type": "application/json"},
                        "header_map": {"headers": [{"key": "x-a", "rawValue": "YQ=="}]},
                        "size": "12", "body": "{\"a\":1}", "rawBody": "eyJhIjoxfQ=="
                    }
                }
            }
        }))
        .unwrap();
        let a = req.attributes.unwrap();
        let src = a.source.unwrap();
        assert_eq!(src.principal, "spiffe://cluster.local/ns/default/sa/web");
        match src.address.unwrap().address.unwrap() {
            address::Address::SocketAddress(s) => {
                assert_eq!(s.address, "10.0.0.1");
                assert_eq!(
                    s.port_specifier,
                    Some(socket_address::PortSpecifier::PortValue(4000))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.context_extensions["tenant"], "a");
        let http = a.request.as_ref().unwrap().http.as_ref().unwrap();
        assert_eq!(http.size, 12);
        assert_eq!(http.raw_body, br#"{"a":1}"#);
        assert_eq!(http.header_map.as_ref().unwrap().headers[0].raw_value, b"a");
        let t = a.request.unwrap().time.unwrap();
        assert_eq!((t.seconds, t.nanos), (1_767_323_045, 500_000_000));
        assert_eq!(a.tls_session.unwrap().sni, "api.example.com");
    }

    #[test]
    fn mistakes_name_their_json_path() {
        let cases = [
            (
                json!({"attributes": {}, "extra": 1}),
                "extra",
                "unknown field",
            ),
            (json!([]), "(top level)", "expected an object"),
            (
                json!({"attributes": {"request": {"http": {"methd": "GET"}}}}),
                "attributes.request.http.methd",
                "unknown field",
            ),
            (
                json!({"attributes": {"request": {"http": {"method": 1}}}}),
                "attributes.request.http.method",
                "expected a string, got a number",
            ),
            (
                json!({"attributes": {"request": {"http": {"size": "big"}}}}),
                "attributes.request.http.size",
                "not a 64-bit integer",
            ),
            (
                json!({"attributes": {"request": {"http": {"headers": {"a": ["x"]}}}}}),
                "attributes.request.http.headers.a",
                "expected a string",
            ),
            (
                json!({"attributes": {"request": {"http": {"rawBody": "%%%"}}}}),
                "attributes.request.http.rawBody",
                "base64",
            ),
            (
                json!({"attributes": {"request": {"time": "yesterday"}}}),
                "attributes.request.time",
                "RFC 3339",
            ),
            (
                json!({"attributes": {"source": {"address": {"socketAddress": {"portValue": 5000000000u64}}}}}),
                "attributes.source.address.socketAddress.portValue",
                "unsigned 32-bit",
            ),
            (
                json!({"attributes": {"source": {"address": {"socketAddress": {"portValue": 1, "namedPort": "x"}}}}}),
                "attributes.source.address.socketAddress",
                "only one of",
            ),
            (
                json!({"attributes": {"source": {"address": {"pipe": {"path": "/p"}, "socketAddress": {}}}}}),
                "attributes.source.address",
                "only one of",
            ),
            (
                json!({"attributes": {"request": {"http": {"path": "/", "path_x": 1}}}}),
                "attributes.request.http.path_x",
                "unknown field",
            ),
        ];
        for (doc, path, needle) in cases {
            let e = check_request_from_json(&doc).unwrap_err();
            assert!(e.path.starts_with(path), "{doc}: {e}");
            assert!(e.message.contains(needle), "{doc}: {e}");
        }
    }

    #[test]
    fn both_spellings_of_one_field_are_refused() {
        let e = check_request_from_json(
            &json!({"attributes": {"request": {"http": {"rawBody": "", "raw_body": ""}}}}),
        )
        .unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
    }

    #[test]
    fn nulls_mean_unset() {
        let req = check_request_from_json(
            &json!({"attributes": {"source": null, "request": {"http": {"method": null, "path": "/"}}}}),
        )
        .unwrap();
        let a = req.attributes.unwrap();
        assert!(a.source.is_none());
        assert_eq!(a.request.unwrap().http.unwrap().method, "");
    }
}
