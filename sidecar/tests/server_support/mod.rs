//! Starts a real sidecar in-process on 127.0.0.1 (ports chosen by the OS) and talks to it with a real
//! tonic client. Policies are written to a temporary directory used as `policy.bundle`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use regent_bundle::Bundle;
use regent_sidecar::config::SidecarConfig;
use regent_sidecar::server::Running;
use serde_json::Value as Json;
use tonic::transport::Channel;

/// A policy exercising the whole decision contract, chosen by the first path segment. It reflects
/// the input document back in response headers (as JSON) so tests can check what the policy saw.
/// It has no `default`: an unknown first segment leaves the decision undefined.
pub(crate) const CONTRACT_POLICY: &str = r#"
package envoy.authz

import rego.v1

http_req := input.attributes.request.http

first := input.parsed_path[0]

allow := true if first == "public"

allow := false if first == "private"

allow := {
	"allowed": true,
	"headers": {
		"x-parsed-path": json.marshal(input.parsed_path),
		"x-parsed-query": json.marshal(input.parsed_query),
		"x-parsed-body": json.marshal(object.get(input, "parsed_body", "absent")),
		"x-truncated": json.marshal(object.get(input, "truncated_body", "absent")),
		"x-principal": object.get(input, "source_principal", ""),
		"x-tag": object.get(http_req.headers, "x-tag", ""),
		"x-multi": ["one", "two"],
	},
	"response_headers_to_add": {"set-cookie": ["a=1", "b=2"]},
	"request_headers_to_remove": ["authorization"],
} if first == "echo"

allow := {
	"allowed": true,
	"query_parameters_to_set": {"z": "last", "a": ["1", "2"]},
	"query_parameters_to_remove": ["secret"],
} if first == "query"

allow := {
	"allowed": false,
	"http_status": 401,
	"body": "log in first",
	"headers": {"www-authenticate": "Bearer"},
	"dynamic_metadata": {"reason": "no token", "decision_id": "from-policy"},
} if first == "login"

allow := {"allowed": data.settings.flag, "headers": {"x-flag": sprintf("%v", [data.settings.flag])}} if first == "data"

allow := {"allowed": true, "headers": {"x-parsed-path": json.marshal(input.parsed_path)}} if input.parsed_path == [""]

allow := 7 if first == "illegal"

allow := {"allowed": "yes"} if first == "ill-typed"

allow := {"headers": {"a": "b"}} if first == "no-allowed"

allow := http_req.method + 1 if first == "boom"

allow := "one" if first == "conflict"

allow := "two" if first == "conflict"
"#;

pub(crate) const CONTRACT_DATA: &str = r#"{"settings": {"flag": true}}"#;

/// Files of a policy directory/bundle.
pub(crate) fn files(rego: &str, data: Option<&str>) -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    f.insert("policy.rego".to_string(), rego.as_bytes().to_vec());
    if let Some(d) = data {
        f.insert("data.json".to_string(), d.as_bytes().to_vec());
    }
    f
}

/// An in-memory bundle.
pub(crate) fn bundle(rego: &str, data: Option<&str>) -> Arc<Bundle> {
    Arc::new(Bundle::from_files(files(rego, data)).expect("test bundle"))
}

/// Writes a policy directory.
pub(crate) fn write_policy_dir(dir: &std::path::Path, rego: &str, data: Option<&str>) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (name, bytes) in files(rego, data) {
        std::fs::write(dir.join(name), bytes).expect("write policy file");
    }
}

/// A configuration with every listener on a free loopback port.
pub(crate) fn base_config() -> SidecarConfig {
    let mut cfg = SidecarConfig::default();
    cfg.grpc.addr = "127.0.0.1:0".parse().expect("addr");
    cfg.http.addr = "127.0.0.1:0".parse().expect("addr");
    cfg
}

