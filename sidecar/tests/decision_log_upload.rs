//! Decision logs uploaded with OPA's decision log API to a real receiver on 127.0.0.1: gzipped
//! JSON arrays POSTed with the bearer token, each chunk within `upload_size_limit_bytes`,
//! nothing lost while the receiver fails, and what is buffered uploaded at shutdown.

mod server_support;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use server_support::*;

const POLICY: &str = "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.parsed_path[0] == \"ok\"\n";

#[derive(Default)]
struct Receiver {
    events: Mutex<Vec<serde_json::Value>>,
    /// Size of every accepted body, gzipped.
    bodies: Mutex<Vec<usize>>,
    /// Requests to answer 503 before accepting.
    fail_first: AtomicUsize,
    refused: AtomicUsize,
}

impl Receiver {
    fn ids(&self) -> BTreeSet<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| e["decision_id"].as_str().map(str::to_string))
            .collect()
    }
}

async fn logs(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("authorization") != Some("Bearer log-token")
        || header("content-encoding") != Some("gzip")
        || header("content-type") != Some("application/json")
    {
        return StatusCode::UNAUTHORIZED;
    }
    if r.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut json = Vec::new();
    if flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut json)
        .is_err()
    {
        return StatusCode::BAD_REQUEST;
    }
    let Ok(events) = serde_json::from_slice::<Vec<serde_json::Value>>(&json) else {
        return StatusCode::BAD_REQUEST;
    };
    r.bodies.lock().unwrap().push(body.len());
    r.events.lock().unwrap().extend(events);
    StatusCode::NO_CONTENT
}

async fn receiver(fail_first: usize) -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver {
        fail_first: AtomicUsize::new(fail_first),
        ..Receiver::default()
    });
    let app = axum::Router::new()
        .route("/logs", axum::routing::post(logs))
        .with_state(r.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/logs", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (r, url)
}

async fn sidecar(url: &str, delays: (u64, u64)) -> Sidecar {
    let url = url.to_string();
    Sidecar::start(POLICY, None, move |cfg, dir| {
        let token = dir.join("log-token");
        std::fs::write(&token, "log-token\n").expect("token");
        cfg.decision_logs.upload = Some(
            serde_yaml::from_str(&format!(
                "{{url: '{url}', bearer_token_file: '{}', min_delay_seconds: {}, max_delay_seconds: {}, upload_size_limit_bytes: 2048}}",
                token.display(),
                delays.0,
                delays.1
            ))
            .expect("upload section"),
        );
    })
    .await
}

/// Sends `n` Checks (half allowed), each with a bearer token the default mask erases.
async fn checks(s: &Sidecar, n: usize) {
    for i in 0..n {
        let path = if i % 2 == 0 { "/ok" } else { "/no" };
        let req = get(path)
            .header("authorization", "Bearer user-secret")
            .build();
        s.check(req).await.expect("answered");
    }
}

fn metrics(s: &Sidecar) -> String {
    s.running.metrics.render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_reach_an_opa_log_receiver_in_bounded_chunks_despite_failures() {
    let (r, url) = receiver(2).await;
    let s = sidecar(&url, (1, 1)).await;
    checks(&s, 40).await;
    let all = eventually(Duration::from_secs(30), || r.ids().len() >= 40).await;
    assert!(all, "{} of 40 events arrived", r.ids().len());
    assert_eq!(r.ids().len(), 40, "each event once");
    assert_eq!(
        r.refused.load(Ordering::SeqCst),
        2,
        "two uploads failed first"
    );
    let bodies = r.bodies.lock().unwrap().clone();
    assert!(bodies.len() >= 2, "{bodies:?}");
    assert!(bodies.iter().all(|&b| b <= 2048), "{bodies:?}");

    let events = r.events.lock().unwrap().clone();
    let e = &events[0];
    assert_eq!(e["path"], "envoy/authz/allow", "{e}");
    assert!(e["labels"]["id"].is_string(), "{e}");
    assert!(e["timestamp"].is_string(), "{e}");
    assert!(events
        .iter()
        .all(|e| !e.to_string().contains("user-secret")));
    assert_eq!(
        e["erased"][0],
        "/input/attributes/request/http/headers/authorization"
    );
    let allowed = events.iter().filter(|e| e["result"] == true).count();
    assert_eq!(allowed, 20);

    let m = metrics(&s);
    assert!(
        metric(&m, "regent_decision_log_uploads_total{result=\"error\"}") >= Some(2.0),
        "{m}"
    );
    assert!(
        metric(&m, "regent_decision_log_uploads_total{result=\"ok\"}") >= Some(2.0),
        "{m}"
    );
    for reason in ["queue_full", "buffer_full", "too_large", "shutdown"] {
        let sample = format!("regent_decision_logs_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&m, &sample), Some(0.0), "{sample}: {m}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_uploads_what_is_buffered() {
    let (r, url) = receiver(0).await;
    // No periodic upload would run within the test.
    let s = sidecar(&url, (600, 600)).await;
    checks(&s, 7).await;
    assert!(r.ids().is_empty());
    s.stop().await;
    assert_eq!(r.ids().len(), 7, "uploaded during shutdown");
}
