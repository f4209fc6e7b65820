//! Decoding a `CheckRequest` without the request headers no rule can read.
//!
//! Envoy sends every request header in `attributes.request.http.headers`; a policy usually reads one
//! or two of them. Decoding the others (two strings and a hash-map insert each) and dropping them
//! again was the largest part of the decode. Here the path down to that map is walked by hand and
//! each header entry is looked at in place: an entry the input cannot contain is skipped without
//! allocating; everything else is decoded by prost exactly as the generated code does.
//!
//! Which headers are kept comes from the same [`InputNeeds`] the input document is built from, plus
//! the headers body parsing reads, so the input is the same as from a full decode (tested against
//! prost on generated requests). Whenever the fast path meets anything it does not expect (a bad
//! length, a string that is not UTF-8, an unexpected wire type), it leaves that field to prost, so
//! malformed requests fail as they would with prost (the error names the innermost message).
//!
//! One difference remains, and no rule can see it: when none of the headers a policy names is in
//! the request, a full decode gives `attributes.request.http.headers` as `{}` and this one leaves it
//! out. A policy that names particular headers can only read `headers["name"]`, undefined either way
//! (a policy that reads the map as a whole gets every header, and the same document).

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::input::InputNeeds;

/// Headers the input reads whatever the policy names: body parsing and `truncated_body`.
const BODY_HEADERS: [&str; 3] = [
    "content-type",
    "content-length",
    "x-envoy-auth-partial-body",
];

/// The request headers worth decoding.
#[derive(Debug, Clone, Copy)]
pub enum HeaderFilter<'n> {
    /// Every header (the policy reads the whole map, or the decision log records the input).
    All,
    /// These names (and [`BODY_HEADERS`]).
    Named(&'n BTreeMap<String, InputNeeds>),
    /// Only [`BODY_HEADERS`].
    BodyOnly,
}

impl<'n> HeaderFilter<'n> {
    /// The filter for an input built for `needs`.
    pub fn for_needs(needs: &'n InputNeeds) -> Self {
        let headers = needs
            .field("attributes")
            .and_then(|n| n.field("request"))
            .and_then(|n| n.field("http"))
            .and_then(|n| n.field("headers"));
        match headers {
            None => HeaderFilter::BodyOnly,
            Some(InputNeeds::All) => HeaderFilter::All,
            Some(InputNeeds::Fields(names)) => HeaderFilter::Named(names),
        }
    }

    /// Whether header `name` (as it appears in the map) is kept.
    pub fn keeps(&self, name: &str) -> bool {
        match self {
            HeaderFilter::All => true,
            HeaderFilter::Named(names) => names.contains_key(name) || BODY_HEADERS.contains(&name),
            HeaderFilter::BodyOnly => BODY_HEADERS.contains(&name),
        }
    }
}

// Field numbers on the way to the headers map (envoy/service/auth/v3/*.proto).
const CHECK_REQUEST_ATTRIBUTES: u32 = 1;
const ATTRIBUTE_CONTEXT_REQUEST: u32 = 4;
const REQUEST_HTTP: u32 = 2;
const HTTP_REQUEST_HEADERS: u32 = 3;
const MAP_ENTRY_KEY: u32 = 1;
const MAP_ENTRY_VALUE: u32 = 2;

