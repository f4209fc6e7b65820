//! An OPA decision log receiver for the observability benchmark: `POST /logs` takes a gzipped
//! JSON array of events (what regent-sidecar's `decision_logs.upload` and OPA send) and counts the
//! events; `GET /events` answers the count, so run.sh can check that every decision was shipped.
//! `POST /v1/traces` takes OTLP/HTTP span exports (not decoded: answered with the empty, valid
//! protobuf response) and `GET /trace_exports` answers how many arrived.
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

#[derive(Clone)]
struct Counters {
    events: Arc<AtomicU64>,
    traces: Arc<AtomicU64>,
}

async fn traces(
    State(traces): State<Arc<AtomicU64>>,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    traces.fetch_add(1, Ordering::Relaxed);
    ([("content-type", "application/x-protobuf")], Vec::new())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let c = Counters {
        events: Arc::new(AtomicU64::new(0)),
        traces: Arc::new(AtomicU64::new(0)),
    };
    let logs_app = Router::new()
        .route("/logs", post(logs))
        .route("/events", get(count))
        .with_state(c.events.clone());
    let traces_app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/trace_exports", get(count))
        .with_state(c.traces.clone());
    let app = logs_app.merge(traces_app);
    axum::serve(listener, app).await?;
    Ok(())
}
