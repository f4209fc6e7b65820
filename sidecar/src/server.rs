//! Starts every part of the sidecar from a configuration: the gRPC Authorization service (TCP, optional
//! Unix socket and TLS/mTLS, health, reflection), the side HTTP port, the optional HTTP-service
//! ext_authz listener, and the policy source (a local bundle or sync).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tonic::transport::server::{Connected, Router};
use tonic::transport::Server;

use crate::authorizer::Authorizer;
use crate::config::SidecarConfig;
use crate::decision_log::DecisionLogger;
use crate::grpc_check::AuthorizationService;
use crate::metrics::Metrics;
use crate::policy::{decision_rule, PolicySettings, PolicyStore};
use regent_policy::input::{load_descriptor_set, InputOptions};

/// A running sidecar.
pub struct Running {
    /// Bound gRPC TCP address.
    pub grpc_addr: SocketAddr,
    /// Bound side HTTP address.
    pub http_addr: SocketAddr,
    /// Bound HTTP-service ext_authz address, when enabled.
    pub ext_authz_addr: Option<SocketAddr>,
    /// The policy store.
    pub store: Arc<PolicyStore>,
    /// Metrics.
    pub metrics: Metrics,
    /// Bundle sync, when configured.
    pub sync: Option<crate::sync::SyncHandle>,
    /// Remote key set fetchers, when `identity.jwks` is configured.
    pub identity: Option<Arc<crate::identity::IdentityHandle>>,
    shutdown: watch::Sender<bool>,
    /// Listener tasks: they finish in-flight requests after the shutdown signal.
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// Tasks that run until aborted (health reporting, local bundle watch).
    background: Vec<JoinHandle<()>>,
    /// The decision log upload, flushed once the listeners have drained.
    decision_upload: Option<Arc<crate::decision_log::upload::UploadHandle>>,
    decision_otlp: Option<Arc<crate::decision_log::OtlpHandle>>,
    /// The span export, flushed once the listeners have drained.
    tracing: Option<Arc<crate::telemetry::Tracing>>,
}

/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to 5 s), then stops background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in &self.background {
            t.abort();
        }
        if let Some(sync) = self.sync {
            sync.shutdown().await;
        }
        if let Some(identity) = &self.identity {
            identity.shutdown().await;
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for (name, mut t) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                tracing::warn!(
                    listener = name,
                    "listener did not drain in time; closing it"
                );
                t.abort();
            }
        }
        for t in self.background {
            let _ = t.await;
        }
        // The flushes are bounded (decision_logs.upload.shutdown_flush_seconds,
        // decision_logs.otlp.export_timeout_seconds, tracing.export_timeout_seconds) and
        // independent: they run together.
        let upload = async {
            if let Some(upload) = &self.decision_upload {
                upload.shutdown().await;
            }
        };
        let otlp = async {
            if let Some(o) = &self.decision_otlp {
                o.shutdown().await;
            }
        };
        let spans = async {
            if let Some(t) = &self.tracing {
                t.shutdown().await;
            }
        };
        tokio::join!(upload, otlp, spans);
        tracing::info!("stopped");
    }
}

#[derive(Clone)]
struct SideState {
    store: Arc<PolicyStore>,
    metrics: Metrics,
    listening: Arc<AtomicBool>,
    identity: Option<Arc<crate::identity::IdentityHandle>>,
}