/// Decodes `bytes` as a `CheckRequest`, keeping only the headers `filter` keeps.
pub fn decode_check_request(
    bytes: &[u8],
    filter: HeaderFilter<'_>,
) -> Result<CheckRequest, DecodeError> {
    if let HeaderFilter::All = filter {
        return CheckRequest::decode(bytes);
    }
    let mut request = CheckRequest::default();
    let mut buf = bytes;
    merge(&mut request, &mut buf, |req, tag, buf| {
        if tag != CHECK_REQUEST_ATTRIBUTES {
            return Ok(false);
        }
        nested(buf, |buf| {
            let attributes = req.attributes.get_or_insert_with(Default::default);
            merge(attributes, buf, |attributes, tag, buf| {
                if tag != ATTRIBUTE_CONTEXT_REQUEST {
                    return Ok(false);
                }
                nested(buf, |buf| {
                    let request = attributes.request.get_or_insert_with(Default::default);
                    merge(request, buf, |request, tag, buf| {
                        if tag != REQUEST_HTTP {
                            return Ok(false);
                        }
                        nested(buf, |buf| {
                            let http = request.http.get_or_insert_with(Default::default);
                            merge(http, buf, |http, tag, buf| {
                                if tag != HTTP_REQUEST_HEADERS {
                                    return Ok(false);
                                }
                                Ok(header_entry(&mut http.headers, buf, filter))
                            })
                        })
                    })
                })
            })
        })
    })?;
    Ok(request)
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
    filter: HeaderFilter<'_>,
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
    let (Ok(key), Ok(value)) = (std::str::from_utf8(key), std::str::from_utf8(value)) else {
        return false;
    };
    if filter.keeps(key) {
        headers.insert(key.to_owned(), value.to_owned());
    }
    *buf = rest;
    true
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
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use proptest::prelude::*;

    fn request(headers: &[(String, String)], raw: &[(String, String)], path: &str) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    principal: "spiffe://a/b".into(),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "POST".into(),
                        path: path.into(),
                        headers: headers.iter().cloned().collect(),
                        header_map: (!raw.is_empty()).then(|| HeaderMap {
                            headers: raw
                                .iter()
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
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    /// What a full prost decode gives once the headers the filter drops are removed.
    fn expected(bytes: &[u8], filter: HeaderFilter<'_>) -> Result<CheckRequest, DecodeError> {
        let mut r = CheckRequest::decode(bytes)?;
        if let Some(http) = r
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.headers.retain(|k, _| filter.keeps(k));
        }
        Ok(r)
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

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("x-a".to_string()),
            Just("x-b".to_string()),
            Just("content-type".to_string()),
            Just("content-length".to_string()),
            Just("x-envoy-auth-partial-body".to_string()),
            Just(":path".to_string()),
            "[a-z-]{1,12}",
        ]
    }

    fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec((header_name(), "\\PC{0,16}"), 0..12)
    }

    proptest! {
        /// For every filter, the fast decode equals prost's decode with the dropped headers removed,
        /// also for a message sent in two parts (fields repeated: prost merges them), and the input
        /// document built for the filter's needs is the same either way.
        #[test]
        fn same_as_prost_without_the_dropped_headers(
            h1 in headers(), h2 in headers(), raw in headers(), twice in any::<bool>(),
        ) {
            let mut bytes = request(&h1, &raw, "/p/q?x=1").encode_to_vec();
            if twice {
                bytes.extend(request(&h2, &[], "/r").encode_to_vec());
            }
            let trees = [
                needs(&[&["parsed_body"]]),
                needs(&[&["attributes", "request", "http", "headers", "x-a"], &["parsed_path"]]),
                needs(&[&["attributes", "request", "http", "headers"]]),
                needs(&[&["attributes", "request", "http", "headerMap"], &["attributes", "source"]]),
                InputNeeds::All,
            ];
            for n in &trees {
                let filter = HeaderFilter::for_needs(n);
                let ours = decode_check_request(&bytes, filter).expect("decodes");
                prop_assert_eq!(&ours, &expected(&bytes, filter).expect("decodes"));
                let full = CheckRequest::decode(bytes.as_slice()).expect("decodes");
                let opts = InputOptions::default();
                let input = |r: &CheckRequest| {
                    build_input_for(r, &opts, n)
                        .map(without_empty_headers)
                        .map_err(|e| e.to_string())
                };
                prop_assert_eq!(input(&ours), input(&full));
            }
        }

        /// Cut anywhere, a request fails exactly when prost fails on it, and decodes the same when not.
        #[test]
        fn truncated_requests_fail_as_with_prost(h in headers(), cut in any::<prop::sample::Index>()) {
            let bytes = request(&h, &[], "/p").encode_to_vec();
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            let filter = HeaderFilter::BodyOnly;
            match (decode_check_request(bytes, filter), expected(bytes, filter)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "ours {:?}, prost {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }

    /// A header that is skipped is still checked: invalid UTF-8 fails the request as in prost.
    #[test]
    fn a_skipped_header_that_is_not_utf8_fails_the_request() {
        let mut bytes = request(&[("x-zzz".into(), "ok".into())], &[], "/").encode_to_vec();
        let at = bytes
            .windows(2)
            .position(|w| w == b"ok")
            .expect("value in the encoding");
        bytes[at] = 0xff;
        assert!(CheckRequest::decode(bytes.as_slice()).is_err());
        let err = decode_check_request(&bytes, HeaderFilter::BodyOnly).expect_err("fails");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    /// A policy that names no header still gets its body parsed: the headers body parsing reads are
    /// kept.
    #[test]
    fn body_headers_are_kept_for_parsed_body() {
        let h = [
            ("content-type".to_string(), "application/json".to_string()),
            ("x-a".to_string(), "1".to_string()),
        ];
        let bytes = request(&h, &[], "/").encode_to_vec();
        let n = needs(&[&["parsed_body"]]);
        let decoded = decode_check_request(&bytes, HeaderFilter::for_needs(&n)).expect("decodes");
        let headers = &decoded.attributes.as_ref().and_then(|a| a.request.as_ref());
        let headers = &headers.and_then(|r| r.http.as_ref()).expect("http").headers;
        assert_eq!(headers.len(), 1, "{headers:?}");
        let input = build_input_for(&decoded, &InputOptions::default(), &n).expect("input");
        assert_eq!(
            input["parsed_body"],
            regorus::Value::from_json_str(r#"{"a":1}"#).expect("json")
        );
    }

    #[test]
    fn filters_follow_the_needs() {
        let named = needs(&[&["attributes", "request", "http", "headers", "x-a"]]);
        let f = HeaderFilter::for_needs(&named);
        assert!(f.keeps("x-a") && f.keeps("content-type") && !f.keeps("x-b"));
        let none = needs(&[&["parsed_path"]]);
        let f = HeaderFilter::for_needs(&none);
        assert!(f.keeps("content-length") && !f.keeps("x-a"));
        let all = needs(&[&["attributes", "request"]]);
        assert!(matches!(HeaderFilter::for_needs(&all), HeaderFilter::All));
        assert!(matches!(
            HeaderFilter::for_needs(&InputNeeds::All),
            HeaderFilter::All
        ));
    }
}
