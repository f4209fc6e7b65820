//! HTTPS serving of the webhook: `POST /inject`, `GET /health`, `GET /metrics`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::review::{handle_review, Outcome};
use super::template::InjectTemplate;
use super::tls::ReloadingCert;

/// Pods are at most ~1.5 MiB in etcd; the review carries the object once (CREATE has no old object).
const MAX_REVIEW_BYTES: usize = 8 << 20;
/// How long in-flight requests may finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the webhook serves with.
pub struct Webhook {
    /// What is injected.
    pub template: Arc<InjectTemplate>,
    /// The serving certificate.
    pub cert: Arc<ReloadingCert>,
    /// How often the certificate files are checked for a renewal.
    pub cert_reload_interval: Duration,
}

struct AppState {
    template: Arc<InjectTemplate>,
    registry: Registry,
    reviews: IntCounterVec,
}

/// The TLS server configuration (HTTP/2 and HTTP/1.1) using the reloading certificate.
pub fn tls_config(cert: Arc<ReloadingCert>) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves on `listener` until `shutdown` completes, then lets in-flight requests finish (bounded).
pub async fn serve(
    listener: TcpListener,
    webhook: Webhook,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    let reviews = IntCounterVec::new(
        Opts::new(
            "regent_inject_reviews_total",
            "Admission reviews answered by the sidecar injector, by outcome.",
        ),
        &["outcome"],
    )?;
    let reloads = IntCounterVec::new(
        Opts::new(
            "regent_inject_certificate_reloads_total",
            "Serving certificate reloads, by result.",
        ),
        &["result"],
    )?;
    // Series exported at 0 from start, so a first event shows in rate() and increase().
    for outcome in super::review::OUTCOME_LABELS {
        reviews.with_label_values(&[outcome]);
    }
    for result in ["ok", "error"] {
        reloads.with_label_values(&[result]);
    }
    registry.register(Box::new(reviews.clone()))?;
    registry.register(Box::new(reloads.clone()))?;
    let state = Arc::new(AppState {
        template: webhook.template,
        registry,
        reviews,
    });
    let app = router(state);
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(webhook.cert.clone())?));

    let cert = webhook.cert.clone();
    let interval = webhook.cert_reload_interval;
    let reloader = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let cert = cert.clone();
            match tokio::task::spawn_blocking(move || cert.reload_if_changed()).await {
                Ok(Ok(true)) => {
                    reloads.with_label_values(&["ok"]).inc();
                    tracing::info!("serving certificate reloaded");
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    reloads.with_label_values(&["error"]).inc();
                    tracing::warn!(error = %format!("{e:#}"), "serving certificate not reloaded; keeping the previous one");
                }
                Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
            }
        }
    });

    let mut connections = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let Some(tls) = crate::server::listener::accept_tls(&acceptor, tcp, peer).await else {
                return;
            };
            let builder = crate::server::listener::connection_builder();
            let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    reloader.abort();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
        connections.abort_all();
    }
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/inject", post(inject))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
}

async fn inject(State(state): State<Arc<AppState>>, body: Bytes) -> impl IntoResponse {
    let reviewed = handle_review(&body, &state.template);
    state
        .reviews
        .with_label_values(&[reviewed.outcome.label()])
        .inc();
    let uid = reviewed
        .response
        .pointer("/response/uid")
        .and_then(|u| u.as_str())
        .unwrap_or_default()
        .to_string();
    let pod = &reviewed.subject;
    match &reviewed.outcome {
        Outcome::Injected => tracing::info!(%uid, %pod, "sidecar injected"),
        Outcome::Skipped(reason) => {
            tracing::info!(%uid, %pod, ?reason, "pod admitted without injection")
        }
        Outcome::NotApplicable => tracing::debug!(%uid, "not a pod CREATE; admitted unchanged"),
        Outcome::Invalid(message) => {
            tracing::warn!(%uid, %pod, %message, "admission review refused")
        }
    }
    Json(reviewed.response)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
