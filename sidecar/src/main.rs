//! `regent-sidecar --config sidecar.yaml [flags]`: loads the configuration, starts the listeners and the
//! policy source, and stops cleanly on SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use regent_sidecar::cli::Cli;
use regent_sidecar::config::{LogConfig, LogFormat};
use regent_sidecar::runtime::Scheduler;
use tracing_subscriber::EnvFilter;

/// Exit status for an unusable configuration (distinct from a runtime failure).
const EXIT_CONFIG: u8 = 2;
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match cli.load_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("regent-sidecar: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = init_tracing(&cfg.log) {
        eprintln!("regent-sidecar: configuration error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // Tracing is installed only now, after the config chose its format: say which format was read.
    cfg.log_origin();
    let scheduler = Scheduler::choose(
        &cfg.runtime,
        std::thread::available_parallelism().ok().map(|n| n.get()),
    );
    let runtime = match scheduler.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("regent-sidecar: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    tracing::info!(
        scheduler = scheduler.name(),
        worker_threads = scheduler.worker_threads(),
        "async runtime"
    );
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "regent-sidecar failed");
            eprintln!("regent-sidecar: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn run(cfg: regent_sidecar::config::SidecarConfig) -> anyhow::Result<()> {
    let running = regent_sidecar::server::start(cfg).await?;
    let signal = shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    running.shutdown().await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM (Kubernetes stops pods with SIGTERM) and names the one received.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("ctrl-c")
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level` so an operator can
/// raise verbosity without editing the file.
fn init_tracing(cfg: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| format!("RUST_LOG {v:?}: {e}"))?
        }
        _ => {
            EnvFilter::try_new(&cfg.level).map_err(|e| format!("log.level {:?}: {e}", cfg.level))?
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| format!("installing the log subscriber: {e}"))
}
