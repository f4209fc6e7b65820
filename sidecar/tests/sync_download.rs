//! The bundle downloader against real HTTP servers on 127.0.0.1.

mod sync_support;

use std::time::Duration;

use regent_sidecar::sync::download::{DownloadError, Downloader, Fetched};
use regent_sidecar::sync::HttpConfig;

fn http() -> HttpConfig {
    HttpConfig {
        connect_timeout_seconds: 2,
        read_timeout_seconds: 1,
        ..HttpConfig::default()
    }
}

fn body_of(f: Fetched) -> (Vec<u8>, Option<String>) {
    match f {
        Fetched::Bundle { bytes, etag } => (bytes, etag),
        Fetched::NotModified => panic!("expected a body, got 304"),
    }
}

#[tokio::test]
async fn etag_of_activated_bundle_gets_304() {
    let (srv, base) = sync_support::start().await;
    srv.publish(b"bundle-v1".to_vec(), "\"v1\"");
    let mut d = Downloader::new(&format!("{base}/bundles/authz"), &http(), 0).unwrap();
    let (bytes, etag) = body_of(d.fetch().await.unwrap());
    assert_eq!(bytes, b"bundle-v1");
    assert_eq!(etag.as_deref(), Some("\"v1\""));
    // Not activated yet: the ETag is not sent, so the body comes again.
    assert!(matches!(d.fetch().await.unwrap(), Fetched::Bundle { .. }));
    d.set_etag(etag);
    assert!(matches!(d.fetch().await.unwrap(), Fetched::NotModified));
    srv.publish(b"bundle-v2".to_vec(), "\"v2\"");
    assert_eq!(body_of(d.fetch().await.unwrap()).0, b"bundle-v2");
    let seen = srv.seen();
    assert_eq!(seen[0].if_none_match, None);
    assert_eq!(seen[2].if_none_match.as_deref(), Some("\"v1\""));
    // A plain static server (no long-poll content type): never asked to wait.
    assert!(!d.long_polling());
    assert!(seen
        .iter()
        .all(|s| s.prefer.as_deref() == Some("modes=snapshot,delta")));
}

#[tokio::test]
async fn long_poll_wakes_on_new_revision() {
    let (srv, base) = sync_support::start().await;
    srv.set(|s| s.long_poll = true);
    srv.publish(b"v1".to_vec(), "\"v1\"");
    let mut d = Downloader::new(&format!("{base}/bundles/authz"), &http(), 30).unwrap();
    let (_, etag) = body_of(d.fetch().await.unwrap());
    assert!(d.long_polling(), "server announced long polling");
    d.set_etag(etag);
    let waiting = tokio::spawn(async move {
        let r = d.fetch().await;
        (d, r)
    });
    // Publish once the request is parked on the server.
    for _ in 0..200 {
        if srv.seen().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(srv.seen().len(), 2);
    srv.publish(b"v2".to_vec(), "\"v2\"");
    // wait=30: only the wake-up on publish can answer within this bound.
    let (_d, r) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("long poll did not wake on the new revision")
        .unwrap();
    assert_eq!(body_of(r.unwrap()).0, b"v2");
    assert_eq!(
        srv.seen()[1].prefer.as_deref(),
        Some("modes=snapshot,delta;wait=30")
    );
}

#[tokio::test]
async fn long_poll_turns_off_when_server_stops_announcing_it() {
    let (srv, base) = sync_support::start().await;
    srv.set(|s| s.long_poll = true);
    srv.publish(b"v1".to_vec(), "\"v1\"");
    let mut d = Downloader::new(&format!("{base}/bundles/authz"), &http(), 30).unwrap();
    body_of(d.fetch().await.unwrap());
    assert!(d.long_polling());
    srv.set(|s| s.long_poll = false);
    body_of(d.fetch().await.unwrap());
    assert!(!d.long_polling());
}

#[tokio::test]
async fn oversized_bundle_refused_by_content_length_and_while_streaming() {
    let (srv, base) = sync_support::start().await;
    srv.publish(vec![7u8; 4096], "\"big\"");
    let cfg = HttpConfig {
        max_bundle_bytes: 1000,
        ..http()
    };
    let mut d = Downloader::new(&format!("{base}/bundles/authz"), &cfg, 0).unwrap();
    assert!(matches!(
        d.fetch().await,
        Err(DownloadError::TooLarge { limit: 1000, .. })
    ));

    // No Content-Length: a chunked body that never ends must be cut off by the limit.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/b",
        axum::routing::get(|| async {
            let chunks = futures::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 512]))
            });
            axum::body::Body::from_stream(chunks)
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let mut d = Downloader::new(&format!("http://{addr}/b"), &cfg, 0).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), d.fetch())
        .await
        .expect("endless body was not cut off");
    assert!(matches!(r, Err(DownloadError::TooLarge { .. })), "{r:?}");
}

#[tokio::test]
async fn server_errors_resets_hangs_and_down_are_errors() {
    let (srv, base) = sync_support::start().await;
    srv.set(|s| s.fail_with = Some(500));
    let mut d = Downloader::new(&format!("{base}/bundles/authz"), &http(), 0).unwrap();
    let e = d.fetch().await.unwrap_err();
    assert_eq!(e.http_code(), Some(500), "{e}");

    for url in [
        sync_support::dead_url().await,
        sync_support::resetting_url().await,
        sync_support::hanging_url().await,
    ] {
        let mut d = Downloader::new(&url, &http(), 0).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), d.fetch())
            .await
            .expect("request was not bounded by the timeouts");
        assert!(
            matches!(r, Err(DownloadError::Transport { .. })),
            "{url}: {r:?}"
        );
    }
}

#[tokio::test]
async fn bearer_token_is_reread_on_every_request() {
    let (srv, base) = sync_support::start().await;
    srv.publish(b"v1".to_vec(), "\"v1\"");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").unwrap();
    let cfg = HttpConfig {
        bearer_token_file: Some(token.clone()),
        ..http()
    };
    let mut d = Downloader::new(&format!("{base}/bundles/authz"), &cfg, 0).unwrap();
    d.fetch().await.unwrap();
    std::fs::write(&token, "second").unwrap();
    d.fetch().await.unwrap();
    let auth: Vec<_> = srv.seen().into_iter().map(|s| s.authorization).collect();
    assert_eq!(
        auth,
        vec![
            Some("Bearer first".to_string()),
            Some("Bearer second".to_string())
        ]
    );
    std::fs::remove_file(&token).unwrap();
    assert!(matches!(d.fetch().await, Err(DownloadError::Token { .. })));
}

#[tokio::test]
async fn bad_ca_file_is_a_setup_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let cfg = HttpConfig {
        ca_file: Some(ca),
        ..http()
    };
    assert!(matches!(
        Downloader::new("https://127.0.0.1:1/b", &cfg, 0),
        Err(DownloadError::Setup(_))
    ));
}