/// Starts the sidecar. Listeners are bound before this returns (ports 0 are resolved), so callers can
/// connect at once; the policy source starts after the gRPC listener, so Envoy gets `fail_mode` answers
/// rather than connection errors while the first policy loads.
pub async fn start(cfg: SidecarConfig) -> anyhow::Result<Running> {
    cfg.validate()?;
    let metrics = Metrics::new().context("registering metrics")?;
    let store = policy_store(&cfg, &metrics)?;
    let checks = check_path(&cfg, &metrics, &store)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut background = Vec::new();
    let listening = Arc::new(AtomicBool::new(false));

    let grpc = grpc_listeners(&cfg, &checks.authorizer, &shutdown_rx).await?;
    tasks.extend(grpc.tasks);
    listening.store(true, Ordering::Release);

    // Files re-read while running. Fingerprinting reads them (off the runtime threads), before
    // the outgoing clients below first read theirs, so no change in between is missed.
    let reload_interval = Duration::from_secs(cfg.reload.interval_seconds);
    let mut watchers = Vec::new();
    if !reload_interval.is_zero() {
        let (c, grpc_tls) = (cfg.clone(), grpc.tls.clone());
        watchers = tokio::task::spawn_blocking(move || crate::tls::watchers(&c, grpc_tls.as_ref()))
            .await
            .context("TLS file fingerprint task failed")?;
    }

    // Remote key sets: persisted ones are published before the policy source starts; the
    // first fetches run in the background.
    let identity =
        crate::identity::start(&cfg.identity, cfg.identity_persist_dir(), &metrics.registry)
            .await
            .context("identity.jwks")?
            .map(Arc::new);

    background.push(spawn_health(&store, grpc.health));
    let side = SideState {
        store: store.clone(),
        metrics: metrics.clone(),
        listening: listening.clone(),
        identity: identity.clone(),
    };
    let (http_addr, http_task) = side_http(&cfg, side, &shutdown_rx).await?;
    tasks.push(("http", http_task));
    let ext_authz_addr = match ext_authz_http(&cfg, &checks.authorizer, &shutdown_rx).await? {
        Some((addr, task)) => {
            tasks.push(("ext-authz-http", task));
            Some(addr)
        }
        None => None,
    };

    let sync = policy_source(
        &cfg,
        &store,
        &metrics,
        checks.tracing.clone(),
        reload_interval,
        &mut watchers,
        &mut background,
    )
    .await?;
    if !reload_interval.is_zero() {
        watchers.extend(checks.remote.take_watchers());
    }
    if let (Some(identity), false) = (identity.clone(), reload_interval.is_zero()) {
        let watcher = tokio::task::spawn_blocking(move || identity.passport_watcher())
            .await
            .context("passport key fingerprint task failed")?;
        watchers.extend(watcher);
    }
    if !watchers.is_empty() {
        background.push(crate::reload::spawn(
            watchers,
            reload_interval,
            metrics.reloads.clone(),
            shutdown_rx.clone(),
        ));
    }
    tracing::info!(grpc = %grpc.addr, http = %http_addr, ext_authz_http = ?ext_authz_addr, "regent-sidecar listening");
    Ok(Running {
        grpc_addr: grpc.addr,
        http_addr,
        ext_authz_addr,
        store,
        metrics,
        sync,
        identity,
        shutdown,
        tasks,
        background,
        decision_upload: checks.decision_upload,
        decision_otlp: checks.decision_otlp,
        tracing: checks.tracing,
    })
}

/// The store the policy in force lives in, empty until the policy source activates one.
fn policy_store(cfg: &SidecarConfig, metrics: &Metrics) -> anyhow::Result<Arc<PolicyStore>> {
    let rule = decision_rule(&cfg.policy.path).map_err(anyhow::Error::msg)?;
    Ok(Arc::new(PolicyStore::new(
        PolicySettings {
            rule,
            engine: cfg.policy.engine,
            eval_timeout: Duration::from_millis(cfg.policy.eval_timeout_ms),
            max_instructions: cfg.policy.max_instructions,
            vm_recheck: cfg.policy.vm_recheck,
            allow_missing_decision: true,
        },
        metrics.activations.clone(),
    )))
}

/// What answers Checks, and the exports the shutdown flushes.
struct CheckPath {
    authorizer: Arc<Authorizer>,
    remote: Arc<crate::remote::RemoteCalls>,
    decision_upload: Option<Arc<crate::decision_log::upload::UploadHandle>>,
    decision_otlp: Option<Arc<crate::decision_log::OtlpHandle>>,
    tracing: Option<Arc<crate::telemetry::Tracing>>,
}

