//! The sync loop (download -> activate -> persist -> report) against real HTTP servers.
//!
//! The activator here stands in for the policy store until the bundle library and the store
//! are wired in: a body is a revision string, and a body starting with "bad" is refused. What
//! is tested is the loop's behaviour around it: which ETag is sent, what is kept on failure,
//! what is persisted and restored, what is reported.

mod sync_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use regent_sidecar::sync::{
    start_with, Activator, BundleSource, HttpConfig, PollingConfig, Refusal, StatusConfig,
    SyncConfig, SyncHandle,
};

#[derive(Default)]
struct RevisionActivator {
    active: Mutex<Option<String>>,
    activations: Mutex<u32>,
}

impl Activator for RevisionActivator {
    fn activate(&self, _name: &str, bytes: &[u8]) -> Result<String, Refusal> {
        let text = std::str::from_utf8(bytes).map_err(|e| Refusal::new("unpack", e.to_string()))?;
        if text.starts_with("bad") {
            return Err(Refusal::new("unpack", format!("not a bundle: {text}")));
        }
        *self.active.lock().unwrap() = Some(text.to_string());
        *self.activations.lock().unwrap() += 1;
        Ok(text.to_string())
    }
}

impl RevisionActivator {
    fn active(&self) -> Option<String> {
        self.active.lock().unwrap().clone()
    }
}

fn config(url: &str, persist: Option<&std::path::Path>) -> SyncConfig {
    SyncConfig {
        bundles: vec![BundleSource {
            name: "authz".into(),
            url: url.into(),
            roots: None,
            long_poll_timeout_seconds: None,
        }],
        insecure_skip_verification: true,
        persist_dir: persist.map(|p| p.to_path_buf()),
        polling: PollingConfig {
            min_delay_seconds: 1,
            max_delay_seconds: 1,
            long_poll_timeout_seconds: 0,
        },
        http: HttpConfig {
            connect_timeout_seconds: 1,
            read_timeout_seconds: 1,
            ..HttpConfig::default()
        },
        ..SyncConfig::default()
    }
}

const WAIT: Duration = Duration::from_secs(15);

async fn wait_revision(h: &SyncHandle, rev: &str) {
    assert!(
        h.wait_for(WAIT, |s| s["authz"].active_revision == rev)
            .await,
        "revision {rev} never became active: {:?}",
        h.status()
    );
}

fn metric_text(reg: &prometheus::Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&reg.gather())
        .unwrap()
}

#[tokio::test]
async fn refused_bundle_keeps_last_good_and_last_activated_etag() {
    let (srv, base) = sync_support::start().await;
    srv.publish(b"r1".to_vec(), "\"e1\"");
    let act = Arc::new(RevisionActivator::default());
    let reg = prometheus::Registry::new();
    let h = start_with(
        &config(&format!("{base}/bundles/authz"), None),
        act.clone(),
        &reg,
    )
    .await
    .unwrap();
    wait_revision(&h, "r1").await;

    srv.publish(b"bad-r2".to_vec(), "\"e2\"");
    assert!(
        h.wait_for(WAIT, |s| s["authz"].code == "bundle_error")
            .await
    );
    assert_eq!(act.active().as_deref(), Some("r1"));
    assert_eq!(h.status()["authz"].active_revision, "r1");
    assert!(h.status()["authz"].message.contains("not a bundle"));

    // The refused bundle's ETag was never adopted: the next request still names e1.
    let before = srv.seen().len();
    assert!(
        h.wait_for(WAIT, |_| srv.seen().len() > before).await,
        "no further request"
    );
    let after_refusal = &srv.seen()[before];
    assert_eq!(after_refusal.if_none_match.as_deref(), Some("\"e1\""));

    srv.publish(b"r3".to_vec(), "\"e3\"");
    wait_revision(&h, "r3").await;
    assert!(
        h.status()["authz"].code.is_empty(),
        "error cleared after success"
    );

    let text = metric_text(&reg);
    assert!(
        text.contains("regent_bundle_info{bundle=\"authz\",revision=\"r3\"} 1"),
        "{text}"
    );
    assert!(!text.contains("revision=\"r1\""), "{text}");
    assert!(
        text.contains(
            "regent_bundle_activation_failures_total{bundle=\"authz\",reason=\"unpack\"}"
        ),
        "{text}"
    );
    assert!(text.contains("regent_bundle_downloads_total{bundle=\"authz\",result=\"ok\"}"));
    h.shutdown().await;
}

