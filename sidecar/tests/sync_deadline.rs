//! The time bounds of a download against real slow servers on 127.0.0.1: a body trickled a
//! byte every 100 ms keeps every read within `read_timeout_seconds`, so only the overall
//! deadline (`http.download_timeout_seconds`) and the minimum transfer rate
//! (`http.min_transfer_bytes_per_second`) can end it. Either aborts the download, counts
//! `reason="timeout"`, keeps the previous policy answering, and the loop retries with backoff
//! until a normal download succeeds.
//!
//! Timing assertions are generous upper bounds only; every wait is bounded.

mod sync_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regent_sidecar::sync::{
    start_with, Activator, BundleSource, HttpConfig, PollingConfig, Refusal, SyncConfig, SyncHandle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A body is `revision\npadding`; the revision is what becomes active.
#[derive(Default)]
struct RevisionActivator {
    active: Mutex<Option<String>>,
}

impl Activator for RevisionActivator {
    fn activate(&self, _name: &str, bytes: &[u8]) -> Result<String, Refusal> {
        let text = std::str::from_utf8(bytes).map_err(|e| Refusal::new("unpack", e.to_string()))?;
        let rev = text.split('\n').next().unwrap_or_default().to_string();
        *self.active.lock().unwrap() = Some(rev.clone());
        Ok(rev)
    }
}

impl RevisionActivator {
    fn active(&self) -> Option<String> {
        self.active.lock().unwrap().clone()
    }
}

/// How the trickle server answers.
#[derive(Clone)]
struct Mode {
    body: Vec<u8>,
    etag: String,
    /// `Some((bytes, every))`: send the headers at once, then `bytes` bytes every `every`.
    /// `None`: send the whole response at once (and 304 on a matching `If-None-Match`).
    trickle: Option<(usize, Duration)>,
}

/// A raw HTTP/1.1 server (one request per connection) whose pace we control.
struct Trickle {
    mode: Mutex<Mode>,
    requests: AtomicUsize,
    /// For each trickled response the client abandoned: time from the request to the moment
    /// the server noticed the connection was gone.
    abandoned: Mutex<Vec<Duration>>,
    /// Trickled responses sent to the end.
    completed: AtomicUsize,
}

impl Trickle {
    fn set(&self, body: &[u8], etag: &str, trickle: Option<(usize, Duration)>) {
        *self.mode.lock().unwrap() = Mode {
            body: body.to_vec(),
            etag: etag.to_string(),
            trickle,
        };
    }
    fn abandoned(&self) -> Vec<Duration> {
        self.abandoned.lock().unwrap().clone()
    }
}

async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return None;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn if_none_match(request: &str) -> Option<&str> {
    request.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("if-none-match")
            .then(|| value.trim())
    })
}

