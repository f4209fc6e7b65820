//! An OPA decision log receiver for the observability benchmark: `POST /logs` takes a gzipped
//! JSON array of events (what regent-sidecar's `decision_logs.upload` and OPA send) and counts the
//! events; `GET /events` answers the count, so run.sh can check that every decision was shipped.
//! Prints `listening ADDR` on stdout once bound. Runs until killed.
//!
//! `log_receiver [--addr 127.0.0.1:0]`

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
}

async fn logs(State(events): State<Arc<AtomicU64>>, body: Bytes) -> StatusCode {
    let mut json = Vec::new();
    if flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut json)
        .is_err()
    {
        return StatusCode::BAD_REQUEST;
    }
    match serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&json) {
        Ok(array) => {
            events.fetch_add(array.len() as u64, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn count(State(events): State<Arc<AtomicU64>>) -> String {
    format!("{}\n", events.load(Ordering::Relaxed))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let events = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/logs", post(logs))
        .route("/events", get(count))
        .with_state(events);
    axum::serve(listener, app).await?;
    Ok(())
}
