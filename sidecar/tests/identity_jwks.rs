//! Remote key sets (`identity.jwks`) against real JWKS servers on 127.0.0.1: a real sidecar, a
//! policy using `io.jwt.decode_verify(token, {"jwks_issuer": ...})` and `regent.jwks(issuer)`,
//! tokens signed here. The provider rotates keys, goes down, hangs, and is flooded with forged
//! `kid`s; the sidecar restarts with it down. Every wait is a bounded poll.

mod server_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get as route_get;
use axum::Router;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use regent_sidecar::identity::JwksSource;
use serde_json::json;
use server_support::*;

const POLICY: &str = r#"
package envoy.authz

import rego.v1

default allow := false

# Keys from the issuer's remote key set, chosen by kid.
allow if {
	input.parsed_path[0] == "api"
	[valid, _, payload] := io.jwt.decode_verify(bearer, {"jwks_issuer": data.issuer})
	valid
	payload.sub == "alice"
}

# OPA's pattern, with the key set from regent.jwks instead of http.send.
allow if {
	input.parsed_path[0] == "via-cert"
	[valid, _, payload] := io.jwt.decode_verify(bearer, {"cert": regent.jwks(data.issuer), "iss": data.issuer})
	valid
	payload.sub == "alice"
}

bearer := t if {
	v := input.attributes.request.http.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, 7, -1)
}
"#;

/// How the JWKS server answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    /// HTTP 503 to every request.
    Down,
    /// Holds every request without answering (until the client gives up).
    Hang,
}

struct Provider {
    issuer: Mutex<String>,
    keys: Mutex<Vec<serde_json::Value>>,
    mode: Mutex<Mode>,
    /// JWKS requests received (discovery not counted).
    jwks_requests: AtomicUsize,
    /// JWKS requests being held in `Hang` mode right now.
    hanging: AtomicUsize,
}

impl Provider {
    fn set_keys(&self, keys: &[&Key]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }
    fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    fn requests(&self) -> usize {
        self.jwks_requests.load(Ordering::SeqCst)
    }
}

async fn jwks(State(p): State<Arc<Provider>>, _headers: HeaderMap) -> Response {
    p.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let mode = *p.mode.lock().unwrap();
    match mode {
        Mode::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::Hang => {
            p.hanging.fetch_add(1, Ordering::SeqCst);
            // Decrements even when the client gives up and the handler is dropped.
            struct Done(Arc<Provider>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.hanging.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _done = Done(p.clone());
            tokio::time::sleep(Duration::from_secs(120)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Mode::Serve => {
            let body = json!({"keys": *p.keys.lock().unwrap()}).to_string();
            ([("content-type", "application/jwk-set+json")], body).into_response()
        }
    }
}

async fn discovery(State(p): State<Arc<Provider>>) -> Response {
    let issuer = p.issuer.lock().unwrap().clone();
    axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")})).into_response()
}

/// A JWKS server on a free loopback port; its base URL is also the issuer. The returned handle
/// stops it.
async fn provider(keys: &[&Key]) -> (Arc<Provider>, String, tokio::task::JoinHandle<()>) {
    let p = Arc::new(Provider {
        issuer: Mutex::new(String::new()),
        keys: Mutex::new(Vec::new()),
        mode: Mutex::new(Mode::Serve),
        jwks_requests: AtomicUsize::new(0),
        hanging: AtomicUsize::new(0),
    });
    p.set_keys(keys);
    let app = Router::new()
        .route("/keys", route_get(jwks))
        .route("/.well-known/openid-configuration", route_get(discovery))
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *p.issuer.lock().unwrap() = base.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (p, base, task)
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// An Ed25519 signing key and its kid.
struct Key {
    kid: String,
    signing: ed25519_dalek::SigningKey,
}

impl Key {
    fn new(kid: &str) -> Key {
        Key {
            kid: kid.to_string(),
            signing: ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
               "x": b64(self.signing.verifying_key().as_bytes())})
    }

    /// A token for alice from `issuer`, valid for an hour, with `kid` in its header.
    fn token_with_kid(&self, issuer: &str, kid: &str) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let input = format!(
            "{}.{}",
            b64(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})
                .to_string()
                .as_bytes()),
            b64(json!({"sub": "alice", "iss": issuer, "exp": exp})
                .to_string()
                .as_bytes())
        );
        format!(
            "{input}.{}",
            b64(&self.signing.sign(input.as_bytes()).to_bytes())
        )
    }

    fn token(&self, issuer: &str) -> String {
        self.token_with_kid(issuer, &self.kid)
    }
}

fn source(issuer: &str, tweak: impl FnOnce(&mut JwksSource)) -> JwksSource {
    let mut s: JwksSource = serde_yaml::from_str(&format!(
        "{{issuer: '{issuer}', jwks_url: '{issuer}/keys'}}"
    ))
    .expect("source");
    tweak(&mut s);
    s
}

