//! Decoding a `CheckRequest` without the parts no rule can read.
//!
//! Envoy sends every request header in `attributes.request.http.headers`, both peers, the request's
//! id, host, scheme and protocol; a policy usually reads a few of them. Decoding the rest (a string
//! allocation each, two and a hash-map insert per header) and dropping it again was most of the
//! decode. Here the path down to those fields is walked by hand: a field the input document cannot
//! contain is skipped in the wire bytes; everything else is decoded by prost as the generated code
//! does.
//!
//! What is kept comes from the same [`InputNeeds`] the input document is built from, plus what the
//! sidecar parses on every request (the path, the body, `header_map`, and the headers body parsing
//! reads), so the input is the same as from a full decode (tested against prost on generated
//! requests). A skipped string or header is still checked for UTF-8, so a request prost refuses is
//! refused here too; a skipped message or map (an unread peer, a peer's address, labels) is skipped
//! by its length without looking inside. Whenever the walk meets anything it does not expect (a bad
//! length, an unexpected wire type), it leaves that field to prost, so malformed requests fail as
//! with prost (the error names the innermost message).
//!
//! One difference remains, and no rule can see it: when none of the headers a policy names is in
//! the request, a full decode gives `attributes.request.http.headers` as `{}` and this one leaves it
//! out. A policy that names particular headers can only read `headers["name"]`, undefined either way
//! (a policy that reads the map as a whole gets every header, and the same document).

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::input::{InputNeeds, BODY_HEADERS};

/// The request headers worth decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderFilter {
    /// Every header (the policy reads the whole map).
    All,
    /// These names, `BODY_HEADERS` included (a policy names a few headers: a scan beats a map).
    Named(Vec<String>),
}

impl HeaderFilter {
    /// Whether header `name` (as it appears in the map) is kept.
    pub fn keeps(&self, name: &str) -> bool {
        self.keeps_bytes(name.as_bytes())
    }

    fn keeps_bytes(&self, name: &[u8]) -> bool {
        match self {
            HeaderFilter::All => true,
            HeaderFilter::Named(names) => names.iter().any(|n| n.as_bytes() == name),
        }
    }
}

/// What of a request is decoded, worked out once per policy from what its input document can
/// contain ([`InputNeeds`]). Each flag says whether a field is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodePlan {
    /// Everything is decoded, by prost alone ([`DECODE_EVERYTHING`]).
    everything: bool,
    headers: HeaderFilter,
    source: bool,
    source_address: bool,
    source_service: bool,
    source_labels: bool,
    source_principal: bool,
    source_certificate: bool,
    destination: bool,
    context_extensions: bool,
    metadata_context: bool,
    tls_session: bool,
    route_metadata_context: bool,
    time: bool,
    id: bool,
    method: bool,
    host: bool,
    scheme: bool,
    query: bool,
    fragment: bool,
    protocol: bool,
}

/// The headers that carry a caller's trace context (W3C Trace Context and Zipkin's B3), decoded
/// besides what the policy reads when the sidecar traces Checks ([`DecodePlan::with_headers`]).
pub const TRACE_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Decode everything: no policy yet, pruning off, or the decision log records the whole input.
pub static DECODE_EVERYTHING: DecodePlan = DecodePlan {
    everything: true,
    headers: HeaderFilter::All,
    source: true,
    source_address: true,
    source_service: true,
    source_labels: true,
    source_principal: true,
    source_certificate: true,
    destination: true,
    context_extensions: true,
    metadata_context: true,
    tls_session: true,
    route_metadata_context: true,
    time: true,
    id: true,
    method: true,
    host: true,
    scheme: true,
    query: true,
    fragment: true,
    protocol: true,
};

