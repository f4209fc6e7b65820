//! A `CheckRequest` built from a plain HTTP request, for Envoy's HTTP-service ext_authz mode, so
//! that mode gets exactly the same `input` document as the gRPC mode.
//!
//! In HTTP-service mode Envoy forwards the original method, path (after its `path_prefix`),
//! allowed headers and, with `with_request_body`, the body. Everything else in the
//! `AttributeContext` (peer identities, metadata, context extensions) is not sent and stays empty.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::Timestamp;

/// What the HTTP-service mode knows about one authorization request.
#[derive(Debug)]
pub struct HttpCheck<'a> {
    /// The authorization request's head (method, URI, version, headers).
    pub parts: &'a http::request::Parts,
    /// The request body Envoy forwarded (empty without `with_request_body`).
    pub body: &'a [u8],
    /// A prefix Envoy's `path_prefix` added to the original path, removed again here.
    pub path_prefix: &'a str,
    /// The peer of the connection (Envoy itself in this mode).
    pub peer: Option<SocketAddr>,
    /// The time the request arrived.
    pub time: std::time::SystemTime,
}

/// Builds the `CheckRequest` Envoy would have sent over gRPC for the same request.
///
/// Header names are lower-cased (as `http` stores them); a header repeated in the request becomes
/// one value joined with `,`, as Envoy does in `headers`. A UTF-8 body goes to `body`, any other to
/// `raw_body`.
pub fn check_request_from_http(req: &HttpCheck<'_>) -> CheckRequest {
    let parts = req.parts;
    let mut headers = std::collections::HashMap::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            .and_modify(|prev: &mut String| {
                prev.push(',');
                prev.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path = match path_and_query.strip_prefix(req.path_prefix) {
        Some(rest) if !req.path_prefix.is_empty() => {
            if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            }
        }
        _ => path_and_query.to_string(),
    };
    let host = parts
        .uri
        .host()
        .map(str::to_string)
        .or_else(|| headers.get("host").cloned())
        .unwrap_or_default();
    let (body, raw_body) = match std::str::from_utf8(req.body) {
        Ok(s) => (s.to_string(), Vec::new()),
        Err(_) => (String::new(), req.body.to_vec()),
    };
    let time = req
        .time
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        });
    CheckRequest {
        attributes: Some(AttributeContext {
            source: req.peer.map(|p| Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: p.ip().to_string(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                            p.port(),
                        ))),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                time,
                http: Some(HttpRequest {
                    method: parts.method.as_str().to_string(),
                    headers,
                    path,
                    host,
                    scheme: parts.uri.scheme_str().unwrap_or_default().to_string(),
                    size: i64::try_from(req.body.len()).unwrap_or(i64::MAX),
                    protocol: format!("{:?}", parts.version),
                    body,
                    raw_body,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}
