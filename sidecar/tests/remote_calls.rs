//! `http.send` and `regent.introspect` through a real sidecar, against real HTTP servers on
//! 127.0.0.1: a host not on the allow list fails the Check naming the host; an allowed one
//! answers the policy; an introspection endpoint that revokes a token gets it refused once the
//! cached answer lapses; a slow endpoint does not hold up Checks that need no remote call.

mod server_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use server_support::*;

const POLICY: &str = r#"
package envoy.authz

import rego.v1

default allow := false

# /send/<host:port>: asks the host for the caller's entitlements.
allow if {
	input.parsed_path[0] == "send"
	resp := http.send({"method": "GET", "url": sprintf("http://%s/entitlements", [input.parsed_path[1]])})
	resp.status_code == 200
	resp.body.orders == "read"
}

# /soft/<host:port>: the same with raise_error false: the error object decides.
allow := {"allowed": false, "body": resp.error.message} if {
	input.parsed_path[0] == "soft"
	resp := http.send({"method": "GET", "url": sprintf("http://%s/entitlements", [input.parsed_path[1]]), "raise_error": false})
	resp.status_code == 0
}

# /opaque: the bearer token, introspected.
allow if {
	input.parsed_path[0] == "opaque"
	token := substring(input.attributes.request.http.headers.authorization, 7, -1)
	answer := regent.introspect("idp", token)
	answer.active
}

# /local: no remote call.
allow if input.parsed_path[0] == "local"
"#;

/// An HTTP server on 127.0.0.1 for `app`; its address.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

async fn entitlements_server(hits: Arc<AtomicUsize>) -> std::net::SocketAddr {
    serve(
        axum::Router::new()
            .route(
                "/entitlements",
                axum::routing::get(|State(hits): State<Arc<AtomicUsize>>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    axum::Json(serde_json::json!({"orders": "read"}))
                }),
            )
            .with_state(hits),
    )
    .await
}