impl DecodePlan {
    /// The plan for an input built for `needs`.
    pub fn for_needs(needs: &InputNeeds) -> Self {
        let attrs = needs.field("attributes");
        if needs.is_all() || attrs.is_some_and(InputNeeds::is_all) {
            return DECODE_EVERYTHING.clone();
        }
        let wants = |n: Option<&InputNeeds>, name: &str| n.is_some_and(|n| n.wants(name));
        let source = attrs.and_then(|n| n.field("source"));
        let request = attrs.and_then(|n| n.field("request"));
        let http = request.and_then(|n| n.field("http"));
        // `source_principal` at the top of the input is the source peer's principal.
        let principal_on_top = needs.wants("source_principal");
        DecodePlan {
            everything: false,
            headers: match http.and_then(|n| n.field("headers")) {
                Some(InputNeeds::All) => HeaderFilter::All,
                named => HeaderFilter::Named(
                    (named.into_iter())
                        .flat_map(|n| match n {
                            InputNeeds::Fields(m) => m.keys().map(String::as_str).collect(),
                            InputNeeds::All => Vec::new(),
                        })
                        .chain(BODY_HEADERS)
                        .map(str::to_string)
                        .collect(),
                ),
            },
            source: source.is_some() || principal_on_top,
            source_address: wants(source, "address"),
            source_service: wants(source, "service"),
            source_labels: wants(source, "labels"),
            source_principal: principal_on_top || wants(source, "principal"),
            source_certificate: wants(source, "certificate"),
            destination: wants(attrs, "destination"),
            context_extensions: wants(attrs, "contextExtensions"),
            metadata_context: wants(attrs, "metadataContext"),
            tls_session: wants(attrs, "tlsSession"),
            route_metadata_context: wants(attrs, "routeMetadataContext"),
            time: wants(request, "time"),
            id: wants(http, "id"),
            method: wants(http, "method"),
            host: wants(http, "host"),
            scheme: wants(http, "scheme"),
            query: wants(http, "query"),
            fragment: wants(http, "fragment"),
            protocol: wants(http, "protocol"),
        }
    }

    /// The request headers kept.
    pub fn headers(&self) -> &HeaderFilter {
        &self.headers
    }

    /// This plan, also keeping the headers `names` (lower-case). They are decoded into the
    /// request, not added to the input document: that is still built for the policy's needs.
    pub fn with_headers(&self, names: &[&str]) -> DecodePlan {
        let mut plan = self.clone();
        if let HeaderFilter::Named(kept) = &mut plan.headers {
            for name in names {
                if !kept.iter().any(|k| k == name) {
                    kept.push((*name).to_string());
                }
            }
        }
        plan
    }
}

// Field numbers (envoy/service/auth/v3/{external_auth,attribute_context}.proto).
const CHECK_REQUEST_ATTRIBUTES: u32 = 1;
const MAP_ENTRY_KEY: u32 = 1;
const MAP_ENTRY_VALUE: u32 = 2;

/// Decodes `bytes` as a `CheckRequest`, leaving out what `plan` does not keep.
pub fn decode_check_request(bytes: &[u8], plan: &DecodePlan) -> Result<CheckRequest, DecodeError> {
    if plan.everything {
        return CheckRequest::decode(bytes);
    }
    let mut request = CheckRequest::default();
    let mut buf = bytes;
    merge(&mut request, &mut buf, |req, tag, buf| {
        if tag != CHECK_REQUEST_ATTRIBUTES {
            return Ok(false);
        }
        let attributes = req.attributes.get_or_insert_with(Default::default);
        nested(buf, |buf| attribute_context(attributes, buf, plan))
    })?;
    Ok(request)
}

fn attribute_context(
    msg: &mut AttributeContext,
    buf: &mut &[u8],
    plan: &DecodePlan,
) -> Result<(), DecodeError> {
    merge(msg, buf, |msg, tag, buf| match tag {
        1 if plan.source => {
            let peer = msg.source.get_or_insert_with(Default::default);
            nested(buf, |buf| source_peer(peer, buf, plan))
        }
        1 => Ok(skip_message(buf)),
        2 if !plan.destination => Ok(skip_message(buf)),
        4 => {
            let request = msg.request.get_or_insert_with(Default::default);
            nested(buf, |buf| request_fields(request, buf, plan))
        }
        10 if !plan.context_extensions => Ok(skip_message(buf)),
        11 if !plan.metadata_context => Ok(skip_message(buf)),
        12 if !plan.tls_session => Ok(skip_message(buf)),
        13 if !plan.route_metadata_context => Ok(skip_message(buf)),
        _ => Ok(false),
    })
}

fn source_peer(msg: &mut Peer, buf: &mut &[u8], plan: &DecodePlan) -> Result<(), DecodeError> {
    merge(msg, buf, |_, tag, buf| match tag {
        1 if !plan.source_address => Ok(skip_message(buf)),
        2 if !plan.source_service => Ok(skip_string(buf)),
        3 if !plan.source_labels => Ok(skip_message(buf)),
        4 if !plan.source_principal => Ok(skip_string(buf)),
        5 if !plan.source_certificate => Ok(skip_string(buf)),
        _ => Ok(false),
    })
}

