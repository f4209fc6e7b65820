//! Benchmark tooling: a closed-loop gRPC load generator (`load`), a NOP ext_authz server used as the
//! throughput floor (`nop_authz`), and an in-process policy evaluation benchmark (`eval_bench`).
//! Driven by `bench/run.sh` (`make bench`); figures go in BENCHMARKS.md.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// An Envoy-shaped CheckRequest (about 400 bytes encoded): the headers a browser or service client
/// typically sends, source and destination peers, and the RBAC identity header `x-user`.
pub fn check_request(method: &str, path: &str, user: &str) -> CheckRequest {
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
        ("x-user", user),
    ] {
        headers.insert(k.to_string(), v.to_string());
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
            ..Default::default()
        }),
    }
}

/// The request mix used against the RBAC policy: reads and writes by users with and without the
/// needed role, so both allow and deny paths are exercised. Same order every run.
pub fn rbac_mix() -> Vec<CheckRequest> {
    vec![
        // user-000: orders-reader, orders-writer, admin
        check_request("GET", "/api/orders/items/42?expand=lines", "user-000"),
        // user-001: billing-reader, users-writer
        check_request("GET", "/api/billing/invoices/7", "user-001"),
        check_request("POST", "/api/users/items", "user-001"),
        // denied: a write to billing without the writer role
        check_request("POST", "/api/billing/items", "user-001"),
        // denied: unknown user
        check_request("GET", "/api/orders/items/1", "nobody"),
        // user-002: users-reader, reports-writer
        check_request("PUT", "/api/reports/items/3", "user-002"),
        check_request("GET", "/api/users/daily", "user-002"),
        // denied: no inventory role
        check_request("GET", "/api/inventory/items", "user-002"),
    ]
}

/// What the RBAC policy must answer for [`rbac_mix`], in order (checked by `eval_bench` and `load`).
pub const RBAC_EXPECTED: [bool; 8] = [true, true, true, false, false, true, true, false];

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