/// The authorizer with its decision logger, tracer, input options and remote calls.
fn check_path(
    cfg: &SidecarConfig,
    metrics: &Metrics,
    store: &Arc<PolicyStore>,
) -> anyhow::Result<CheckPath> {
    if cfg.decision_logs.upload.is_some() {
        metrics
            .decision_logs
            .register_uploads(&metrics.registry)
            .context("registering the decision log upload metrics")?;
    }
    let logger = DecisionLogger::start(
        &cfg.decision_logs,
        &cfg.policy.path,
        metrics.decision_logs.clone(),
    )
    .context("starting the decision logger")?;
    let decision_upload = logger.upload();
    let decision_otlp = logger.otlp();
    let tracing_metrics = crate::telemetry::TracingMetrics::register(&metrics.registry)
        .context("registering the tracing metrics")?;
    let tracing =
        crate::telemetry::Tracing::start(&cfg.tracing, &tracing_metrics).context("tracing")?;
    let descriptors = match &cfg.policy.proto_descriptor {
        Some(p) => Some(Arc::new(
            load_descriptor_set(p).context("policy.proto_descriptor")?,
        )),
        None => None,
    };
    let input = InputOptions {
        skip_request_body_parse: cfg.policy.skip_request_body_parse,
        prune: cfg.policy.prune_input,
        descriptors,
    };
    let remote = Arc::new(
        crate::remote::RemoteCalls::new(&cfg.remote_calls, &metrics.registry)
            .context("remote_calls")?,
    );
    let authorizer = Arc::new(
        Authorizer::new(
            store.clone(),
            metrics.clone(),
            logger,
            input,
            cfg.policy.dry_run,
            cfg.fail_mode.clone(),
        )
        .with_remote_calls(remote.clone())
        .with_tracing(tracing.clone()),
    );
    if cfg.policy.dry_run {
        tracing::warn!(
            "dry-run is on: every request is allowed; decision logs show the real decisions"
        );
    }
    Ok(CheckPath {
        authorizer,
        remote,
        decision_upload,
        decision_otlp,
        tracing,
    })
}

/// The gRPC listeners, serving.
struct GrpcListeners {
    addr: SocketAddr,
    tls: Option<Arc<crate::tls::ServerTls>>,
    health: tonic_health::server::HealthReporter,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// Binds and serves the Authorization service (with health and reflection) on TCP and, when
/// configured, a Unix socket, both over TLS when `grpc.tls` is set.
async fn grpc_listeners(
    cfg: &SidecarConfig,
    authorizer: &Arc<Authorizer>,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<GrpcListeners> {
    let tcp = tokio::net::TcpListener::bind(cfg.grpc.addr)
        .await
        .with_context(|| format!("binding grpc.addr {}", cfg.grpc.addr))?;
    let addr = tcp.local_addr()?;
    let tls = match &cfg.grpc.tls {
        None => None,
        Some(t) => {
            let t = t.clone();
            Some(
                tokio::task::spawn_blocking(move || crate::tls::ServerTls::load(&t))
                    .await
                    .context("grpc.tls read task failed")??,
            )
        }
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = if cfg.grpc.reflection {
        Some(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .context("building gRPC reflection")?,
        )
    } else {
        None
    };
    let make_router = || {
        let svc = AuthorizationService::new(authorizer.clone(), cfg.grpc.max_recv_message_bytes);
        Server::builder()
            .add_service(svc)
            .add_service(health_service.clone())
            .add_optional_service(reflection.clone())
    };
    // Small gRPC frames must not wait for Nagle's algorithm.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(tcp).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    let mut tasks = vec![(
        "grpc",
        spawn_grpc(make_router(), incoming, tls.clone(), shutdown_rx.clone()),
    )];
    #[cfg(unix)]
    if let Some(path) = &cfg.grpc.unix_socket {
        if path.exists() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let uds = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding grpc.unix_socket {}", path.display()))?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(uds);
        tasks.push((
            "grpc-unix",
            spawn_grpc(make_router(), incoming, tls.clone(), shutdown_rx.clone()),
        ));
    }
    Ok(GrpcListeners {
        addr,
        tls,
        health,
        tasks,
    })
}

/// Keeps gRPC health in step with the policy: SERVING once one is active.
fn spawn_health(
    store: &Arc<PolicyStore>,
    health: tonic_health::server::HealthReporter,
) -> JoinHandle<()> {
    let mut generations = store.subscribe();
    tokio::spawn(async move {
        loop {
            if *generations.borrow_and_update() > 0 {
                health.set_serving::<AuthorizationService>().await;
                health
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
            } else {
                health.set_not_serving::<AuthorizationService>().await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
            }
            if generations.changed().await.is_err() {
                return;
            }
        }
    })
}

/// The side HTTP port: `/health`, `/ready`, `/metrics`.
async fn side_http(
    cfg: &SidecarConfig,
    side: SideState,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok\n" }))
        .route("/ready", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics_text))
        .with_state(side);
    let http = tokio::net::TcpListener::bind(cfg.http.addr)
        .await
        .with_context(|| format!("binding http.addr {}", cfg.http.addr))?;
    let addr = http.local_addr()?;
    Ok((addr, spawn_axum(http, app, shutdown_rx.clone())))
}

