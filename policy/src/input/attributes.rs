//! The `attributes` part of the input: the CheckRequest's `AttributeContext` rendered the way
//! OPA-Envoy's protoreflect walk renders it (proto JSON names, only populated fields, oneof
//! members under their own name, `Struct` as plain JSON, nested messages such as `Timestamp`
//! walked field by field, integers as JSON numbers, bytes as base64).
//!
//! prost has no reflection, so the walk is written out over the generated structs. Every field of
//! every message reachable from `AttributeContext` is listed here; a field that is at its proto3
//! default is left out, exactly like protoreflect's `Range`.

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{
    address, envoy_internal_address, socket_address, Address, HeaderMap, Metadata,
};
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
use envoy_types::pb::google::protobuf::{value::Kind, Any, ListValue, Struct, Timestamp};
use regorus::Value;

use super::needs::InputNeeds;
use super::obj::{key, Obj};

/// `headers` is the already merged headers object, when `header_map` had to be merged in.
pub(crate) fn attribute_context(
    ctx: &AttributeContext,
    headers: Option<Value>,
    needs: &InputNeeds,
) -> Value {
    let mut o = Obj::new(needs);
    if let (Some(p), Some(n)) = (&ctx.source, o.field(key!("source"))) {
        o.insert(key!("source"), peer(p, n));
    }
    if let (Some(p), Some(n)) = (&ctx.destination, o.field(key!("destination"))) {
        o.insert(key!("destination"), peer(p, n));
    }
    if let (Some(r), Some(n)) = (&ctx.request, o.field(key!("request"))) {
        o.insert(key!("request"), request(r, headers, n));
    }
    o.put_map(key!("contextExtensions"), &ctx.context_extensions);
    if let (Some(m), Some(n)) = (&ctx.metadata_context, o.field(key!("metadataContext"))) {
        o.insert(key!("metadataContext"), metadata(m, n));
    }
    if let (Some(m), Some(n)) = (
        &ctx.route_metadata_context,
        o.field(key!("routeMetadataContext")),
    ) {
        o.insert(key!("routeMetadataContext"), metadata(m, n));
    }
    if let (Some(t), Some(n)) = (&ctx.tls_session, o.field(key!("tlsSession"))) {
        let mut tls = Obj::new(n);
        tls.put_str(key!("sni"), &t.sni);
        o.insert(key!("tlsSession"), tls.into_value());
    }
    o.into_value()
}

fn peer(p: &attribute_context::Peer, needs: &InputNeeds) -> Value {
    let mut o = Obj::new(needs);
    if let (Some(a), Some(n)) = (&p.address, o.field(key!("address"))) {
        o.insert(key!("address"), address(a, n));
    }
    o.put_str(key!("service"), &p.service);
    o.put_map(key!("labels"), &p.labels);
    o.put_str(key!("principal"), &p.principal);
    o.put_str(key!("certificate"), &p.certificate);
    o.into_value()
}

fn address(a: &Address, needs: &InputNeeds) -> Value {
    let mut o = Obj::new(needs);
    match &a.address {
        Some(address::Address::SocketAddress(s)) => {
            let Some(n) = o.field(key!("socketAddress")) else {
                return o.into_value();
            };
            let mut so = Obj::new(n);
            so.put_int(key!("protocol"), i64::from(s.protocol));
            so.put_str(key!("address"), &s.address);
            match &s.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => {
                    // A set oneof member is populated even when it holds 0.
                    so.put(key!("portValue"), Value::from(u64::from(*p)));
                }
                Some(socket_address::PortSpecifier::NamedPort(n)) => {
                    so.put(key!("namedPort"), Value::from(n.as_str()));
                }
                None => {}
            }
            so.put_str(key!("resolverName"), &s.resolver_name);
            so.put_bool(key!("ipv4Compat"), s.ipv4_compat);
            so.put_str(
                key!("networkNamespaceFilepath"),
                &s.network_namespace_filepath,
            );
            o.insert(key!("socketAddress"), so.into_value());
        }
        Some(address::Address::Pipe(p)) => {
            let Some(n) = o.field(key!("pipe")) else {
                return o.into_value();
            };
            let mut po = Obj::new(n);
            po.put_str(key!("path"), &p.path);
            po.put_int(key!("mode"), i64::from(p.mode));
            o.insert(key!("pipe"), po.into_value());
        }
        Some(address::Address::EnvoyInternalAddress(e)) => {
            let Some(n) = o.field(key!("envoyInternalAddress")) else {
                return o.into_value();
            };
            let mut eo = Obj::new(n);
            match &e.address_name_specifier {
                Some(envoy_internal_address::AddressNameSpecifier::ServerListenerName(n)) => {
                    eo.put(key!("serverListenerName"), Value::from(n.as_str()));
                }
                None => {}
            }
            eo.put_str(key!("endpointId"), &e.endpoint_id);
            o.insert(key!("envoyInternalAddress"), eo.into_value());
        }
        None => {}
    }
    o.into_value()
}