#[tokio::test]
async fn server_errors_are_reported_and_policy_stays() {
    let (srv, base) = sync_support::start().await;
    srv.publish(b"r1".to_vec(), "\"e1\"");
    let act = Arc::new(RevisionActivator::default());
    let reg = prometheus::Registry::new();
    let h = start_with(
        &config(&format!("{base}/bundles/authz"), None),
        act.clone(),
        &reg,
    )
    .await
    .unwrap();
    wait_revision(&h, "r1").await;
    srv.set(|s| s.fail_with = Some(500));
    assert!(
        h.wait_for(WAIT, |s| s["authz"].http_code == Some(500))
            .await
    );
    assert_eq!(act.active().as_deref(), Some("r1"));
    assert_eq!(h.status()["authz"].active_revision, "r1");
    assert!(metric_text(&reg)
        .contains("regent_bundle_downloads_total{bundle=\"authz\",result=\"error\"}"));
    // Recovery: the server is back with the same bundle and answers 304.
    srv.set(|s| s.fail_with = None);
    assert!(h.wait_for(WAIT, |s| s["authz"].code.is_empty()).await);
    assert_eq!(*act.activations.lock().unwrap(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn restart_with_server_down_serves_persisted_bundle() {
    let persist = tempfile::tempdir().unwrap();
    let (srv, base) = sync_support::start().await;
    srv.publish(b"r1".to_vec(), "\"e1\"");
    let reg = prometheus::Registry::new();
    let first = Arc::new(RevisionActivator::default());
    let h = start_with(
        &config(&format!("{base}/bundles/authz"), Some(persist.path())),
        first.clone(),
        &reg,
    )
    .await
    .unwrap();
    wait_revision(&h, "r1").await;
    let file = persist.path().join("authz/bundle.tar.gz");
    // Persisting follows activation; give it the same bounded wait.
    for _ in 0..500 {
        if std::fs::read(&file).ok().as_deref() == Some(b"r1".as_slice()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.shutdown().await;
    assert_eq!(std::fs::read(&file).unwrap(), b"r1");
    assert_eq!(
        std::fs::read_to_string(persist.path().join("authz/etag")).unwrap(),
        "\"e1\""
    );

    // Server down: active as soon as start returns, before any download.
    let second = Arc::new(RevisionActivator::default());
    let reg = prometheus::Registry::new();
    let dead = sync_support::dead_url().await;
    let h = start_with(&config(&dead, Some(persist.path())), second.clone(), &reg)
        .await
        .unwrap();
    assert_eq!(second.active().as_deref(), Some("r1"));
    assert_eq!(h.status()["authz"].active_revision, "r1");
    assert!(
        h.wait_for(WAIT, |s| s["authz"].code == "bundle_error")
            .await
    );
    assert_eq!(second.active().as_deref(), Some("r1"));
    h.shutdown().await;

    // Server up, same bundle: the persisted ETag makes the first request a 304.
    let third = Arc::new(RevisionActivator::default());
    let before = srv.seen().len();
    let reg = prometheus::Registry::new();
    let h = start_with(
        &config(&format!("{base}/bundles/authz"), Some(persist.path())),
        third.clone(),
        &reg,
    )
    .await
    .unwrap();
    assert!(h.wait_for(WAIT, |_| srv.seen().len() > before).await);
    assert_eq!(srv.seen()[before].if_none_match.as_deref(), Some("\"e1\""));
    assert!(
        h.wait_for(WAIT, |s| s["authz"].last_successful_request.is_some())
            .await
    );
    assert_eq!(
        *third.activations.lock().unwrap(),
        1,
        "only the persisted activation"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn corrupt_persisted_bundle_is_reported_and_skipped() {
    let persist = tempfile::tempdir().unwrap();
    let dir = persist.path().join("authz");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bundle.tar.gz"), b"bad bytes").unwrap();
    let act = Arc::new(RevisionActivator::default());
    let reg = prometheus::Registry::new();
    let (srv, base) = sync_support::start().await;
    srv.publish(b"r1".to_vec(), "\"e1\"");
    let h = start_with(
        &config(&format!("{base}/bundles/authz"), Some(persist.path())),
        act.clone(),
        &reg,
    )
    .await
    .unwrap();
    // Refused at start, and the first download then activates the good one.
    assert!(metric_text(&reg).contains("reason=\"unpack\""));
    wait_revision(&h, "r1").await;
    assert_eq!(
        srv.seen()[0].if_none_match,
        None,
        "no ETag from a refused copy"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn status_report_is_posted_in_opa_format() {
    let (srv, base) = sync_support::start().await;
    srv.publish(b"r1".to_vec(), "\"e1\"");
    let mut cfg = config(&format!("{base}/bundles/authz"), None);
    cfg.status = Some(StatusConfig {
        url: format!("{base}/status"),
        interval_seconds: 1,
        labels: [("cluster".to_string(), "test".to_string())].into(),
    });
    let act = Arc::new(RevisionActivator::default());
    let reg = prometheus::Registry::new();
    let h = start_with(&cfg, act, &reg).await.unwrap();
    let mut found = None;
    for _ in 0..1500 {
        let reports = srv.statuses.lock().unwrap().clone();
        if let Some(r) = reports
            .into_iter()
            .find(|r| r["bundles"]["authz"]["active_revision"] == "r1")
        {
            found = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = found.expect("no status report with the active revision");
    assert_eq!(r["labels"]["cluster"], "test");
    assert!(r["labels"]["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(r["labels"]["version"], env!("CARGO_PKG_VERSION"));
    let b = &r["bundles"]["authz"];
    assert_eq!(b["name"], "authz");
    for k in [
        "last_request",
        "last_successful_download",
        "last_successful_activation",
    ] {
        assert!(b[k].as_str().is_some(), "{k} missing in {b}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn invalid_config_is_refused_at_start() {
    let mut cfg = config("ftp://x/b", None);
    cfg.insecure_skip_verification = true;
    let act = Arc::new(RevisionActivator::default());
    let e = start_with(&cfg, act, &prometheus::Registry::new())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("sync.bundles[0].url"), "{e}");
}

#[tokio::test]
async fn long_poll_loop_picks_up_new_revision_without_waiting_for_the_poll_delay() {
    let (srv, base) = sync_support::start().await;
    srv.set(|s| s.long_poll = true);
    srv.publish(b"r1".to_vec(), "\"e1\"");
    let mut cfg = config(&format!("{base}/bundles/authz"), None);
    // Periodic polling alone would take at least 60 s to see r2; the bound below is 15 s.
    cfg.polling = PollingConfig {
        min_delay_seconds: 60,
        max_delay_seconds: 60,
        long_poll_timeout_seconds: 30,
    };
    let act = Arc::new(RevisionActivator::default());
    let h = start_with(&cfg, act.clone(), &prometheus::Registry::new())
        .await
        .unwrap();
    wait_revision(&h, "r1").await;
    // Wait until the long-poll request is parked, then publish.
    for _ in 0..1000 {
        if srv
            .seen()
            .iter()
            .any(|s| s.prefer.as_deref() == Some("modes=snapshot,delta;wait=30"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    srv.publish(b"r2".to_vec(), "\"e2\"");
    wait_revision(&h, "r2").await;
    assert_eq!(act.active().as_deref(), Some("r2"));
    h.shutdown().await;
}

#[tokio::test]
async fn hanging_server_times_out_and_policy_stays() {
    let persist = tempfile::tempdir().unwrap();
    let dir = persist.path().join("authz");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bundle.tar.gz"), b"r1").unwrap();
    let act = Arc::new(RevisionActivator::default());
    let url = sync_support::hanging_url().await;
    let h = start_with(
        &config(&url, Some(persist.path())),
        act.clone(),
        &prometheus::Registry::new(),
    )
    .await
    .unwrap();
    assert!(
        h.wait_for(WAIT, |s| s["authz"].code == "bundle_error")
            .await,
        "hanging request was not timed out"
    );
    assert_eq!(h.status()["authz"].active_revision, "r1");
    assert_eq!(act.active().as_deref(), Some("r1"));
    h.shutdown().await;
}
