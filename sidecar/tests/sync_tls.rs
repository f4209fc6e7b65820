//! Bundle download over TLS with a private CA and a client certificate, against a real TLS
//! server on 127.0.0.1. The PEM files in `sync_support/tls/` are test-only fixtures (a CA,
//! a server certificate for IP 127.0.0.1 and a client certificate, all from that CA).

use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use regent_sidecar::sync::download::{DownloadError, Downloader, Fetched};
use regent_sidecar::sync::HttpConfig;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sync_support/tls")
        .join(name)
}

fn certs(name: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let pem = std::fs::read(fixture(name)).unwrap();
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A TLS server that requires a client certificate from the test CA.
async fn start_mtls() -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs("ca.pem") {
        roots.add(c).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key_pem = std::fs::read(fixture("server.key")).unwrap();
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .unwrap()
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("server.pem"), key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let app = axum::Router::new().route("/bundles/authz", get(|| async { "tls-bundle" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }
            });
        }
    });
    format!("https://{addr}/bundles/authz")
}

fn http(ca: bool, client_cert: bool) -> HttpConfig {
    HttpConfig {
        connect_timeout_seconds: 2,
        read_timeout_seconds: 2,
        ca_file: ca.then(|| fixture("ca.pem")),
        client_cert_file: client_cert.then(|| fixture("client.pem")),
        client_key_file: client_cert.then(|| fixture("client.key")),
        ..HttpConfig::default()
    }
}

#[tokio::test]
async fn private_ca_and_client_certificate() {
    let url = start_mtls().await;
    let mut d = Downloader::new(&url, &http(true, true), 0).unwrap();
    match d.fetch().await.unwrap() {
        Fetched::Bundle { bytes, .. } => assert_eq!(bytes, b"tls-bundle"),
        Fetched::NotModified => panic!("expected a body"),
    }
}

#[tokio::test]
async fn unknown_ca_is_refused() {
    let url = start_mtls().await;
    let mut d = Downloader::new(&url, &http(false, true), 0).unwrap();
    assert!(matches!(
        d.fetch().await,
        Err(DownloadError::Transport { .. })
    ));
}

#[tokio::test]
async fn missing_client_certificate_is_refused() {
    let url = start_mtls().await;
    let mut d = Downloader::new(&url, &http(true, false), 0).unwrap();
    assert!(matches!(
        d.fetch().await,
        Err(DownloadError::Transport { .. })
    ));
}