fn request(r: &attribute_context::Request, headers: Option<Value>, needs: &InputNeeds) -> Value {
    let mut o = Obj::new(needs);
    if let (Some(t), Some(n)) = (&r.time, o.field(key!("time"))) {
        o.insert(key!("time"), timestamp(t, n));
    }
    if let (Some(h), Some(n)) = (&r.http, o.field(key!("http"))) {
        o.insert(key!("http"), http_request(h, headers, n));
    }
    o.into_value()
}

/// `time` is rendered as `{seconds, nanos}` (only non-zero members), which is what OPA-Envoy HEAD
/// produces through its protoreflect walk, not the RFC 3339 string its docs show.
fn timestamp(t: &Timestamp, needs: &InputNeeds) -> Value {
    let mut o = Obj::new(needs);
    o.put_int(key!("seconds"), t.seconds);
    o.put_int(key!("nanos"), i64::from(t.nanos));
    o.into_value()
}

fn http_request(
    h: &attribute_context::HttpRequest,
    headers: Option<Value>,
    needs: &InputNeeds,
) -> Value {
    let mut o = Obj::new(needs);
    o.put_str(key!("id"), &h.id);
    o.put_str(key!("method"), &h.method);
    match headers {
        Some(v) => o.put(key!("headers"), v),
        None => o.put_map(key!("headers"), &h.headers),
    }
    if let (Some(m), Some(n)) = (&h.header_map, o.field(key!("headerMap"))) {
        o.insert(key!("headerMap"), header_map(m, n));
    }
    o.put_str(key!("path"), &h.path);
    o.put_str(key!("host"), &h.host);
    o.put_str(key!("scheme"), &h.scheme);
    o.put_str(key!("query"), &h.query);
    o.put_str(key!("fragment"), &h.fragment);
    o.put_int(key!("size"), h.size);
    o.put_str(key!("protocol"), &h.protocol);
    o.put_str(key!("body"), &h.body);
    o.put_bytes(key!("rawBody"), &h.raw_body);
    o.into_value()
}

fn header_map(m: &HeaderMap, needs: &InputNeeds) -> Value {
    let mut o = Obj::new(needs);
    if !m.headers.is_empty() && o.field(key!("headers")).is_some() {
        let list: Vec<Value> = m
            .headers
            .iter()
            .map(|hv| {
                let mut e = Obj::new(&InputNeeds::All);
                e.put_str(key!("key"), &hv.key);
                e.put_str(key!("value"), &hv.value);
                e.put_bytes(key!("rawValue"), &hv.raw_value);
                e.into_value()
            })
            .collect();
        o.insert(key!("headers"), Value::from(list));
    }
    o.into_value()
}

/// `filterMetadata` entries are `Struct`s and become plain JSON. `typedFilterMetadata` entries are
/// `Any`s; like OPA-Envoy we do not resolve their type, so they appear as `{typeUrl, value}` with
/// `value` base64-encoded.
fn metadata(m: &Metadata, needs: &InputNeeds) -> Value {
    let mut o = Obj::new(needs);
    if let Some(n) = o
        .field(key!("filterMetadata"))
        .filter(|_| !m.filter_metadata.is_empty())
    {
        let mut fm = Obj::new(n);
        fm.put_entries(&m.filter_metadata, struct_to_value);
        o.insert(key!("filterMetadata"), fm.into_value());
    }
    if let Some(n) = o
        .field(key!("typedFilterMetadata"))
        .filter(|_| !m.typed_filter_metadata.is_empty())
    {
        let mut tm = Obj::new(n);
        tm.put_entries(&m.typed_filter_metadata, any);
        o.insert(key!("typedFilterMetadata"), tm.into_value());
    }
    o.into_value()
}

fn any(a: &Any, needs: &InputNeeds) -> Value {
    let mut o = Obj::new(needs);
    o.put_str(key!("typeUrl"), &a.type_url);
    o.put_bytes(key!("value"), &a.value);
    o.into_value()
}

/// A `google.protobuf.Struct` as plain JSON (numbers are doubles, as in Go's `AsMap`).
pub(crate) fn struct_to_value(s: &Struct, needs: &InputNeeds) -> Value {
    let mut o = Obj::new(needs);
    o.put_entries(&s.fields, pb_value);
    o.into_value()
}

/// Lists are kept whole: the needs tree names members, not indexes.
fn pb_value(v: &envoy_types::pb::google::protobuf::Value, needs: &InputNeeds) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => Value::from(*n),
        Some(Kind::StringValue(s)) => Value::from(s.as_str()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_value(s, needs),
        Some(Kind::ListValue(l)) => list_value(l),
    }
}

fn list_value(l: &ListValue) -> Value {
    Value::from(
        l.values
            .iter()
            .map(|v| pb_value(v, &InputNeeds::All))
            .collect::<Vec<_>>(),
    )
}

pub(crate) fn base64(bytes: &[u8]) -> Value {
    Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
}
