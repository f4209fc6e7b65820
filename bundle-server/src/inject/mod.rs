//! `regent inject-webhook`: the mutating admission webhook that adds regent-sidecar to pods.
//!
//! - [`template`]: what is added (the `--config` file, rendered by the Helm chart).
//! - [`patch`]: whether a pod gets the sidecar and the JSON patch that adds it (pure).
//! - [`review`]: `admission.k8s.io/v1` AdmissionReview handling (pure).
//! - [`tls`]: the serving certificate, reloaded when cert-manager renews it.
//! - [`server`]: HTTPS serving (axum on rustls).

pub mod patch;
pub mod review;
pub mod server;
pub mod template;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `regent inject-webhook`.
#[derive(Debug, clap::Args)]
pub struct InjectWebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate chain (PEM), re-read when it changes.
    #[arg(long, required_unless_present = "check_config")]
    pub tls_cert: Option<PathBuf>,
    /// Serving private key (PEM).
    #[arg(long, required_unless_present = "check_config")]
    pub tls_key: Option<PathBuf>,
    /// The sidecar template (YAML or JSON): `container`, `volumes`, `nativeSidecar`, `podLabels`.
    #[arg(long)]
    pub config: PathBuf,
    /// Seconds between checks of the certificate files for a renewal.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_reload_seconds: u64,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Validate --config and exit (0 if valid).
    #[arg(long)]
    pub check_config: bool,
}

/// Runs the webhook server until SIGTERM/SIGINT; returns the exit code.
pub fn run(args: InjectWebhookArgs) -> anyhow::Result<u8> {
    let template = template::InjectTemplate::from_file(&args.config)?;
    if args.check_config {
        println!(
            "{}: ok (container {:?}, {} volume(s), native sidecar: {})",
            args.config.display(),
            template.container_name(),
            template.volumes.len(),
            template.native_sidecar
        );
        return Ok(0);
    }
    init_logging(args.log_format);
    let (Some(cert_path), Some(key_path)) = (&args.tls_cert, &args.tls_key) else {
        anyhow::bail!("--tls-cert and --tls-key are required");
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = Arc::new(tls::ReloadingCert::load(cert_path, key_path, provider)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        tracing::info!(listen = %args.listen, container = template.container_name(), "sidecar injector serving");
        let webhook = server::Webhook {
            template: Arc::new(template),
            cert,
            cert_reload_interval: Duration::from_secs(args.tls_reload_seconds),
        };
        server::serve(listener, webhook, shutdown_signal()).await
    })?;
    tracing::info!("sidecar injector stopped");
    Ok(0)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a subscriber installed by an embedding program wins.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