fn request_fields(
    msg: &mut Request,
    buf: &mut &[u8],
    plan: &DecodePlan,
) -> Result<(), DecodeError> {
    merge(msg, buf, |msg, tag, buf| match tag {
        1 if !plan.time => Ok(skip_message(buf)),
        2 => {
            let http = msg.http.get_or_insert_with(Default::default);
            nested(buf, |buf| http_request(http, buf, plan))
        }
        _ => Ok(false),
    })
}

/// The path, the body and `header_map` are always decoded: the sidecar parses them for every
/// request (a bad path or body is a 400 whatever the policy reads).
fn http_request(
    msg: &mut HttpRequest,
    buf: &mut &[u8],
    plan: &DecodePlan,
) -> Result<(), DecodeError> {
    merge(msg, buf, |msg, tag, buf| match tag {
        1 if !plan.id => Ok(skip_string(buf)),
        2 if !plan.method => Ok(skip_string(buf)),
        3 => Ok(header_entry(&mut msg.headers, buf, &plan.headers)),
        5 if !plan.host => Ok(skip_string(buf)),
        6 if !plan.scheme => Ok(skip_string(buf)),
        7 if !plan.query => Ok(skip_string(buf)),
        8 if !plan.fragment => Ok(skip_string(buf)),
        10 if !plan.protocol => Ok(skip_string(buf)),
        _ => Ok(false),
    })
}

/// Skips a length-delimited field whose contents `accept` takes; false (nothing consumed) on a bad
/// length or contents it refuses.
fn skip(buf: &mut &[u8], accept: fn(&[u8]) -> bool) -> bool {
    match split(buf) {
        Some((contents, rest)) if accept(contents) => {
            *buf = rest;
            true
        }
        _ => false,
    }
}

/// Skips a message, map entry or bytes field without looking inside.
fn skip_message(buf: &mut &[u8]) -> bool {
    skip(buf, |_| true)
}

/// Skips a string field, checking it is UTF-8 as prost would.
fn skip_string(buf: &mut &[u8]) -> bool {
    skip(buf, is_utf8)
}

/// Merges fields from `buf` into `msg` as prost does, except that length-delimited fields are first
/// offered to `hook`, which returns `Ok(true)` when it consumed the field, or `Ok(false)` (with
/// `buf` untouched) to leave it to prost.
fn merge<M: Message>(
    msg: &mut M,
    buf: &mut &[u8],
    mut hook: impl FnMut(&mut M, u32, &mut &[u8]) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(buf)?;
        if wire_type == WireType::LengthDelimited && hook(msg, tag, buf)? {
            continue;
        }
        msg.merge_field(tag, wire_type, buf, DecodeContext::default())?;
    }
    Ok(())
}

/// Splits a length-delimited field's contents off `buf` and hands them to `f`. A length that does
/// not fit leaves `buf` untouched and returns `Ok(false)`, so prost reports it.
fn nested<'a>(
    buf: &mut &'a [u8],
    f: impl FnOnce(&mut &'a [u8]) -> Result<(), DecodeError>,
) -> Result<bool, DecodeError> {
    let Some((mut inner, rest)) = split(buf) else {
        return Ok(false);
    };
    f(&mut inner)?;
    *buf = rest;
    Ok(true)
}

/// One entry of the headers map: inserted if `filter` keeps its key, skipped otherwise. Returns
/// false (leaving `buf` untouched) for anything prost should see: a bad length, a field of the
/// wrong wire type, a string that is not UTF-8.
fn header_entry(
    headers: &mut HashMap<String, String>,
    buf: &mut &[u8],
    filter: &HeaderFilter,
) -> bool {
    let Some((mut entry, rest)) = split(buf) else {
        return false;
    };
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    while !entry.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut entry) else {
            return false;
        };
        match tag {
            MAP_ENTRY_KEY | MAP_ENTRY_VALUE => {
                if wire_type != WireType::LengthDelimited {
                    return false;
                }
                let Some((field, after)) = split(&entry) else {
                    return false;
                };
                // A repeated field: the last one wins, as in prost.
                if tag == MAP_ENTRY_KEY {
                    key = field;
                } else {
                    value = field;
                }
                entry = after;
            }
            _ => {
                if skip_field(wire_type, tag, &mut entry, DecodeContext::default()).is_err() {
                    return false;
                }
            }
        }
    }
    if filter.keeps_bytes(key) {
        let (Ok(key), Ok(value)) = (std::str::from_utf8(key), std::str::from_utf8(value)) else {
            return false;
        };
        headers.insert(key.to_owned(), value.to_owned());
    } else if !(is_utf8(key) && is_utf8(value)) {
        return false;
    }
    *buf = rest;
    true
}

