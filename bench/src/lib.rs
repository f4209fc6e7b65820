//! Benchmark tooling: a closed-loop gRPC load generator (`load`), a NOP ext_authz server used as the
//! throughput floor (`nop_authz`), an in-process policy evaluation benchmark (`eval_bench`), and the
//! fixtures of the real-world policies (`fixtures`: [`edge_jwt`], [`bindings`]).
//! Driven by `bench/run.sh` (`make bench`); figures go in BENCHMARKS.md.

pub mod bindings;
pub mod edge_jwt;
pub mod jwks_server;
pub mod mix;

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, Metadata, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};

fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// An Envoy-shaped CheckRequest (about 500 bytes encoded): the headers a client typically sends,
/// source and destination peers, and the claims of a JWT that Envoy's `jwt_authn` filter verified
/// (`payload_in_metadata: verified_jwt`), which is where `policies/rbac` reads the subject.
pub fn check_request(method: &str, path: &str, subject: &str) -> CheckRequest {
    check_request_with(method, path, subject, &[])
}

/// [`check_request`] with more headers (e.g. `authorization` for a policy that verifies the bearer
/// token itself; `subject` is then usually empty: no `jwt_authn` metadata).
pub fn check_request_with(
    method: &str,
    path: &str,
    subject: &str,
    extra_headers: &[(&str, &str)],
) -> CheckRequest {
    let mut headers = HashMap::new();
    for (k, v) in [
        (":authority", "api.example.com"),
        (":method", method),
        (":path", path),
        (":scheme", "https"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("x-request-id", "6b9f3c9e-6f8e-4d0a-9d0c-2f1a0e6c9b11"),
        ("x-forwarded-proto", "https"),
    ]
    .into_iter()
    .chain(extra_headers.iter().copied())
    {
        headers.insert(k.to_string(), v.to_string());
    }
    let mut filter_metadata = HashMap::new();
    if !subject.is_empty() {
        let claims = Struct {
            fields: [
                ("sub".to_string(), string(subject)),
                ("iss".to_string(), string("https://issuer.example")),
            ]
            .into_iter()
            .collect(),
        };
        let jwt = Struct {
            fields: [(
                "verified_jwt".to_string(),
                PbValue {
                    kind: Some(Kind::StructValue(claims)),
                },
            )]
            .into_iter()
            .collect(),
        };
        filter_metadata.insert("envoy.filters.http.jwt_authn".to_string(), jwt);
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(socket("10.0.0.7", 51234)),
                principal: "spiffe://cluster.local/ns/shop/sa/frontend".into(),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: Some(socket("10.0.0.9", 8080)),
                ..Default::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: "1234567890".into(),
                    method: method.into(),
                    path: path.into(),
                    host: "api.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/2".into(),
                    headers,
                    ..Default::default()
                }),
            }),
            metadata_context: Some(Metadata {
                filter_metadata,
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn string(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// The request mix used against `policies/rbac`: reads and writes by users with and without the
/// needed role, so both allow and deny paths are exercised. Same order every run.
pub fn rbac_mix() -> Vec<CheckRequest> {
    vec![
        // user-010: order_viewer in tenant-10
        check_request(
            "GET",
            "/api/v1/tenants/tenant-10/orders/o-1?expand=lines",
            "user-010",
        ),
        check_request("DELETE", "/api/v1/tenants/tenant-10/orders/o-1", "user-010"),
        check_request("GET", "/api/v1/tenants/tenant-03/orders", "user-010"),
        // user-000: global platform_admin
        check_request("PUT", "/api/v1/tenants/tenant-11/users/u-1", "user-000"),
        // user-042: tenant_admin in tenant-02
        check_request("POST", "/api/v1/tenants/tenant-02/invoices", "user-042"),
        // user-150: billing_admin in tenant-10
        check_request("GET", "/api/v1/tenants/tenant-10/payments/p-9", "user-150"),
        // user-003: global auditor
        check_request("GET", "/api/v1/audit", "user-003"),
        // no verified token
        check_request("GET", "/api/v1/tenants/tenant-10/orders", ""),
    ]
}

/// What `policies/rbac` must answer for [`rbac_mix`], in order (checked by `eval_bench` and `load`).
pub const RBAC_EXPECTED: [bool; 8] = [true, false, false, true, true, true, true, false];

/// CPU time (user + system) of a process, in seconds, from /proc/PID/stat.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, i.e. 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        // USER_HZ is 100 on every Linux architecture Regent targets; `getconf CLK_TCK` confirms it.
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `/proc/PID/status` field in KiB (`VmHWM`, `VmRSS`).
pub fn process_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