/// Envoy's HTTP-service ext_authz listener, when `http.ext_authz_addr` is set.
async fn ext_authz_http(
    cfg: &SidecarConfig,
    authorizer: &Arc<Authorizer>,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<Option<(SocketAddr, JoinHandle<()>)>> {
    let Some(addr) = cfg.http.ext_authz_addr else {
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding http.ext_authz_addr {addr}"))?;
    let bound = l.local_addr()?;
    let app = crate::http_mode::router(
        authorizer.clone(),
        cfg.http.ext_authz_path_prefix.clone(),
        cfg.http.ext_authz_max_body_bytes,
    );
    Ok(Some((bound, spawn_axum(l, app, shutdown_rx.clone()))))
}

/// Starts the policy source: a watched local bundle, or bundle sync (whose key files join
/// `watchers`); neither, a warning (Checks get `fail_mode`).
async fn policy_source(
    cfg: &SidecarConfig,
    store: &Arc<PolicyStore>,
    metrics: &Metrics,
    tracing: Option<Arc<crate::telemetry::Tracing>>,
    reload_interval: Duration,
    watchers: &mut Vec<crate::reload::Watcher>,
    background: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Option<crate::sync::SyncHandle>> {
    if let Some(path) = &cfg.policy.bundle {
        background.push(crate::local_bundle::watch(
            store.clone(),
            path.clone(),
            Duration::from_secs(1),
        ));
        return Ok(None);
    }
    if cfg.sync.bundles.is_empty() {
        tracing::warn!(
            "no policy source configured (policy.bundle or sync.bundles): answering per fail_mode"
        );
        return Ok(None);
    }
    use crate::sync::regent_format::{keyring_watcher, rules_from_config, RegentFormat};
    let format = RegentFormat::from_config(&cfg.sync)?;
    let keyring = format.keyring_handle();
    let has_key_files = !crate::sync::regent_format::key_files(&cfg.sync).is_empty();
    if !reload_interval.is_zero() && has_key_files {
        // Done right after the keyring was read, so a change from here on is seen by the
        // first poll.
        let sync_cfg = cfg.sync.clone();
        let watcher = tokio::task::spawn_blocking(move || keyring_watcher(&sync_cfg, keyring))
            .await
            .context("key file fingerprint task failed")?;
        watchers.push(watcher);
    }
    let activator = crate::sync::activate::SetActivator::new(
        format,
        store.clone(),
        rules_from_config(&cfg.sync),
    );
    let sync =
        crate::sync::start_traced(&cfg.sync, Arc::new(activator), &metrics.registry, tracing)
            .await?;
    Ok(Some(sync))
}

/// Serves `router` on `incoming` until the shutdown signal, over TLS when `tls` is set (each
/// handshake with the certificate in force when its connection was accepted).
fn spawn_grpc<S, IO>(
    router: Router,
    incoming: S,
    tls: Option<Arc<crate::tls::ServerTls>>,
    rx: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    S: futures::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: Connected + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = rx.clone();
    let signal = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::spawn(async move {
        let served = match tls {
            None => router.serve_with_incoming_shutdown(incoming, signal).await,
            Some(tls) => {
                let incoming = crate::tls::incoming(incoming, tls, rx);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    })
}

fn spawn_axum(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    })
}

async fn ready(State(s): State<SideState>) -> impl IntoResponse {
    let listening = s.listening.load(Ordering::Acquire);
    let policy = s.store.current();
    let missing = policy
        .as_ref()
        .and_then(|p| p.missing_decision().map(str::to_string));
    let ready = listening && policy.is_some() && missing.is_none();
    let mut body = serde_json::json!({
        "ready": ready,
        "listening": listening,
        "policy_active": policy.is_some(),
        "missing_decision_rule": missing,
        "revisions": policy.as_ref().map(|p| (*p.revisions).clone()).unwrap_or_default(),
    });
    // Key sets are shown, never made a readiness condition: a provider outage refuses only that
    // issuer's tokens, and taking every replica out of service for it would refuse everything.
    if let Some(identity) = &s.identity {
        body["jwks"] = serde_json::to_value(identity.reports()).unwrap_or_default();
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

async fn metrics_text(State(s): State<SideState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
}