/// Whether `bytes` is UTF-8. Header names and values and the other strings skipped are nearly
/// always ASCII, checked inline a word at a time; the general check is a call and a loop.
fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

/// The contents of the length-delimited field at the start of `buf`, and what follows it; `None`
/// when the length is not a valid varint or runs past the end.
fn split<'a>(buf: &&'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let mut cursor: &'a [u8] = buf;
    let len = usize::try_from(decode_varint(&mut cursor).ok()?).ok()?;
    (len <= cursor.len()).then(|| cursor.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{build_input_for, InputOptions};
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, HeaderMap, HeaderValue, Metadata, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::TlsSession;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Timestamp, Value as PbValue};
    use proptest::prelude::*;

    /// The parts of a generated request.
    #[derive(Debug, Clone)]
    struct Parts {
        headers: Vec<(String, String)>,
        raw: Vec<(String, String)>,
        strings: Vec<String>,
        labels: Vec<(String, String)>,
        with_destination: bool,
        with_address: bool,
    }

    fn socket(ip: &str) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(8080)),
                ..Default::default()
            })),
        }
    }

    fn request(p: &Parts) -> CheckRequest {
        let s = |i: usize| p.strings.get(i).cloned().unwrap_or_default();
        let jwt = Struct {
            fields: [(
                "sub".to_string(),
                PbValue {
                    kind: Some(Kind::StringValue(s(0))),
                },
            )]
            .into(),
        };
        let metadata = Metadata {
            filter_metadata: [("jwt".to_string(), jwt)].into(),
            ..Default::default()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: p.with_address.then(|| socket("10.0.0.1")),
                    principal: s(1),
                    service: s(2),
                    labels: p.labels.iter().cloned().collect(),
                    certificate: s(3),
                }),
                destination: p.with_destination.then(|| Peer {
                    address: Some(socket("10.0.0.2")),
                    principal: s(4),
                    ..Default::default()
                }),
                request: Some(Request {
                    time: Some(Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 5,
                    }),
                    http: Some(HttpRequest {
                        id: s(5),
                        method: s(6),
                        path: "/p/q?x=1".into(),
                        host: s(7),
                        scheme: s(8),
                        query: "x=1".into(),
                        fragment: s(9),
                        size: 7,
                        protocol: s(10),
                        headers: p.headers.iter().cloned().collect(),
                        header_map: (!p.raw.is_empty()).then(|| HeaderMap {
                            headers: (p.raw.iter())
                                .map(|(k, v)| HeaderValue {
                                    key: k.clone(),
                                    value: v.clone(),
                                    ..Default::default()
                                })
                                .collect(),
                        }),
                        body: r#"{"a":1}"#.into(),
                        ..Default::default()
                    }),
                }),
                context_extensions: p.labels.iter().cloned().collect(),
                metadata_context: Some(metadata.clone()),
                route_metadata_context: Some(metadata),
                tls_session: Some(TlsSession { sni: s(11) }),
            }),
        }
    }

    /// The input as JSON, with `attributes.request.http.headers` removed when it is `{}` (see the
    /// module documentation).
    fn without_empty_headers(input: regorus::Value) -> serde_json::Value {
        let mut json = serde_json::to_value(&input).expect("serializes");
        if let Some(http) = json.pointer_mut("/attributes/request/http") {
            if let Some(http) = http.as_object_mut() {
                if http.get("headers") == Some(&serde_json::json!({})) {
                    http.remove("headers");
                }
            }
        }
        json
    }

    fn needs(paths: &[&[&str]]) -> InputNeeds {
        let mut n = InputNeeds::nothing();
        for p in paths {
            n.add(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        n
    }

    /// Paths a policy may read; each generated case takes a subset.
    const PATHS: &[&[&str]] = &[
        &["parsed_path"],
        &["parsed_body"],
        &["source_principal"],
        &["attributes", "source", "principal"],
        &["attributes", "source", "address"],
        &["attributes", "source", "labels", "l-a"],
        &["attributes", "source"],
        &["attributes", "destination"],
        &["attributes", "request", "time"],
        &["attributes", "request", "http", "method"],
        &["attributes", "request", "http", "id"],
        &["attributes", "request", "http", "host"],
        &["attributes", "request", "http", "protocol"],
        &["attributes", "request", "http", "headers", "x-a"],
        &["attributes", "request", "http", "headers"],
        &["attributes", "request", "http", "headerMap"],
        &["attributes", "request", "http", "path"],
        &["attributes", "contextExtensions", "l-a"],
        &["attributes", "metadataContext", "filterMetadata", "jwt"],
        &["attributes", "routeMetadataContext"],
        &["attributes", "tlsSession"],
        &["attributes", "request"],
        &["attributes"],
    ];

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("x-a".to_string()),
            Just("x-b".to_string()),
            Just("l-a".to_string()),
            Just("content-type".to_string()),
            Just("content-length".to_string()),
            Just("x-envoy-auth-partial-body".to_string()),
            "[a-z-]{1,12}",
        ]
    }

    fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec((name(), "\\PC{0,16}"), 0..10)
    }

    fn parts() -> impl Strategy<Value = Parts> {
        (
            pairs(),
            pairs(),
            proptest::collection::vec("\\PC{0,12}", 12),
            pairs(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(headers, raw, strings, labels, with_destination, with_address)| Parts {
                    headers,
                    raw,
                    strings,
                    labels,
                    with_destination,
                    with_address,
                },
            )
    }

    proptest! {
        /// For policies reading any subset of the paths above, the input built from the partial
        /// decode is the one built from prost's full decode, also for a message sent in two parts
        /// (fields repeated: prost merges them).
        #[test]
        fn the_input_is_the_same_as_from_a_full_decode(
            first in parts(),
            second in parts(),
            twice in any::<bool>(),
            picked in proptest::collection::vec(any::<bool>(), PATHS.len()),
        ) {
            let mut bytes = request(&first).encode_to_vec();
            if twice {
                bytes.extend(request(&second).encode_to_vec());
            }
            let chosen: Vec<&[&str]> = (PATHS.iter().zip(&picked))
                .filter(|(_, on)| **on)
                .map(|(p, _)| *p)
                .collect();
            let full = CheckRequest::decode(bytes.as_slice()).expect("decodes");
            let opts = InputOptions::default();
            for n in [needs(&chosen), InputNeeds::All] {
                let ours = decode_check_request(&bytes, &DecodePlan::for_needs(&n)).expect("decodes");
                let input = |r: &CheckRequest| {
                    build_input_for(r, &opts, &n)
                        .map(without_empty_headers)
                        .map_err(|e| e.to_string())
                };
                prop_assert_eq!(input(&ours), input(&full), "needs {}", n.describe());
            }
        }

        /// Cut anywhere, a request fails exactly when prost fails on it.
        #[test]
        fn truncated_requests_fail_as_with_prost(p in parts(), cut in any::<prop::sample::Index>()) {
            let bytes = request(&p).encode_to_vec();
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            let n = needs(&[&["parsed_path"]]);
            let ours = decode_check_request(bytes, &DecodePlan::for_needs(&n));
            let theirs = CheckRequest::decode(bytes);
            prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} / {:?}", ours.err(), theirs.err());
        }
    }

    /// A header or string field that is skipped is still checked: invalid UTF-8 fails the request,
    /// as in prost.
    #[test]
    fn a_skipped_string_that_is_not_utf8_fails_the_request() {
        for (header, host) in [("ok", "fine"), ("fine", "ok")] {
            let parts = Parts {
                headers: vec![("x-zzz".into(), header.into())],
                raw: vec![],
                strings: (0..12)
                    .map(|i| {
                        if i == 7 {
                            host.to_string()
                        } else {
                            String::new()
                        }
                    })
                    .collect(),
                labels: vec![],
                with_destination: false,
                with_address: false,
            };
            let mut bytes = request(&parts).encode_to_vec();
            let at = (bytes.windows(2))
                .position(|w| w == b"ok")
                .expect("value in the encoding");
            bytes[at] = 0xff;
            assert!(CheckRequest::decode(bytes.as_slice()).is_err());
            let n = needs(&[&["parsed_path"]]);
            let err = decode_check_request(&bytes, &DecodePlan::for_needs(&n)).expect_err("fails");
            assert!(err.to_string().contains("UTF-8"), "{err}");
        }
    }

    /// A policy that names no header still gets its body parsed: the headers body parsing reads are
    /// kept; the others, and the fields the policy does not read, are not decoded.
    #[test]
    fn body_headers_are_kept_and_unread_fields_left_out() {
        let parts = Parts {
            headers: vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-a".to_string(), "1".to_string()),
            ],
            raw: vec![],
            strings: (0..12).map(|i| format!("s{i}")).collect(),
            labels: vec![("l-a".into(), "1".into())],
            with_destination: true,
            with_address: true,
        };
        let bytes = request(&parts).encode_to_vec();
        let n = needs(&[
            &["parsed_body"],
            &["attributes", "request", "http", "method"],
        ]);
        let decoded = decode_check_request(&bytes, &DecodePlan::for_needs(&n)).expect("decodes");
        let attributes = decoded.attributes.as_ref().expect("attributes");
        let http = (attributes.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .expect("http");
        assert_eq!(http.headers.len(), 1, "{:?}", http.headers);
        assert_eq!((http.method.as_str(), http.host.as_str()), ("s6", ""));
        assert_eq!(http.path, "/p/q?x=1");
        assert!(attributes.source.is_none() && attributes.destination.is_none());
        assert!(attributes.metadata_context.is_none() && attributes.context_extensions.is_empty());
        let input = build_input_for(&decoded, &InputOptions::default(), &n).expect("input");
        assert_eq!(
            input["parsed_body"],
            regorus::Value::from_json_str(r#"{"a":1}"#).expect("json")
        );
    }

    /// The trace context headers a traced plan keeps reach the request, not the input document.
    #[test]
    fn trace_headers_are_decoded_but_not_put_in_the_input() {
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        path: "/".into(),
                        headers: [("x-a", "1"), ("traceparent", "t"), ("x-b3-traceid", "b")]
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let bytes = request.encode_to_vec();
        let n = needs(&[&["attributes", "request", "http", "headers", "x-a"]]);
        let plain = DecodePlan::for_needs(&n);
        let traced = plain.with_headers(TRACE_HEADERS);
        assert!(!plain.headers().keeps("traceparent"));
        let decoded = decode_check_request(&bytes, &traced).expect("decodes");
        let headers = &decoded
            .attributes
            .as_ref()
            .expect("attributes")
            .request
            .as_ref()
            .expect("request")
            .http
            .as_ref()
            .expect("http")
            .headers;
        assert_eq!(headers.get("traceparent").map(String::as_str), Some("t"));
        assert_eq!(headers.get("x-b3-traceid").map(String::as_str), Some("b"));
        let options = InputOptions::default();
        let with_trace = build_input_for(&decoded, &options, &n).expect("input");
        let without = build_input_for(
            &decode_check_request(&bytes, &plain).expect("decodes"),
            &options,
            &n,
        )
        .expect("input");
        assert_eq!(with_trace, without);
    }

    #[test]
    fn plans_follow_the_needs() {
        let named = needs(&[&["attributes", "request", "http", "headers", "x-a"]]);
        let plan = DecodePlan::for_needs(&named);
        let h = plan.headers();
        assert!(h.keeps("x-a") && h.keeps("content-type") && !h.keeps("x-b"));
        let none = needs(&[&["parsed_path"]]);
        let plan = DecodePlan::for_needs(&none);
        let h = plan.headers();
        assert!(h.keeps("content-length") && !h.keeps("x-a"));
        let all = needs(&[&["attributes", "request"]]);
        let plan = DecodePlan::for_needs(&all);
        assert_eq!(plan.headers(), &HeaderFilter::All);
        assert!(plan.method && plan.host && !plan.everything && !plan.source);
        assert_eq!(DecodePlan::for_needs(&InputNeeds::All), DECODE_EVERYTHING);
        assert_eq!(
            DECODE_EVERYTHING.with_headers(TRACE_HEADERS),
            DECODE_EVERYTHING
        );
        assert_eq!(
            DecodePlan::for_needs(&needs(&[&["attributes"]])),
            DECODE_EVERYTHING
        );
        let principal = needs(&[&["source_principal"]]);
        let p = DecodePlan::for_needs(&principal);
        assert!(p.source && p.source_principal && !p.source_address && !p.destination);
    }
}
