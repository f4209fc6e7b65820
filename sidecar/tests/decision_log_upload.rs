//! Decision logs uploaded with OPA's decision log API to a real receiver on 127.0.0.1: gzipped
//! JSON arrays POSTed with the bearer token, each chunk within `upload_size_limit_bytes`,
//! nothing lost while the receiver fails, and what is buffered uploaded at shutdown; with a spool,
//! nothing lost through an outage longer than the memory buffer holds, nor through a restart.

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
    spooling_sidecar(url, delays, "").await
}

/// A sidecar uploading to `url`; `extra` adds keys to its `decision_logs.upload` section.
async fn spooling_sidecar(url: &str, delays: (u64, u64), extra: &str) -> Sidecar {
    let url = url.to_string();
    let extra = extra.to_string();
    Sidecar::start(POLICY, None, move |cfg, dir| {
        let token = dir.join("log-token");
        std::fs::write(&token, "log-token\n").expect("token");
        cfg.decision_logs.upload = Some(
            serde_yaml::from_str(&format!(
                "{{url: '{url}', bearer_token_file: '{}', min_delay_seconds: {}, max_delay_seconds: {}, upload_size_limit_bytes: 2048{extra}}}",
                token.display(),
                delays.0,
                delays.1
            ))
            .expect("upload section"),
        );
    })
    .await
}

/// Asserts `regent_decision_logs_dropped_total` is exported at 0 for each of `reasons`.
fn assert_no_drops(page: &str, reasons: &[&str]) {
    for reason in reasons {
        let sample = format!("regent_decision_logs_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(page, &sample), Some(0.0), "{sample}: {page}");
    }
}

/// The spool files in `dir` and the events they hold.
fn spooled(dir: &std::path::Path) -> (usize, usize) {
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let events = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.lines().count())
        .sum();
    (files.len(), events)
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
    assert_no_drops(&m, &["queue_full", "buffer_full", "too_large", "shutdown"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_memory_buffer_is_ridden_out_on_disk() {
    let (r, url) = receiver(usize::MAX).await;
    let spool = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        ", buffer_size_limit_bytes: 4096, spool: {{dir: '{}'}}",
        spool.path().display()
    );
    let s = spooling_sidecar(&url, (1, 1), &extra).await;
    checks(&s, 40).await;
    // Forty events of about a kilobyte do not fit 4 KiB: most are on disk.
    let on_disk = eventually(Duration::from_secs(10), || spooled(spool.path()).1 >= 25).await;
    assert!(on_disk, "spooled: {:?}", spooled(spool.path()));
    let m = metrics(&s);
    assert!(
        metric(&m, "regent_decision_log_spool_bytes") > Some(0.0),
        "{m}"
    );
    let tried = eventually(Duration::from_secs(10), || {
        r.refused.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(tried, "an upload was attempted during the outage");
    assert!(r.ids().is_empty(), "the receiver accepted nothing yet");

    r.fail_first.store(0, Ordering::SeqCst);
    let all = eventually(Duration::from_secs(60), || r.ids().len() >= 40).await;
    assert!(all, "{} of 40 events arrived", r.ids().len());
    assert_eq!(r.events.lock().unwrap().len(), 40, "each event once");
    let emptied = eventually(Duration::from_secs(10), || {
        spooled(spool.path()) == (0, 0)
            && metric(&metrics(&s), "regent_decision_log_spool_bytes") == Some(0.0)
    })
    .await;
    assert!(emptied, "spool left: {:?}", spooled(spool.path()));
    assert_no_drops(
        &metrics(&s),
        &["buffer_full", "spool_full", "spool_corrupt", "shutdown"],
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_shutdown_could_not_upload_is_uploaded_by_the_next_run() {
    let (r, url) = receiver(usize::MAX).await;
    let spool = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        ", shutdown_flush_seconds: 2, spool: {{dir: '{}'}}",
        spool.path().display()
    );
    // No periodic upload within the test: only shutdown's, which the receiver refuses.
    let first = spooling_sidecar(&url, (600, 600), &extra).await;
    checks(&first, 9).await;
    let registry = first.running.metrics.clone();
    first.stop().await;
    assert_no_drops(&registry.render(), &["shutdown", "buffer_full"]);
    assert_eq!(
        spooled(spool.path()).1,
        9,
        "every event spooled at shutdown"
    );
    assert!(r.ids().is_empty());

    r.fail_first.store(0, Ordering::SeqCst);
    let second = spooling_sidecar(&url, (1, 1), &extra).await;
    let all = eventually(Duration::from_secs(30), || r.ids().len() >= 9).await;
    assert!(all, "{} of the first run's 9 events arrived", r.ids().len());
    assert_eq!(spooled(spool.path()), (0, 0));
    second.stop().await;
}