/// A running sidecar, its policy directory and a connected client.
pub(crate) struct Sidecar {
    pub running: Running,
    pub client: AuthorizationClient<Channel>,
    pub dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts a sidecar whose policy directory holds `rego` and `data`; `tweak` edits the
    /// configuration first (the policy directory is already set as `policy.bundle`).
    pub(crate) async fn start(
        rego: &str,
        data: Option<&str>,
        tweak: impl FnOnce(&mut SidecarConfig, &std::path::Path),
    ) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy_dir = dir.path().join("policy");
        write_policy_dir(&policy_dir, rego, data);
        let mut cfg = base_config();
        cfg.policy.bundle = Some(policy_dir);
        tweak(&mut cfg, dir.path());
        Self::start_with(cfg, dir).await
    }

    /// Starts a sidecar from a full configuration.
    pub(crate) async fn start_with(cfg: SidecarConfig, dir: tempfile::TempDir) -> Sidecar {
        let running = regent_sidecar::server::start(cfg)
            .await
            .expect("sidecar starts");
        let client = connect(running.grpc_addr).await;
        Sidecar {
            running,
            client,
            dir,
        }
    }

    pub(crate) async fn check(&self, req: CheckRequest) -> Result<CheckResponse, tonic::Status> {
        self.client.clone().check(req).await.map(|r| r.into_inner())
    }

    pub(crate) async fn stop(self) {
        self.running.shutdown().await;
    }

    /// The revision sync has active for `bundle` (empty before the first activation).
    pub(crate) fn revision(&self, bundle: &str) -> String {
        self.running
            .sync
            .as_ref()
            .and_then(|h| h.status().get(bundle).map(|b| b.active_revision.clone()))
            .unwrap_or_default()
    }

    /// Whether sync reports an error for `bundle`.
    pub(crate) fn sync_failing(&self, bundle: &str) -> bool {
        self.running
            .sync
            .as_ref()
            .and_then(|h| h.status().get(bundle).map(|b| !b.code.is_empty()))
            .unwrap_or(false)
    }
}

pub(crate) async fn connect(addr: std::net::SocketAddr) -> AuthorizationClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connects");
    AuthorizationClient::new(channel)
}

/// Builder for CheckRequests.
#[derive(Default, Clone)]
pub(crate) struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Sent in `header_map` (Envoy `encode_raw_headers`), repeated keys allowed.
    pub raw_headers: Vec<(String, String)>,
    pub body: String,
    pub raw_body: Vec<u8>,
    pub principal: String,
}

pub(crate) fn get(path: &str) -> Req {
    Req {
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

impl Req {
    pub(crate) fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub(crate) fn raw_header(mut self, k: &str, v: &str) -> Self {
        self.raw_headers.push((k.into(), v.into()));
        self
    }
    pub(crate) fn body(mut self, method: &str, content_type: &str, body: &str) -> Self {
        self.method = method.into();
        self.body = body.into();
        self.header("content-type", content_type)
    }
    pub(crate) fn principal(mut self, p: &str) -> Self {
        self.principal = p.into();
        self
    }
    pub(crate) fn build(self) -> CheckRequest {
        let header_map = if self.raw_headers.is_empty() {
            None
        } else {
            Some(HeaderMap {
                headers: self
                    .raw_headers
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.clone(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            })
        };
        let mut headers: std::collections::HashMap<String, String> =
            self.headers.into_iter().collect();
        headers.insert(":path".into(), self.path.clone());
        headers.insert(":method".into(), self.method.clone());
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    principal: self.principal,
                    ..Default::default()
                }),
                request: Some(Request {
                    time: None,
                    http: Some(HttpRequest {
                        id: "req-1".into(),
                        method: self.method,
                        path: self.path,
                        host: "api.example.com".into(),
                        scheme: "https".into(),
                        protocol: "HTTP/1.1".into(),
                        headers,
                        header_map,
                        body: self.body,
                        raw_body: self.raw_body,
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
        }
    }
}

/// gRPC status code of the response (0 = allowed).
pub(crate) fn code(r: &CheckResponse) -> i32 {
    r.status.as_ref().map_or(0, |s| s.code)
}

pub(crate) fn allowed(r: &CheckResponse) -> bool {
    code(r) == 0
}

/// Headers the response adds to the upstream request (allow) or to the denial (deny), in order.
pub(crate) fn headers(r: &CheckResponse) -> Vec<(String, String, i32)> {
    let opts = match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => &ok.headers,
        Some(HttpResponse::DeniedResponse(d)) => &d.headers,
        _ => return Vec::new(),
    };
    opts.iter()
        .filter_map(|o| {
            o.header
                .as_ref()
                .map(|h| (h.key.clone(), h.value.clone(), o.append_action))
        })
        .collect()
}

/// The value of one header the policy set, parsed as JSON.
pub(crate) fn header_json(r: &CheckResponse, name: &str) -> Json {
    let v = headers(r)
        .into_iter()
        .find(|(k, _, _)| k == name)
        .map(|(_, v, _)| v)
        .unwrap_or_else(|| panic!("no header {name} in {r:?}"));
    serde_json::from_str(&v).unwrap_or_else(|e| panic!("header {name}={v:?}: {e}"))
}

pub(crate) fn header(r: &CheckResponse, name: &str) -> Option<String> {
    headers(r)
        .into_iter()
        .find(|(k, _, _)| k == name)
        .map(|(_, v, _)| v)
}

/// `dynamic_metadata[key]` as a string.
pub(crate) fn metadata(r: &CheckResponse, key: &str) -> Option<String> {
    r.dynamic_metadata
        .as_ref()?
        .fields
        .get(key)
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

#[allow(unused_imports)] // each test binary uses part of this module
pub(crate) use regent_testkit::{eventually, metric};
