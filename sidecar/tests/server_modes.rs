//! Black-box tests of the sidecar's modes and listeners: fail mode and readiness before a policy,
//! JWT builtins through a policy, HTTP-service mode, Unix socket, TLS and mTLS, and policy swaps under
//! Check traffic.

mod server_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use regent_sidecar::config::{EngineChoice, FailMode, TlsConfig};
use regent_sidecar::policy::EvaluatorKind;
use serde_json::json;
use server_support::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sync_support/tls")
        .join(name)
}

fn jwt_fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

async fn http_get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("HTTP request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Before any policy: fail mode, readiness, health

async fn no_policy_sidecar(mode: FailMode, status: u16) -> Sidecar {
    let mut cfg = base_config();
    cfg.fail_mode.mode = mode;
    cfg.fail_mode.status = status;
    Sidecar::start_with(cfg, tempfile::tempdir().expect("tempdir")).await
}

#[tokio::test]
async fn fail_closed_denies_with_the_configured_status_until_a_policy_arrives() {
    let s = no_policy_sidecar(FailMode::Closed, 429).await;
    let r = s.check(get("/public").build()).await.expect("answered");
    assert_eq!(code(&r), 7);
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(d.status.as_ref().map(|s| s.code), Some(429));
            assert!(d.body.contains("no policy"), "{}", d.body);
        }
        other => panic!("denial expected: {other:?}"),
    }
    let http = format!("http://{}", s.running.http_addr);
    assert_eq!(http_get(&format!("{http}/health")).await.0, 200);
    let (status, body) = http_get(&format!("{http}/ready")).await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["policy_active"], json!(false));
    assert_eq!(body["listening"], json!(true));

    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(format!("http://{}", s.running.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    let service = "envoy.service.auth.v3.Authorization".to_string();
    let status_of = |h: &mut tonic_health::pb::health_client::HealthClient<Channel>| {
        let mut h = h.clone();
        let service = service.clone();
        async move {
            h.check(tonic_health::pb::HealthCheckRequest { service })
                .await
                .map(|r| r.into_inner().status)
                .ok()
        }
    };
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(
        status_of(&mut health).await,
        Some(ServingStatus::NotServing as i32)
    );

    let store = s.running.store.clone();
    tokio::task::spawn_blocking(move || {
        store.activate(&[(
            "local".to_string(),
            bundle(CONTRACT_POLICY, Some(CONTRACT_DATA)),
        )])
    })
    .await
    .expect("task")
    .expect("activates");
    let r = s.check(get("/public").build()).await.expect("answered");
    assert!(allowed(&r));
    let (status, body) = http_get(&format!("{http}/ready")).await;
    assert_eq!(status, 200, "{body}");
    let mut serving = None;
    for _ in 0..100 {
        serving = status_of(&mut health).await;
        if serving == Some(ServingStatus::Serving as i32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(serving, Some(ServingStatus::Serving as i32));
    let m = s.running.metrics.render();
    assert_eq!(
        metric(&m, "regent_check_errors_total{reason=\"no_policy\"}"),
        Some(1.0)
    );
    s.stop().await;
}

#[tokio::test]
async fn fail_open_allows_without_a_policy() {
    let s = no_policy_sidecar(FailMode::Open, 503).await;
    for _ in 0..3 {
        let r = s.check(get("/anything").build()).await.expect("answered");
        assert!(allowed(&r), "{r:?}");
        assert!(metadata(&r, "decision_id").is_some());
    }
    s.stop().await;
}

#[tokio::test]
async fn a_broken_local_policy_leaves_the_sidecar_not_ready() {
    let s = Sidecar::start("package envoy.authz\n\nallow if {", None, |_, _| {}).await;
    assert!(s.running.store.current().is_none());
    let (status, _) = http_get(&format!("http://{}/ready", s.running.http_addr)).await;
    assert_eq!(status, 503);
    // Fixing the files on disk activates the policy (the directory is watched).
    let dir = s.dir.path().join("policy");
    write_policy_dir(&dir, CONTRACT_POLICY, Some(CONTRACT_DATA));
    let store = s.running.store.clone();
    assert!(eventually(Duration::from_secs(10), || store.is_active()).await);
    let r = s.check(get("/public").build()).await.expect("answered");
    assert!(allowed(&r));
    s.stop().await;
}

/// A bundle that does not define the decision rule activates (OPA activates bundles
/// independently) but leaves the sidecar not ready, naming the rule; Checks get the fail-mode
/// answer with the reason, counted as `missing_decision`, until the rule arrives.
#[tokio::test]
async fn a_missing_decision_rule_is_named_by_ready_and_by_the_check() {
    let s = Sidecar::start(
        "package envoy.helpers\n\nimport rego.v1\n\nadmins := {\"alice\"}\n",
        None,
        |cfg, _| cfg.fail_mode.status = 503,
    )
    .await;
    let store = s.running.store.clone();
    assert!(eventually(Duration::from_secs(10), || store.is_active()).await);
    let (status, body) = http_get(&format!("http://{}/ready", s.running.http_addr)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(r#""missing_decision_rule":"data.envoy.authz.allow""#),
        "{body}"
    );
    let r = s.check(get("/public").build()).await.expect("answered");
    assert!(!allowed(&r), "{r:?}");
    let Some(HttpResponse::DeniedResponse(denied)) = &r.http_response else {
        panic!("a denied response: {r:?}");
    };
    assert_eq!(denied.status.as_ref().map(|s| s.code), Some(503));
    assert!(
        denied.body.contains("data.envoy.authz.allow"),
        "{}",
        denied.body
    );
    let metrics = http_get(&format!("http://{}/metrics", s.running.http_addr))
        .await
        .1;
    assert!(
        metrics.contains(r#"reason="missing_decision""#),
        "missing_decision not counted"
    );
    // The rule arrives: ready, and decisions.
    write_policy_dir(
        &s.dir.path().join("policy"),
        CONTRACT_POLICY,
        Some(CONTRACT_DATA),
    );
    assert!(eventually(Duration::from_secs(10), || store.is_ready()).await);
    let (status, _) = http_get(&format!("http://{}/ready", s.running.http_addr)).await;
    assert_eq!(status, 200);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// JWT builtins through a policy

const JWT_POLICY: &str = r#"
package envoy.authz

import rego.v1

default allow := false

bearer := t if {
	h := input.attributes.request.http.headers.authorization
	startswith(h, "Bearer ")
	t := substring(h, 7, -1)
}

allow := {"allowed": true, "headers": {"x-sub": payload.sub}} if {
	[valid, _, payload] := io.jwt.decode_verify(bearer, {
		"cert": data.jwt.cert,
		"aud": "orders",
		"iss": "https://issuer.example",
	})
	valid
}
"#;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn claims(aud: &str, exp_offset: i64) -> serde_json::Value {
    json!({"sub": "alice", "iss": "https://issuer.example", "aud": aud,
           "exp": now() + exp_offset, "nbf": now() - 60})
}

fn rs256(claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_rsa_pem(jwt_fixture("rsa_private.pem").as_bytes()).expect("key");
    encode(&Header::new(Algorithm::RS256), claims, &key).expect("sign")
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A Check of `GET /orders` carrying `token` as a bearer token.
async fn bearer_check(
    s: &Sidecar,
    token: String,
) -> envoy_types::pb::envoy::service::auth::v3::CheckResponse {
    s.check(
        get("/orders")
            .header("authorization", &format!("Bearer {token}"))
            .build(),
    )
    .await
    .expect("answered")
}

#[tokio::test]
async fn jwt_builtins_verify_tokens_in_policies() {
    let data = json!({"jwt": {"cert": jwt_fixture("rsa_public.pem")}}).to_string();
    let s = Sidecar::start(JWT_POLICY, Some(&data), |_, _| {}).await;
    assert_eq!(
        s.running.store.current().expect("active").kind(),
        EvaluatorKind::Vm,
        "Regent's builtins run on the VM through host-await calls"
    );
    let good = rs256(&claims("orders", 3600));
    let expired = rs256(&claims("orders", -3600));
    let wrong_aud = rs256(&claims("billing", 3600));
    // Algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret.
    let wrong_alg = encode(
        &Header::new(Algorithm::HS256),
        &claims("orders", 3600),
        &EncodingKey::from_secret(jwt_fixture("rsa_public.pem").as_bytes()),
    )
    .expect("sign");
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("orders", 3600).to_string().as_bytes())
    );
    let mut tampered = good.clone();
    tampered.insert_str(good.find('.').expect("dot") + 1, "eyJ4IjoxfQ");

    let ask = |token: String| bearer_check(&s, token);
    let r = ask(good).await;
    assert!(allowed(&r), "good token: {r:?}");
    assert_eq!(header(&r, "x-sub").as_deref(), Some("alice"));
    for (what, token) in [
        ("expired", expired),
        ("wrong aud", wrong_aud),
        ("wrong alg", wrong_alg),
        ("none", none),
        ("tampered", tampered),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let r = ask(token).await;
        assert_eq!(code(&r), 7, "{what} must be denied: {r:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_jwt_policy_activates_when_the_vm_is_required() {
    let data = json!({"jwt": {"cert": jwt_fixture("rsa_public.pem")}}).to_string();
    let s = Sidecar::start(JWT_POLICY, Some(&data), |cfg, _| {
        cfg.policy.engine = EngineChoice::Vm;
    })
    .await;
    let policy = s.running.store.current().expect("io.jwt.* runs on the VM");
    assert_eq!(policy.kind(), EvaluatorKind::Vm);
    assert!(policy.calls_host_builtins());
    let ask = |token: String| bearer_check(&s, token);
    let r = ask(rs256(&claims("orders", 3600))).await;
    assert!(allowed(&r), "good token: {r:?}");
    assert_eq!(header(&r, "x-sub").as_deref(), Some("alice"));
    let r = ask(rs256(&claims("orders", -3600))).await;
    assert_eq!(code(&r), 7, "an expired token must be denied: {r:?}");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Envoy's HTTP-service mode

#[tokio::test]
async fn http_service_mode_gives_the_same_decisions() {
    let s = Sidecar::start(CONTRACT_POLICY, Some(CONTRACT_DATA), |cfg, _| {
        cfg.http.ext_authz_addr = Some("127.0.0.1:0".parse().expect("addr"));
        cfg.http.ext_authz_path_prefix = "/authz".into();
    })
    .await;
    let base = format!("http://{}", s.running.ext_authz_addr.expect("bound"));
    let client = reqwest::Client::new();

    let r = client
        .get(format!("{base}/authz/echo/a%2Fb?x=1&x=2"))
        .header("x-tag", "t1")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let h = |name: &str| {
        r.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(h("x-parsed-path"), [r#"["echo","a/b"]"#]);
    assert_eq!(h("x-parsed-query"), [r#"{"x":["1","2"]}"#]);
    assert_eq!(h("x-tag"), ["t1"]);
    assert_eq!(h("x-multi"), ["one", "two"]);
    assert_eq!(h("x-regent-decision-id").len(), 1);

    let r = client
        .post(format!("{base}/authz/echo"))
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("x-parsed-body")
            .and_then(|v| v.to_str().ok()),
        Some(r#"{"n":1}"#)
    );

    let r = client
        .get(format!("{base}/authz/login"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_eq!(r.text().await.expect("body"), "log in first");

    assert_eq!(http_get(&format!("{base}/authz/private")).await.0, 403);
    let (status, body) = http_get(&format!("{base}/authz/nothing")).await;
    assert_eq!(status, 500);
    assert!(body.contains("undefined_decision"), "{body}");
    let (status, body) = http_get(&format!("{base}/authz/echo/%ZZ")).await;
    assert_eq!(status, 400);
    assert!(body.starts_with("request_parse_error"), "{body}");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Listeners: Unix socket, TLS, mTLS

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_listener_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("authz.sock");
    // A stale socket file from an earlier run is replaced.
    std::fs::write(&sock, b"stale").expect("stale file");
    let sock2 = sock.clone();
    let s = Sidecar::start(CONTRACT_POLICY, Some(CONTRACT_DATA), move |cfg, _| {
        cfg.grpc.unix_socket = Some(sock2);
    })
    .await;
    let path = sock.clone();
    let channel = Endpoint::try_from("http://[::]:50051")
        .expect("uri")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connects over the socket");
    let mut client = AuthorizationClient::new(channel);
    let r = client
        .check(get("/public").build())
        .await
        .expect("answer")
        .into_inner();
    assert!(allowed(&r));
    let r = client
        .check(get("/private").build())
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(code(&r), 7);
    s.stop().await;
}

async fn tls_client(
    addr: std::net::SocketAddr,
    identity: Option<Identity>,
) -> Result<AuthorizationClient<Channel>, tonic::transport::Error> {
    let ca = std::fs::read(tls_fixture("ca.pem")).expect("ca");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(AuthorizationClient::new(channel))
}

fn client_identity() -> Identity {
    Identity::from_pem(
        std::fs::read(tls_fixture("client.pem")).expect("cert"),
        std::fs::read(tls_fixture("client.key")).expect("key"),
    )
}

/// A sidecar with TLS whose test client is not used (plaintext would fail); only `running` matters.
async fn tls_sidecar(mtls: bool) -> server_support::Sidecar {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy_dir = dir.path().join("policy");
    write_policy_dir(&policy_dir, CONTRACT_POLICY, Some(CONTRACT_DATA));
    let mut cfg = base_config();
    cfg.policy.bundle = Some(policy_dir);
    cfg.grpc.tls = Some(TlsConfig {
        cert_file: tls_fixture("server.pem"),
        key_file: tls_fixture("server.key"),
        client_ca_file: mtls.then(|| tls_fixture("ca.pem")),
    });
    let running = regent_sidecar::server::start(cfg)
        .await
        .expect("sidecar starts");
    // Channels connect lazily, so a plaintext client can be built; it fails on use.
    let client = AuthorizationClient::new(
        Channel::from_shared(format!("http://{}", running.grpc_addr))
            .expect("uri")
            .timeout(Duration::from_secs(5))
            .connect_lazy(),
    );
    server_support::Sidecar {
        running,
        client,
        dir,
    }
}

#[tokio::test]
async fn tls_listener_answers_over_tls_only() {
    let s = tls_sidecar(false).await;
    let mut client = tls_client(s.running.grpc_addr, None)
        .await
        .expect("TLS handshake");
    let r = client
        .check(get("/public").build())
        .await
        .expect("answer")
        .into_inner();
    assert!(allowed(&r));
    assert!(
        s.check(get("/public").build()).await.is_err(),
        "plaintext is refused"
    );
    s.stop().await;
}

#[tokio::test]
async fn mtls_listener_requires_a_client_certificate() {
    let s = tls_sidecar(true).await;
    let mut client = tls_client(s.running.grpc_addr, Some(client_identity()))
        .await
        .expect("mTLS handshake");
    let r = client
        .check(get("/private").build())
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(code(&r), 7);
    // Without a client certificate the handshake (or the first call) fails.
    let refused = match tls_client(s.running.grpc_addr, None).await {
        Err(_) => true,
        Ok(mut c) => c.check(get("/public").build()).await.is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Atomic swaps under traffic

fn swap_policy(tag: &str) -> (String, String) {
    let rego = format!(
        r#"
package envoy.authz

import rego.v1

allow := {{"allowed": true, "headers": {{"x-policy": "{tag}", "x-data": data.tag}}}}
"#
    );
    (rego, json!({ "tag": tag }).to_string())
}

async fn swaps_never_mix(engine: EngineChoice) {
    let (rego_a, data_a) = swap_policy("A");
    let s = Sidecar::start(&rego_a, Some(&data_a), |cfg, _| {
        cfg.policy.engine = engine;
    })
    .await;
    let bundles: BTreeMap<&str, _> = ["A", "B"]
        .into_iter()
        .map(|t| {
            let (r, d) = swap_policy(t);
            (t, bundle(&r, Some(&d)))
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Responses seen per policy, so each swap can wait until traffic has met the new policy.
    let seen: Arc<BTreeMap<&'static str, AtomicU64>> =
        Arc::new([("A", AtomicU64::new(0)), ("B", AtomicU64::new(0))].into());
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (client, stop, seen) = (s.client.clone(), stop.clone(), seen.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .clone()
                    .check(get("/x").build())
                    .await
                    .map_err(|e| format!("error during swaps: {e}"))?
                    .into_inner();
                if !allowed(&r) {
                    return Err(format!("denied during swaps: {r:?}"));
                }
                let (p, d) = (header(&r, "x-policy"), header(&r, "x-data"));
                match (p.as_deref(), d.as_deref()) {
                    (Some(p), Some(d)) if p == d && seen.contains_key(p) => {
                        seen[p].fetch_add(1, Ordering::Relaxed);
                    }
                    _ => return Err(format!("mixed answer: policy {p:?}, data {d:?}")),
                }
                n += 1;
            }
            Ok::<u64, String>(n)
        }));
    }
    for i in 0..12 {
        let tag = if i % 2 == 0 { "B" } else { "A" };
        let before = seen[tag].load(Ordering::Relaxed);
        let (store, b) = (s.running.store.clone(), bundles[tag].clone());
        tokio::task::spawn_blocking(move || store.activate(&[("local".to_string(), b)]))
            .await
            .expect("task")
            .expect("activates");
        let seen2 = seen.clone();
        assert!(
            eventually(Duration::from_secs(10), || seen2[tag]
                .load(Ordering::Relaxed)
                > before)
            .await,
            "traffic never met policy {tag}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.expect("worker").expect("every answer consistent");
    }
    assert!(total > 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_traffic_never_fail_or_mix_on_the_vm() {
    swaps_never_mix(EngineChoice::Vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_traffic_never_fail_or_mix_on_the_interpreter() {
    swaps_never_mix(EngineChoice::Interpreter).await;
}
