//! The caller's trace context, from headers: W3C Trace Context (`traceparent`, `tracestate`)
//! first, then Zipkin's B3, as the single `b3` header or the `x-b3-*` headers. opentelemetry's
//! crates have no B3 propagator without a Zipkin exporter, so B3 is parsed here.
//!
//! Two places carry them: the gRPC call's own metadata, where Envoy's gRPC client puts the
//! context of its ext_authz span, and the request headers inside the CheckRequest (the
//! downstream request's, and in HTTP-service mode those of the request to this server).

use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// A request header: the `headers` map, else `header_map` (Envoy's `encode_raw_headers`).
pub fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    if let Some(v) = http.headers.get(name) {
        return Some(v.as_str());
    }
    let entry = http
        .header_map
        .as_ref()?
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))?;
    if entry.raw_value.is_empty() {
        Some(entry.value.as_str())
    } else {
        std::str::from_utf8(&entry.raw_value).ok()
    }
}

/// Headers that may carry a trace context (names are lower-case).
pub trait Carrier {
    /// The value of header `name`, when present and text.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Carrier for HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        header(self, name)
    }
}

impl Carrier for tonic::metadata::MetadataMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name)?.to_str().ok()
    }
}

/// A carrier, as opentelemetry's propagators read one.
struct Headers<'a>(&'a dyn Carrier);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header(key)
    }

    /// Not used by the W3C propagator, which asks for its two headers by name.
    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// A W3C parent: the context with the remote span, when `traceparent` is valid.
pub fn w3c_parent(propagator: &TraceContextPropagator, c: &dyn Carrier) -> Option<Context> {
    use opentelemetry::trace::TraceContextExt;
    c.header("traceparent")?;
    let cx = propagator.extract_with_context(&Context::new(), &Headers(c));
    cx.span().span_context().is_valid().then_some(cx)
}

/// A B3 parent's ids and sampling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3 {
    /// The trace id (a 64-bit id is widened with leading zeros).
    pub trace_id: TraceId,
    /// The caller's span.
    pub span_id: SpanId,
    /// The caller's sampling decision; `None` defers it to this service.
    pub sampled: Option<bool>,
}

/// The B3 parent in `c`: the `b3` header when present and valid, else the `x-b3-*` ones.
pub fn b3_parent(c: &dyn Carrier) -> Option<B3> {
    if let Some(single) = c.header("b3").and_then(parse_b3_single) {
        return Some(single);
    }
    parse_b3_multi(
        c.header("x-b3-traceid")?,
        c.header("x-b3-spanid")?,
        c.header("x-b3-sampled"),
        c.header("x-b3-flags"),
    )
}

