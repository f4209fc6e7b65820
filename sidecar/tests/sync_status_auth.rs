//! Status reports carry the credentials of bundle requests: the bearer token of
//! `sync.http.bearer_token_file` (re-read for every report, so a rotated token is sent without a
//! restart), against a tiny server on 127.0.0.1 that records each request's Authorization header.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use regent_sidecar::sync::{
    start_with, Activator, BundleSource, HttpConfig, PollingConfig, Refusal, StatusConfig,
    SyncConfig,
};

struct NoActivation;

impl Activator for NoActivation {
    fn activate(&self, _name: &str, _bytes: &[u8]) -> Result<String, Refusal> {
        Err(Refusal::new("unpack", "no bundle in this test"))
    }
}

/// What the server saw: (path, Authorization header) of every request.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn start_server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = |path: &'static str, seen: Seen, code: StatusCode| {
        move |headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            seen.lock().unwrap().push((path.to_string(), auth));
            code
        }
    };
    let app = axum::Router::new()
        .route(
            "/bundles/authz",
            get(record(
                "bundle",
                seen.clone(),
                StatusCode::SERVICE_UNAVAILABLE,
            )),
        )
        .route(
            "/v1/status/report",
            post(record("status", seen.clone(), StatusCode::NO_CONTENT)),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn config(base: &str, token_file: Option<std::path::PathBuf>) -> SyncConfig {
    SyncConfig {
        bundles: vec![BundleSource {
            name: "authz".into(),
            url: format!("{base}/bundles/authz"),
            roots: None,
            long_poll_timeout_seconds: None,
        }],
        insecure_skip_verification: true,
        polling: PollingConfig {
            min_delay_seconds: 1,
            max_delay_seconds: 1,
            long_poll_timeout_seconds: 0,
        },
        http: HttpConfig {
            connect_timeout_seconds: 1,
            read_timeout_seconds: 2,
            bearer_token_file: token_file,
            ..HttpConfig::default()
        },
        status: Some(StatusConfig {
            url: format!("{base}/v1/status/report"),
            interval_seconds: 1,
            labels: Default::default(),
        }),
        ..SyncConfig::default()
    }
}

/// Waits (at most 15 s) until a status report with `auth` arrived.
async fn wait_status_with(seen: &Seen, auth: Option<&str>) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = seen
            .lock()
            .unwrap()
            .iter()
            .any(|(p, a)| p == "status" && a.as_deref() == auth);
        if found {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_carry_the_bearer_token_of_bundle_requests() {
    let (base, seen) = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let registry = prometheus::Registry::new();
    let h = start_with(
        &config(&base, Some(token_file.clone())),
        Arc::new(NoActivation),
        &registry,
    )
    .await
    .unwrap();
    assert!(
        wait_status_with(&seen, Some("Bearer first-token")).await,
        "no status report with the token: {:?}",
        seen.lock().unwrap()
    );
    // Rotated on disk: the next reports carry the new token.
    std::fs::write(&token_file, "second-token\n").unwrap();
    assert!(
        wait_status_with(&seen, Some("Bearer second-token")).await,
        "no status report with the rotated token: {:?}",
        seen.lock().unwrap()
    );
    h.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    // Every request, bundle or status, carried a token.
    assert!(seen.iter().any(|(p, _)| p == "bundle"), "{seen:?}");
    assert!(seen.iter().all(|(_, a)| a.is_some()), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_status_reports_carry_no_authorization() {
    let (base, seen) = start_server().await;
    let registry = prometheus::Registry::new();
    let h = start_with(&config(&base, None), Arc::new(NoActivation), &registry)
        .await
        .unwrap();
    assert!(
        wait_status_with(&seen, None).await,
        "no status report: {:?}",
        seen.lock().unwrap()
    );
    h.shutdown().await;
}