async fn serve(srv: Arc<Trickle>, mut s: TcpStream) {
    let Some(request) = read_request(&mut s).await else {
        return;
    };
    let started = Instant::now();
    srv.requests.fetch_add(1, Ordering::SeqCst);
    let mode = srv.mode.lock().unwrap().clone();
    if mode.trickle.is_none() && if_none_match(&request) == Some(mode.etag.as_str()) {
        let _ = s
            .write_all(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nETag: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        mode.etag,
        mode.body.len()
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let Some((step, every)) = mode.trickle else {
        let _ = s.write_all(&mode.body).await;
        let _ = s.shutdown().await;
        return;
    };
    for piece in mode.body.chunks(step) {
        tokio::time::sleep(every).await;
        if s.write_all(piece).await.is_err() || s.flush().await.is_err() {
            srv.abandoned.lock().unwrap().push(started.elapsed());
            return;
        }
    }
    let _ = s.shutdown().await;
    srv.completed.fetch_add(1, Ordering::SeqCst);
}

/// Start a trickle server; returns it and the bundle URL.
async fn trickle_server() -> (Arc<Trickle>, String) {
    let srv = Arc::new(Trickle {
        mode: Mutex::new(Mode {
            body: Vec::new(),
            etag: String::new(),
            trickle: None,
        }),
        requests: AtomicUsize::new(0),
        abandoned: Mutex::new(Vec::new()),
        completed: AtomicUsize::new(0),
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let s = Arc::clone(&srv);
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            tokio::spawn(serve(Arc::clone(&s), conn));
        }
    });
    (srv, format!("http://{addr}/bundles/authz"))
}

fn config(url: &str, http: HttpConfig, long_poll: u64) -> SyncConfig {
    SyncConfig {
        bundles: vec![BundleSource {
            name: "authz".into(),
            url: url.into(),
            roots: None,
            long_poll_timeout_seconds: None,
        }],
        insecure_skip_verification: true,
        polling: PollingConfig {
            min_delay_seconds: 1,
            max_delay_seconds: 1,
            long_poll_timeout_seconds: long_poll,
        },
        http: HttpConfig {
            connect_timeout_seconds: 1,
            read_timeout_seconds: 1,
            ..http
        },
        ..SyncConfig::default()
    }
}

/// Every bounded wait below; the bounds are many times what a healthy run needs.
const WAIT: Duration = Duration::from_secs(20);
/// A byte every 100 ms: every read is well within `read_timeout_seconds: 1`.
const BYTE_PER_100MS: Option<(usize, Duration)> = Some((1, Duration::from_millis(100)));

fn slow_body(rev: &str) -> Vec<u8> {
    // 100 000 bytes at 10 B/s: close to 3 hours if nothing cuts it short.
    let mut b = format!("{rev}\n").into_bytes();
    b.resize(100_000, b'x');
    b
}

fn metric(reg: &prometheus::Registry, series: &str) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&reg.gather())
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing in {text}"))
        .parse()
        .unwrap()
}

const TIMEOUTS: &str =
    r#"regent_bundle_activation_failures_total{bundle="authz",reason="timeout"}"#;
const ERRORS: &str = r#"regent_bundle_downloads_total{bundle="authz",result="error"}"#;

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_revision(h: &SyncHandle, rev: &str) {
    assert!(
        h.wait_for(WAIT, |s| s["authz"].active_revision == rev)
            .await,
        "revision {rev} never became active: {:?}",
        h.status()
    );
}