async fn start(issuer: &str, src: JwksSource, persist: Option<&std::path::Path>) -> Sidecar {
    let data = json!({ "issuer": issuer }).to_string();
    let persist = persist.map(std::path::Path::to_path_buf);
    Sidecar::start(POLICY, Some(&data), move |cfg, _| {
        cfg.identity.jwks = vec![src];
        cfg.identity.persist_dir = persist;
    })
    .await
}

async fn allows(s: &Sidecar, path: &str, token: &str) -> bool {
    let req = get(path)
        .header("authorization", &format!("Bearer {token}"))
        .build();
    allowed(&s.check(req).await.expect("the sidecar answers"))
}

/// Polls until a Check on `path` with `token` gives `want`, for at most `timeout`.
async fn until(s: &Sidecar, path: &str, token: &str, want: bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if allows(s, path, token).await == want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the metrics page until `sample` reaches `at_least`.
async fn until_metric(s: &Sidecar, sample: &str, at_least: f64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if metric(&s.running.metrics.render(), sample).is_some_and(|v| v >= at_least) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready_json(s: &Sidecar) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{}/ready", s.running.http_addr))
        .await
        .expect("ready answers");
    (r.status().as_u16(), r.json().await.expect("ready JSON"))
}

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_in_mid_test_is_accepted_after_one_refresh() {
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let (p, issuer, _server) = provider(&[&k1]).await;
    let src = source(&issuer, |s| {
        s.refresh_seconds = 300;
        s.min_refresh_interval_seconds = 1;
    });
    let s = start(&issuer, src, None).await;
    assert!(
        until(&s, "/api", &k1.token(&issuer), true, T).await,
        "k1 accepted"
    );
    assert!(
        allows(&s, "/via-cert", &k1.token(&issuer)).await,
        "regent.jwks as cert"
    );
    // A token of another issuer, signed with a key in the set, is refused (`iss` pinned).
    assert!(!allows(&s, "/api", &k1.token("https://someone.else")).await);
    assert_eq!(p.requests(), 1);

    // k2 is not published yet: refused, and the unknown kid asks for a refresh.
    assert!(!allows(&s, "/api", &k2.token(&issuer)).await);
    p.set_keys(&[&k1, &k2]);
    // No restart, no commit: the next refresh (due to the unknown kid, at most
    // min_refresh_interval_seconds after the last fetch) brings k2 in.
    assert!(
        until(&s, "/api", &k2.token(&issuer), true, T).await,
        "k2 accepted"
    );
    assert!(allows(&s, "/via-cert", &k2.token(&issuer)).await);
    assert!(
        allows(&s, "/api", &k1.token(&issuer)).await,
        "k1 still in the set"
    );
    assert!(p.requests() <= 4, "{} fetches", p.requests());

    let text = s.running.metrics.render();
    let refreshes = format!(r#"regent_jwks_refresh_total{{issuer="{issuer}",result="ok"}}"#);
    assert!(
        metric(&text, &refreshes).is_some_and(|v| v >= 2.0),
        "{text}"
    );
    for result in [
        "http_status",
        "transport",
        "timeout",
        "too_large",
        "invalid",
        "not_modified",
    ] {
        let series = format!(r#"regent_jwks_refresh_total{{issuer="{issuer}",result="{result}"}}"#);
        assert_eq!(metric(&text, &series), Some(0.0), "{series} in {text}");
    }
    let keys = format!(r#"regent_jwks_keys{{issuer="{issuer}"}}"#);
    assert_eq!(metric(&text, &keys), Some(2.0), "{text}");
    let age = format!(r#"regent_jwks_age_seconds{{issuer="{issuer}"}}"#);
    assert!(
        metric(&text, &age).is_some_and(|a| (0.0..60.0).contains(&a)),
        "{text}"
    );

    let (status, body) = ready_json(&s).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jwks"][&issuer]["keys"], 2, "{body}");
    assert_eq!(body["jwks"][&issuer]["unavailable"], false, "{body}");
    assert!(body["jwks"][&issuer]["age_seconds"].is_u64(), "{body}");
    s.stop().await;
}

/// Checks that waited for a remote answer (here: a key set refresh), as `/metrics` says.
fn waits(s: &Sidecar) -> f64 {
    metric(
        &s.running.metrics.render(),
        "regent_check_remote_waits_total",
    )
    .unwrap_or(0.0)
}

/// A sidecar whose k1 token is accepted, with k2 published at the provider since more than
/// `min_refresh_interval_seconds`: a refresh for k2 may start at once.
async fn rotated_while_idle(refresh_wait_ms: u64) -> (Sidecar, Arc<Provider>, Key, String) {
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let (p, issuer, _server) = provider(&[&k1]).await;
    let src = source(&issuer, |s| {
        s.refresh_seconds = 300;
        s.min_refresh_interval_seconds = 1;
        s.refresh_wait_ms = refresh_wait_ms;
    });
    let s = start(&issuer, src, None).await;
    assert!(until(&s, "/api", &k1.token(&issuer), true, T).await);
    p.set_keys(&[&k1, &k2]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    (s, p, k2, issuer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_check_with_a_rotated_in_key_waits_for_the_refresh_and_passes() {
    // Generous for a loaded CI machine; a loopback fetch takes milliseconds.
    let (s, p, k2, issuer) = rotated_while_idle(5000).await;
    let before = waits(&s);
    assert!(
        allows(&s, "/api", &k2.token(&issuer)).await,
        "the first k2 Check waited for the refresh its kid caused"
    );
    assert_eq!(waits(&s), before + 1.0);
    assert_eq!(p.requests(), 2);

    // Right after that refresh the rate limit holds the next one back: a forged kid is refused
    // without waiting and without a fetch.
    let forged = Key::new("forger").token_with_kid(&issuer, "forged");
    assert!(!allows(&s, "/api", &forged).await);
    assert_eq!(waits(&s), before + 1.0, "the forged kid did not wait");
    assert_eq!(p.requests(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_refresh_wait_ms_0_the_first_check_with_a_new_key_is_refused() {
    let (s, _p, k2, issuer) = rotated_while_idle(0).await;
    assert!(!allows(&s, "/api", &k2.token(&issuer)).await);
    assert_eq!(waits(&s), 0.0);
    assert!(
        until(&s, "/api", &k2.token(&issuer), true, T).await,
        "accepted once the refresh it caused landed"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_goes_down_is_stale_if_error_then_refused_after_max_stale() {
    let k1 = Key::new("k1");
    let (p, issuer, _server) = provider(&[&k1]).await;
    let src = source(&issuer, |s| {
        s.refresh_seconds = 1;
        s.min_refresh_interval_seconds = 1;
        s.max_stale_seconds = 4;
    });
    let s = start(&issuer, src, None).await;
    let token = k1.token(&issuer);
    assert!(until(&s, "/api", &token, true, T).await);

    p.set_mode(Mode::Down);
    let went_down = Instant::now();
    let failed = format!(r#"regent_jwks_refresh_total{{issuer="{issuer}",result="http_status"}}"#);
    assert!(until_metric(&s, &failed, 1.0, T).await, "a refresh failed");
    // Stale-if-error: the last good keys still verify.
    assert!(
        allows(&s, "/api", &token).await,
        "kept after a failed refresh"
    );
    let (status, body) = ready_json(&s).await;
    assert_eq!(status, 200);
    assert!(
        body["jwks"][&issuer]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{body}"
    );

    // Past max_stale_seconds the set is dropped and the token refused.
    assert!(until(&s, "/api", &token, false, T).await, "refused at last");
    assert!(
        went_down.elapsed() >= Duration::from_secs(2),
        "not before max_stale"
    );
    let (status, body) = ready_json(&s).await;
    assert_eq!(
        status, 200,
        "stale keys do not make the sidecar unready: {body}"
    );
    assert_eq!(body["jwks"][&issuer]["unavailable"], true, "{body}");
    let text = s.running.metrics.render();
    let age = format!(r#"regent_jwks_age_seconds{{issuer="{issuer}"}}"#);
    assert_eq!(metric(&text, &age), Some(f64::INFINITY), "{text}");

    // The provider comes back: tokens pass again, no restart.
    p.set_mode(Mode::Serve);
    assert!(until(&s, "/api", &token, true, T).await, "recovered");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_provider_down_uses_the_persisted_key_set() {
    let k1 = Key::new("k1");
    let (p, issuer, server) = provider(&[&k1]).await;
    let dir = tempfile::tempdir().unwrap();
    let src = source(&issuer, |s| s.min_refresh_interval_seconds = 1);
    let s = start(&issuer, src.clone(), Some(dir.path())).await;
    let token = k1.token(&issuer);
    assert!(until(&s, "/api", &token, true, T).await);
    let file = regent_sidecar::identity::persist::path_for(dir.path(), &issuer);
    let deadline = Instant::now() + T;
    while !file.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(file.exists(), "{} persisted", file.display());
    s.stop().await;

    // The provider is gone: nothing listens on its port any more.
    server.abort();
    let _ = server.await;
    drop(p);
    let s = start(&issuer, src, Some(dir.path())).await;
    // Verifies at once, from the persisted copy.
    assert!(allows(&s, "/api", &token).await, "verified after restart");
    let transport = format!(r#"regent_jwks_refresh_total{{issuer="{issuer}",result="transport"}}"#);
    assert!(
        until_metric(&s, &transport, 1.0, T).await,
        "the provider is down"
    );
    assert!(allows(&s, "/api", &token).await, "still verified");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_keep_flowing_while_a_fetch_hangs() {
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let (p, issuer, _server) = provider(&[&k1]).await;
    let src = source(&issuer, |s| {
        s.refresh_seconds = 300;
        s.min_refresh_interval_seconds = 1;
        s.timeout_seconds = 10;
    });
    let s = start(&issuer, src, None).await;
    let token = k1.token(&issuer);
    assert!(until(&s, "/api", &token, true, T).await);

    // An unknown kid starts a fetch, which the provider holds.
    p.set_mode(Mode::Hang);
    assert!(!allows(&s, "/api", &k2.token(&issuer)).await);
    let deadline = Instant::now() + T;
    while p.hanging.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.hanging.load(Ordering::SeqCst), 1, "a fetch is held");

    // Meanwhile Checks with the known key are answered, and quickly.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let t = Instant::now();
        assert!(allows(&s, "/api", &token).await);
        slowest = slowest.max(t.elapsed());
    }
    let took = started.elapsed();
    eprintln!("200 Checks during a hanging fetch: {took:?} in all, slowest {slowest:?}");
    assert_eq!(
        p.hanging.load(Ordering::SeqCst),
        1,
        "the fetch was held throughout"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "slowest Check {slowest:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_kids_costs_the_provider_a_bounded_number_of_fetches() {
    let k1 = Key::new("k1");
    let (p, issuer, _server) = provider(&[&k1]).await;
    let src = source(&issuer, |s| {
        s.refresh_seconds = 300;
        s.min_refresh_interval_seconds = 30;
    });
    let s = start(&issuer, src, None).await;
    let token = k1.token(&issuer);
    assert!(until(&s, "/api", &token, true, T).await);
    assert_eq!(p.requests(), 1);

    let forger = Key::new("forger");
    let mut checks = Vec::new();
    for i in 0..400 {
        let forged = forger.token_with_kid(&issuer, &format!("forged-{i}"));
        let client = s.client.clone();
        checks.push(tokio::spawn(async move {
            let req = get("/api")
                .header("authorization", &format!("Bearer {forged}"))
                .build();
            client
                .clone()
                .check(req)
                .await
                .map(|r| allowed(&r.into_inner()))
        }));
    }
    for c in checks {
        assert_eq!(c.await.unwrap().ok(), Some(false), "forged kid refused");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        p.requests() <= 2,
        "{} fetches for 400 forged kids",
        p.requests()
    );
    assert!(
        allows(&s, "/api", &token).await,
        "the real key still verifies"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_uri_is_read_from_the_discovery_document() {
    let k1 = Key::new("k1");
    let (_p, issuer, _server) = provider(&[&k1]).await;
    let src: JwksSource = serde_yaml::from_str(&format!(
        "{{issuer: '{issuer}', discovery_url: '{issuer}/.well-known/openid-configuration'}}"
    ))
    .unwrap();
    let s = start(&issuer, src, None).await;
    assert!(until(&s, "/api", &k1.token(&issuer), true, T).await);
    s.stop().await;
}

#[tokio::test]
async fn a_bad_identity_configuration_is_refused_with_the_key_named() {
    use regent_sidecar::config::SidecarConfig;
    for (yaml, key) in [
        (
            "identity: {jwks: [{issuer: a, jwks_url: 'http://idp.example/keys'}]}",
            "identity.jwks[0].jwks_url",
        ),
        (
            "identity: {jwks: [{issuer: a, jwks_url: 'https://x/k'}, {issuer: a, jwks_url: 'https://y/k'}]}",
            "identity.jwks[1].issuer",
        ),
        (
            "identity: {jwks: [{issuer: a, jwks_url: 'https://x/k', refresh_seconds: 0}]}",
            "identity.jwks[0].refresh_seconds",
        ),
        (
            "identity: {jwks: [{issuer: a, jwks_url: 'https://x/k', max_stale: 1}]}",
            "unknown field `max_stale`",
        ),
    ] {
        let e = SidecarConfig::from_yaml(yaml).unwrap_err().to_string();
        assert!(e.contains(key), "{yaml}: {e}");
    }
    // A CA file that cannot be read stops the start, naming the key set.
    let mut cfg = base_config();
    cfg.identity.jwks = vec![source("https://idp.example", |s| {
        s.ca_file = Some("/nonexistent/ca.pem".into())
    })];
    let e = match regent_sidecar::server::start(cfg).await {
        Ok(_) => panic!("started with an unreadable CA file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("identity.jwks[0]") && e.contains("ca_file"),
        "{e}"
    );
}
