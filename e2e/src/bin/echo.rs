//! HTTP echo upstream: answers every request with a JSON document holding the method, path
//! (with query), the headers it received and the body, so tests can see what Envoy forwarded
//! (headers a policy added or removed included).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use clap::Parser;

/// Command line.
#[derive(Parser)]
#[command(
    name = "regent-e2e-echo",
    about = "HTTP echo upstream for Regent's end-to-end tests"
)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
}

async fn echo(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let mut hs: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        hs.entry(k.as_str().to_string())
            .and_modify(|old| {
                old.push(',');
                old.push_str(&v)
            })
            .or_insert(v);
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    axum::Json(serde_json::json!({
        "method": method.as_str(),
        "path": path,
        "headers": hs,
        "body": String::from_utf8_lossy(&body),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    println!("regent-e2e-echo listening on {}", args.addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    Ok(())
}

async fn shutdown() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