/// Serve `r1` normally, then `r2` trickled; checks what every slow-server case shares and
/// returns once the trickled download was abandoned and retried.
async fn trickle_is_cut_short(
    srv: &Trickle,
    h: &SyncHandle,
    act: &RevisionActivator,
    reg: &prometheus::Registry,
    key: &str,
    bound: Duration,
) {
    wait_revision(h, "r1").await;
    assert_eq!(metric(reg, TIMEOUTS), 0.0);
    srv.set(&slow_body("r2"), "\"e2\"", BYTE_PER_100MS);

    // Aborted (the server sees the connection go away) within the bound, and retried: a second
    // trickled request was abandoned too.
    wait_until("two abandoned trickled downloads", || {
        srv.abandoned().len() >= 2
    })
    .await;
    let first = srv.abandoned()[0];
    assert!(first < bound, "first trickled download lasted {first:?}");
    assert_eq!(srv.completed.load(Ordering::SeqCst), 0);

    // Counted as a timeout and as a download error.
    wait_until("the timeout counter", || metric(reg, TIMEOUTS) >= 2.0).await;
    assert!(metric(reg, ERRORS) >= 2.0);
    let status = &h.status()["authz"];
    assert_eq!(status.code, "bundle_error");
    assert!(status.message.contains(key), "{}", status.message);

    // The previous policy keeps answering.
    assert_eq!(status.active_revision, "r1");
    assert_eq!(act.active().as_deref(), Some("r1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_download_hits_the_deadline_then_a_normal_download_succeeds() {
    let (srv, url) = trickle_server().await;
    srv.set(b"r1", "\"e1\"", None);
    let act = Arc::new(RevisionActivator::default());
    let reg = prometheus::Registry::new();
    let http = HttpConfig {
        download_timeout_seconds: 1,
        // Only the deadline is under test here.
        min_transfer_bytes_per_second: 0,
        ..HttpConfig::default()
    };
    let h = start_with(&config(&url, http, 0), act.clone(), &reg)
        .await
        .unwrap();
    trickle_is_cut_short(
        &srv,
        &h,
        &act,
        &reg,
        "sync.http.download_timeout_seconds",
        Duration::from_secs(10),
    )
    .await;

    // A later normal download succeeds and clears the error.
    srv.set(b"r3", "\"e3\"", None);
    wait_revision(&h, "r3").await;
    assert!(h.wait_for(WAIT, |s| s["authz"].code.is_empty()).await);
    assert_eq!(act.active().as_deref(), Some("r3"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_below_the_minimum_rate_is_aborted_long_before_the_deadline() {
    let (srv, url) = trickle_server().await;
    srv.set(b"r1", "\"e1\"", None);
    let act = Arc::new(RevisionActivator::default());
    let reg = prometheus::Registry::new();
    let http = HttpConfig {
        // Far away: only the rate can end a trickle within the bound below.
        download_timeout_seconds: 300,
        min_transfer_bytes_per_second: 200,
        min_transfer_window_seconds: 1,
        ..HttpConfig::default()
    };
    let h = start_with(&config(&url, http, 0), act.clone(), &reg)
        .await
        .unwrap();
    trickle_is_cut_short(
        &srv,
        &h,
        &act,
        &reg,
        "sync.http.min_transfer_bytes_per_second",
        Duration::from_secs(15),
    )
    .await;

    // Slow but well above the minimum (400 bytes every 100 ms, 20 times the 200 B/s asked for)
    // over several windows: downloaded and activated.
    let mut body = b"r3\n".to_vec();
    body.resize(8_000, b'x');
    srv.set(&body, "\"e3\"", Some((400, Duration::from_millis(100))));
    wait_revision(&h, "r3").await;
    assert!(srv.completed.load(Ordering::SeqCst) >= 1);
    assert_eq!(act.active().as_deref(), Some("r3"));

    // And a normal one after it.
    srv.set(b"r4", "\"e4\"", None);
    wait_revision(&h, "r4").await;
    assert!(h.wait_for(WAIT, |s| s["authz"].code.is_empty()).await);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_comes_on_top_of_the_long_poll_wait() {
    let (srv, base) = sync_support::start().await;
    srv.set(|s| s.long_poll = true);
    srv.publish(b"r1".to_vec(), "\"e1\"");
    let act = Arc::new(RevisionActivator::default());
    let reg = prometheus::Registry::new();
    let http = HttpConfig {
        // Shorter than the 3 s the server parks each long poll: only wait + deadline (5 s)
        // lets those requests end in a 304.
        download_timeout_seconds: 2,
        ..HttpConfig::default()
    };
    let h = start_with(
        &config(&format!("{base}/bundles/authz"), http, 3),
        act.clone(),
        &reg,
    )
    .await
    .unwrap();
    wait_revision(&h, "r1").await;
    // The first request plus two long polls answered 304 after their wait, and a third parked.
    wait_until("three long polls", || {
        srv.seen()
            .iter()
            .filter(|s| s.prefer.as_deref() == Some("modes=snapshot,delta;wait=3"))
            .count()
            >= 3
    })
    .await;
    assert_eq!(metric(&reg, TIMEOUTS), 0.0);
    assert_eq!(metric(&reg, ERRORS), 0.0);
    assert!(h.status()["authz"].code.is_empty(), "{:?}", h.status());
    srv.publish(b"r2".to_vec(), "\"e2\"");
    wait_revision(&h, "r2").await;
    h.shutdown().await;
}