async fn metrics(s: &Sidecar) -> String {
    reqwest::get(format!("http://{}/metrics", s.running.http_addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Logs decisions to `decisions.log` in the sidecar's directory.
fn log_to_file(cfg: &mut regent_sidecar::config::SidecarConfig, dir: &std::path::Path) {
    cfg.decision_logs.output = regent_sidecar::config::LogOutput::File;
    cfg.decision_logs.file = Some(dir.join("decisions.log"));
}

/// The decision log's events once it has at least `n` (bounded wait).
async fn log_events(s: &Sidecar, n: usize) -> Vec<serde_json::Value> {
    let path = s.dir.path().join("decisions.log");
    let mut events = Vec::new();
    eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        events = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect();
        events.len() >= n
    })
    .await;
    assert!(events.len() >= n, "{} events, wanted {n}", events.len());
    events
}

/// Checks `path` (with a bearer token) until a policy is active, then returns the answer.
async fn check(s: &Sidecar, path: &str, token: &str) -> Result<bool, String> {
    for _ in 0..250 {
        let req = get(path)
            .header("authorization", &format!("Bearer {token}"))
            .build();
        match s.check(req).await {
            Ok(r)
                if r.status
                    .as_ref()
                    .is_some_and(|st| st.message.contains("no policy")) => {}
            Ok(r) => return Ok(allowed(&r)),
            Err(e) if e.message().contains("no_policy") => {}
            Err(e) => return Err(e.message().to_string()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no policy became active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_send_reaches_allowed_hosts_only() {
    let hits = Arc::new(AtomicUsize::new(0));
    let allowed_host = entitlements_server(hits.clone()).await;
    let other = entitlements_server(Arc::new(AtomicUsize::new(0))).await;
    let s = Sidecar::start(POLICY, None, move |cfg, dir| {
        cfg.remote_calls.http_send.allowed_hosts = vec![allowed_host.to_string()];
        log_to_file(cfg, dir);
        cfg.decision_logs.nd_builtin_cache = true;
    })
    .await;

    assert_eq!(
        check(&s, &format!("/send/{allowed_host}"), "t").await,
        Ok(true)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let refused = check(&s, &format!("/send/{other}"), "t").await.unwrap_err();
    assert!(
        refused.contains("eval_error")
            && refused.contains(&format!("host \"127.0.0.1\" (port {})", other.port()))
            && refused.contains("remote_calls.http_send.allowed_hosts"),
        "{refused}"
    );
    // With raise_error false the policy sees the error object and decides.
    let soft = s
        .check(get(&format!("/soft/{other}")).build())
        .await
        .expect("answers");
    assert!(!allowed(&soft));

    let m = metrics(&s).await;
    assert_eq!(
        metric(&m, "regent_http_send_total{result=\"ok\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "regent_http_send_total{result=\"not_allowed\"}"),
        Some(2.0),
        "{m}"
    );
    assert!(
        metric(&m, "regent_check_remote_waits_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );

    // The answer the allowed Check used is in its event, as OPA records it.
    let events = log_events(&s, 3).await;
    let sent = events
        .iter()
        .find(|e| e["input"]["parsed_path"][0] == "send" && e["result"] == true)
        .expect("the allowed /send event");
    let calls = sent["nd_builtin_cache"]["http.send"]
        .as_object()
        .expect("http.send in nd_builtin_cache");
    assert_eq!(calls.len(), 1, "{sent}");
    let (args, answer) = calls.iter().next().expect("one call");
    let args: serde_json::Value = serde_json::from_str(args).expect("arguments are a JSON array");
    assert_eq!(
        args[0]["url"],
        format!("http://{allowed_host}/entitlements"),
        "{args}"
    );
    assert_eq!(answer["status_code"], 200, "{answer}");
    assert_eq!(answer["body"]["orders"], "read", "{answer}");
    s.stop().await;
}

#[derive(Clone)]
struct Idp {
    revoked: Arc<AtomicBool>,
    asked: Arc<AtomicUsize>,
    delay: Duration,
    /// The client secret it accepts for client id `regent`.
    secret: Arc<std::sync::Mutex<String>>,
}

async fn introspect(
    State(idp): State<Idp>,
    headers: HeaderMap,
    body: String,
) -> axum::Json<serde_json::Value> {
    idp.asked.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(idp.delay).await;
    let want = {
        use base64::Engine as _;
        let secret = idp.secret.lock().expect("secret").clone();
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("regent:{secret}"))
        )
    };
    let authed = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == want);
    let good = body.contains("token=good-token") && body.contains("token_type_hint=access_token");
    let active = authed && good && !idp.revoked.load(Ordering::SeqCst);
    axum::Json(serde_json::json!({"active": active, "sub": "alice", "exp": 4_000_000_000u64}))
}

async fn idp_sidecar(delay: Duration) -> (Sidecar, Idp) {
    let idp = Idp {
        revoked: Arc::new(AtomicBool::new(false)),
        asked: Arc::new(AtomicUsize::new(0)),
        delay,
        secret: Arc::new(std::sync::Mutex::new("s3cret".into())),
    };
    let addr = serve(
        axum::Router::new()
            .route("/introspect", axum::routing::post(introspect))
            .with_state(idp.clone()),
    )
    .await;
    let s = Sidecar::start(POLICY, None, move |cfg, dir| {
        log_to_file(cfg, dir);
        cfg.reload.interval_seconds = 1;
        let secret = dir.join("client-secret");
        std::fs::write(&secret, "s3cret\n").expect("write secret");
        let yaml = format!(
            "introspection: [{{name: idp, url: 'http://{addr}/introspect', client_id: regent, \
             client_secret_file: '{}', max_cache_seconds: 1, negative_cache_seconds: 1}}]",
            secret.display()
        );
        cfg.remote_calls = serde_yaml::from_str(&yaml).expect("remote_calls");
    })
    .await;
    (s, idp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_once_the_cached_answer_lapses() {
    let (s, idp) = idp_sidecar(Duration::ZERO).await;
    assert_eq!(check(&s, "/opaque", "good-token").await, Ok(true));
    assert_eq!(check(&s, "/opaque", "good-token").await, Ok(true));
    assert_eq!(
        idp.asked.load(Ordering::SeqCst),
        1,
        "the second Check used the cached answer"
    );
    assert_eq!(check(&s, "/opaque", "other-token").await, Ok(false));
    // decision_logs.nd_builtin_cache is off: the token the policy introspected is in no event.
    for e in log_events(&s, 3).await {
        assert!(e.get("nd_builtin_cache").is_none(), "{e}");
        assert!(!e.to_string().contains("good-token"), "{e}");
    }

    idp.revoked.store(true, Ordering::SeqCst);
    let mut refused = false;
    for _ in 0..100 {
        if check(&s, "/opaque", "good-token").await == Ok(false) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused,
        "the revoked token is refused after max_cache_seconds"
    );
    let m = metrics(&s).await;
    assert!(
        metric(
            &m,
            "regent_introspection_total{endpoint=\"idp\",result=\"cache_hit\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "regent_introspection_total{endpoint=\"idp\",result=\"inactive\"}"
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{m}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_holds_up_only_the_checks_that_wait_for_it() {
    let (s, idp) = idp_sidecar(Duration::from_secs(1)).await;
    assert_eq!(check(&s, "/local", "x").await, Ok(true));
    let slow = {
        let client = s.client.clone();
        tokio::spawn(async move {
            let req = get("/opaque")
                .header("authorization", "Bearer good-token")
                .build();
            client
                .clone()
                .check(req)
                .await
                .map(|r| allowed(&r.into_inner()))
        })
    };
    // While the introspection is outstanding, Checks that need none are answered.
    let mut answered_meanwhile = 0;
    while !slow.is_finished() && answered_meanwhile < 20 {
        assert_eq!(check(&s, "/local", "x").await, Ok(true));
        answered_meanwhile += 1;
    }
    assert_eq!(
        answered_meanwhile, 20,
        "local Checks were held up by the slow endpoint"
    );
    assert!(slow.await.expect("joins").expect("answers"));
    assert_eq!(idp.asked.load(Ordering::SeqCst), 1);
    s.stop().await;
}

/// Writes `text` to `path` as Kubernetes updates a Secret: beside it, then renamed over it.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Waits (bounded) until `/metrics` shows `sample` at `value`.
async fn until_metric(s: &Sidecar, sample: &str, value: f64) -> bool {
    for _ in 0..100 {
        if metric(&metrics(s).await, sample) == Some(value) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Once the cached answer has lapsed, the endpoint is asked again: does it allow the token?
async fn asked_again_allows(s: &Sidecar, idp: &Idp) -> bool {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let asked = idp.asked.load(Ordering::SeqCst);
    let allowed = check(s, "/opaque", "good-token").await == Ok(true);
    assert!(idp.asked.load(Ordering::SeqCst) > asked, "asked again");
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_secret_is_used_without_a_restart() {
    let (s, idp) = idp_sidecar(Duration::ZERO).await;
    assert_eq!(check(&s, "/opaque", "good-token").await, Ok(true));
    let file = s.dir.path().join("client-secret");

    // The provider rotates the secret and the Secret mount follows.
    *idp.secret.lock().expect("secret") = "n3w-s3cret".into();
    replace_file(&file, "n3w-s3cret\n");
    let reloaded = "regent_reload_total{result=\"ok\",what=\"introspection_secret\"}";
    assert!(
        until_metric(&s, reloaded, 1.0).await,
        "the new secret is read"
    );
    assert!(asked_again_allows(&s, &idp).await, "the new secret is sent");

    // An empty file is refused: the secret in force stays, and so does the answer.
    replace_file(&file, "");
    let refused = "regent_reload_total{result=\"error\",what=\"introspection_secret\"}";
    assert!(
        until_metric(&s, refused, 1.0).await,
        "the empty file is refused"
    );
    assert!(asked_again_allows(&s, &idp).await, "the old secret is kept");
    s.stop().await;
}