/// The single header: `{trace id}-{span id}[-{sampling}[-{parent span id}]]`. A header with
/// only a sampling state has no parent to follow (`None`).
pub fn parse_b3_single(value: &str) -> Option<B3> {
    let mut parts = value.trim().split('-');
    let trace_id = trace_id(parts.next()?)?;
    let span_id = span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some(s) => Some(match s {
            "1" | "d" => true,
            "0" => false,
            _ => return None,
        }),
    };
    if let Some(parent) = parts.next() {
        span_id_of(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(B3 {
        trace_id,
        span_id,
        sampled,
    })
}

/// The multiple headers: `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled` (`1`/`0`, or the
/// `true`/`false` older tracers sent) and `x-b3-flags` (`1`: debug, which means sampled).
pub fn parse_b3_multi(
    trace: &str,
    span: &str,
    sampled: Option<&str>,
    flags: Option<&str>,
) -> Option<B3> {
    let trace_id = trace_id(trace.trim())?;
    let span_id = span_id(span.trim())?;
    let sampled = if flags.map(str::trim) == Some("1") {
        Some(true)
    } else {
        match sampled.map(str::trim) {
            None => None,
            Some("1") | Some("true") => Some(true),
            Some("0") | Some("false") => Some(false),
            Some(_) => return None,
        }
    };
    Some(B3 {
        trace_id,
        span_id,
        sampled,
    })
}

fn is_hex(s: &str, lengths: &[usize]) -> bool {
    lengths.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A 128-bit id in 32 hex digits, or a 64-bit one in 16; all zeros is invalid.
fn trace_id(s: &str) -> Option<TraceId> {
    if !is_hex(s, &[16, 32]) {
        return None;
    }
    let id = u128::from_str_radix(s, 16).ok()?;
    (id != 0).then(|| TraceId::from_bytes(id.to_be_bytes()))
}

fn span_id_of(s: &str) -> Option<u64> {
    if !is_hex(s, &[16]) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|id| *id != 0)
}

fn span_id(s: &str) -> Option<SpanId> {
    span_id_of(s).map(|id| SpanId::from_bytes(id.to_be_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const SPAN: &str = "e457b5a2e4d86bd1";

    fn ids(trace: &str, span: &str) -> (TraceId, SpanId) {
        (
            TraceId::from_hex(trace).expect("trace id"),
            SpanId::from_hex(span).expect("span id"),
        )
    }

    #[test]
    fn single_header_forms() {
        let (t, s) = ids(TRACE, SPAN);
        let b3 = |sampled| {
            Some(B3 {
                trace_id: t,
                span_id: s,
                sampled,
            })
        };
        assert_eq!(parse_b3_single(&format!("{TRACE}-{SPAN}")), b3(None));
        assert_eq!(
            parse_b3_single(&format!("{TRACE}-{SPAN}-1")),
            b3(Some(true))
        );
        assert_eq!(
            parse_b3_single(&format!("{TRACE}-{SPAN}-d")),
            b3(Some(true))
        );
        assert_eq!(
            parse_b3_single(&format!("{TRACE}-{SPAN}-0-05e3ac9a4f6e3b90")),
            b3(Some(false))
        );
        // A 64-bit trace id is the low half of the 128-bit one.
        let short = parse_b3_single(&format!("64fe8b2a57d3eff7-{SPAN}-1")).expect("parses");
        assert_eq!(
            short.trace_id.to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
    }

    #[test]
    fn malformed_single_headers_are_refused() {
        for bad in [
            "",
            "1",
            "0",
            "d",
            TRACE,
            &format!("{TRACE}-"),
            &format!("{TRACE}-{SPAN}-2"),
            &format!("{TRACE}-{SPAN}-1-xyz"),
            &format!("{TRACE}-{SPAN}-1-05e3ac9a4f6e3b90-extra"),
            &format!("{}-{SPAN}", "0".repeat(32)),
            &format!("{TRACE}-{}", "0".repeat(16)),
            &format!("{TRACE}-{SPAN}0"),
            &format!("{}-{SPAN}", &TRACE[..31]),
            &format!("g{}-{SPAN}", &TRACE[1..]),
            &format!("+{}-{SPAN}", &TRACE[1..]),
        ] {
            assert_eq!(parse_b3_single(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn multiple_headers() {
        let (t, s) = ids(TRACE, SPAN);
        let parsed = |sampled, flags| parse_b3_multi(TRACE, SPAN, sampled, flags);
        assert_eq!(
            parsed(None, None).map(|b| (b.trace_id, b.span_id)),
            Some((t, s))
        );
        assert_eq!(parsed(None, None).and_then(|b| b.sampled), None);
        assert_eq!(parsed(Some("1"), None).and_then(|b| b.sampled), Some(true));
        assert_eq!(
            parsed(Some("true"), None).and_then(|b| b.sampled),
            Some(true)
        );
        assert_eq!(parsed(Some("0"), None).and_then(|b| b.sampled), Some(false));
        assert_eq!(
            parsed(Some("0"), Some("1")).and_then(|b| b.sampled),
            Some(true)
        );
        assert_eq!(parsed(Some("yes"), None), None);
        assert_eq!(parse_b3_multi("xyz", SPAN, None, None), None);
        assert_eq!(parse_b3_multi(TRACE, "", None, None), None);
    }

    #[test]
    fn headers_come_from_either_map() {
        use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
        let mut http = HttpRequest::default();
        http.headers.insert("b3".into(), "from-map".into());
        http.header_map = Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "b3".into(),
                    value: "from-raw".into(),
                    raw_value: Vec::new(),
                },
                HeaderValue {
                    key: "traceparent".into(),
                    value: String::new(),
                    raw_value: b"raw-bytes".to_vec(),
                },
            ],
        });
        assert_eq!(header(&http, "b3"), Some("from-map"));
        assert_eq!(header(&http, "traceparent"), Some("raw-bytes"));
        assert_eq!(header(&http, "x-b3-traceid"), None);
    }

    #[test]
    fn the_single_header_wins_over_the_multiple_ones() {
        let mut http = HttpRequest::default();
        let other = "0af7651916cd43dd8448eb211c80319c";
        http.headers
            .insert("b3".into(), format!("{TRACE}-{SPAN}-1"));
        http.headers.insert("x-b3-traceid".into(), other.into());
        http.headers.insert("x-b3-spanid".into(), SPAN.into());
        assert_eq!(
            b3_parent(&http).map(|b| b.trace_id.to_string()).as_deref(),
            Some(TRACE)
        );
        // An invalid single header falls back to the multiple ones.
        http.headers.insert("b3".into(), "garbage".into());
        assert_eq!(
            b3_parent(&http).map(|b| b.trace_id.to_string()).as_deref(),
            Some(other)
        );
    }
}
